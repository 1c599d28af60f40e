"""Turn a collected sweep into the numbers and sentences of a report.

Two modes, chosen from the data:

- ``seeds`` (some point has two or more finished seeds): intervals are Student t over seeds, comparisons are
  paired t-tests matched by seed, factorial effects are a Type II ANOVA with seed as a block.
- ``bootstrap`` (every point has one seed): intervals and comparisons come from resampling validation images
  (``predictions/val.npz``), every run scored on the same resamples so comparisons stay paired.

Findings are sentences generated only from tests: a claim of a difference needs a Holm-adjusted p < 0.05, and
every test whose result appears as a finding is in one Holm family (see :func:`adjust_family`).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np

from locbench.errors import LocbenchError
from locbench.metrics import FALLBACK_THRESHOLD, NEVER_PREDICTED, check_inputs, compute_metrics, never_predicted
from locbench.report import stats
from locbench.report.collect import METRICS, Point, RunResult, SweepResults

log = logging.getLogger(__name__)

ALPHA = 0.05


@dataclass(frozen=True)
class Finding:
    """One sentence of the findings; ``significant`` is True only when a Holm-adjusted test supports it."""

    text: str
    significant: bool


@dataclass(frozen=True)
class TopTwo:
    """The two configurations with the highest means, and the test of whether the first is ahead of the second.

    ``test`` compares ``best`` with ``second`` (difference = best - second). When one of the two is the baseline,
    the test is that comparison with the baseline (``shared``; it is in the family once, as that comparison).
    Otherwise the pair was picked by its means, so its raw p is multiplied by ``n_pairs``, the number of pairs of
    configurations the top two could have been (a Bonferroni bound over every pair, valid whichever pair the
    data picks), and that ``p_sel`` enters the Holm family of the findings.
    """

    best: str
    second: str
    test: stats.Comparison
    n_pairs: int
    p_sel: float
    shared: bool
    p_adj: float = math.nan

    @property
    def significant(self) -> bool:
        return math.isfinite(self.p_adj) and self.p_adj < ALPHA


@dataclass
class Analysis:
    """Everything computed for one report (one primary metric)."""

    metric: str
    mode: str  # "seeds" or "bootstrap"
    method: str  # how intervals were made, in words
    baseline: str  # point id
    baseline_why: str
    estimates: dict[str, dict[str, stats.Estimate]]  # point id -> metric -> estimate
    comparisons: list[stats.Comparison]
    main_effects: dict[str, dict[str, stats.Estimate]]  # axis -> level -> estimate
    interactions: dict[tuple[str, str], dict[tuple[str, str], float]]  # (axis a, axis b) -> (lev a, lev b) -> mean
    anova: list[stats.AnovaTest]
    anova_method: str
    findings: list[Finding]
    best: str  # point id with the highest mean metric (untested: see ``top``)
    notes: list[str] = field(default_factory=list)
    top: TopTwo | None = None
    family_size: int = 0  # tests in the one Holm family of the findings


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "p = n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def format_number(x: float, signed: bool = False) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def resolve_baseline(sweep: SweepResults, spec: str | None) -> tuple[str, str]:
    """The baseline grid point's id and a phrase saying why it was chosen.

    ``spec`` may be a point id, a run id (its point) or axis assignments ``loss=bce,aug=standard`` (matched on
    the short or dotted axis name). Without it: the study's baseline (loss=bce, aug=standard, the first
    backbone) when those axes exist, else the first point with a finished run.

    Raises:
        LocbenchError: ``spec`` matches no point, or matches several.
    """
    candidates = [c for c in sweep.points if c.done] or sweep.points
    if spec:
        for c in sweep.points:
            if c.point_id == spec:
                return c.point_id, f"chosen with --baseline {spec}"
        for r in sweep.runs:
            if r.run_id == spec:
                return r.point_id, f"the point of run {spec}, chosen with --baseline"
        if "=" in spec:
            want = _parse_assignments(sweep, spec)
            hits = [c for c in sweep.points if all(c.axes.get(k) == v for k, v in want.items())]
            if len(hits) == 1:
                return hits[0].point_id, f"chosen with --baseline {spec}"
            if len(hits) > 1:
                raise LocbenchError(
                    f"--baseline {spec}: matches {len(hits)} grid points ({', '.join(c.point_id for c in hits[:5])}); "
                    "give a value for every axis that varies"
                )
        known = ", ".join(c.point_id for c in sweep.points[:10])
        raise LocbenchError(
            f"--baseline {spec}: no grid point, run or axis assignment of {sweep.root} matches; "
            f"give a grid point id ({known}...), a run id, or axis=value pairs such as loss=bce"
        )
    want = {}
    for key, levels in sweep.axes.items():
        low = key.lower()
        if "loss" in low and "bce" in levels:
            want[key] = "bce"
        elif "aug" in low and "standard" in levels:
            want[key] = "standard"
        elif ("backbone" in low or low.startswith("model")) and levels:
            want[key] = levels[0]
    if want:
        hits = [c for c in candidates if all(c.axes.get(k) == v for k, v in want.items())]
        if hits:
            return hits[0].point_id, "the study's default baseline"
    if not candidates:
        raise LocbenchError(f"{sweep.root}: no grid points")
    return candidates[0].point_id, "the first grid point (no loss=bce / aug=standard point in this sweep)"


def _parse_assignments(sweep: SweepResults, spec: str) -> dict[str, str]:
    by_name = {**{k: k for k in sweep.axes}, **{v: k for k, v in sweep.axis_labels.items()}}
    out = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        key = by_name.get(name.strip())
        if key is None:
            raise LocbenchError(f"--baseline {spec}: unknown axis {name.strip()!r}; axes: {', '.join(by_name)}")
        out[key] = value.strip()
    return out


def _aligned_predictions(runs: dict[str, RunResult]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Predictions of each run on the same image ids in the same order (the intersection), with notes."""
    preds = {name: r.predictions() for name, r in runs.items()}
    missing = [n for n, p in preds.items() if p is None]
    notes = []
    for n, p in list(preds.items()):
        if p is None:
            continue
        try:
            check_inputs(p.probs, p.targets)
        except LocbenchError as e:
            notes.append(f"{runs[n].path / 'predictions' / 'val.npz'}: {e}; left out of the bootstrap")
            preds[n] = None
    preds = {n: p for n, p in preds.items() if p is not None}
    if missing:
        notes.append(f"no predictions/val.npz for {', '.join(missing)}: left out of the bootstrap")
    if not preds:
        return {}, notes
    common = set.intersection(*(set(p.ids.tolist()) for p in preds.values()))
    if any(len(p.ids) != len(common) for p in preds.values()):
        notes.append(f"validation ids differ between runs: the bootstrap uses the {len(common)} ids they share")
    ids = np.asarray(sorted(common))
    out = {}
    for n, p in preds.items():
        pos = {k: i for i, k in enumerate(p.ids.tolist())}
        idx = np.asarray([pos[k] for k in ids], dtype=np.int64)
        out[n] = (p.probs[idx].astype(np.float64), p.targets[idx])
    return out, notes


def _observed(metric: str, sweep: SweepResults, run: RunResult, probs: np.ndarray, targets: np.ndarray) -> float:
    """The metric on all validation images, by the project's definition (``locbench.metrics``)."""
    thr = run.thresholds(sweep.classes) if metric == "macro_f1_tuned" else 0.5
    names = sweep.classes if len(sweep.classes) == probs.shape[1] else [str(i) for i in range(probs.shape[1])]
    out = compute_metrics(probs, targets, class_names=names, thresholds=thr)
    v = out["map" if metric == "map" else "macro_f1"]
    return float(v) if v is not None else math.nan


def retunes(sweep: SweepResults, metric: str) -> bool:
    """Whether the bootstrap re-tunes thresholds for ``metric``: tuned-threshold F1 on the part it was tuned on."""
    return metric == "macro_f1_tuned" and sweep.part == "val"


def _score_fn(metric: str, sweep: SweepResults, run: RunResult):
    """:func:`score_fn` of a run, at its own thresholds."""
    return score_fn(metric, sweep, run.thresholds(sweep.classes))


def score_fn(metric: str, sweep: SweepResults, thresholds: np.ndarray):
    """The same metric as :func:`_observed` under bootstrap weights (vectorised, see ``stats.weighted_*``), for a
    run whose tuned thresholds are ``thresholds``.

    Tuned-threshold F1 measured on the images its thresholds were tuned on (``sweep.part == "val"``) re-tunes the
    thresholds inside every resample, so the interval includes the noise of tuning; on a test part the
    thresholds come from validation and stay fixed, as they would for new images.
    """
    if metric == "map":
        return stats.weighted_macro_ap
    if retunes(sweep, metric):
        # untrainable classes stay never predicted in every resample, as they are in the run's own thresholds
        never = never_predicted(thresholds)
        fallback = np.where(never, NEVER_PREDICTED, FALLBACK_THRESHOLD)
        return functools.partial(stats.weighted_macro_f1_retuned, fallback=fallback, fixed=never)
    thr = thresholds if metric == "macro_f1_tuned" else np.full(len(sweep.classes), 0.5)
    return lambda p, t, w: stats.weighted_macro_f1(p, t, w, thr)


def analyze(
    sweep: SweepResults,
    *,
    metric: str = "map",
    baseline: str | None = None,
    n_resamples: int = 1000,
    conf: float = 0.95,
    boot_seed: int = 0,
) -> Analysis:
    """Compute intervals, comparisons, main effects, interactions and findings for ``metric``.

    Args:
        sweep: from :func:`locbench.report.collect.collect`.
        metric: ``map``, ``macro_f1`` or ``macro_f1_tuned`` (validation, from ``summary.json``).
        baseline: see :func:`resolve_baseline`.
        n_resamples: bootstrap resamples (single-seed sweeps only).
        conf: confidence level of every interval.
        boot_seed: seed of the bootstrap resampling.

    Raises:
        LocbenchError: unknown metric, or no finished run to analyse.
    """
    if metric not in METRICS:
        raise LocbenchError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    done_points = [c for c in sweep.points if c.done]
    if not done_points:
        raise LocbenchError(
            f"{sweep.root}: no finished run (status 'done' with summary.json); nothing to compare yet. "
            f"{len(sweep.runs)} run folder(s): " + ", ".join(f"{r.run_id} ({r.status})" for r in sweep.runs[:10])
        )
    base_id, why = resolve_baseline(sweep, baseline)
    multi_seed = any(len(c.done) > 1 for c in done_points)
    notes: list[str] = []

    per_point = {c.point_id: c.by_seed(metric) for c in done_points}
    boot: tuple[dict, dict] = ({}, {})
    if multi_seed:
        estimates = {
            c.point_id: {m: stats.t_interval(list(c.by_seed(m).values()), conf=conf) for m in METRICS}
            for c in done_points
        }
        comparisons = stats.compare_to_baseline(per_point, base_id, conf=conf) if sweep.point(base_id).done else []
        main_effects = _main_effects_seeds(sweep, done_points, metric, conf)
        mode, method = "seeds", f"{int(conf * 100)}% CI: {stats.T_METHOD}"
    else:
        estimates, comparisons, main_effects, extra, boot = _bootstrap(
            sweep, done_points, metric, base_id, n_resamples, conf, boot_seed
        )
        notes += extra
        mode = "bootstrap"
        method = f"{int(conf * 100)}% CI: {stats.BOOT_METHOD}, {n_resamples} resamples, percentile intervals"
        if retunes(sweep, metric):
            method += " (basic intervals with thresholds re-tuned in each resample)"
    if not sweep.point(base_id).done:
        notes.append(f"the baseline {base_id} has no finished run: no comparison to it")

    y, factors, block = [], {k: [] for k in sweep.axes}, []
    for c in done_points:
        for seed, v in c.by_seed(metric).items():
            y.append(v)
            block.append(str(seed))
            for k in sweep.axes:
                factors[k].append(c.axes.get(k, ""))
    anova = stats.factorial_anova(y, factors, block=block if multi_seed else None) if sweep.axes else []
    anova = _mark_duplicates(anova, comparisons, mode)
    interactions = _interaction_tables(sweep, done_points, metric)
    ranked = sorted(done_points, key=lambda c: -_mean_or_neg_inf(estimates[c.point_id][metric].mean))
    best = ranked[0].point_id
    an = Analysis(
        metric,
        mode,
        method,
        base_id,
        why,
        estimates,
        comparisons,
        main_effects,
        interactions,
        anova,
        _anova_method(anova, multi_seed),
        [],
        best,
        notes,
        top=_top_two(ranked, estimates, metric, comparisons, per_point, boot, conf, retunes(sweep, metric)),
    )
    adjust_family(an)
    an.findings = findings(sweep, an)
    return an


def _anova_method(anova: list[stats.AnovaTest], multi_seed: bool) -> str:
    """How the ANOVA was made, in words: the model, its error term and the definition of the sums of squares."""
    if not anova:
        return "no ANOVA (no axis with two levels, or too few runs to leave a residual)"
    n_axes = sum(" x " not in t.term for t in anova)
    order = max(len(t.term.split(" x ")) for t in anova)
    terms = "main effects only" if order == 1 else f"main effects and interactions of up to {order} axes"
    ss = (
        "Type II sums of squares (each term adjusted for every term that does not contain it; the definition of "
        "statsmodels' anova_lm(typ=2))"
    )
    left = ""
    if order == n_axes - 1:
        left = "the interaction of the two axes" if n_axes == 2 else f"the interaction of all {n_axes} axes"
    elif order < n_axes:
        left = f"the interactions of {order + 1} or more axes"
    if multi_seed:
        error = "the variation between seeds" + (f" and {left}" if left else "")
        return f"{ss}; OLS on one value per run with seed as a block, {terms}; error term: {error}"
    return f"{ss}; OLS on one value per configuration (single seed), {terms}; error term: {left or 'none'}"


def _mark_duplicates(
    anova: list[stats.AnovaTest], comparisons: list[stats.Comparison], mode: str
) -> list[stats.AnovaTest]:
    """Leave out of the family an ANOVA term that is the same test as a comparison with the baseline.

    That happens in exactly one case: one axis varies, it has two levels, and runs are replicated by seed. Then
    the main effect's F-test (seed as a block) is the paired t-test of the one comparison (F = t squared, the
    same p, missing seeds included: a seed with one run is absorbed by its block). In every other design the two
    ask different questions (a comparison holds the other axes at the baseline's levels, a main effect averages
    over them; a main effect of three or more levels tests all of them at once), and both stay in the family.
    """
    if mode != "seeds" or len(anova) != 1 or len(comparisons) != 1 or " x " in anova[0].term:
        return anova
    t = anova[0]
    if t.df1 != 1 or not comparisons[0].tested:
        return anova
    return [replace(t, note="the same test as the comparison with the baseline; counted once, as that comparison")]


def _top_two(
    ranked: list[Point],
    estimates: dict[str, dict[str, stats.Estimate]],
    metric: str,
    comparisons: list[stats.Comparison],
    per_point: dict[str, dict[int, float]],
    boot: tuple[dict, dict],
    conf: float,
    basic: bool,
) -> TopTwo | None:
    """The highest and second-highest means and the test between them (see :class:`TopTwo`)."""
    ranked = [c for c in ranked if math.isfinite(estimates[c.point_id][metric].mean)]
    if len(ranked) < 2:
        return None
    best, second = ranked[0].point_id, ranked[1].point_id
    by_point = {c.point: c for c in comparisons}
    if second in by_point and by_point[second].baseline == best:  # the baseline is best: flip its comparison
        c = by_point[second]
        flipped = replace(c, point=best, baseline=second, diff=-c.diff, lo=-c.hi, hi=-c.lo)
        return TopTwo(best, second, flipped, 1, c.p, True)
    if best in by_point and by_point[best].baseline == second:
        return TopTwo(best, second, by_point[best], 1, by_point[best].p, True)
    observed, draws = boot
    if per_point and all(len(per_point[p]) > 1 for p in (best, second)) and not draws:
        test = stats.paired_compare(per_point, best, second, conf=conf)
    elif best in draws and second in draws:
        test = stats.bootstrap_pair(observed, draws, best, second, conf=conf, basic=basic)
    else:
        diff = estimates[best][metric].mean - estimates[second][metric].mean
        test = stats.Comparison(best, second, 0, diff, math.nan, math.nan, math.nan, "", "no paired values")
    n_pairs = len(ranked) * (len(ranked) - 1) // 2
    return TopTwo(best, second, test, n_pairs, min(1.0, test.p * n_pairs) if test.tested else math.nan, False)


def adjust_family(an: Analysis) -> None:
    """Holm-adjust, as one family, every test whose result appears as a finding; sets each ``p_adj``.

    The family: every comparison with the baseline, every ANOVA term not marked as a duplicate of a comparison,
    and the test of the highest mean against the second (unless it is a comparison with the baseline, already
    in). Untested entries (NaN p) do not count.
    """
    entries: list[tuple[str, int, float]] = [("cmp", i, c.p) for i, c in enumerate(an.comparisons)]
    entries += [("anova", i, t.p) for i, t in enumerate(an.anova) if not t.note]
    if an.top is not None and not an.top.shared:
        entries.append(("top", 0, an.top.p_sel))
    adjusted = stats.holm([p for _, _, p in entries])
    an.family_size = sum(math.isfinite(p) for _, _, p in entries)
    for (kind, i, _), pa in zip(entries, adjusted, strict=True):
        if kind == "cmp":
            an.comparisons[i] = replace(an.comparisons[i], p_adj=pa)
        elif kind == "anova":
            an.anova[i] = replace(an.anova[i], p_adj=pa)
        else:
            an.top = replace(an.top, p_adj=pa)
    if an.top is not None and an.top.shared:
        cmp = next(c for c in an.comparisons if {c.point, c.baseline} == {an.top.best, an.top.second})
        an.top = replace(an.top, p_adj=cmp.p_adj, test=replace(an.top.test, p_adj=cmp.p_adj))


def _mean_or_neg_inf(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _main_effects_seeds(sweep: SweepResults, points: list[Point], metric: str, conf: float) -> dict:
    values = {(c.point_id, s): v for c in points for s, v in c.by_seed(metric).items()}
    out = {}
    for key, levels in sweep.axes.items():
        if len(levels) < 2:
            continue
        est = stats.level_means_over_seeds(values, {c.point_id: c.axes.get(key, "") for c in points}, conf=conf)
        out[key] = {lev: est[lev] for lev in levels if lev in est}
    return out


def _interaction_tables(sweep: SweepResults, points: list[Point], metric: str) -> dict:
    keys = [k for k, v in sweep.axes.items() if len(v) > 1]
    out = {}
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            table: dict[tuple[str, str], list[float]] = {}
            for c in points:
                vals = list(c.by_seed(metric).values())
                if vals:
                    table.setdefault((c.axes.get(a, ""), c.axes.get(b, "")), []).append(float(np.mean(vals)))
            out[(a, b)] = {k: float(np.mean(v)) for k, v in table.items()}
    return out


def _bootstrap(
    sweep: SweepResults, points: list[Point], metric: str, base_id: str, n_resamples: int, conf: float, seed: int
) -> tuple[dict, list, dict, list[str], tuple[dict, dict]]:
    """Estimates, comparisons and main effects from resampled images; also ``(observed, draws)`` of ``metric``."""
    runs = {c.point_id: c.done[0] for c in points}
    aligned, notes = _aligned_predictions(runs)
    estimates: dict[str, dict[str, stats.Estimate]] = {}
    draws_by_metric: dict[str, tuple[dict, dict]] = {}
    # One set of resamples for every run and metric: comparisons are paired on the same resampled images.
    n_img = len(next(iter(aligned.values()))[0]) if aligned else 0
    w_all = stats.resample_weights(n_img, n_resamples, seed=seed) if aligned else None
    for m in METRICS:
        observed, draws = {}, {}
        for name, (p, t) in aligned.items():
            observed[name] = _observed(m, sweep, runs[name], p, t)
            draws[name] = stats.score_resamples(_score_fn(m, sweep, runs[name]), p, t, w_all)
        draws_by_metric[m] = (observed, draws)
    for c in points:
        estimates[c.point_id] = {}
        for m in METRICS:
            v = c.done[0].value(m)
            observed, draws = draws_by_metric[m]
            if c.point_id in draws:
                lo, hi = _interval(sweep, m, observed[c.point_id], draws[c.point_id], conf)
                if math.isfinite(v) and abs(v - observed[c.point_id]) > 1e-4:
                    notes.append(
                        f"{c.point_id}: {m} recomputed from predictions ({observed[c.point_id]:.4f}) differs "
                        f"from summary.json ({v:.4f}); the report shows summary.json"
                    )
                std = float(np.nanstd(draws[c.point_id], ddof=1))
                estimates[c.point_id][m] = stats.Estimate(v, std, lo, hi, 1, stats.BOOT_METHOD)
            else:
                estimates[c.point_id][m] = stats.t_interval([v])
    observed, draws = draws_by_metric[metric]
    basic = retunes(sweep, metric)
    comparisons = stats.bootstrap_compare(observed, draws, base_id, conf=conf, basic=basic) if base_id in draws else []
    main_effects = {}
    for key, levels in sweep.axes.items():
        if len(levels) < 2:
            continue
        main_effects[key] = {}
        for lev in levels:
            members = [c.point_id for c in points if c.axes.get(key) == lev and c.point_id in draws]
            if not members:
                continue
            marg = np.mean([draws[m] for m in members], axis=0)
            mean = float(np.mean([observed[m] for m in members]))
            lo, hi = _interval(sweep, metric, mean, marg, conf)
            main_effects[key][lev] = stats.Estimate(
                mean, float(np.std(marg, ddof=1)), lo, hi, len(members), stats.BOOT_METHOD
            )
    return estimates, comparisons, main_effects, notes, (observed, draws)


def _interval(sweep: SweepResults, metric: str, estimate: float, draws: np.ndarray, conf: float) -> tuple:
    """Percentile bootstrap interval, or the basic one where thresholds are re-tuned (see ``stats.basic_interval``)."""
    if retunes(sweep, metric):
        return stats.basic_interval(estimate, draws, conf=conf)
    return stats.percentile_interval(draws, conf=conf)


# --------------------------------------------------------------------------------------------------------------
# Findings: sentences, each backed by a test


def describe_vs(sweep: SweepResults, point: Point, base: Point) -> str:
    """``loss=focal (instead of bce; backbone, augment as in the baseline)``: the axes where ``point`` differs.

    The other varying axes are named so that a comparison (made at the baseline's levels of those axes) is not
    read as a main effect (averaged over them).
    """
    diff = [k for k in sweep.axes if point.axes.get(k) != base.axes.get(k)]
    if not diff:
        return point.point_id
    new = ", ".join(f"{sweep.axis_labels[k]}={point.axes.get(k)}" for k in diff)
    old = ", ".join(str(base.axes.get(k)) for k in diff)
    same = [sweep.axis_labels[k] for k in sweep.axes if k not in diff and len(sweep.axes[k]) > 1]
    held = f"; {', '.join(same)} as in the baseline" if same else ""
    return f"{new} (instead of {old}{held})"


def holm_phrase(n: int) -> str:
    """How a p-value was adjusted, for a family of ``n`` tests."""
    if n <= 1:
        return "the only test of these findings, so no adjustment"
    return f"Holm-adjusted over the {n} tests of these findings"


def _top_sentence(sweep: SweepResults, an: Analysis, label: str, n_txt: str) -> Finding:
    top = an.top
    assert top is not None
    b, s = sweep.point(top.best), sweep.point(top.second)
    e_b, e_s = an.estimates[top.best][an.metric], an.estimates[top.second][an.metric]
    t = top.test
    if e_b.mean == e_s.mean:
        return Finding(
            f"{sweep.point_label(b)} and {sweep.point_label(s)} tie for the highest mean {label} "
            f"({format_number(e_b.mean)}): neither is ahead.",
            False,
        )
    head = (
        f"Highest mean {label}: {sweep.point_label(b)} ({format_number(e_b.mean)}); second: "
        f"{sweep.point_label(s)} ({format_number(e_s.mean)})."
    )
    if not t.tested:
        return Finding(f"{head} Whether the first is ahead of the second was not tested ({t.note}).", False)
    verdict = "is significantly" if top.significant else "is not significantly"
    if top.shared:  # the comparison with the baseline says it, with its numbers: do not repeat them
        return Finding(
            f"{head} The first {verdict} ahead of the second ({format_p(top.p_adj)}: the same test as their "
            "comparison with the baseline, in this list).",
            top.significant,
        )
    how = (
        f"{format_p(top.p_adj)} after multiplying the raw {format_p(t.p)} by the {top.n_pairs} pairs the top two "
        "could have been picked from"
        + (
            f" and Holm-adjusting over the {an.family_size} tests of these findings"
            if an.family_size > 1
            else " (the only test of these findings: no Holm adjustment)"
        )
    )
    stat = (
        f"difference {format_number(t.diff, True)}, unadjusted 95% CI {format_number(t.lo, True)} to "
        f"{format_number(t.hi, True)}, {how}, {n_txt}"
    )
    if top.significant:
        return Finding(f"{head} The first is significantly ahead of the second ({stat}).", True)
    return Finding(
        f"{head} The first is not significantly ahead of the second ({stat}): which of the two is better is "
        "not established.",
        False,
    )


def findings(sweep: SweepResults, an: Analysis) -> list[Finding]:
    """Plain sentences: significant results first, then what was tested and found not significant.

    Every p-value in them is from the one Holm family of :func:`adjust_family`.
    """
    label = sweep.metric_label(an.metric)
    unit = "seeds" if an.mode == "seeds" else "resamples of validation images, single seed"
    holm_txt = holm_phrase(an.family_size)
    sig, nonsig = [], []
    base = sweep.point(an.baseline)
    if an.top is not None:
        n_txt = f"{an.top.test.n} seeds" if an.mode == "seeds" else "bootstrap over validation images, single seed"
        top = _top_sentence(sweep, an, label, n_txt)
        (sig if top.significant else nonsig).append(top.text)
    for cmp in an.comparisons:
        what = describe_vs(sweep, sweep.point(cmp.point), base)
        n_txt = f"{cmp.n} seeds" if an.mode == "seeds" else "bootstrap over validation images, single seed"
        # the interval is per comparison; only the p-value is corrected for multiplicity, so say which is which
        ci = f"unadjusted 95% CI {format_number(cmp.lo, True)} to {format_number(cmp.hi, True)}"
        if cmp.significant:
            verb = "raised" if cmp.diff > 0 else "lowered"
            sig.append(
                f"{what} {verb} {label} over the baseline by {abs(cmp.diff):.3f} "
                f"({ci}, {format_p(cmp.p_adj)}, {holm_txt}, {n_txt})."
            )
        elif cmp.tested:
            nonsig.append(
                f"{what} vs the baseline: the difference is not significant "
                f"({format_number(cmp.diff, True)}, {ci}, {format_p(cmp.p_adj)}, {holm_txt}, {n_txt})."
            )
        else:
            nonsig.append(
                f"{what} vs the baseline: not tested ({cmp.note}); observed difference {format_number(cmp.diff, True)}."
            )
    for t in an.anova:
        if t.note and math.isfinite(t.p):
            continue  # the same test as a comparison above: counted once, there
        names = [sweep.axis_labels.get(k, k) for k in t.term.split(" x ")]
        stat = f"F({t.df1}, {t.df2}) = {t.f:.2f}, {format_p(t.p_adj)}, {holm_txt}"
        if len(names) == 1:
            levels = an.main_effects.get(t.term, {})
            means = "; ".join(f"{lev} {format_number(e.mean)}" for lev, e in levels.items())
            if not math.isfinite(t.p):
                nonsig.append(f"Main effect of {names[0]}: not tested ({t.note or 'no residual degrees of freedom'}).")
            elif t.p_adj < ALPHA:
                sig.append(f"{names[0]} has a significant main effect on {label} ({stat}); level means: {means}.")
            else:
                nonsig.append(f"No significant main effect of {names[0]} on {label} ({stat}).")
        else:
            group = ", ".join(names[:-1]) + f" and {names[-1]}"
            if not math.isfinite(t.p):
                nonsig.append(f"Interaction of {group}: not tested ({t.note or 'no residual degrees of freedom'}).")
            elif t.p_adj < ALPHA:
                sig.append(
                    f"{group} interact ({stat}): the effect of one depends on the other"
                    f"{'s' if len(names) > 2 else ''}; read the interaction table before reading main effects."
                )
            else:
                nonsig.append(f"No significant interaction of {group} ({stat}).")
    head = [Finding(t, True) for t in sig]
    if an.family_size == 0:
        head = [
            Finding(
                f"Nothing was tested: {len(an.estimates)} configuration(s) with a finished run and no "
                "comparison with the baseline was possible.",
                False,
            )
        ]
    elif not sig:
        head = [
            Finding(f"No difference in {label} is statistically significant after Holm correction ({unit}).", False)
        ]
    return head + [Finding(t, False) for t in nonsig]


def leaderboard(sweep: SweepResults, an: Analysis) -> list[dict]:
    """One row per point with a finished run, best first by the report metric."""
    comps = {c.point: c for c in an.comparisons}
    rows = []
    for c in sweep.points:
        if c.point_id not in an.estimates:
            continue
        row: dict = {"point": c.point_id, **{sweep.axis_labels[k]: c.axes.get(k, "") for k in sweep.axes}}
        row["n_seeds"] = len(c.done)
        for m in METRICS:
            e = an.estimates[c.point_id][m]
            row[f"{m}_mean"], row[f"{m}_ci_lo"], row[f"{m}_ci_hi"] = e.mean, e.lo, e.hi
        for k in ("params", "gmacs", "train_img_per_s", "epoch_s", "peak_mem_mb"):
            vals = [r.cost(k) for r in c.done]
            vals = [v for v in vals if math.isfinite(v)]
            row[k] = float(np.mean(vals)) if vals else math.nan
        cmp = comps.get(c.point_id)
        row[f"diff_vs_baseline_{an.metric}"] = 0.0 if c.point_id == an.baseline else (cmp.diff if cmp else math.nan)
        row["p_holm"] = cmp.p_adj if cmp else math.nan
        row["baseline"] = c.point_id == an.baseline
        rows.append(row)
    rows.sort(key=lambda r: -_mean_or_neg_inf(r[f"{an.metric}_mean"]))
    return rows
