"""``build_report``: a sweep folder in, ``report.md``, ``report.html`` and ``leaderboard.csv`` out.

The report is a pure function of the run folders: reading them twice gives the same report (the bootstrap is
seeded). Each prediction file is read at most once (see :class:`locbench.report.collect.RunResult`).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from locbench.errors import LocbenchError
from locbench.metrics import (
    FALLBACK_THRESHOLD,
    MIN_TUNE_POSITIVES,
    cross_confusion,
    crossfit_predictions,
    multilabel_confusion,
    never_predicted,
    small_sample_note,
    untrainable_note,
)
from locbench.report import plots
from locbench.report.analysis import Analysis, analyze, format_number, format_p, leaderboard
from locbench.report.collect import METRICS, Point, RunResult, SweepResults, collect
from locbench.report.html import Section, image, markdown, page, para, table
from locbench.store.atomic import atomic_write_text
from locbench.tables import html_escape

log = logging.getLogger(__name__)


def build_report(
    sweep_dir: str | Path,
    *,
    metric: str = "map",
    baseline: str | None = None,
    point: str | None = None,
    n_resamples: int = 1000,
    conf: float = 0.95,
    extra_sections: Sequence[Section | Callable[[SweepResults, Analysis], Section | Sequence[Section]]] = (),
) -> Path:
    """Write ``report.md``, ``report.html`` and ``leaderboard.csv`` into ``sweep_dir``.

    Args:
        sweep_dir: a folder of run folders (optionally with ``sweep.yaml``), or one run folder.
        metric: the primary metric: ``map``, ``macro_f1`` or ``macro_f1_tuned``, on the test part when every run has
            one, else on validation (tuned F1 then cross-fitted); see :attr:`SweepResults.part`.
        baseline: the grid point every other one is compared with (point id, run id or ``axis=value,...``);
            default: the study's baseline (loss=bce, aug=standard, first backbone), else the first grid point.
        point: the grid point id or run id whose per-class table and confusion matrices are shown (default: the point
            with the highest mean ``metric``, pooled over its seeds).
        n_resamples: bootstrap resamples over the scored images (single-seed sweeps only).
        conf: confidence level of every interval.
        extra_sections: more sections (e.g. error analysis), placed before the list of problem runs; an item may
            also be a callable ``(sweep, analysis) -> Section | list[Section]``, called once the runs are read
            (for sections about the highest-mean point, say).

    Returns:
        The path of ``report.html``.

    Raises:
        LocbenchError: no run folder, no finished run, unknown metric, baseline or point.
    """
    root = Path(sweep_dir)
    sweep = collect(root)
    an = analyze(sweep, metric=metric, baseline=baseline, n_resamples=n_resamples, conf=conf)
    rows = leaderboard(sweep, an)
    focus_title, focus_runs = _focus(sweep, an, point)

    sections = [
        _how(sweep, an),
        _findings(an),
        _leaderboard_section(sweep, an, rows),
        _comparisons_section(sweep, an),
        _effects_section(sweep, an),
        _per_class_section(sweep, an),
        _curves_section(sweep),
        _cost_section(sweep, an, rows),
        _focus_section(sweep, focus_title, focus_runs),
        *_extra(extra_sections, sweep, an),
        _problems_section(sweep),
    ]
    if an.notes:
        sections.append(_list_section("Notes", an.notes))
    title = f"Ablation report: {sweep.name}"
    n_done = sum(r.usable for r in sweep.runs)
    subtitle = (
        f"{len(an.estimates)} configurations, {n_done} of {len(sweep.runs)} runs finished; "
        f"primary metric {sweep.metric_label(metric)}. Folder: {sweep.root}"
    )
    warning = _sample_warning(sweep)
    if warning:
        subtitle += f". Warning: {warning}"
    atomic_write_text(root / "report.md", markdown(title, subtitle, sections))
    atomic_write_text(root / "leaderboard.csv", _csv([_csv_row(sweep, r) for r in rows]))
    out = atomic_write_text(root / "report.html", page(title, subtitle, sections))
    log.info("wrote %s, report.md and leaderboard.csv", out)
    return out


def _extra(items: Sequence, sweep: SweepResults, an: Analysis) -> list[Section]:
    out: list[Section] = []
    for item in items:
        made = item if isinstance(item, Section) else item(sweep, an)
        out.extend([made] if isinstance(made, Section) else made)
    return out


# --------------------------------------------------------------------------------------------------------------


def _ci(e, digits: int = 3) -> str:
    if not math.isfinite(e.mean):
        return "n/a"
    if not e.has_ci:
        return f"{e.mean:.{digits}f}"
    mark = "*" if _lopsided(e) else ""
    return f"{e.mean:.{digits}f} [{_clip01(e.lo):.{digits}f}, {_clip01(e.hi):.{digits}f}]{mark}"


def _lopsided(e) -> bool:
    """An interval whose estimate sits near one end: one side under a third of the other."""
    if not (e.has_ci and math.isfinite(e.mean)):
        return False
    below, above = e.mean - _clip01(e.lo), _clip01(e.hi) - e.mean
    return max(below, above) > 0 and min(below, above) < max(below, above) / 3


#: What the * after a lopsided interval means (said under every table that can carry one).
LOPSIDED_NOTE = (
    "*: a lopsided interval, the estimate near one end. Bootstrap intervals follow the resampled scores instead of "
    "centring on the estimate, and on few validation images the resampled scores are skewed (a few hard "
    "images decide them), so the estimate can sit near one end or even outside the interval. Every interval is "
    "also clipped to [0, 1], the range of the metrics, which shortens a side near 0 or 1."
)


def _label(sweep: SweepResults, c: Point) -> str:
    return sweep.point_label(c)


def _how(sweep: SweepResults, an: Analysis) -> Section:
    varying = {k: v for k, v in sweep.axes.items() if len(v) > 1}
    fixed_axes = {k: v[0] for k, v in sweep.axes.items() if len(v) == 1}
    base = sweep.point(an.baseline)
    seeds = sweep.seeds
    n_done = sum(r.usable for r in sweep.runs)
    grid = "; ".join(f"{sweep.axis_labels[k]}: {', '.join(v)}" for k, v in varying.items()) or "no varying axis"
    lines = [
        f"What was compared: {len(sweep.points)} configurations (grid points) from a grid over {grid}"
        + (f" (fixed: {', '.join(f'{sweep.axis_labels[k]}={v}' for k, v in fixed_axes.items())})" if fixed_axes else "")
        + ".",
        f"Each configuration was trained with seed(s) {', '.join(map(str, seeds)) or 'n/a'}; the same seed means the "
        f"same train/validation split, so runs are compared seed by seed. {n_done} of {len(sweep.runs)} runs "
        "finished; the others are listed at the end and are left out of every number.",
        f"Score: {sweep.metric_label(an.metric)} (also shown: the other metrics). {_part_text(sweep)} "
        f"Every value is a mean with its {an.method}.",
    ]
    if an.mode == "seeds":
        lines.append(
            f"Each configuration is compared with the baseline {_label(sweep, base)} ({an.baseline_why}) by a paired "
            "t-test over seeds."
        )
    else:
        lines.append(
            f"Only one seed per configuration: uncertainty comes from a bootstrap over {_images(sweep)} (single "
            "seed): the images are resampled with replacement, every run is re-scored on the same resamples, and "
            f"differences to the baseline {_label(sweep, base)} ({an.baseline_why}) get percentile intervals and "
            "p-values from the bootstrap standard error. This captures the sampling of "
            f"{_images(sweep)}, not training randomness: repeat runs with more seeds to measure that."
            + (
                " Tuned-threshold F1 is measured on the images its thresholds were tuned on, so its thresholds are "
                "re-tuned inside every resample and its intervals include the noise of tuning. Each re-tuning fits "
                "its resample's noise as the original tuning fit the validation images', so these intervals are "
                "basic bootstrap intervals (twice the estimate minus the percentiles): shifted down by the "
                "optimism the resamples reveal, where percentile intervals would be shifted up."
                if sweep.part == "val"
                else ""
            )
        )
    lines.append(f"Effects of each axis and of combinations of axes: {an.anova_method}.")
    lines.append(_family_text(an))
    md = "".join(para(x)[0] for x in lines)
    h = '<div class="how">' + "".join(para(x)[1] for x in lines) + "</div>"
    fixed = _fixed_settings(sweep)
    if fixed:
        tmd, thtml = table(["setting", "value"], fixed)
        md += "Settings shared by every run:\n\n" + tmd
        h += f"<details><summary>Settings shared by every run ({len(fixed)})</summary>{thtml}</details>"
    return Section("What was compared and how", md, h)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _family_text(an: Analysis) -> str:
    """The multiple-testing rule of the findings, in words (the methods text of the report)."""
    members = [_count(sum(c.tested for c in an.comparisons), "comparison") + " with the baseline"]
    members.append(_count(sum(math.isfinite(t.p) and not t.note for t in an.anova), "ANOVA term"))
    top = an.top
    if top is not None and top.test.tested and not top.shared:
        members.append(
            "the test of the highest mean against the second (a pair picked by its means, so its raw p is first "
            f"multiplied by the {top.n_pairs} pairs it could have been)"
        )
    listed = ", ".join(members[:-1]) + f" and {members[-1]}"
    text = (
        f"One Holm family covers every test whose result appears as a finding ({_count(an.family_size, 'test')}: "
        f"{listed}); a result called significant (adjusted p < 0.05) already accounts for all of them. Each "
        "hypothesis is tested once: with a single two-level axis the ANOVA main effect is the same test as the one "
        "comparison (F = t squared) and is counted once, as the comparison; in other designs a comparison (other "
        "axes held at the baseline's levels) and a main effect (averaged over them) are different hypotheses and "
        "both count."
    )
    if top is not None and top.shared:
        text += " The highest mean against the second is one of the comparisons with the baseline, counted there."
    return text


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def _fixed_settings(sweep: SweepResults) -> list[tuple[str, str]]:
    flats = [_flatten(r.config) for r in sweep.runs if r.usable and r.config]
    if not flats:
        return []
    common = flats[0]
    keys = [k for k in common if k != "seed" and all(f.get(k) == common[k] for f in flats[1:])]
    return [(k, common[k]) for k in keys][:60]


def _findings(an: Analysis) -> Section:
    md = "".join(f"- {f.text}\n" for f in an.findings)
    h = (
        '<ul class="findings">'
        + "".join(f'<li class="{"sig" if f.significant else "ns"}">{html_escape(f.text)}</li>' for f in an.findings)
        + "</ul>"
    )
    h += (
        '<p class="muted">Green: supported by a test (Holm-adjusted p &lt; 0.05, one family over every test on '
        "this list). Grey: not significant or not tested; a non-significant difference is not evidence of no "
        "difference.</p>"
    )
    return Section("Findings", md, h)


def _leaderboard_section(sweep: SweepResults, an: Analysis, rows: list[dict]) -> Section:
    axis_cols = [sweep.axis_labels[k] for k in sweep.axes if len(sweep.axes[k]) > 1] or ["point"]
    headers = [
        "#",
        *axis_cols,
        "seeds",
        *(sweep.metric_label(m) for m in METRICS),
        f"Δ {sweep.metric_label(an.metric)}",
        "p (Holm)",
        "params (M)",
        "GMACs",
        "train img/s",
        "s/epoch",
    ]
    body, classes = [], []
    for i, r in enumerate(rows, 1):
        e = an.estimates[r["point"]]
        diff = r[f"diff_vs_baseline_{an.metric}"]
        body.append(
            [
                i,
                *(r.get(a, r["point"]) if a != "point" else r["point"] for a in axis_cols),
                r["n_seeds"],
                *(_ci(e[m]) for m in METRICS),
                "baseline" if r["baseline"] else format_number(diff, True),
                "" if r["baseline"] else format_p(r["p_holm"]).removeprefix("p = ").removeprefix("p "),
                _sig(r["params"] / 1e6),
                _sig(r["gmacs"]),
                _num(r["train_img_per_s"], 0),
                _num(r["epoch_s"], 1),
            ]
        )
        classes.append("base" if r["baseline"] else ("best" if r["point"] == an.best else ""))
    md, h = table(headers, body, left=1 + len(axis_cols), row_classes=classes)
    note = (
        f"Sorted by mean {sweep.metric_label(an.metric)}, highest first; the order is by means, not a test ("
        f"{_top_verdict(an)}). Values: mean [{an.method}]. Δ: difference to the baseline (highlighted row); "
        "p: Holm-adjusted over the tests of the findings. Also written to leaderboard.csv."
    )
    if any(_lopsided(an.estimates[r["point"]][m]) for r in rows for m in METRICS):
        note += " " + LOPSIDED_NOTE
    return Section("Leaderboard", para(note)[0] + md, para(note)[1] + h)


def _top_verdict(an: Analysis) -> str:
    """Whether the highest mean is significantly ahead of the second, in a few words."""
    top = an.top
    if top is None:
        return "one configuration"
    if an.estimates[top.best][an.metric].mean == an.estimates[top.second][an.metric].mean:
        return "the top two tie"
    if not top.test.tested:
        return "the highest mean was not tested against the second"
    word = "is" if top.significant else "is not"
    return f"the highest mean {word} significantly ahead of the second, {format_p(top.p_adj)}; see the findings"


def _sig(x: float) -> str:
    """Three significant digits: costs span orders of magnitude (a tiny test model has 0.0166 GMACs)."""
    return f"{x:.3g}" if math.isfinite(x) else "n/a"


def _num(x: float, digits: int) -> str:
    return f"{x:,.{digits}f}" if math.isfinite(x) else "n/a"


def _comparisons_section(sweep: SweepResults, an: Analysis) -> Section:
    base = sweep.point(an.baseline)
    if not an.comparisons:
        why = (
            "only one configuration has a finished run"
            if len(an.estimates) < 2
            else "the baseline has no finished run or no usable predictions"
        )
        return Section("Comparisons with the baseline", *para(f"No comparison: {why}."))
    rows = []
    for c in an.comparisons:
        rows.append(
            [
                _label(sweep, sweep.point(c.point)),
                c.n if an.mode == "seeds" else "1 (bootstrap)",
                format_number(c.diff, True),
                f"{format_number(c.lo, True)} to {format_number(c.hi, True)}",
                format_p(c.p).removeprefix("p = "),
                format_p(c.p_adj).removeprefix("p = "),
                "yes" if c.significant else ("no" if c.tested else c.note),
            ]
        )
    headers = ["configuration", "pairs", "difference", "95% CI", "p", "p (Holm)", "significant"]
    md, h = table(headers, rows)
    note = (
        f"Baseline: {_label(sweep, base)} ({an.baseline_why}). Difference = configuration - baseline in "
        f"{sweep.metric_label(an.metric)}; method: {an.comparisons[0].method}. p (Holm): adjusted over the "
        f"{_count(an.family_size, 'test')} of the findings (one family: these comparisons, the ANOVA terms and the "
        "highest mean against the second); the 95% CI is per comparison, unadjusted."
    )
    return Section("Comparisons with the baseline", para(note)[0] + md, para(note)[1] + h)


def _effects_section(sweep: SweepResults, an: Analysis) -> Section:
    if not an.main_effects:
        return Section("Effects of each axis", *para("No axis has more than one level."))
    label = sweep.metric_label(an.metric)
    md, h = "", ""
    txt = (
        f"Mean {label} per level of each axis, averaged over the other axes (and seeds), with its "
        f"{'interval over seeds of the per-seed averages' if an.mode == 'seeds' else 'bootstrap interval'}."
    )
    md += para(txt)[0]
    h += para(txt)[1]
    eff = {
        sweep.axis_labels[k]: {lev: (e.mean, _clip01(e.lo), _clip01(e.hi)) for lev, e in v.items()}
        for k, v in an.main_effects.items()
    }
    h += image(plots.main_effects(eff, ylabel=label), "main effects")
    rows = [[sweep.axis_labels[k], lev, _ci(e), e.n] for k, v in an.main_effects.items() for lev, e in v.items()]
    if any(_lopsided(e) for v in an.main_effects.values() for e in v.values()):
        md += para(LOPSIDED_NOTE)[0]
        h += para(LOPSIDED_NOTE)[1]
    tmd, th = table(
        ["axis", "level", f"{label} mean [95% CI]", "n" if an.mode == "bootstrap" else "seeds"], rows, left=2
    )
    md += tmd
    h += th
    if all(t.note == "no residual degrees of freedom" for t in an.anova):  # also when no model could be fitted
        txt = (
            "No test of main effects and interactions: a model of the axes would have as many terms as there are "
            "runs to fit it on, so no residual degrees of freedom would be left to estimate the noise and every F "
            "would be undefined. "
            "More seeds make these tests possible; the comparisons with the baseline above do not need them."
        )
        md += "\n" + para(txt)[0]
        h += "<h3>Tests of main effects and interactions</h3>" + para(txt)[1]
    elif an.anova:
        rows = [
            [
                " x ".join(sweep.axis_labels.get(k, k) for k in t.term.split(" x ")),
                t.df1,
                t.df2,
                "n/a" if not math.isfinite(t.f) else f"{t.f:.2f}",
                format_p(t.p).removeprefix("p = "),
                "counted as the comparison"
                if t.note and math.isfinite(t.p)
                else format_p(t.p_adj).removeprefix("p = "),
            ]
            for t in an.anova
        ]
        tmd, th = table(["term", "df", "residual df", "F", "p", "p (Holm)"], rows)
        txt = (
            f"Tests: {an.anova_method}. p (Holm): adjusted over every test of the findings (one family); a term "
            "marked 'counted as the comparison' is the same test as the comparison with the baseline."
        )
        md += "\n" + para(txt)[0] + tmd
        h += "<h3>Tests of main effects and interactions</h3>" + para(txt)[1] + th
    for (a, b), means in an.interactions.items():
        la, lb = sweep.axes[a], sweep.axes[b]
        rows = [[lev_a, *(format_number(means.get((lev_a, lev_b), math.nan)) for lev_b in lb)] for lev_a in la]
        title = f"Interaction {sweep.axis_labels[a]} x {sweep.axis_labels[b]} (mean {label})"
        tmd, th = table([f"{sweep.axis_labels[a]} \\ {sweep.axis_labels[b]}", *lb], rows)
        md += f"\n{title}:\n\n{tmd}"
        h += f"<h3>{html_escape(title)}</h3>{th}"
    return Section("Effects of each axis", md, h)


def _per_class_section(sweep: SweepResults, an: Analysis) -> Section:
    points = [c for c in sweep.points if c.point_id in an.estimates]
    classes = sweep.classes
    if not classes:
        return Section("Per-class AP", *para("No per-class results in summary.json."))
    mat = np.full((len(points), len(classes)), np.nan)
    for i, c in enumerate(points):
        for j, name in enumerate(classes):
            vals = [(r.summary or {}).get(sweep.part, {}).get("per_class", {}).get(name, {}).get("ap") for r in c.done]
            vals = [v for v in vals if isinstance(v, int | float)]
            if vals:
                mat[i, j] = float(np.mean(vals))
    labels = [_label(sweep, c) for c in points]
    png = plots.heatmap(mat, labels, classes, title="Validation AP per class (mean over seeds)", cbar="AP")
    rows = [[lab, *(format_number(v) for v in mat[i])] for i, lab in enumerate(labels)]
    md, _ = table(["configuration", *classes], rows)
    txt = f"Average precision per class, mean over seeds; blank/n/a: class absent from the {_images(sweep)}."
    note = _untrainable_text([r for c in points for r in c.done])
    if note:
        txt += " " + note
    return Section("Per-class AP", para(txt)[0] + md, para(txt)[1] + image(png, "per-class AP heatmap"))


def _curves_section(sweep: SweepResults) -> Section:
    series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    losses = {c.point_id: _loss_name(c) for c in sweep.points if c.done}
    names = sorted(set(losses.values()))
    # Losses of different families have different scales (focal is a fraction of BCE): one panel per loss.
    keys = [("val/map", "val mAP")]
    for split in ("train", "val"):
        keys += [(f"{split}/loss", f"{split} loss")] if len(names) < 2 else [
            (f"{split}/loss@{n}", f"{split} loss ({n})") for n in names
        ]  # fmt: skip
    for c in sweep.points:
        if not c.done:
            continue
        s = {}
        for key, _ in keys:
            stored, _, loss = key.partition("@")
            if loss and loss != losses[c.point_id]:
                continue
            by_epoch: dict[int, list[float]] = {}
            for r in c.done:
                for i, rec in enumerate(r.metrics):
                    v = rec.get(stored)
                    if isinstance(v, int | float) and math.isfinite(v):
                        by_epoch.setdefault(int(rec.get("epoch", i)), []).append(float(v))
            if by_epoch:
                ep = np.asarray(sorted(by_epoch))
                s[key] = (ep, np.asarray([np.mean(by_epoch[e]) for e in ep]))
        series[_label(sweep, c)] = s
    if not any(series.values()):
        return Section("Training curves", *para("No metrics.jsonl with per-epoch values."))
    present = [k for k in keys if any(k[0] in s for s in series.values())]
    png = plots.curves(series, present)
    txt = "Per-epoch validation mAP and losses, mean over the finished seeds of each configuration."
    if len(names) > 1:
        txt += (
            f" Each loss ({', '.join(names)}) has its own panels: their values are on different scales and are not "
            "comparable with each other."
        )
    return Section(
        "Training curves", para(txt)[0] + "(figure in report.html)\n", para(txt)[1] + image(png, "training curves")
    )


def _loss_name(point: Point) -> str:
    """The loss a grid point trained with (from its runs' config.yaml; "loss" when none says)."""
    for r in point.done:
        name = (r.config.get("loss") or {}).get("name") if isinstance(r.config.get("loss"), dict) else None
        if isinstance(name, str):
            return name
    return "loss"


def _cost_section(sweep: SweepResults, an: Analysis, rows: list[dict]) -> Section:
    label = sweep.metric_label(an.metric)
    varying = [sweep.axis_labels[k] for k in sweep.axes if len(sweep.axes[k]) > 1]
    panels, md = [], ""
    # Stable costs (counted, the same on every machine and run) first; time only with its spread over seeds.
    timing = _timing_spread(sweep, rows)
    costs = [("gmacs", "GMACs per image (forward)", 1.0), ("params", "parameters (millions)", 1e-6)]
    if timing:
        costs.append(("epoch_s", "seconds per training epoch (mean; bar: min-max over seeds)", 1.0))
    for key, xlabel, scale in costs:
        pts = [
            {
                "label": ", ".join(str(r.get(a, "")) for a in varying) or r["point"],
                "x": r[key] * scale,
                "y": r[f"{an.metric}_mean"],
                "lo": _clip01(r[f"{an.metric}_ci_lo"]),
                "hi": _clip01(r[f"{an.metric}_ci_hi"]),
                **(timing.get(r["point"], {}) if key == "epoch_s" else {}),
            }
            for r in rows
        ]
        pts = [p for p in pts if math.isfinite(p["x"]) and math.isfinite(p["y"])]
        if not pts:
            continue
        panels.append((xlabel, pts))
        front = plots.pareto_front([(p["x"], p["y"]) for p in pts])
        md += f"Pareto front of the means against {xlabel}: " + "; ".join(pts[i]["label"] for i in front) + "\n\n"
    if not panels:
        return Section("Accuracy against cost", *para("No cost figures in summary.json."))
    txt = (
        "Red, labelled: the Pareto front of the means, configurations whose mean no other one beats on both "
        f"accuracy and cost ({', '.join(varying) or 'point'}). The front is drawn from means and is not a test: a "
        "configuration off the front may not be significantly worse than one on it (compare the error bars, the "
        "intervals of the leaderboard, and the findings). Costs: multiply-accumulates per image and parameters, "
        "which are counted and do not vary between runs."
    )
    if timing:
        txt += (
            " Seconds per epoch are measured and vary from run to run (other jobs on the machine, caches): the "
            "horizontal bars show their range over seeds, and a front point whose bar overlaps another's is not "
            "cheaper."
        )
    elif any(math.isfinite(r["epoch_s"]) for r in rows):
        txt += (
            " Seconds per epoch are not plotted: with one run per configuration their run-to-run spread is unknown, "
            "and timing noise alone would move configurations on and off the front (they are in the leaderboard)."
        )
    png = plots.pareto(panels, ylabel=label)
    return Section("Accuracy against cost", para(txt)[0] + md, para(txt)[1] + image(png, "accuracy against cost"))


def _timing_spread(sweep: SweepResults, rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per grid point the min and max seconds per epoch over its runs; empty unless every point has two or more."""
    out = {}
    for r in rows:
        times = [x for x in (run.cost("epoch_s") for run in sweep.point(r["point"]).done) if math.isfinite(x)]
        if len(times) < 2:
            return {}
        out[r["point"]] = {"xlo": min(times), "xhi": max(times)}
    return out


def _clip01(x: float) -> float:
    """A metric's interval end clipped to [0, 1], the range every reported metric lives in."""
    return min(max(x, 0.0), 1.0) if math.isfinite(x) else x


def _focus(sweep: SweepResults, an: Analysis, spec: str | None) -> tuple[str, list[RunResult]]:
    if spec is None:
        c = sweep.point(an.best)
        return f"Highest mean {sweep.metric_label(an.metric)}: {_label(sweep, c)} ({_top_verdict(an)})", c.done
    for c in sweep.points:
        if c.point_id == spec:
            if not c.done:
                raise LocbenchError(
                    f"--point {spec}: this grid point has no finished run; pick one from leaderboard.csv"
                )
            return f"Configuration {_label(sweep, c)}", c.done
    for r in sweep.runs:
        if r.run_id == spec:
            if not r.usable:
                raise LocbenchError(f"--point {spec}: run status is {r.status!r}, not done; pick a finished run")
            return f"Run {spec} ({_label(sweep, sweep.point(r.point_id))})", [r]
    raise LocbenchError(
        f"--point {spec}: no grid point or run of that id in {sweep.root}; see the point column of "
        "leaderboard.csv or the run folder names"
    )


def _focus_section(sweep: SweepResults, title: str, runs: list[RunResult]) -> Section:
    classes = sweep.classes
    rows = []
    keys = ("ap", "f1", "f1_tuned", "precision", "recall", "support")
    for name in classes:
        entries = [(r.summary or {}).get(sweep.part, {}).get("per_class", {}).get(name, {}) for r in runs]
        vals = []
        for k in keys:
            xs = [e.get(k) for e in entries]
            xs = [x for x in xs if isinstance(x, int | float)]
            vals.append(np.mean(xs) if xs else math.nan)
        # an untrainable class's threshold (above every score) is "never", not a number to average
        thr = [e["threshold"] for e in entries if isinstance(e.get("threshold"), int | float) and e["threshold"] <= 1]
        never = any(isinstance(e.get("threshold"), int | float) and e["threshold"] > 1 for e in entries)
        rows.append(
            [
                name,
                *(format_number(v) for v in vals[:5]),
                _num(vals[5], 0 if len(runs) == 1 else 1),
                format_number(float(np.mean(thr))) if thr else ("never" if never else "n/a"),
                _sources(entries),
            ]
        )
    headers = ["class", "AP", "F1 @0.5", "F1 tuned", "precision", "recall", "support", "threshold", "threshold from"]
    md, h = table(headers, rows)
    pooled = f"mean over {len(runs)} seed(s)" if len(runs) > 1 else "one run"
    txt = (
        f"{title}: per-class results on the {_images(sweep)} ({pooled}). Threshold from: tuned on validation; "
        f"fallback {FALLBACK_THRESHOLD} (fewer than {MIN_TUNE_POSITIVES} validation positives: too few to tune on); "
        "untrainable (no positive training example: never predicted)."
    )
    note = _untrainable_text(runs)
    if note:
        txt += " " + note
    md, h = para(txt)[0] + md, para(txt)[1] + h
    counts, cross = _confusions(sweep, runs)
    if counts is not None:
        png = plots.confusion_grid(
            classes, counts, title="Per-class confusion at the tuned thresholds (counts summed over seeds)"
        )
        cmd, _ = table(
            ["class", "TP", "FP", "FN", "TN"],
            [[c, int(m[1, 1]), int(m[0, 1]), int(m[1, 0]), int(m[0, 0])] for c, m in zip(classes, counts, strict=True)],
        )
        how = " (cross-fitted on validation)" if sweep.part == "val" else ""
        md += f"\nMulti-label confusion at the tuned thresholds{how} (summed over seeds):\n\n" + cmd
        if cross is not None:
            h += (
                "<h3>Which class is predicted instead of which</h3>"
                + para(
                    f"Row A, column B: images on which A was predicted at its tuned threshold{how} though not true, "
                    "while B is among the true classes (summed over seeds). A dark row is a class predicted too "
                    "often; a dark cell, a class mistaken for another (e.g. a nuclear pattern predicted on cytosolic "
                    "images)."
                )[1]
                + image(
                    plots.cross_confusion(classes, cross, title="False positives of each class by true class"),
                    "false positives of each class by true class",
                )
            )
        h += (
            "<h3>Multi-label confusion matrices</h3>"
            + para(
                "One 2x2 matrix per class at its tuned threshold (thresholds.json); rows: truth, columns: prediction; "
                "colour: fraction of the true row."
            )[1]
            + image(png, "confusion matrices")
        )
    return Section(
        "Highest-mean configuration in detail" if title.startswith("Highest") else "Selected configuration", md, h
    )


def _sources(entries: list[dict]) -> str:
    """Where a class's thresholds came from over runs: one word, or counts when the seeds differ."""
    found = [e.get("threshold_source") for e in entries]
    found = [x for x in found if isinstance(x, str)]
    if not found:
        return "n/a"
    kinds = sorted(set(found), key=found.index)
    return kinds[0] if len(kinds) == 1 else ", ".join(f"{k} {found.count(k)}" for k in kinds)


def _untrainable_text(runs: list[RunResult]) -> str:
    """The report's note on classes with no positive training example in ``runs`` ("" when none)."""
    counts: dict[str, int] = {}
    for r in runs:
        for name in (r.summary or {}).get("untrainable_classes") or []:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return ""
    note = untrainable_note(list(counts))
    if any(k < len(runs) for k in counts.values()):
        note += " (in " + ", ".join(f"{c}: {k} of {len(runs)} runs" for c, k in counts.items()) + ")"
    return note[0].upper() + note[1:] + "."


def _sample_warning(sweep: SweepResults) -> str:
    """The headline's warning when finished runs were scored on too few fields or rare classes ("" if none)."""
    notes = []
    for r in sweep.runs:
        val = (r.summary or {}).get(sweep.part, {}) if r.usable else {}
        if "sample_note" in val:
            note = val["sample_note"]
        elif isinstance(val.get("n_images"), int):  # written before the notes existed
            note = small_sample_note(val["n_images"])
        else:
            note = None
        if note:
            notes.append(note)
    if not notes:
        return ""
    common = max(set(notes), key=notes.count)
    n_usable = sum(r.usable for r in sweep.runs)
    scored = "tested" if sweep.part == "test" else "validated"
    return f"{len(notes)} of {n_usable} runs were {scored} on too little data ({common}); read their numbers with care"


def _confusions(sweep: SweepResults, runs: list[RunResult]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-class confusion counts and class x class false-positive counts (:func:`plots.cross_confusion`), each
    summed over ``runs`` (None without predictions), from one set of decisions per run (:func:`_decisions`)."""
    counts = cross = None
    for r in runs:
        p = r.predictions()
        if p is None or p.probs.shape[1] != len(sweep.classes):
            continue
        try:
            decided, targets = _decisions(sweep, r, p.probs, p.targets)
            cm = multilabel_confusion(decided, targets, thresholds=0.5)
            m = cross_confusion(decided, targets, thresholds=0.5)
        except (LocbenchError, ValueError) as e:  # ValueError: fewer than 2 images to cross-fit
            log.warning("%s: %s; left out of the confusion matrices", r.path / "predictions" / f"{sweep.part}.npz", e)
            continue
        counts = cm if counts is None else counts + cm
        cross = m if cross is None else cross + m
    return counts, cross


def _decisions(
    sweep: SweepResults, run: RunResult, probs: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """0/1 decisions of ``run`` on its scored part (as float scores, to threshold at 0.5) and the targets: at the
    run's tuned thresholds on a test part; on validation cross-fitted, never by the thresholds' own tuning images
    (each fold decided by thresholds tuned on the others; untrainable classes stay never predicted)."""
    thresholds = run.thresholds(sweep.classes)
    if sweep.part == "val":
        trainable = (~never_predicted(thresholds)).astype(np.int64)
        return crossfit_predictions(probs, targets, train_positives=trainable).astype(np.float32), targets
    return (probs >= thresholds[None, :]).astype(np.float32), targets


def _problems_section(sweep: SweepResults) -> Section:
    probs = sweep.problems
    if not probs:
        return Section("Failed, diverged and unfinished runs", *para("None: every run finished."))
    rows = [
        [r.run_id, sweep.point_label(sweep.point(r.point_id)), r.seed if r.seed is not None else "", r.status, r.reason]
        for r in probs
    ]
    md, h = table(["run", "configuration", "seed", "status", "reason"], rows, left=5)
    txt = (
        f"{len(probs)} run(s) are left out of every number above. A configuration that fails or diverges "
        "repeatedly is itself a result (unstable or too large for the hardware)."
    )
    return Section("Failed, diverged and unfinished runs", para(txt)[0] + md, para(txt)[1] + h)


def _list_section(title: str, items: list[str]) -> Section:
    return Section(
        title,
        "".join(f"- {x}\n" for x in items),
        "<ul>" + "".join(f"<li>{html_escape(x)}</li>" for x in items) + "</ul>",
    )


def _images(sweep: SweepResults) -> str:
    return "test images" if sweep.part == "test" else "validation images"


def _part_text(sweep: SweepResults) -> str:
    """What the report's numbers are measured on, in a sentence (docs/VALIDATION.md has the long version)."""
    if sweep.part == "test":
        return (
            "Every number is measured on each run's test part, images held out from training, from the choice of "
            "checkpoint (best validation mAP) and from threshold tuning (tuned F1 uses the thresholds tuned on "
            "validation); the training curves alone show validation."
        )
    return (
        "No test part in every run: numbers are measured on the validation images, which also picked each run's "
        "checkpoint (best validation mAP), so they lean optimistic; tuned F1 is cross-fitted (thresholds tuned on "
        "the other folds of validation). Hold out a test part (data.test_frac, 0.2 by default) for numbers "
        "nothing was chosen on."
    )


def _csv_row(sweep: SweepResults, row: dict) -> dict:
    """A leaderboard row for leaderboard.csv: which part its metrics are on and what its tuned F1 is come first."""
    tuned = "val thresholds" if sweep.part == "test" else "cross-fitted"
    return {"part": sweep.part, "tuned_f1": tuned, **row}


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    k: (f"{v:.10g}" if isinstance(v, float) and math.isfinite(v) else "" if isinstance(v, float) else v)
                    for k, v in r.items()
                }
            )
    return buf.getvalue()
