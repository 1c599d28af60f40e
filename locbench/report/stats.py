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

import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse, stats

from locbench.metrics import FALLBACK_THRESHOLD, MIN_TUNE_POSITIVES

log = logging.getLogger(__name__)

T_METHOD = "Student t over seeds"
BOOT_METHOD = "bootstrap over validation images (single seed)"
PAIRED_T_METHOD = "paired t-test over seeds"


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

    ``p`` is the raw p-value (NaN when no test was possible; ``note`` says why), ``p_adj`` its Holm-adjusted value
    once the caller has put it in a family of tests (see :func:`holm`).
    """

    point: str
    baseline: str
    n: int
    diff: float
    lo: float
    hi: float
    p: float
    method: str
    note: str = ""
    p_adj: float = math.nan

    @property
    def tested(self) -> bool:
        return math.isfinite(self.p)

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
    statsmodels is only a test dependency (the tests check this against ``multipletests(method="holm")``):
    adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)) over sorted p.
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
    """Paired t comparisons of every point against ``baseline`` (raw p; the caller adjusts over its family).

    Args:
        per_point: point id -> {seed: metric}, in display order.
        baseline: the baseline point id (a key of ``per_point``).
        conf: confidence level of the difference intervals.

    Returns:
        One :class:`Comparison` per point other than the baseline, in the order of ``per_point``.
    """
    return [paired_compare(per_point, point, baseline, conf=conf) for point in per_point if point != baseline]


def paired_compare(
    per_point: Mapping[str, Mapping[int, float]], point: str, other: str, *, conf: float = 0.95
) -> Comparison:
    """``point`` against ``other`` by a paired t-test over their common seeds (raw p, with a note when untested)."""
    n, diff, lo, hi, p = paired_t(per_point[other], per_point[point], conf=conf)
    note = ""
    if n == 0:
        note = f"no seed in common with {other}"
    elif n == 1:
        note = "one paired seed: no test"
    elif not math.isfinite(p):
        note = "identical differences on every seed: no test"
    return Comparison(point, other, n, diff, lo, hi, p, PAIRED_T_METHOD, note)


# --------------------------------------------------------------------------------------------------------------
# Factorial analysis: main effects and two-way interactions


@dataclass(frozen=True)
class AnovaTest:
    """An F-test of one term (a main effect or an interaction) by comparing nested OLS fits.

    ``p_adj`` is set by the caller once the family of tests is known (see :func:`holm`); ``note`` says why a term
    has no test or no adjusted p-value.
    """

    term: str
    f: float
    df1: int
    df2: int
    p: float
    p_adj: float = math.nan
    note: str = ""


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


def _term_columns(main: Mapping[str, np.ndarray], term: tuple[str, ...]) -> np.ndarray:
    """Columns of a term: the row-wise products of its factors' treatment dummies (as patsy builds ``a:b``)."""
    cols = main[term[0]]
    for name in term[1:]:
        cols = np.einsum("ni,nj->nij", cols, main[name]).reshape(cols.shape[0], -1)
    return cols


def anova_terms(names: Sequence[str], max_order: int) -> list[tuple[str, ...]]:
    """Every main effect and interaction of ``names`` up to ``max_order`` factors, lower orders first."""
    return [t for k in range(1, max_order + 1) for t in itertools.combinations(names, k)]


def factorial_anova(
    y: Sequence[float],
    factors: Mapping[str, Sequence[str]],
    *,
    block: Sequence[str] | None = None,
    max_order: int | None = None,
) -> list[AnovaTest]:
    """Type II F-tests of every main effect and interaction, by nested OLS fits.

    The full model is ``y ~ seed + every term up to max_order factors`` (``C()`` factors, treatment coding);
    its residual mean square is the error term of every test. The sum of squares of a term T is
    ``RSS(every term that does not contain T, without T) - RSS(the same plus T)``: T is adjusted for every term
    except the higher-order ones that contain it. This is the definition of ``statsmodels``'
    ``anova_lm(ols(...), typ=2)`` (which computes it as Wald tests on the full model); degrees of freedom are
    ranks, so missing runs and empty cells of the grid are handled as a regression on the runs that exist.

    Args:
        y: one value per run (point x seed).
        factors: axis name -> level of each run (same length as ``y``); axes with one level are left out.
        block: seed of each run; seeds enter as a blocking factor because the same seed is the same split.
        max_order: the highest interaction in the model. Default: every interaction of the varying axes when
            that leaves residual degrees of freedom (replicated by seeds), else one order less, so the
            highest-order interaction serves as the error term (one run per point).

    Returns:
        One :class:`AnovaTest` per term (main effects, then two-way interactions, ...); terms that cannot be
        tested (no residual degrees of freedom, confounded, or a perfect fit) get NaN p and a note. ``p_adj``
        is left NaN: the caller adjusts over the family of tests it reports.
    """
    yv = np.asarray(y, dtype=np.float64)
    n = yv.size
    names = [k for k, v in factors.items() if len(set(v)) > 1]
    base = [np.ones((n, 1))]
    if block is not None and len(set(block)) > 1:
        base.append(_dummies([str(b) for b in block]))
    main = {k: _dummies([str(v) for v in factors[k]]) for k in names}
    cols = {t: _term_columns(main, t) for t in anova_terms(names, len(names))}
    if max_order is None:
        max_order = len(names)
        while max_order > 0:
            _, rank = _rss_rank(np.hstack(base + [c for t, c in cols.items() if len(t) <= max_order]), yv)
            if n - rank > 0:
                break
            max_order -= 1
    terms = anova_terms(names, max_order)

    def fit(keep: Sequence[tuple[str, ...]]) -> tuple[float, int]:
        return _rss_rank(np.hstack(base + [cols[t] for t in keep]), yv)

    rss_f, rank_f = fit(terms)
    df2 = n - rank_f
    perfect = rss_f <= 1e-12 * float(np.sum((yv - yv.mean()) ** 2))
    tests = []
    for term in terms:
        # Type II: drop the higher-order terms that contain ``term``; compare the rest with and without it.
        others = [t for t in terms if not (set(term) < set(t))]
        rss_w, rank_w = fit(others)
        rss_r, rank_r = fit([t for t in others if t != term])
        df1 = rank_w - rank_r
        label = " x ".join(term)
        if df1 <= 0:
            tests.append(AnovaTest(label, math.nan, df1, df2, math.nan, note="confounded with other terms"))
        elif df2 <= 0 or perfect:
            tests.append(AnovaTest(label, math.nan, df1, df2, math.nan, note="no residual degrees of freedom"))
        else:
            f = ((rss_r - rss_w) / df1) / (rss_f / df2)
            tests.append(AnovaTest(label, float(f), df1, df2, float(stats.f.sf(f, df1, df2))))
    return tests


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


class _RankedCuts:
    """Per class, the cuts of the ranked scores that can matter: the ends of tie groups holding a positive.

    AP only changes at such cuts, and the best F1 is always at one (moving a cut past negatives only adds false
    positives). At the end of each such group k we need the weight of every image ranked up to it (``total_k``)
    and of the positives among them (``tp_k``). Both are cumulative sums of per-segment sums; one sparse
    (segments x images) matrix times the (images x resamples) weights gives every segment sum of every class at
    once, with no per-resample sorting or copying.
    """

    def __init__(self, probs: np.ndarray, targets: np.ndarray) -> None:
        n, c = probs.shape
        rows, cols, self.spans = [], [], []
        offset = 0
        for j in range(c):
            y = targets[:, j] > 0
            if not y.any():
                self.spans.append(None)
                continue
            order = np.argsort(-probs[:, j], kind="stable")
            s = probs[order, j]
            group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
            ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
            pos_sorted = np.flatnonzero(y[order])
            kends = ends[np.unique(group[pos_sorted])]
            k = kends.size
            seg = np.searchsorted(kends, np.arange(n), side="left")  # segment of each sorted position
            keep = seg < k
            rows += [order[keep], order[pos_sorted]]
            cols += [offset + seg[keep], offset + k + seg[pos_sorted]]
            self.spans.append((offset, k))
            offset += 2 * k
        self.empty = offset == 0
        if not self.empty:
            r = np.concatenate(rows)
            self.matrix = sparse.csr_matrix((np.ones(r.size), (np.concatenate(cols), r)), shape=(offset, n))

    def cumulative(self, weights: np.ndarray) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per class, ``(total, tp)``: ``(cuts, B)`` weights ranked up to each cut, all and positive only."""
        seg_sums = np.asarray(self.matrix @ weights.T)
        out = []
        for span in self.spans:
            if span is None:
                out.append(None)
                continue
            off, k = span
            out.append((np.cumsum(seg_sums[off : off + k], axis=0), np.cumsum(seg_sums[off + k : off + 2 * k], axis=0)))
        return out


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
    B, C = weights.shape[0], probs.shape[1]
    cuts = _RankedCuts(probs, targets)
    if cuts.empty:
        return np.full(B, np.nan)
    ap = np.full((B, C), np.nan)
    # Resamples in chunks: the segment sums are (segments x chunk), a few MB whatever the number of resamples.
    for start in range(0, B, chunk):
        stop = min(B, start + chunk)
        for c, sums in enumerate(cuts.cumulative(weights[start:stop])):
            if sums is None:
                continue
            total, tp = sums
            d_tp = np.diff(tp, axis=0, prepend=0.0)
            pos = tp[-1]
            with np.errstate(invalid="ignore", divide="ignore"):
                precision = np.where(total > 0, tp / np.where(total > 0, total, 1.0), 0.0)
                ap[start:stop, c] = np.where(
                    pos > 0, np.sum(d_tp * precision, axis=0) / np.where(pos > 0, pos, 1.0), np.nan
                )
    with np.errstate(invalid="ignore"):
        return np.nanmean(ap, axis=1)


def weighted_macro_f1_retuned(
    probs: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    *,
    fallback: np.ndarray | None = None,
    min_positives: int = MIN_TUNE_POSITIVES,
    fixed: np.ndarray | None = None,
    chunk: int = 250,
) -> np.ndarray:
    """Macro F1 with thresholds re-tuned inside each resample, under each row of ``weights``.

    Equals :func:`locbench.metrics.tune_thresholds` run on each resampled array followed by
    :func:`locbench.metrics.compute_metrics` at those thresholds: per class, the best F1 over every cut of the
    ranked scores (F1 = 2 TP / (predicted + positives), the same cuts the exact threshold search visits). A class
    with fewer than ``min_positives`` positives in a resample keeps its ``fallback`` threshold there (default 0.5,
    as ``tune_thresholds``); a class with none is absent and left out of the mean. Classes marked in ``fixed``
    (untrainable ones: never predicted) keep their ``fallback`` threshold in every resample.

    Args:
        probs: ``(N, C)`` scores.
        targets: ``(N, C)`` 0/1 labels.
        weights: ``(B, N)`` non-negative counts.
        fallback: ``(C,)`` thresholds of classes too rare to tune; default 0.5 each.
        min_positives: fewest positives a class needs to be tuned (``tune_thresholds``' argument).
        fixed: ``(C,)`` bool, classes never re-tuned (e.g. untrainable, with fallback ``NEVER_PREDICTED``).
        chunk: resamples scored at once.

    Returns:
        ``(B,)`` macro F1 per resample.
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    B, C = weights.shape[0], probs.shape[1]
    fallback = np.full(C, FALLBACK_THRESHOLD) if fallback is None else np.asarray(fallback, dtype=np.float64)
    fixed = np.zeros(C, dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool)
    cuts = _RankedCuts(probs, targets)
    if cuts.empty:
        return np.full(B, np.nan)
    f1 = np.full((B, C), np.nan)
    for start in range(0, B, chunk):
        stop = min(B, start + chunk)
        w = weights[start:stop]
        at_fallback = None  # F1 at the fallback thresholds, computed only if some class is too rare to tune somewhere
        for c, sums in enumerate(cuts.cumulative(w)):
            if sums is None:
                continue
            total, tp = sums
            pos = tp[-1]
            with np.errstate(invalid="ignore", divide="ignore"):
                best = np.max(2.0 * tp / (total + pos), axis=0, initial=0.0)
            rare = (pos < min_positives) | fixed[c]
            if rare.any() and at_fallback is None:
                at_fallback = _weighted_f1_per_class(probs, targets, w, fallback)
            f1[start:stop, c] = np.where(rare, at_fallback[:, c], best) if rare.any() else best
    with np.errstate(invalid="ignore"):
        return np.nanmean(f1, axis=1)


def _weighted_f1_per_class(
    probs: np.ndarray, targets: np.ndarray, weights: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """``(B, C)`` F1 per class at fixed thresholds under each row of ``weights``; NaN where a class is absent."""
    pred = probs >= np.asarray(thresholds, dtype=np.float64)[None, :]
    t = targets > 0
    c = t.shape[1]
    # One product gives, per resample and class, the weighted counts of TP, predicted and true positives.
    counts = np.atleast_2d(weights) @ np.hstack([pred & t, pred, t]).astype(np.float64)
    tp, n_pred, n_true = counts[:, :c], counts[:, c : 2 * c], counts[:, 2 * c :]
    denom = n_pred + n_true  # = 2 TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_true > 0, np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1.0), 0.0), np.nan)


def weighted_macro_f1(
    probs: np.ndarray, targets: np.ndarray, weights: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """Macro F1 of one run at fixed per-class ``thresholds`` under each row of ``weights``.

    As :func:`locbench.metrics.compute_metrics` on the resampled arrays: a class with no positive in a resample
    is absent there and left out of that resample's mean; a present class with nothing predicted scores 0.
    """
    with np.errstate(invalid="ignore"):
        return np.nanmean(_weighted_f1_per_class(probs, targets, weights, thresholds), axis=1)


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
    if getattr(score, "func", score) in (weighted_macro_ap, weighted_macro_f1_retuned):
        return score(probs, targets, weights, chunk=chunk)  # sorts once, chunks internally
    return np.concatenate([score(probs, targets, weights[i : i + chunk]) for i in range(0, len(weights), chunk)])


def percentile_interval(draws: np.ndarray, *, conf: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (NaN resamples dropped)."""
    d = draws[np.isfinite(draws)]
    if d.size == 0:
        return math.nan, math.nan
    a = (1 - conf) / 2
    return float(np.quantile(d, a)), float(np.quantile(d, 1 - a))


def basic_interval(estimate: float, draws: np.ndarray, *, conf: float = 0.95) -> tuple[float, float]:
    """Basic (reverse percentile) bootstrap interval: ``2 estimate - upper percentile`` to ``2 estimate - lower``.

    Used where the statistic is biased in a known direction, as tuned-threshold F1 re-tuned on each resample:
    resamples score above the estimate by about as much as the estimate scores above the truth (each tuning fits
    its own images' noise), so the percentile interval would sit above the estimate, the wrong way round; the
    basic interval reflects that shift back.
    """
    lo, hi = percentile_interval(draws, conf=conf)
    return 2 * estimate - hi, 2 * estimate - lo


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
    observed: Mapping[str, float],
    draws: Mapping[str, np.ndarray],
    baseline: str,
    *,
    conf: float = 0.95,
    basic: bool = False,
) -> list[Comparison]:
    """Every run against ``baseline`` on the same resampled images (raw p; the caller adjusts over its family)."""
    return [
        bootstrap_pair(observed, draws, point, baseline, conf=conf, basic=basic)
        for point in observed
        if point != baseline
    ]


def bootstrap_pair(
    observed: Mapping[str, float],
    draws: Mapping[str, np.ndarray],
    point: str,
    other: str,
    *,
    conf: float = 0.95,
    basic: bool = False,
) -> Comparison:
    """``point`` against ``other`` on the same resampled images: CI (percentile, or basic with ``basic``) and
    bootstrap-SE p (raw)."""
    dd = draws[point] - draws[other]
    diff = observed[point] - observed[other]
    lo, hi = basic_interval(diff, dd, conf=conf) if basic else percentile_interval(dd, conf=conf)
    kind = "basic" if basic else "percentile"
    method = f"{BOOT_METHOD}, {dd.size} resamples: {kind} CI, p from the bootstrap standard error"
    return Comparison(point, other, 1, diff, lo, hi, bootstrap_p(diff, dd), method)
