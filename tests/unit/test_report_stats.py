"""Report statistics against hand-computed values (and scipy / scikit-learn where the formula is theirs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import average_precision_score, f1_score

from locbench.report import stats


def test_t_interval_matches_hand_computation():
    e = stats.t_interval([0.61, 0.64, 0.62])
    # mean 0.623333, sd 0.0152753, t(0.975, 2) = 4.302653, half-width = 4.302653 * 0.0152753 / sqrt(3) = 0.0379460
    assert e.n == 3
    assert e.mean == pytest.approx(0.6233333, abs=1e-6)
    assert e.std == pytest.approx(0.0152753, abs=1e-6)
    assert e.lo == pytest.approx(0.6233333 - 0.0379460, abs=1e-6)
    assert e.hi == pytest.approx(0.6233333 + 0.0379460, abs=1e-6)
    assert e.method == stats.T_METHOD


def test_t_interval_single_value_has_no_interval():
    e = stats.t_interval([0.7])
    assert e.mean == 0.7 and e.n == 1 and not e.has_ci
    assert "no interval" in e.method
    assert stats.t_interval([]).n == 0


def test_paired_t_matches_seeds_and_scipy():
    base = {0: 0.60, 1: 0.62, 2: 0.58}
    other = {2: 0.60, 0: 0.63, 1: 0.66, 7: 0.99}  # seed 7 has no pair and must be ignored
    n, diff, lo, hi, p = stats.paired_t(base, other)
    # differences 0.03, 0.04, 0.02: mean 0.03, sd 0.01, t = 0.03 / (0.01 / sqrt 3) = 5.196 on 2 df
    assert n == 3
    assert diff == pytest.approx(0.03)
    assert p == pytest.approx(2 * sps.t.sf(0.03 / (0.01 / math.sqrt(3)), 2), rel=1e-6)
    assert p == pytest.approx(0.0351, abs=5e-4)
    half = sps.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((0.03 - half, 0.03 + half))


def test_paired_t_pairs_by_seed_not_by_position():
    # Unpaired the two grid points look identical; paired by seed the second is always 0.01 better.
    base = {0: 0.5, 1: 0.7, 2: 0.6}
    other = {0: 0.51, 1: 0.71, 2: 0.61}
    n, diff, *_ = stats.paired_t(base, other)
    assert diff == pytest.approx(0.01)
    _, _, _, _, p = stats.paired_t(base, {0: 0.51, 1: 0.72, 2: 0.60})
    assert 0 < p < 1


def test_paired_t_without_enough_pairs_gives_no_test():
    n, diff, lo, hi, p = stats.paired_t({0: 0.5}, {0: 0.6, 1: 0.7})
    assert n == 1 and diff == pytest.approx(0.1) and math.isnan(p) and math.isnan(lo)
    assert stats.paired_t({0: 0.5}, {1: 0.6})[0] == 0


def test_holm_on_known_pvalues():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04*1) = 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = stats.holm([math.nan, 0.02, 0.5])
    assert math.isnan(out[0]) and out[1:] == pytest.approx([0.04, 0.5])
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_compare_to_baseline_gives_raw_paired_p_for_the_family():
    per_point = {
        "base": {0: 0.60, 1: 0.62, 2: 0.58},
        "better": {0: 0.63, 1: 0.66, 2: 0.60},
        "same": {0: 0.61, 1: 0.61, 2: 0.59},
        "lonely": {0: 0.9},
    }
    rows = stats.compare_to_baseline(per_point, "base")
    assert [r.point for r in rows] == ["better", "same", "lonely"]
    for r in rows[:2]:
        seeds = sorted(per_point[r.point])
        ref = sps.ttest_rel([per_point[r.point][s] for s in seeds], [per_point["base"][s] for s in seeds]).pvalue
        # raw p; the report adjusts it in the one family of its findings (analysis.adjust_family)
        assert r.p == pytest.approx(ref) and math.isnan(r.p_adj) and r.tested and not r.significant
    assert not rows[2].tested and "one paired seed" in rows[2].note


def _balanced(rng: np.random.Generator, r: int):
    a, b, y = [], [], []
    means = {("a0", "b0"): 1.0, ("a0", "b1"): 2.0, ("a1", "b0"): 1.5, ("a1", "b1"): 3.5}
    for (la, lb), m in means.items():
        for _ in range(r):
            a.append(la)
            b.append(lb)
            y.append(m + rng.normal(scale=0.3))
    return np.asarray(y), a, b


def test_two_way_anova_matches_balanced_formulas():
    rng = np.random.default_rng(3)
    r = 4
    y, a, b = _balanced(rng, r)
    tests = {t.term: t for t in stats.factorial_anova(y, {"A": a, "B": b})}
    cell = {
        (i, j): y[[k for k in range(len(y)) if a[k] == i and b[k] == j]].mean()
        for i in ("a0", "a1")
        for j in ("b0", "b1")
    }
    ai = {i: np.mean([cell[i, j] for j in ("b0", "b1")]) for i in ("a0", "a1")}
    bj = {j: np.mean([cell[i, j] for i in ("a0", "a1")]) for j in ("b0", "b1")}
    g = y.mean()
    sse = sum((y[k] - cell[a[k], b[k]]) ** 2 for k in range(len(y)))
    df2 = 4 * r - 4
    ss_ab = r * sum((cell[i, j] - ai[i] - bj[j] + g) ** 2 for i in ai for j in bj)
    ss_a = 2 * r * sum((ai[i] - g) ** 2 for i in ai)
    assert tests["A x B"].df1 == 1 and tests["A x B"].df2 == df2
    assert tests["A x B"].f == pytest.approx(ss_ab / (sse / df2), rel=1e-9)
    assert tests["A"].f == pytest.approx(ss_a / (sse / df2), rel=1e-9)
    assert tests["A"].p == pytest.approx(sps.f.sf(ss_a / (sse / df2), 1, df2), rel=1e-9)


def test_one_factor_anova_equals_scipy_oneway():
    rng = np.random.default_rng(0)
    groups = [rng.normal(m, 1.0, size=5) for m in (0.0, 0.5, 1.5)]
    y = np.concatenate(groups)
    labels = [f"g{i}" for i, g in enumerate(groups) for _ in g]
    (t,) = stats.factorial_anova(y, {"G": labels})
    ref = sps.f_oneway(*groups)
    assert t.f == pytest.approx(ref.statistic, rel=1e-9) and t.p == pytest.approx(ref.pvalue, rel=1e-9)


def test_seed_block_removes_seed_to_seed_shifts():
    # A real effect of 0.02 buried under large per-seed shifts: only the blocked model sees it.
    seeds = [0, 1, 2, 3]
    shift = {0: 0.0, 1: 0.2, 2: -0.15, 3: 0.1}
    y, lev, blk = [], [], []
    for s in seeds:
        for lv, eff in (("bce", 0.0), ("focal", 0.02)):
            y.append(0.5 + shift[s] + eff + 0.001 * ((s * 7 + len(lv)) % 3))
            lev.append(lv)
            blk.append(str(s))
    blocked = stats.factorial_anova(y, {"loss": lev}, block=blk)[0]
    unblocked = stats.factorial_anova(y, {"loss": lev})[0]
    assert blocked.p < 0.01 < unblocked.p


def test_anova_without_residual_degrees_of_freedom_is_not_a_test():
    (t,) = stats.factorial_anova([0.1, 0.2], {"A": ["x", "y"]}, max_order=1)
    assert math.isnan(t.p) and t.df2 == 0 and t.note == "no residual degrees of freedom"
    # by default the model keeps only the terms that leave a residual: none here
    assert stats.factorial_anova([0.1, 0.2], {"A": ["x", "y"]}) == []


def _resampled(n: int, rng: np.random.Generator, b: int):
    idx = rng.integers(0, n, size=(b, n))
    w = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(float)
    return idx, w


def test_weighted_macro_ap_equals_sklearn_on_resampled_arrays():
    rng = np.random.default_rng(1)
    n, c = 50, 4
    targets = (rng.random((n, c)) < 0.3).astype(np.uint8)
    targets[:, 3] = 0
    targets[0, 3] = 1  # a rare class: absent from some resamples
    probs = np.round(rng.random((n, c)), 1)  # rounding makes ties, which AP must group by threshold
    idx, w = _resampled(n, rng, 20)
    got = stats.weighted_macro_ap(probs, targets, w)
    for k in range(20):
        p, t = probs[idx[k]], targets[idx[k]]
        aps = [average_precision_score(t[:, j], p[:, j]) for j in range(c) if t[:, j].sum() > 0]
        assert got[k] == pytest.approx(np.mean(aps), abs=1e-12)


def test_weighted_macro_f1_equals_sklearn_on_resampled_arrays():
    rng = np.random.default_rng(2)
    n, c = 40, 3
    targets = (rng.random((n, c)) < 0.4).astype(np.uint8)
    probs = rng.random((n, c))
    thr = np.array([0.5, 0.3, 0.7])
    idx, w = _resampled(n, rng, 10)
    got = stats.weighted_macro_f1(probs, targets, w, thr)
    for k in range(10):
        p, t = probs[idx[k]], targets[idx[k]]
        ref = f1_score(t, (p >= thr).astype(int), average="macro", zero_division=0)
        assert got[k] == pytest.approx(ref, abs=1e-12)


def test_bootstrap_p_and_interval():
    # difference 0.03 with bootstrap standard error 0.01: z = 3, p = 2 (1 - Phi(3)) = 0.0026998
    draws = np.r_[np.full(500, 0.02), np.full(500, 0.04)]
    se = draws.std(ddof=1)
    assert stats.bootstrap_p(0.03, draws) == pytest.approx(2 * sps.norm.sf(0.03 / se))
    assert stats.bootstrap_p(0.03, draws) == pytest.approx(0.0027, abs=1e-4)
    assert stats.bootstrap_p(0.0, np.zeros(100)) == 1.0
    lo, hi = stats.percentile_interval(np.arange(1001, dtype=float))
    assert (lo, hi) == pytest.approx((25.0, 975.0))


def test_bootstrap_compare_is_paired_on_the_same_resamples():
    rng = np.random.default_rng(5)
    n, c = 300, 3
    targets = (rng.random((n, c)) < 0.3).astype(np.uint8)
    noise = rng.standard_normal((n, c))
    sign = 2.0 * targets - 1.0
    weak = 1 / (1 + np.exp(-(0.8 * sign + noise)))
    strong = 1 / (1 + np.exp(-(1.6 * sign + noise)))
    runs = {"base": (weak, targets), "copy": (weak.copy(), targets), "strong": (strong, targets)}
    observed, draws = stats.bootstrap_metric(runs, stats.weighted_macro_ap, n_resamples=300, seed=0)
    assert observed["base"] == pytest.approx(
        np.mean([average_precision_score(targets[:, j], weak[:, j]) for j in range(c)])
    )
    rows = {r.point: r for r in stats.bootstrap_compare(observed, draws, "base")}
    # Same predictions on the same resamples: a difference of exactly zero in every resample.
    assert rows["copy"].diff == 0 and rows["copy"].lo == 0 and rows["copy"].hi == 0 and rows["copy"].p == 1.0
    assert rows["strong"].p < 0.001 and rows["strong"].lo > 0
    assert "single seed" in rows["strong"].method


def test_weighted_metrics_equal_locbench_compute_metrics_on_resampled_arrays():
    # The bootstrap must score a resample exactly as the engine scores a validation set.
    from locbench.metrics import compute_metrics

    rng = np.random.default_rng(4)
    n, c = 60, 5
    targets = (rng.random((n, c)) < 0.25).astype(np.uint8)
    targets[:, 4] = 0
    targets[0, 4] = 1  # rare: absent from some resamples, where it must be left out of both averages
    probs = np.round(rng.random((n, c)), 2)
    thr = np.array([0.5, 0.4, 0.6, 0.3, 0.5])
    names = [f"k{j}" for j in range(c)]
    idx, w = _resampled(n, rng, 15)
    got_ap = stats.weighted_macro_ap(probs, targets, w)
    got_f1 = stats.weighted_macro_f1(probs, targets, w, thr)
    absent_seen = False
    for k in range(15):
        ref = compute_metrics(probs[idx[k]], targets[idx[k]], class_names=names, thresholds=thr)
        absent_seen |= bool(ref["absent_classes"])
        assert got_ap[k] == pytest.approx(ref["map"], abs=1e-12)
        assert got_f1[k] == pytest.approx(ref["macro_f1"], abs=1e-12)
    assert absent_seen


def test_error_bars_never_negative_when_an_interval_excludes_the_estimate():
    from locbench.report.plots import _err

    bars = _err([0.266, 0.1], [0.590, 0.3], [0.260, 0.2])
    assert (bars >= 0).all()
    assert bars[0, 0] == 0.0 and np.isclose(bars[1, 0], 0.33)
    assert np.allclose(bars[:, 1], [0.1, 0.1])


@pytest.mark.parametrize("min_positives", [1, 3])
def test_retuned_f1_equals_tuning_each_resample_then_scoring_it(min_positives: int):
    # Tuned-threshold F1 on the tuning images: every resample re-tunes (tune_thresholds) and scores at those
    # thresholds (compute_metrics), ties and classes too rare to tune included.
    from locbench.metrics import compute_metrics, tune_thresholds

    rng = np.random.default_rng(7)
    n, c = 50, 5
    targets = (rng.random((n, c)) < 0.3).astype(np.uint8)
    targets[:, 4] = 0
    targets[:3, 4] = 1  # rare: untuned (fallback) or absent in many resamples
    probs = np.round(rng.random((n, c)), 1)  # many tied scores
    fallback = np.array([0.5, 0.4, 0.6, 0.3, 0.45])
    names = [f"k{j}" for j in range(c)]
    idx, w = _resampled(n, rng, 40)
    got = stats.weighted_macro_f1_retuned(probs, targets, w, fallback=fallback, min_positives=min_positives, chunk=7)
    for k in range(40):
        p, t = probs[idx[k]], targets[idx[k]]
        thr = tune_thresholds(p, t, min_positives=min_positives)
        thr = np.where(t.sum(axis=0) < min_positives, fallback, thr)
        ref = compute_metrics(p, t, class_names=names, thresholds=thr)["macro_f1"]
        assert got[k] == pytest.approx(ref, abs=1e-12)
    # on all images (weights 1) it is the tuned F1 at the thresholds tuned on them, the summary.json figure
    full = compute_metrics(probs, targets, class_names=names, thresholds=tune_thresholds(probs, targets))
    assert stats.weighted_macro_f1_retuned(probs, targets, np.ones((1, n)))[0] == pytest.approx(full["macro_f1"])


def test_retuned_f1_is_never_below_thresholds_tuned_once_in_any_resample():
    # Per resample, re-tuning takes the best cut, so it is at least the F1 of the thresholds tuned on all images;
    # on scores without signal the thresholds tuned once do not fit a resample's noise, re-tuned ones do.
    from locbench.metrics import tune_thresholds

    rng = np.random.default_rng(11)
    n, c = 100, 10
    targets = (rng.random((n, c)) < 0.15).astype(np.uint8)
    probs = rng.random((n, c))
    w = stats.resample_weights(n, 400, seed=0)
    fixed = stats.weighted_macro_f1(probs, targets, w, tune_thresholds(probs, targets))
    retuned = stats.weighted_macro_f1_retuned(probs, targets, w)
    assert np.all(retuned >= fixed - 1e-12) and np.mean(retuned) > np.mean(fixed) + 0.01
    assert stats.score_resamples(stats.weighted_macro_f1_retuned, probs, targets, w) == pytest.approx(retuned)


def test_basic_interval_reflects_the_percentiles_around_the_estimate():
    draws = np.arange(1001, dtype=float) / 1000  # percentiles 0.025 and 0.975
    assert stats.basic_interval(0.4, draws) == pytest.approx((2 * 0.4 - 0.975, 2 * 0.4 - 0.025))


def test_basic_retuned_interval_covers_fresh_images_where_percentile_intervals_do_not():
    # No signal, HPA-like prevalences, 100 images: the F1 of thresholds tuned on them, measured on fresh images,
    # lies below every percentile interval; the basic interval of the re-tuned statistic reaches down to it.
    from locbench.metrics import compute_metrics, tune_thresholds

    prev = np.array([0.4, 0.08, 0.12, 0.05, 0.06, 0.1, 0.03, 0.09, 0.02, 0.05, 0.04, 0.03])
    rng = np.random.default_rng(0)
    n, c = 100, prev.size
    names = [str(j) for j in range(c)]
    hits = {"percentile, tuned once": 0, "percentile, re-tuned": 0, "basic, re-tuned": 0}
    for _ in range(16):
        t = (rng.random((n, c)) < prev).astype(np.uint8)
        p = rng.random((n, c))
        thr = tune_thresholds(p, t)
        observed = compute_metrics(p, t, class_names=names, thresholds=thr)["macro_f1"]
        t2 = (rng.random((20000, c)) < prev).astype(np.uint8)
        fresh = compute_metrics(rng.random((20000, c)), t2, class_names=names, thresholds=thr)["macro_f1"]
        w = stats.resample_weights(n, 300, seed=int(rng.integers(1 << 30)))
        retuned = stats.weighted_macro_f1_retuned(p, t, w)
        for key, (lo, hi) in {
            "percentile, tuned once": stats.percentile_interval(stats.weighted_macro_f1(p, t, w, thr)),
            "percentile, re-tuned": stats.percentile_interval(retuned),
            "basic, re-tuned": stats.basic_interval(observed, retuned),
        }.items():
            hits[key] += lo <= fresh <= hi
    # measured: 1, 0 and 12 of 16
    assert hits["percentile, re-tuned"] <= hits["percentile, tuned once"] <= 3
    assert hits["basic, re-tuned"] >= 8
