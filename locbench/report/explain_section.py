"""The report's error-analysis section: error tables, performance against frequency, CAM grids and the
localization check of one representative run (the best seed) of the best grid point and of any point asked for.

Pass :func:`error_analysis` to :func:`locbench.report.build_report` as an extra section. Its figures are written
to ``SWEEP_DIR/explain/<run_id>/`` (by :func:`locbench.explain.run.explain_run`); the figures are embedded in
report.html as base64, the many small thumbnails of the hardest images and confused pairs are linked by relative
path (``explain/<run_id>/thumbs/``), so the page opens from ``file://`` and stays small.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from locbench.errors import LocbenchError
from locbench.explain.browser import write_browser
from locbench.explain.mistakes import errors_html, errors_markdown
from locbench.explain.run import explain_run
from locbench.report.collect import Point, RunResult, SweepResults
from locbench.report.html import Section, image, para, table
from locbench.tables import html_escape

log = logging.getLogger(__name__)


def error_analysis(
    *,
    runs: Sequence[str] = (),
    best: bool = True,
    n: int = 6,
    method: str = "gradcam",
    localize: int = 24,
    device: str = "auto",
    browse: bool = True,
) -> Callable[[SweepResults, Any], list[Section]]:
    """An extra section for ``build_report``: one error-analysis section per explained run.

    Args:
        runs: Point ids or run ids to explain as well (a point is represented by its best seed).
        best: Explain the point with the highest mean of the report's metric too.
        n: Images with class activation maps per run (see :func:`~locbench.explain.run.explain_run`).
        method: The CAM method.
        localize: Validation images scored by the localization check on synthetic data (0 = off).
        device: Where the maps are computed (``auto``, ``cpu``, ``cuda``, ...).
        browse: Also write the image browser of each explained run (``SWEEP/explain/RUN/browse/index.html``,
            a thumbnail of every image of the scored part) and link it from its section.

    Every part of a section is about the predictions the report's numbers are: the test part when the sweep is
    scored on it (:attr:`SweepResults.part`), else validation; the section says which.

    Returns:
        A callable ``(sweep, analysis) -> [Section, ...]`` for ``build_report(extra_sections=[...])``. It raises
        :class:`~locbench.errors.LocbenchError` for an id that names no point or run; a run whose analysis
        fails gets a section that says why, and the report is still written.
    """

    def make(sweep: SweepResults, an: Any) -> list[Section]:
        chosen: list[tuple[RunResult, str]] = []
        if best and an.best:
            point = sweep.point(an.best)
            run = best_seed(point, an.metric)
            if run is not None:
                chosen.append((run, f"highest-mean configuration {sweep.point_label(point)}"))
        for spec in runs:
            run, what = resolve(sweep, spec, an.metric)
            chosen.append((run, what))
        sections, seen = [], set()
        for run, what in chosen:
            if run.run_id in seen:
                continue
            seen.add(run.run_id)
            sections.append(
                run_section(
                    run,
                    what,
                    out_dir=sweep.root / "explain" / run.run_id,
                    n=n,
                    method=method,
                    localize=localize,
                    device=device,
                    page_dir=sweep.root,
                    browse=browse,
                    part=sweep.part,
                )
            )
        return sections

    return make


def best_seed(point: Point, metric: str) -> RunResult | None:
    """The finished run of ``point`` with the highest ``metric`` (the first one on ties or NaN)."""
    done = point.done
    if not done:
        return None

    def key(r: RunResult) -> float:
        v = r.value(metric)
        return v if math.isfinite(v) else -math.inf

    return max(done, key=key)


def resolve(sweep: SweepResults, spec: str, metric: str) -> tuple[RunResult, str]:
    """The run that ``--explain SPEC`` names (a point id: its best seed; a run id or run folder name: that run)."""
    for c in sweep.points:
        if c.point_id == spec:
            run = best_seed(c, metric)
            if run is None:
                raise LocbenchError(
                    f"--explain {spec}: this grid point has no finished run; pick one from leaderboard.csv"
                )
            return run, f"configuration {sweep.point_label(c)}"
    for r in sweep.runs:
        if spec in (r.run_id, r.path.name):
            if not r.usable:
                raise LocbenchError(f"--explain {spec}: run status is {r.status!r}, not done; pick a finished run")
            return r, f"configuration {sweep.point_label(sweep.point(r.point_id))}"
    raise LocbenchError(
        f"--explain {spec}: no grid point or run of that id in {sweep.root}; see the point column of leaderboard.csv "
        "or the run folder names"
    )


def run_section(
    run: RunResult,
    what: str,
    *,
    out_dir: Path,
    n: int = 6,
    method: str = "gradcam",
    localize: int = 24,
    device: str = "auto",
    page_dir: Path | None = None,
    browse: bool = False,
    part: str = "val",
) -> Section:
    """The error-analysis section of one run; never raises for a run that cannot be analysed (it says why).

    ``page_dir``: the folder of the page the section goes into (its thumbnails are linked relative to it;
    default: two levels above ``out_dir``, the sweep folder of ``SWEEP/explain/RUN``). ``browse``: write the
    run's image browser into ``out_dir/browse`` and link it. ``part``: the stored predictions shown (``val`` or
    ``test``; the report passes the part its numbers are on).
    """
    seed = f", seed {run.seed}" if run.seed is not None else ""
    title = f"Error analysis: {run.run_id}"
    images = "test images" if part == "test" else "validation images"
    which = (
        "its test part (images held out from training and from tuning the thresholds; the part the numbers above "
        "are on), at the thresholds tuned on validation"
        if part == "test"
        else "its validation images (the part the numbers above are on), at its tuned thresholds"
    )
    intro = (
        f"Why the {what} (run {run.run_id}{seed}) predicts what it does. Every table, picture and map below is of "
        f"the stored predictions of {which}. Files: {out_dir}."
    )
    try:
        res = explain_run(
            run.path, out=out_dir, n=n, method=method, localize=localize, device=device, strict=False, part=part
        )
    except LocbenchError as e:
        return Section(title, *_join(para(intro), para(f"No error analysis for this run: {e}")))
    except Exception as e:
        # The report is the product of a whole sweep: one run that cannot be analysed must not cost it.
        log.warning("%s: error analysis failed", run.path, exc_info=True)
        return Section(title, *_join(para(intro), para(f"No error analysis for this run: {type(e).__name__}: {e}")))

    files = res["files"]
    parts = [para(intro)]
    rel = _relative(out_dir, page_dir or out_dir.parent.parent)
    if browse and not res["cam_error"]:  # the images are readable (a cell-level run is refused, with a note)
        try:
            page = write_browser(run.path, out=out_dir / "browse", part=part, force=True)
        except LocbenchError as e:
            parts.append(para(f"No image browser for this run: {e}."))
        else:
            link = f"{rel}/browse/{page.name}"
            parts.append(
                (
                    f"Image browser of every one of its {images}: [{link}]({link})\n\n",
                    f'<p class="browse"><a href="{link}">Browse all {images} of this run</a> (thumbnails, '
                    "true and predicted classes, filters by class and outcome; a page beside this report).</p>",
                )
            )
    tables = json.loads(Path(files["errors.json"]).read_text(encoding="utf-8"))
    md_err = _demote(errors_markdown(tables, max_pairs=10, max_images=3))
    html_err = _fit_page(_demote(errors_html(tables, max_pairs=10, max_images=3)))
    thumbs = res.get("thumbs") or {}
    if thumbs:
        # Pictures first; the tables of ids stay one click away (ids are what a script or a CSV search needs).
        head, sep, rest = html_err.partition("<h3>Most confused class pairs</h3>")
        html_err = (
            head
            + pair_strips(tables, thumbs, rel)
            + hardest_strips(tables, thumbs, rel)
            + (f"<details><summary>The same as tables of image ids</summary>{sep}{rest}</details>" if sep else "")
        )
        # Markdown: the same pictures (the same files) before the tables of ids, which keep their own headings.
        for name in ("Most confused class pairs", "Hardest images"):
            md_err = md_err.replace(f"### {name}\n", f"### {name}: image ids\n")
        head, sep, rest = md_err.partition("### Most confused class pairs: image ids")
        md_err = head + pair_strips_md(tables, thumbs, rel) + hardest_strips_md(tables, thumbs, rel) + sep + rest
    parts.append((md_err, html_err))
    parts.append(
        (
            "Per-class AP and F1 against class frequency: perf_vs_frequency.png (in report.html).\n\n",
            "<h3>Performance against class frequency</h3>"
            + image(Path(files["perf_vs_frequency.png"]).read_bytes(), "performance against class frequency"),
        )
    )
    parts.append(_cam_part(res, method))
    if res["localization"] is not None:
        parts.append(_localization_part(res))
    for note in res["notes"]:
        parts.append(para(f"Note: {note}."))
    return Section(title, *_join(*parts))


def _cam_part(res: dict[str, Any], method: str) -> tuple[str, str]:
    if res["cam_error"]:
        return para(
            f"Class activation maps could not be drawn: {res['cam_error']}. The tables above need only the stored "
            f"predictions; run `locbench explain {res['run']} --data DIR` once the images are reachable."
        )
    grids = res["cam_grids"]
    if not grids:
        return "", ""
    txt = (
        f"Class activation maps ({method}) over the RGB composite of the stains (red: microtubules, green: protein, "
        "blue: nucleus, yellow: ER). One grid per class: its most confident true positives (TP) and false "
        "positives (FP) and its worst misses (FN); each row shows the image, then the map of that class, then "
        "those of the image's other true or predicted classes. Captions: the probability against the class's tuned "
        "threshold (thresholds.json; predicted when p ≥ threshold) and the outcome (red: an error). Colours: the "
        "map, scaled to its own maximum (the colour bar), so it shows where the evidence for the class lies within "
        "the image, not how strong it is compared with another panel. '(zero map)': the method found no positive "
        "evidence for that class at the model's last feature layer, so the image is shown without colour; common "
        "for classes the model has barely learnt, and not a sign that the class is absent."
    )
    md = para(txt)[0] + "".join(f"- {g['class']}: {g['path']}\n" for g in grids) + "\n"
    html = "<h3>Class activation maps</h3>" + para(txt)[1]
    for g in grids:
        html += f"<h4>{html_escape(g['class'])}</h4>" + image(Path(g["path"]).read_bytes(), f"CAMs of {g['class']}")
    return md, html


def _localization_part(res: dict[str, Any]) -> tuple[str, str]:
    loc = res["localization"]
    part = "test" if res.get("part") == "test" else "validation"

    def f(x: float | None, sign: str = "") -> str:
        return "–" if x is None else f"{x:{sign}.3f}"

    rows = [
        [name, s["n"], f(s["mean_share"]), f(s["mean_chance"]), f(s["lift"], "+"), s["n_mixed"],
         f(s["mean_cell_share"]), f(s["mean_cell_chance"]), f(s["cell_lift"], "+")]
        for name, s in [*loc["per_class"].items(), ("overall", loc["overall"])]
        if s["n"]
    ]  # fmt: skip
    headers = ["class", "pairs", "field share", "chance", "lift", "mixed", "cell share", "chance", "lift"]
    md, html = table(headers, rows)
    txt = (
        f"Does the map sit on the cells that carry the class? Synthetic data know it (masks/ and cells.csv). "
        f"Field share: the share of CAM mass inside the carrying cells; chance: the share of the field they cover "
        f"(what a map blind to the image scores). Cell share, on images where only some cells carry the class: "
        f"the share of the in-cell mass on those cells, against their share of the cell area. "
        f"{loc['n_images']} {part} images, every true class, {loc['method']} maps; {loc['skipped']} (image, "
        "class) pair(s) left out: no carrying cell visible at the model's resolution, or an all-zero map (no "
        "positive evidence at the target layer, common for classes a model has barely learnt)."
    )
    html = "<h3>CAM localization (synthetic data)</h3>" + para(txt)[1] + html
    png = res["files"].get("localization.png")
    if png:
        html += image(Path(png).read_bytes(), "CAM localization against chance")
    return "### CAM localization (synthetic data)\n\n" + para(txt)[0] + md, html


#: Thumbnails per class and kind of error, and per confused pair, in the report's strips; pairs shown.
STRIP_IMAGES = 3
STRIP_PAIRS = 8


def hardest_strips(tables: dict[str, Any], thumbs: dict[str, dict[str, str]], rel: str) -> str:
    """HTML: per class, its worst missed positives and its most confident false alarms as thumbnails."""
    rows = []
    for name, h in tables["hardest"].items():
        groups = [
            _group(label, kind, [(r["id"], f"p {r['prob']:.2f}") for r in h[key][:STRIP_IMAGES]], thumbs, rel)
            for key, label, kind in (("false_negatives", "missed", "fn"), ("false_positives", "false alarms", "fp"))
            if h[key]
        ]
        if groups:
            rows.append(
                f'<div class="strip"><div class="strip-head">{html_escape(name)}</div>'
                f'<div class="strip-body">{"".join(groups)}</div></div>'
            )
    if not rows:
        return "<h3>Hardest images</h3><p>No errors.</p>"
    note = (
        "Missed: true images of the class with the lowest probability; false alarms: images without it with the "
        "highest. Each image twice: the composite of the stains, then the green protein stain alone (what the "
        "label is about; contrast-stretched per image, to show where the protein is rather than how much). "
        "Click an image for a larger view; hover the caption for the full id."
    )
    return "<h3>Hardest images</h3>" + para(note)[1] + "".join(rows)


def pair_strips(tables: dict[str, Any], thumbs: dict[str, dict[str, str]], rel: str) -> str:
    """HTML: the most confused class pairs (A predicted where B was missed), each with example images."""
    pairs = tables["confused_pairs"][:STRIP_PAIRS]
    if not pairs:
        return "<h3>Most confused class pairs</h3><p>No image has both a false positive and a missed class.</p>"
    rows = []
    for p in pairs:
        head = (
            f'<div class="strip-head"><span class="fp">{html_escape(p["fp_class"])}</span> predicted, '
            f'<span class="fn">{html_escape(p["fn_class"])}</span> missed<br><span class="muted">'
            f"{p['count']} image{'s' if p['count'] != 1 else ''}</span></div>"
        )
        items = [(e["id"], f"{e['fp_prob']:.2f} / {e['fn_prob']:.2f}") for e in p.get("examples", [])[:STRIP_IMAGES]]
        rows.append(
            f'<div class="strip">{head}<div class="strip-body">{_group("", "pair", items, thumbs, rel)}</div></div>'
        )
    note = (
        "Images where the first class was a false positive and the second a false negative: the model said one "
        "instead of the other. Captions: probability of the first / of the second class."
    )
    return "<h3>Most confused class pairs</h3>" + para(note)[1] + "".join(rows)


def hardest_strips_md(tables: dict[str, Any], thumbs: dict[str, dict[str, str]], rel: str) -> str:
    """Markdown: :func:`hardest_strips` as a table of thumbnails (the same files, linked by relative path)."""
    rows = []
    for name, h in tables["hardest"].items():
        cells = [
            _md_images([(r["id"], f"p {r['prob']:.2f}") for r in h[key][:STRIP_IMAGES]], thumbs, rel)
            for key in ("false_negatives", "false_positives")
        ]
        if any(cells):
            rows.append(f"| {_md_cell(name)} | {cells[0] or '–'} | {cells[1] or '–'} |")
    if not rows:
        return "### Hardest images\n\nNo errors.\n\n"
    return (
        "### Hardest images\n\nMissed: true images of the class with the lowest probability; false alarms: images "
        "without it with the highest. Each image: the composite of the stains (a click opens the green stain alone; "
        "hover for the id), then its probability.\n\n"
        "| class | missed | false alarms |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"
    )


def pair_strips_md(tables: dict[str, Any], thumbs: dict[str, dict[str, str]], rel: str) -> str:
    """Markdown: :func:`pair_strips` as a table of thumbnails (the same files, linked by relative path)."""
    pairs = tables["confused_pairs"][:STRIP_PAIRS]
    if not pairs:
        return "### Most confused class pairs\n\nNo image has both a false positive and a missed class.\n\n"
    rows = []
    for p in pairs:
        items = [(e["id"], f"{e['fp_prob']:.2f} / {e['fn_prob']:.2f}") for e in p.get("examples", [])[:STRIP_IMAGES]]
        rows.append(
            f"| {_md_cell(p['fp_class'])} | {_md_cell(p['fn_class'])} | {p['count']} | "
            f"{_md_images(items, thumbs, rel) or '–'} |"
        )
    return (
        "### Most confused class pairs\n\nImages where the first class was a false positive and the second a false "
        "negative. After each image: the probability of the first / of the second class.\n\n"
        "| predicted | missed | images | examples |\n|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
    )


def _md_images(items: list[tuple[str, str]], thumbs: dict[str, dict[str, str]], rel: str) -> str:
    """Inline Markdown images (the composite; hover: the full id) linking to the green stain alone; an unreadable
    field by its id."""
    out = []
    for image_id, caption in items:
        t = thumbs.get(image_id)
        full = _md_cell(image_id).replace('"', "'")
        short = image_id if len(image_id) <= 14 else image_id[:12] + "…"
        alt = _md_cell(short).replace("[", "(").replace("]", ")")
        if t is None:
            out.append(f"{full} (no image) {_md_cell(caption)}")
            continue
        rgb, green = (f"{rel}/{quote(t[k])}" for k in ("rgb", "green"))
        out.append(f'[![{alt}]({rgb} "{full}")]({green}) {_md_cell(caption)}')
    return " ".join(out)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _group(label: str, kind: str, items: list[tuple[str, str]], thumbs: dict[str, dict[str, str]], rel: str) -> str:
    figs = []
    for image_id, caption in items:
        t = thumbs.get(image_id)
        short = image_id if len(image_id) <= 14 else image_id[:12] + "…"
        cap = f'<figcaption title="{html_escape(image_id)}">{html_escape(short)} · {html_escape(caption)}</figcaption>'
        if t is None:  # unreadable field: the id alone
            figs.append(f'<figure class="thumb {kind}"><div class="noimg">no image</div>{cap}</figure>')
            continue
        rgb, green = (f"{rel}/{quote(t[k])}" for k in ("rgb", "green"))
        alt = html_escape(image_id)
        figs.append(
            f'<figure class="thumb {kind}"><a href="{rgb}"><img src="{rgb}" alt="composite of {alt}"></a>'
            f'<a href="{green}"><img src="{green}" alt="green stain of {alt}"></a>{cap}</figure>'
        )
    head = f'<div class="kind {kind}">{html_escape(label)}</div>' if label else ""
    return f'<div class="strip-group">{head}{"".join(figs)}</div>'


def _relative(folder: Path, page_dir: Path) -> str:
    """``folder`` as a URL path relative to ``page_dir`` (each part quoted), for links that work from file://."""
    return "/".join(quote(part) for part in Path(os.path.relpath(folder, page_dir)).parts)


def _fit_page(fragment: str) -> str:
    """Tables scroll sideways like the report's own, and the lists of image ids wrap instead of running off."""
    fragment = fragment.replace('<table class="errors">', '<div class="scroll"><table class="errors">')
    fragment = fragment.replace("</table>", "</table></div>")
    head, sep, hardest = fragment.partition("<h3>Hardest images</h3>")
    return head + sep + hardest.replace("<td>", '<td class="l" style="white-space: normal; min-width: 16em">')


def _demote(text: str) -> str:
    """One heading level down: the explain files use level 2, inside a report section they are level 3."""
    return re.sub(r"(?m)^## ", "### ", text.replace("<h2>", "<h3>").replace("</h2>", "</h3>"))


def _join(*parts: tuple[str, str]) -> tuple[str, str]:
    return "".join(p[0] for p in parts), "".join(p[1] for p in parts)
