"""The report's "ensemble of the k best configurations" section (``locbench report SWEEP --ensemble-top K``).

The k configurations are chosen by their mean **validation** score (never by the part the report scores, which
would pick them on the numbers they are then judged on). Their stored probabilities are averaged as
``locbench ensemble`` averages them (:func:`locbench.infer.ensemble.average_predictions`), thresholds tuned on the
averaged validation probabilities (:func:`locbench.engine.summary.summarize`), and the ensemble is scored like a
run. Intervals use the report's own statistics: with several seeds, one ensemble per seed (the k runs of that
seed) and a Student t interval over seeds, compared with the best single configuration paired by seed; with one
seed, the same bootstrap over the scored images as every other row, on the same resamples.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable

import numpy as np

from locbench.engine.summary import summarize
from locbench.infer.ensemble import average_predictions
from locbench.report import stats
from locbench.report.analysis import Analysis, format_number, format_p, retunes, score_fn
from locbench.report.collect import METRIC_LABELS, Point, RunResult, SweepResults
from locbench.report.html import Section, para, table
from locbench.store.rundir import Predictions, RunFileError

log = logging.getLogger(__name__)


def ensemble_section(
    k: int, *, n_resamples: int = 1000, conf: float = 0.95
) -> Callable[[SweepResults, Analysis], Section]:
    """A report section (for ``build_report(extra_sections=...)``) on the ensemble of the ``k`` best configurations."""
    return functools.partial(_section, k=k, n_resamples=n_resamples, conf=conf)


def _val_mean(point: Point, metric: str) -> float:
    values = []
    for r in point.done:
        block = (r.summary or {}).get("val") or {}
        v = block.get(metric)
        if metric == "macro_f1_tuned" and block.get("tuned_f1") != "cross-fitted":
            v = None
        if isinstance(v, int | float) and math.isfinite(v):
            values.append(float(v))
    return float(np.mean(values)) if values else -math.inf


def top_points(sweep: SweepResults, metric: str, k: int) -> list[Point]:
    """The ``k`` grid points with the highest mean validation ``metric`` (ties by grid order)."""
    ranked = sorted((c for c in sweep.points if c.done), key=lambda c: -_val_mean(c, metric))
    return [c for c in ranked if math.isfinite(_val_mean(c, metric))][:k]


def _read(run: RunResult, part: str) -> Predictions | None:
    try:
        return run.folder.read_predictions(part) if run.folder.has_predictions(part) else None
    except RunFileError as e:
        log.warning("%s: %s; left out of the ensemble", run.path, e.cause)
        return None


def ensemble_summary(runs: list[RunResult]) -> dict | None:
    """``summary.json`` of the ensemble of ``runs`` as ``locbench ensemble`` would write it (None when a run lacks
    predictions or the runs do not hold the same items)."""
    vals = [_read(r, "val") for r in runs]
    tests = [_read(r, "test") for r in runs]
    if any(v is None for v in vals) or len({frozenset(v.ids.tolist()) for v in vals}) != 1:
        return None
    has_test = all(t is not None for t in tests)
    if has_test and len({frozenset(t.ids.tolist()) for t in tests}) != 1:
        return None
    val = average_predictions(vals)
    test = average_predictions(tests) if has_test else None
    positives = (runs[0].summary or {}).get("train_positives")
    classes = list(((runs[0].summary or {}).get("val") or {}).get("per_class") or [])
    train_positives = (
        np.asarray([positives[c] for c in classes], dtype=np.int64)
        if isinstance(positives, dict) and set(positives) == set(classes)
        else None
    )
    _, summary = summarize(
        val.probs, val.targets, classes, [], best_epoch=None, cost={}, device="", test=test,
        train_positives=train_positives,
    )  # fmt: skip
    summary["_preds"] = {"val": val, "test": test}
    return summary


def _section(sweep: SweepResults, an: Analysis, *, k: int, n_resamples: int, conf: float) -> Section:
    title = f"Ensemble of the {k} best configurations"
    metric, part = an.metric, sweep.part
    points = top_points(sweep, metric, k)
    if len(points) < 2 or len(points) < k:
        return Section(title, *para(f"No ensemble: fewer than {k} configurations have a finished run."))
    label = sweep.metric_label(metric)
    names = [sweep.point_label(c) for c in points]
    if an.mode == "seeds":
        result = _by_seeds(points, metric, part, conf)
    else:
        result = _by_bootstrap(sweep, points, metric, part, n_resamples, conf)
    if result is None:
        return Section(title, *para("No ensemble: the chosen runs do not hold stored predictions of the same images."))
    ens, single, cmp, how = result
    rows = [
        [f"ensemble of {k}: " + " + ".join(names), _fmt(ens), ens.n],
        [f"best single configuration: {names[0]}", _fmt(single), single.n],
    ]
    md, h = table(["", f"{label} [{int(conf * 100)}% CI]", "seeds" if an.mode == "seeds" else "runs"], rows)
    diff = (
        f"Difference ensemble - best single: {format_number(cmp.diff, True)} "
        f"[{format_number(cmp.lo, True)} to {format_number(cmp.hi, True)}], {format_p(cmp.p)} ({cmp.method}; "
        "not part of the Holm family of the findings)."
    )
    honest = (
        " only on a test part: here the report scores validation, the same images that chose them."
        if part == "val"
        else "."
    )
    note = (
        f"The {k} configurations with the highest mean validation {METRIC_LABELS.get(metric, metric)} are averaged "
        "(mean of their stored probabilities; thresholds tuned on the averaged validation probabilities, as "
        f"`locbench ensemble` does); {how}. Choosing the members on validation keeps the {part} numbers honest"
        f"{honest} Predicting with it costs {k} forward passes per image (one per member)."
    )
    return Section(title, para(note)[0] + md + "\n" + para(diff)[0], para(note)[1] + h + para(diff)[1])


def _fmt(e: stats.Estimate) -> str:
    if not math.isfinite(e.mean):
        return "n/a"
    if not e.has_ci:
        return f"{e.mean:.3f}"
    return f"{e.mean:.3f} [{max(0.0, e.lo):.3f}, {min(1.0, e.hi):.3f}]"


def _by_seeds(points: list[Point], metric: str, part: str, conf: float):
    seeds = set.intersection(*(set(r.seed for r in c.done) for c in points))
    ens_by_seed, single_by_seed = {}, {}
    for seed in sorted(s for s in seeds if s is not None):
        runs = [next(r for r in c.done if r.seed == seed) for c in points]
        summary = ensemble_summary(runs)
        if summary is None:
            continue
        v = (summary.get(part) or {}).get(metric)
        if isinstance(v, int | float):
            ens_by_seed[seed] = float(v)
            single_by_seed[seed] = runs[0].value(metric)
    if not ens_by_seed:
        return None
    n, diff, lo, hi, p = stats.paired_t(single_by_seed, ens_by_seed, conf=conf)
    cmp = stats.Comparison("ensemble", points[0].point_id, n, diff, lo, hi, p, stats.PAIRED_T_METHOD)
    ens = stats.t_interval(list(ens_by_seed.values()), conf=conf)
    single = stats.t_interval(list(single_by_seed.values()), conf=conf)
    return ens, single, cmp, f"one ensemble per seed (the {len(points)} runs of that seed), {stats.T_METHOD}"


def _by_bootstrap(sweep: SweepResults, points: list[Point], metric: str, part: str, n_resamples: int, conf: float):
    runs = [c.done[0] for c in points]
    summary = ensemble_summary(runs)
    best = runs[0].predictions()
    if summary is None or best is None or summary["_preds"].get(part) is None:
        return None
    ens = summary["_preds"][part]
    order = {fid: i for i, fid in enumerate(best.ids.tolist())}
    if set(order) != set(ens.ids.tolist()):
        return None
    rows = np.asarray([order[fid] for fid in ens.ids.tolist()])
    ens_thr = np.asarray([summary["val"]["per_class"][c]["threshold"] for c in sweep.classes], dtype=np.float64)
    best_thr = runs[0].thresholds(sweep.classes)
    scored = {
        "ensemble": (ens.probs.astype(np.float64), ens.targets, score_fn(metric, sweep, ens_thr)),
        "best": (best.probs[rows].astype(np.float64), ens.targets, score_fn(metric, sweep, best_thr)),
    }
    weights = stats.resample_weights(len(ens.ids), n_resamples, seed=0)
    observed, draws = {}, {}
    for name, (p, t, score) in scored.items():
        observed[name] = float(score(p, t, np.ones((1, len(ens.ids))))[0])
        draws[name] = stats.score_resamples(score, p, t, weights)
    basic = retunes(sweep, metric)
    estimates = {}
    for name in scored:
        lo, hi = (stats.basic_interval if basic else _percentile)(observed[name], draws[name], conf=conf)
        estimates[name] = stats.Estimate(observed[name], float(np.nanstd(draws[name], ddof=1)), lo, hi, 1, "")
    cmp = stats.bootstrap_pair(observed, draws, "ensemble", "best", conf=conf, basic=basic)
    how = f"{stats.BOOT_METHOD.replace('validation', part)}, {n_resamples} resamples, the same resamples for both rows"
    return estimates["ensemble"], estimates["best"], cmp, how


def _percentile(estimate: float, draws: np.ndarray, *, conf: float) -> tuple[float, float]:
    return stats.percentile_interval(draws, conf=conf)
