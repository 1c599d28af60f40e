"""Statistics for comparing sweep points: intervals over seeds, paired tests, Holm, ANOVA, image bootstrap.

Everything here is a pure function of numbers; :mod:`locbench.report.collect` turns run folders into those
numbers. Conventions:

- A *point* is one point of the grid (one value per axis); its runs differ only in the seed, and the same seed means
  the same train/validation split, so runs of two points with the same seed form a *pair*.
- Intervals are two-sided 95 % by default. With n >= 2 values they use Student's t with n - 1 degrees of
  freedom; with one value there is no interval (NaN bounds), never a made-up one.
- p-values of a family of tests are adjusted with Holm's step-down method (which controls the family-wise
  error rate without assuming independence).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse, stats

log = logging.getLogger(__name__)

T_METHOD = "Student t over seeds"
BOOT_METHOD = "bootstrap over validation images (single seed)"


@dataclass(frozen=True)
class Estimate:
    """A mean with its spread and a confidence interval.

    ``lo``/``hi`` are NaN when the interval cannot be computed (n < 2); ``method`` says how it was made.
    """

    mean: float
    std: float
    lo: float
    hi: float
    n: int
    method: str

    @property
    def has_ci(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)


@dataclass(frozen=True)
class Comparison:
    """One point against the baseline: the difference (point - baseline) and its test.

    ``p`` is the raw p-value, ``p_adj`` the Holm-adjusted one (both NaN when no test was possible;
    ``note`` says why).
    """

    point: str
    baseline: str
    n: int
    diff: float
    lo: float
    hi: float
    p: float
    p_adj: float
    method: str
    note: str = ""

    @property
    def tested(self) -> bool:
        return math.isfinite(self.p_adj)

    @property
    def significant(self) -> bool:
        return self.tested and self.p_adj < 0.05


def t_interval(values: Sequence[float], *, conf: float = 0.95) -> Estimate:
    """Mean, sample standard deviation and the Student-t confidence interval of ``values``.

    Args:
        values: one number per seed (NaNs are dropped).
        conf: two-sided confidence level.

    Returns:
        An :class:`Estimate`; with a single value the bounds are NaN and the method says so.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, 0, "no values")
    mean = float(x.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, math.nan, 1, "single value, no interval")
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + conf / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(mean, std, mean - half, mean + half, n, T_METHOD)


def paired_t(
    base: Mapping[int, float], other: Mapping[int, float], *, conf: float = 0.95
) -> tuple[int, float, float, float, float]:
    """Paired comparison of two points matched by seed.

    Args:
        base: seed -> metric of the baseline point.
        other: seed -> metric of the compared point.
        conf: two-sided confidence level of the interval of the mean difference.

    Returns:
        ``(n_pairs, mean_diff, lo, hi, p)`` where the difference is ``other - base``; ``p`` is the two-sided
        paired t-test p-value, NaN with fewer than two pairs or when every difference is identical (a
        t statistic over zero variance is not a test).
    """
    seeds = sorted(set(base) & set(other))
    d = np.asarray([other[s] - base[s] for s in seeds], dtype=np.float64)
    n = int(d.size)
    if n == 0:
        return 0, math.nan, math.nan, math.nan, math.nan
    est = t_interval(d.tolist(), conf=conf)
    if n < 2 or not np.ptp(d) > 0:
        return n, est.mean, est.lo, est.hi, math.nan
    p = float(stats.ttest_rel([other[s] for s in seeds], [base[s] for s in seeds]).pvalue)
    return n, est.mean, est.lo, est.hi, p


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjustment; NaN entries (no test) stay NaN and do not count in the family.

    Written by hand because scipy only ships Benjamini-Hochberg (``scipy.stats.false_discovery_control``) and
    statsmodels is not a dependency: adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)) over sorted p.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out.tolist()
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def compare_to_baseline(
    per_point: Mapping[str, Mapping[int, float]], baseline: str, *, conf: float = 0.95
) -> list[Comparison]:
    """Paired t comparisons of every point against ``baseline``, Holm-adjusted across all of them.

    Args:
        per_point: point id -> {seed: metric}, in display order.
        baseline: the baseline point id (a key of ``per_point``).
        conf: confidence level of the difference intervals.

    Returns:
        One :class:`Comparison` per point other than the baseline, in the order of ``per_point``.
    """
    rows = []
    for point, values in per_point.items():
        if point == baseline:
            continue
        n, diff, lo, hi, p = paired_t(per_point[baseline], values, conf=conf)
        note = ""
        if n == 0:
            note = "no seed in common with the baseline"
        elif n == 1:
            note = "one paired seed: no test"
        elif not math.isfinite(p):
            note = "identical differences on every seed: no test"
        rows.append((point, n, diff, lo, hi, p, note))
    adj = holm([r[5] for r in rows])
    return [
        Comparison(point, baseline, n, diff, lo, hi, p, pa, "paired t-test over seeds, Holm-adjusted", note)
        for (point, n, diff, lo, hi, p, note), pa in zip(rows, adj, strict=True)
    ]


# --------------------------------------------------------------------------------------------------------------
# Factorial analysis: main effects and two-way interactions


@dataclass(frozen=True)
class AnovaTest:
    """An F-test of one term (a main effect or an interaction) by comparing nested OLS fits."""

    term: str
    f: float
    df1: int
    df2: int
    p: float
    p_adj: float = math.nan


def _dummies(labels: Sequence[str]) -> np.ndarray:
    """Treatment-coded indicator columns (first level dropped) of a categorical variable."""
    levels = list(dict.fromkeys(labels))
    return np.asarray([[1.0 if lab == lev else 0.0 for lev in levels[1:]] for lab in labels]).reshape(
        len(labels), max(len(levels) - 1, 0)
    )


def _rss_rank(X: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    return float(resid @ resid), int(np.linalg.matrix_rank(X))


def factorial_anova(
    y: Sequence[float],
    factors: Mapping[str, Sequence[str]],
    *,
    block: Sequence[str] | None = None,
) -> list[AnovaTest]:
    """Type II F-tests of every main effect and every two-way interaction, by nested OLS fits.

    The full model is ``y ~ seed + all main effects + all two-way interactions``; its residual mean square (the
    seed-to-seed noise plus any higher-order interaction) is the error term of every test. An interaction is
    tested by dropping it from the full model; a main effect by dropping it from the additive model
    ``y ~ seed + all main effects`` (Type II sums of squares, as ``statsmodels``' ``anova_lm(typ=2)``).
    p-values are Holm-adjusted across all returned terms.

    Args:
        y: one value per run (point x seed).
        factors: axis name -> level of each run (same length as ``y``).
        block: seed of each run; seeds enter as a blocking factor because the same seed is the same split.

    Returns:
        One :class:`AnovaTest` per main effect then per pair of axes with at least two levels each; terms that
        cannot be tested (no residual degrees of freedom, confounded, or a perfect fit) get NaN p.
    """
    yv = np.asarray(y, dtype=np.float64)
    n = yv.size
    names = [k for k, v in factors.items() if len(set(v)) > 1]
    base: dict[str, np.ndarray] = {"(intercept)": np.ones((n, 1))}
    if block is not None and len(set(block)) > 1:
        base["(seed)"] = _dummies([str(b) for b in block])
    main = {k: _dummies([str(v) for v in factors[k]]) for k in names}
    inter: dict[str, np.ndarray] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            inter[f"{a} x {b}"] = np.einsum("ni,nj->nij", main[a], main[b]).reshape(n, -1)
    additive = {**base, **main}
    full = {**additive, **inter}
    rss_f, rank_f = _rss_rank(np.hstack(list(full.values())), yv)
    df2 = n - rank_f
    tests = []
    for term in list(main) + list(inter):
        with_term = additive if term in main else full
        rss_w, rank_w = (rss_f, rank_f) if with_term is full else _rss_rank(np.hstack(list(additive.values())), yv)
        rss_r, rank_r = _rss_rank(np.hstack([c for k, c in with_term.items() if k != term]), yv)
        df1 = rank_w - rank_r
        if df1 <= 0 or df2 <= 0 or rss_f <= 1e-12 * float(np.sum((yv - yv.mean()) ** 2)):
            # Confounded term, no residual degrees of freedom, or a perfect fit: no noise to test against.
            tests.append(AnovaTest(term, math.nan, df1, df2, math.nan))
            continue
        f = ((rss_r - rss_w) / df1) / (rss_f / df2)
        tests.append(AnovaTest(term, float(f), df1, df2, float(stats.f.sf(f, df1, df2))))
    adj = holm([t.p for t in tests])
    return [AnovaTest(t.term, t.f, t.df1, t.df2, t.p, pa) for t, pa in zip(tests, adj, strict=True)]


def level_means_over_seeds(
    values: Mapping[tuple[str, int], float], levels_of_point: Mapping[str, str], *, conf: float = 0.95
) -> dict[str, Estimate]:
    """Mean metric per level of one axis, averaged over the other axes, with a t interval over seeds.

    For each seed, the runs of that seed whose point has the level are averaged (a marginal mean per seed);
    the level's estimate is the mean of those per-seed marginals and its interval is Student t over seeds.

    Args:
        values: (point id, seed) -> metric, done runs only.
        levels_of_point: point id -> this axis' level.
        conf: confidence level.
    """
    per_level: dict[str, dict[int, list[float]]] = {}
    for (point, seed), v in values.items():
        per_level.setdefault(levels_of_point[point], {}).setdefault(seed, []).append(v)
    ordered = list(dict.fromkeys(levels_of_point.values()))
    return {
        lev: t_interval([float(np.mean(vs)) for _, vs in sorted(per_level[lev].items())], conf=conf)
        for lev in ordered
        if lev in per_level
    }


# --------------------------------------------------------------------------------------------------------------
# Bootstrap over validation images (single-seed sweeps)


def resample_weights(n_items: int, n_resamples: int, *, seed: int = 0) -> np.ndarray:
    """``(n_resamples, n_items)`` counts: how often each image is drawn in each bootstrap resample.

    Using counts instead of index lists lets every run be scored on the same resamples (pairing) with
    vectorised weighted metrics; weighted metrics equal the metrics of the resampled arrays exactly.
    """
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_resamples).astype(np.float64)


def weighted_macro_ap(probs: np.ndarray, targets: np.ndarray, weights: np.ndarray, *, chunk: int = 250) -> np.ndarray:
    """Macro average precision of one run under each row of ``weights`` (bootstrap counts).

    Average precision follows scikit-learn's step definition (sum over distinct score thresholds of the recall
    increase times precision), so for integer counts it equals ``average_precision_score`` on the resampled
    arrays. Written by hand because scoring 1000 resamples through scikit-learn is ~100x slower. A class with
    no positive in a resample has no AP there and is left out of that resample's macro mean.

    Args:
        probs: ``(N, C)`` scores.
        targets: ``(N, C)`` 0/1 labels.
        weights: ``(B, N)`` non-negative counts.

    Returns:
        ``(B,)`` macro AP per resample.
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    B, (N, C) = weights.shape[0], probs.shape
    # AP only changes at score thresholds whose tie group holds a positive, so per class we need, at the end of
    # each such group k, the weight of all images ranked up to it (total_k) and of the positives (tp_k). Both are
    # cumulative sums of per-segment sums; one sparse (segments x images) matrix times the (images x resamples)
    # weights gives every segment sum of every class at once, with no per-resample sorting or copying.
    rows, cols, spans = [], [], []
    offset = 0
    for c in range(C):
        y = targets[:, c] > 0
        if not y.any():
            spans.append(None)
            continue
        order = np.argsort(-probs[:, c], kind="stable")
        s = probs[order, c]
        new_group = np.r_[True, s[1:] != s[:-1]]
        group = np.cumsum(new_group) - 1
        ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
        pos_sorted = np.flatnonzero(y[order])
        kends = ends[np.unique(group[pos_sorted])]
        k = kends.size
        seg = np.searchsorted(kends, np.arange(N), side="left")  # segment of each sorted position
        keep = seg < k
        rows += [order[keep], order[pos_sorted]]
        cols += [offset + seg[keep], offset + k + seg[pos_sorted]]
        spans.append((offset, k))
        offset += 2 * k
    if offset == 0:
        return np.full(B, np.nan)
    r = np.concatenate(rows)
    m = sparse.csr_matrix((np.ones(r.size), (np.concatenate(cols), r)), shape=(offset, N))
    ap = np.full((B, C), np.nan)
    # Resamples in chunks: the segment sums are (segments x chunk), a few MB whatever the number of resamples.
    for start in range(0, B, chunk):
        stop = min(B, start + chunk)
        seg_sums = np.asarray(m @ weights[start:stop].T)
        for c, span in enumerate(spans):
            if span is None:
                continue
            off, k = span
            total = np.cumsum(seg_sums[off : off + k], axis=0)
            tp = np.cumsum(seg_sums[off + k : off + 2 * k], axis=0)
            d_tp = np.diff(tp, axis=0, prepend=0.0)
            pos = tp[-1]
            with np.errstate(invalid="ignore", divide="ignore"):
                precision = np.where(total > 0, tp / np.where(total > 0, total, 1.0), 0.0)
                ap[start:stop, c] = np.where(
                    pos > 0, np.sum(d_tp * precision, axis=0) / np.where(pos > 0, pos, 1.0), np.nan
                )
    with np.errstate(invalid="ignore"):
        return np.nanmean(ap, axis=1)


def weighted_macro_f1(
    probs: np.ndarray, targets: np.ndarray, weights: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """Macro F1 of one run at fixed per-class ``thresholds`` under each row of ``weights``.

    As :func:`locbench.metrics.compute_metrics` on the resampled arrays: a class with no positive in a resample
    is absent there and left out of that resample's mean; a present class with nothing predicted scores 0.
    """
    weights = np.atleast_2d(weights)
    pred = probs >= np.asarray(thresholds, dtype=np.float64)[None, :]
    t = targets > 0
    c = t.shape[1]
    # One product gives, per resample and class, the weighted counts of TP, predicted and true positives.
    counts = weights @ np.hstack([pred & t, pred, t]).astype(np.float64)
    tp, n_pred, n_true = counts[:, :c], counts[:, c : 2 * c], counts[:, 2 * c :]
    denom = n_pred + n_true  # = 2 TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(n_true > 0, np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1.0), 0.0), np.nan)
        return np.nanmean(f1, axis=1)


def bootstrap_metric(
    runs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    score: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    chunk: int = 200,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Score every run on the full validation set and on the same bootstrap resamples of images.

    Args:
        runs: name -> (probs, targets), all rows aligned to the same image ids.
        score: ``score(probs, targets, weights) -> (B,)`` (e.g. :func:`weighted_macro_ap`).
        n_resamples: number of bootstrap resamples.
        seed: seed of the resampling (the report is reproducible).
        chunk: resamples scored at once (bounds memory to ``chunk x N`` floats per array).

    Returns:
        ``(observed, draws)``: name -> metric on all images, and name -> ``(n_resamples,)`` resampled metrics.
    """
    if not runs:
        return {}, {}
    n = next(iter(runs.values()))[0].shape[0]
    w_all = resample_weights(n, n_resamples, seed=seed)
    observed, draws = {}, {}
    for name, (probs, targets) in runs.items():
        observed[name] = float(score(probs, targets, np.ones((1, n)))[0])
        draws[name] = score_resamples(score, probs, targets, w_all, chunk=chunk)
    return observed, draws


def score_resamples(
    score: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    probs: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    *,
    chunk: int = 200,
) -> np.ndarray:
    """``score`` under every row of ``weights``, ``chunk`` rows at a time (bounds memory to chunk x N)."""
    if score is weighted_macro_ap:
        return weighted_macro_ap(probs, targets, weights, chunk=chunk)  # sorts once, chunks internally
    return np.concatenate([score(probs, targets, weights[i : i + chunk]) for i in range(0, len(weights), chunk)])


def percentile_interval(draws: np.ndarray, *, conf: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (NaN resamples dropped)."""
    d = draws[np.isfinite(draws)]
    if d.size == 0:
        return math.nan, math.nan
    a = (1 - conf) / 2
    return float(np.quantile(d, a)), float(np.quantile(d, 1 - a))


def bootstrap_p(diff: float, diff_draws: np.ndarray) -> float:
    """Two-sided p-value of "the difference is zero" from the bootstrap standard error (normal approximation).

    The share of resamples on the other side of zero cannot go below 1 / (B + 1), so with many comparisons a
    Holm adjustment would call even a huge difference non-significant just because B is finite; the bootstrap
    standard error has no such floor. Identical runs (every resampled difference zero) get p = 1.
    """
    d = diff_draws[np.isfinite(diff_draws)]
    if d.size < 2 or not math.isfinite(diff):
        return math.nan
    se = float(d.std(ddof=1))
    if se == 0.0:
        return 1.0 if diff == 0.0 and not np.any(d) else math.nan
    return float(2 * stats.norm.sf(abs(diff) / se))


def bootstrap_compare(
    observed: Mapping[str, float], draws: Mapping[str, np.ndarray], baseline: str, *, conf: float = 0.95
) -> list[Comparison]:
    """Every run against ``baseline`` on the same resampled images; Holm-adjusted bootstrap p-values."""
    rows = []
    for point in observed:
        if point == baseline:
            continue
        dd = draws[point] - draws[baseline]
        diff = observed[point] - observed[baseline]
        lo, hi = percentile_interval(dd, conf=conf)
        rows.append((point, diff, lo, hi, bootstrap_p(diff, dd), dd.size))
    adj = holm([r[4] for r in rows])
    return [
        Comparison(
            point,
            baseline,
            1,
            diff,
            lo,
            hi,
            p,
            pa,
            f"{BOOT_METHOD}, {b} resamples: percentile CI, p from the bootstrap standard error, Holm-adjusted",
        )
        for (point, diff, lo, hi, p, b), pa in zip(rows, adj, strict=True)
    ]
