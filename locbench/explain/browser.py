"""``write_browser``: a static image browser of one run's stored predictions (``RUN/browse/index.html``).

One HTML file with its data inline and a folder of JPEG thumbnails beside it: no server, no network, opens from
``file://``. Every image of the chosen part (the composite and the green stain alone), its true classes and the
predicted ones with probabilities, filters by class and by outcome at the run's tuned thresholds (TP / FP / FN),
sort by the probability of the chosen class, pages of 60 thumbnails (a few thousand images stay fast), and a
detail view on click with every class's probability against its threshold.

A cell-level run's page holds its fields instead, each with its cells (the ``FIELD/CELL`` predictions): every cell
outlined in the colour of the class it is called (:mod:`locbench.explain.cell_thumbs`), filters on cells (a field is
shown when one of its cells has the chosen outcome), and on click the field's numbered cells with their true and
called classes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps

from locbench.cells.data import resolve_masks, split_cell_id
from locbench.cells.labels import CELL_LABELS_FILE
from locbench.data.channels import resolve_channels
from locbench.engine.device import pick_device
from locbench.errors import LocbenchError
from locbench.explain import cam
from locbench.explain.cell_thumbs import called_class, class_colors, write_cell_pictures
from locbench.explain.overlay import classes_to_explain, rgb_composite
from locbench.explain.run import CAM_BATCH, batched_cams, load_images, run_table
from locbench.explain.thumbs import THUMB_SIZE, thumb_name, write_jpeg, write_thumbnails
from locbench.infer import load_run, run_level
from locbench.store.atomic import atomic_write_text
from locbench.store.outputs import check_output, data_inputs
from locbench.store.rundir import RunDir, RunFileError
from locbench.tables import html_escape

log = logging.getLogger(__name__)

#: Thumbnails per page of the browser.
PAGE_SIZE = 60


def write_browser(
    run_dir: str | os.PathLike,
    *,
    data: str | None = None,
    out: str | os.PathLike | None = None,
    part: str | None = None,
    size: int = THUMB_SIZE,
    force: bool = True,
    cams: str | None = None,
    device: str = "auto",
) -> Path:
    """Write the image browser of a finished run (image or cell level); returns the path of its ``index.html``.

    Args:
        run_dir: A run folder with ``predictions/<part>.npz`` and ``thresholds.json``.
        data: Where the run's dataset is now, when it moved (default: the ``data.path`` of its config).
        out: The browser's folder (default ``RUN/browse``); one in the dataset or elsewhere in the run is refused.
        part: Which stored predictions to browse: ``val`` or ``test``; default the test part where the run has
            one (held out from every choice the run made), else validation.
        size: Thumbnail side in pixels.
        force: Replace a non-empty ``out`` given explicitly (the default folder is the browser's own).
        cams: A CAM method (``gradcam``, ...): also draw, for every image, the maps of its three most telling
            classes (errors first, then hits, then the most probable), shown when the image is clicked. Loads
            the model and runs it once per image.
        device: Where the maps are computed.

    Raises:
        LocbenchError: no such run, no predictions of that part, ``cams`` for a cell-level run, or images that
            cannot be read.
    """
    if cams is not None and cams not in cam.METHODS:  # before any file is written
        raise LocbenchError(f"unknown CAM method {cams!r}; valid methods: {', '.join(cam.METHODS)}")
    folder = RunDir(Path(run_dir))
    if not folder.root.is_dir():
        raise LocbenchError(f"run folder {folder.root} does not exist; pass a folder written by `locbench train`")
    if part is None:
        part = "test" if folder.has_predictions("test") else "val"
    try:
        stored = folder.read_predictions(part)
        names, thresholds = folder.read_thresholds(stored.probs.shape[1])
    except RunFileError as e:
        raise LocbenchError(str(e)) from None
    level = run_level(folder.root)
    if level == "cell" and cams is not None:
        raise LocbenchError(
            f"{folder.root} is a cell-level run: its model sees cell crops, so a field-sized class activation map "
            "would mislead; browse it without --cams"
        )
    run = load_run(folder.root)
    where = data or run.config.data.path
    target = folder.browse_dir
    if out is not None:
        target = check_output(
            out, reads=[folder.root, *data_inputs(where)], allowed=[folder.browse_dir], force=force, folder=True
        )
    table = run_table(run, data)
    title = f"Images of {folder.root.name} ({part})"
    if level == "cell":
        page = _cell_page(run, table, stored, names, np.asarray(thresholds, np.float64), target, size=size, title=title)
        path = atomic_write_text(target / "index.html", page)
        log.info("cell browser written to %s", path)
        return path
    ids = [str(i) for i in stored.ids]
    thumbs = write_thumbnails(table, ids, target / "thumbs", size=size)
    if not thumbs:
        raise LocbenchError(f"none of the {len(ids)} images of {part} could be read from {table.root}")
    maps = (
        _cam_overlays(run, table, ids, stored, thresholds, target / "cams", method=cams, device=device) if cams else {}
    )
    page = browser_html(
        title=title,
        names=list(names),
        thresholds=np.asarray(thresholds, dtype=np.float64),
        ids=ids,
        probs=np.asarray(stored.probs, dtype=np.float64),
        targets=np.asarray(stored.targets),
        thumbs={i: {k: f"thumbs/{v}" for k, v in t.items()} for i, t in thumbs.items()},
        cams=maps,
        method=cams,
    )
    path = atomic_write_text(target / "index.html", page)
    log.info("image browser of %d images written to %s", len(thumbs), path)
    return path


def _cam_overlays(run, table, ids, stored, thresholds, out_dir: Path, *, method: str, device: str, k: int = 3):
    """Class activation maps of each image's ``k`` most telling classes over its composite, as JPEGs in
    ``out_dir``; image id -> class index -> path relative to the browser's folder."""
    dev = pick_device(device)
    model = run.model(dev, tta=False)  # a CAM hooks one pass through a layer: never over TTA views
    channels = list(run.meta.get("channels") or resolve_channels(run.config.data.channels))
    chosen = classes_to_explain(stored.probs, stored.targets, np.asarray(thresholds), k=k)
    heat = colormaps["jet"]
    done: dict[str, dict[int, str]] = {}
    for start in range(0, len(ids), CAM_BATCH):
        rows = list(range(start, min(start + CAM_BATCH, len(ids))))
        images = load_images(table, [ids[r] for r in rows], channels, run.config.data)
        maps = batched_cams(model, images, list(range(len(rows))), [chosen[r] for r in rows], method, dev)
        for j, r in enumerate(rows):
            rgb = rgb_composite(images[j], channels)
            done[ids[r]] = {}
            for m, c in zip(maps[j], chosen[r], strict=True):
                # An all-zero map (no evidence) leaves the image uncoloured, as in the report's grids.
                color = heat(np.clip(m, 0, 1))[..., :3] if m.any() else rgb
                name = f"{thumb_name(ids[r])}_{method}_{c}.jpg"
                write_jpeg(out_dir / name, 0.55 * rgb + 0.45 * color)
                done[ids[r]][c] = f"{out_dir.name}/{name}"
    return done


def browser_html(
    *,
    title: str,
    names: list[str],
    thresholds: np.ndarray,
    ids: list[str] | None = None,
    probs: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    thumbs: dict[str, dict[str, str]] | None = None,
    cams: dict[str, dict[int, str]] | None = None,
    method: str | None = None,
    fields: list[dict[str, Any]] | None = None,
    colors: list[str] | None = None,
    note: str = "",
) -> str:
    """The browser page: the data as inline JSON, the viewer as inline CSS and JavaScript (no external file).

    An image-level page takes ``ids``, ``probs``, ``targets``, ``thumbs`` (and ``cams``); a cell-level one takes
    ``fields`` (see :func:`cell_fields`), the outline ``colors`` of the classes (CSS colours) and a ``note`` on
    where the cells' truth comes from.
    """
    if fields is None:
        items: list[dict[str, Any]] = []
        for row, image_id in enumerate(ids or []):
            t = (thumbs or {}).get(image_id)
            items.append(
                {
                    "id": image_id,
                    "rgb": t["rgb"] if t else None,
                    "green": t["green"] if t else None,
                    "truth": [int(c) for c in np.flatnonzero(targets[row])],
                    "p": _probs(probs[row], thresholds),
                    "cams": {str(c): path for c, path in (cams or {}).get(image_id, {}).items()},
                }
            )
    else:
        items = fields
    data = {
        "classes": names,
        "thresholds": [float(x) for x in thresholds],
        "items": items,
        "page": PAGE_SIZE,
        "method": method or "",
        "level": "image" if fields is None else "cell",
        "colors": colors or [],
        "note": note,
    }
    # "</" cannot end the script element early: JSON allows "<\/" for "</".
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return _PAGE.replace("{{TITLE}}", html_escape(title)).replace("{{DATA}}", blob)


def _probs(row: np.ndarray, thresholds: np.ndarray) -> list[float | None]:
    """Probabilities for the page, 4 decimals unless rounding would move one across its class's threshold (then in
    full, so the page's outcomes are the run's); a class never predicted (NaN) is null."""
    out: list[float | None] = []
    for x, t in zip(row.tolist(), thresholds.tolist(), strict=True):
        short = round(x, 4)
        out.append(None if x != x else short if (short >= t) == (x >= t) else x)  # x != x: NaN
    return out


def cell_fields(
    ids: list[str],
    probs: np.ndarray,
    targets: np.ndarray,
    thresholds: np.ndarray,
    pictures: dict[str, dict[str, str]],
) -> tuple[list[dict[str, Any]], dict[str, dict[int, int]]]:
    """The page's fields of cell-level predictions (``FIELD/CELL`` ids), in the order of their first cell.

    Returns:
        The items (``id``, picture paths, ``cells``: ``c`` (cell id), ``truth``, ``p``, ``col`` (the class its
        outline is coloured by, -1 for none)) and field id -> cell id -> that class (to draw the pictures).
    """
    fields: dict[str, dict[str, Any]] = {}
    colours: dict[str, dict[int, int]] = {}
    for row, cell_id in enumerate(ids):
        fid, cell = split_cell_id(cell_id)
        col = called_class(probs[row], thresholds)
        if fid not in fields:
            fields[fid] = {"id": fid, **{k: None for k in ("rgb", "green", "rgb_big", "green_big")}, "cells": []}
            colours[fid] = {}
        colours[fid][cell] = col
        fields[fid]["cells"].append(
            {
                "c": cell,
                "truth": [int(k) for k in np.flatnonzero(targets[row])],
                "p": _probs(probs[row], thresholds),
                "col": col,
            }
        )
    for fid, item in fields.items():
        item.update(pictures.get(fid, {}))
    return list(fields.values()), colours


def _cell_page(run, table, stored, names, thresholds: np.ndarray, target: Path, *, size: int, title: str) -> str:
    """The browser of a cell-level run: its fields, each cell outlined in its predicted class's colour."""
    masks_dir, own = resolve_masks(run.config.cell, table, cache_dir=run.config.data.cache_dir)
    ids = [str(i) for i in stored.ids]
    probs = np.asarray(stored.probs, dtype=np.float64)
    items, colours = cell_fields(ids, probs, np.asarray(stored.targets), thresholds, {})
    pictures = write_cell_pictures(table, masks_dir, colours, target / "thumbs", size=size)
    if not pictures:
        raise LocbenchError(f"none of the {len(items)} fields of these cells could be read from {table.root}")
    for item in items:
        item.update({k: f"thumbs/{v}" for k, v in pictures.get(item["id"], {}).items()})
    truth = (
        f"each cell's own labels ({CELL_LABELS_FILE})"
        if own and (Path(table.root) / CELL_LABELS_FILE).is_file()
        else "its field's image labels, copied to every cell (weak labels: a cell may not show every class of "
        "its field)"
    )
    note = f"Cells from {masks_dir}. A cell's truth is {truth}."
    colors = ["#{:02x}{:02x}{:02x}".format(*c) for c in class_colors(len(names))]
    return browser_html(title=title, names=list(names), thresholds=thresholds, fields=items, colors=colors, note=note)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0; color: #1d2330;
       background: #f6f7f9; }
header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #dde1e7; padding: 10px 20px;
         z-index: 2; }
h1 { font-size: 1.2em; margin: 0 0 6px; }
.controls { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; font-size: 0.9em; }
.controls label { display: flex; gap: 5px; align-items: center; }
#count { color: #5b6475; }
main { padding: 14px 20px 40px; }
#grid { display: flex; flex-wrap: wrap; gap: 10px; }
.card { width: 170px; background: #fff; border: 1px solid #dde1e7; border-radius: 4px; padding: 4px;
        cursor: pointer; font-size: 0.72em; }
.card img { width: 160px; height: 160px; display: block; margin: 0 auto; background: #000; }
.card .id { overflow-wrap: anywhere; color: #5b6475; }
.card.TP { border-color: #2ca02c; } .card.FP { border-color: #e07b00; } .card.FN { border-color: #d62728; }
.tag { display: inline-block; padding: 0 4px; margin: 1px; border-radius: 3px; background: #eef0f3; }
.tag.TP { background: #dff3df; } .tag.FP { background: #fde8cc; } .tag.FN { background: #f9d6d6; }
#pager { margin: 14px 0; display: flex; gap: 10px; align-items: center; }
#detail { position: fixed; inset: 0; background: rgba(20, 24, 33, 0.75); display: none; z-index: 3; }
#detail .box { background: #fff; margin: 4vh auto; max-width: 900px; padding: 14px 18px; border-radius: 6px;
               max-height: 88vh; overflow: auto; }
#detail img { width: 400px; max-width: 48%; image-rendering: auto; }
#detail table { border-collapse: collapse; font-size: 0.85em; margin-top: 8px; }
#detail td, #detail th { border: 1px solid #dde1e7; padding: 2px 6px; text-align: right; }
#detail td:first-child, #detail th:first-child { text-align: left; }
.muted { color: #6b7385; font-size: 0.85em; }
#detail .cams { display: flex; flex-wrap: wrap; gap: 8px; }
#detail figure { margin: 0; font-size: 0.8em; text-align: center; }
#detail .cams img { width: 260px; max-width: 100%; }
#detail h3 { font-size: 0.95em; margin: 10px 0 4px; }
#detail td.l, #detail th.l { text-align: left; }
#detail img.big { width: 49%; max-width: 640px; }
#detail .box.wide { max-width: 1320px; }
#detail td.n { white-space: nowrap; }
#detail tr.hit td { background: #fff6c8; }
#legend { font-size: 0.8em; margin-top: 6px; }
.sw { display: inline-flex; align-items: center; gap: 3px; margin-right: 10px; }
.sw i { display: inline-block; width: 14px; height: 10px; border: 1px solid #8a93a3; }
</style></head><body>
<header><h1>{{TITLE}}</h1>
<div class="controls">
<label>class <select id="cls"><option value="-1">any</option></select></label>
<label>outcome <select id="outcome">
<option value="all">all</option><option value="TP">true positive</option><option value="FP">false positive</option>
<option value="FN">false negative</option><option value="err">any error</option><option value="ok">no error</option>
</select></label>
<label>sort <select id="sort"><option value="id">file order</option><option value="desc">most confident first</option>
<option value="asc">least confident first</option></select></label>
<label>show <select id="view"><option value="rgb">composite</option><option value="green">green stain</option>
</select></label>
<span id="count"></span></div>
<div id="legend"></div>
<p class="muted" id="help">Outcome at the run's tuned thresholds (predicted when p &ge; threshold). With a class chosen:
that class's outcome and probability; with "any": images with that outcome for some class (an error: a false
positive or a false negative of some class), and confidence is the highest probability. Border: green TP,
orange FP, red FN. Click an image for every class.
The green stain alone is contrast-stretched per image (to see where the protein is, not how much there is).</p>
</header>
<main><div id="grid"></div>
<div id="pager"><button id="prev">previous</button><span id="pageinfo"></span><button id="next">next</button></div>
</main>
<div id="detail"><div class="box" id="detailbox"></div></div>
<script type="application/json" id="data">{{DATA}}</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const C = D.classes, T = D.thresholds, CELL = D.level === "cell";
const $ = (id) => document.getElementById(id);
let page = 0;
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
  "'": "&#39;"})[c]);
// A unit is what has probabilities: an image, or (cell-level runs) one cell of a field.
const units = (it) => CELL ? it.cells : [it];
const pv = (u, c) => u.p[c] === null ? -1 : u.p[c];  // null: a class the run never predicts
const fmt = (x, d) => x === null ? "n/a" : x.toFixed(d);
function outcome(u, c) {
  const pred = pv(u, c) >= T[c], truth = u.truth.includes(c);
  return pred && truth ? "TP" : pred ? "FP" : truth ? "FN" : "TN";
}
function errors(u) {
  let n = 0;
  for (let c = 0; c < C.length; c++) { const o = outcome(u, c); if (o === "FP" || o === "FN") n++; }
  return n;
}
function matches(u, c, want) {
  if (want === "all") return true;
  if (c < 0) {
    if (want === "err" || want === "ok") return (errors(u) > 0) === (want === "err");
    return C.some((_, k) => outcome(u, k) === want);  // any class with that outcome
  }
  const o = outcome(u, c);
  return want === "err" ? o === "FP" || o === "FN" : want === "ok" ? o === "TP" || o === "TN" : o === want;
}
C.forEach((name, i) => { const o = document.createElement("option"); o.value = i; o.textContent = name;
  $("cls").appendChild(o); });
if (CELL) {
  $("help").innerHTML = "Cell-level run: each field shows its cells outlined in the colour of the class they are " +
    "predicted to carry (the most probable class at or above its tuned threshold; white: no class called; grey: " +
    "a cell of the mask this part has no prediction for). Filters work on cells: a field is shown when one of its " +
    "cells has the chosen outcome (&quot;no error&quot;: when none of its cells has an error); confidence is the " +
    "highest probability among its cells. Click a field for its numbered cells, their true and called classes. " +
    esc(D.note);
  const used = new Set(D.items.flatMap((it) => it.cells.map((u) => u.col)));
  const sw = (color, label) => `<span class="sw"><i style="background:${color}"></i>${esc(label)}</span>`;
  $("legend").innerHTML = C.map((n, k) => used.has(k) ? sw(D.colors[k], n) : "").join("") +
    sw("#ffffff", "no class called") + sw("#808080", "not in this part");
}
const noun = CELL ? "fields" : "images";
const total = D.items.reduce((n, it) => n + units(it).length, 0);
function selected() {
  const c = +$("cls").value, want = $("outcome").value, sort = $("sort").value;
  let rows = D.items.filter((it) => want === "ok" ? units(it).every((u) => matches(u, c, want))
    : units(it).some((u) => matches(u, c, want)));
  const best = (u) => c < 0 ? Math.max(...u.p.map((p) => p === null ? -1 : p)) : pv(u, c);
  const conf = (it) => Math.max(...units(it).map(best));
  if (sort === "desc") rows = rows.slice().sort((a, b) => conf(b) - conf(a));
  if (sort === "asc") rows = rows.slice().sort((a, b) => conf(a) - conf(b));
  return rows;
}
// Per class, how many units of an item have each outcome.
function tally(it) {
  const t = {};
  for (const u of units(it)) {
    for (let k = 0; k < C.length; k++) {
      const o = outcome(u, k);
      if (o !== "TN") { t[k] = t[k] || {TP: 0, FP: 0, FN: 0}; t[k][o]++; }
    }
  }
  return t;
}
const worst = (n) => n.FN ? "FN" : n.FP ? "FP" : "TP";
function card(it, c, view) {
  const src = it[view];
  const img = src ? `<img src="${esc(src)}" alt="${esc(it.id)}" loading="lazy">` : '<div class="muted">no image</div>';
  let o = "", line = "", tags;
  if (!CELL) {
    o = c >= 0 ? outcome(it, c) : "";
    line = c >= 0 ? ` &middot; p ${fmt(it.p[c], 3)} ${o}` : "";
    const pred = it.p.map((p, k) => [pv(it, k), k]).filter(([p, k]) => p >= T[k]).map(([p, k]) => k);
    tags = [...new Set([...it.truth, ...pred])].map((k) => `<span class="tag ${outcome(it, k)}">` +
      `${esc(C[k])} ${fmt(it.p[k], 2)}</span>`).join("");
  } else {
    const t = tally(it), says = (n) => ["TP", "FP", "FN"].filter((k) => n[k]).map((k) => `${n[k]} ${k}`).join(", ");
    if (c >= 0) {
      o = t[c] ? worst(t[c]) : "";
      line = ` &middot; max p ${fmt(Math.max(...it.cells.map((u) => pv(u, c))), 3)}` + (t[c] ? `; ${says(t[c])}` : "");
    }
    tags = `<span class="tag">${it.cells.length} cells</span>` + Object.entries(t).map(([k, n]) =>
      `<span class="tag ${worst(n)}">${esc(C[k])}: ${says(n)}</span>`).join("");
  }
  return `<div class="card ${o}" data-id="${esc(it.id)}">${img}<div class="id">${esc(it.id)}${line}</div>` +
    `${tags}</div>`;
}
function render() {
  const c = +$("cls").value, want = $("outcome").value, rows = selected(), n = D.page;
  const pages = Math.max(1, Math.ceil(rows.length / n));
  page = Math.min(page, pages - 1);
  const view = $("view").value;
  $("grid").innerHTML = rows.slice(page * n, page * n + n).map((it) => card(it, c, view)).join("");
  let count = `${rows.length} of ${D.items.length} ${noun}`;
  if (CELL) {
    const hit = D.items.reduce((k, it) => k + it.cells.filter((u) => matches(u, c, want)).length, 0);
    count += ` (${hit} of ${total} cells)`;
  }
  $("count").textContent = count;
  $("pageinfo").textContent = `page ${page + 1} of ${pages}`;
  $("prev").disabled = page === 0;
  $("next").disabled = page >= pages - 1;
}
function classRows(u) {
  return C.map((name, k) => [k, pv(u, k)]).sort((a, b) => b[1] - a[1]).map(([k, p]) =>
    `<tr><td>${esc(C[k])}</td><td>${fmt(u.p[k], 3)}</td><td>${T[k] > 1 ? "never" : T[k].toFixed(3)}</td>` +
    `<td>${u.truth.includes(k) ? "yes" : ""}</td><td><span class="tag ${outcome(u, k)}">${outcome(u, k)}` +
    `</span></td></tr>`).join("");
}
function cellRows(it) {
  const c = +$("cls").value, want = $("outcome").value;
  return it.cells.map((u) => {
    const called = C.map((_, k) => k).filter((k) => pv(u, k) >= T[k]).sort((a, b) => pv(u, b) - pv(u, a));
    // the most probable class the run can call (one it never predicts, threshold "never", is no near miss)
    const can = C.map((_, k) => k).filter((k) => T[k] <= 1);
    const top = (can.length ? can : C.map((_, k) => k)).reduce((a, b) => pv(u, b) > pv(u, a) ? b : a);
    const sw = u.col >= 0 ? D.colors[u.col] : "#ffffff";
    const calls = called.length ? called.map((k) => `<span class="tag ${outcome(u, k)}">${esc(C[k])} ` +
      `${fmt(u.p[k], 2)}</span>`).join("") : `<span class="muted">none (highest: ${esc(C[top])} ` +
      `${fmt(u.p[top], 2)})</span>`;
    const truth = u.truth.map((k) => `<span class="tag ${outcome(u, k)}">${esc(C[k])} ${fmt(u.p[k], 2)}</span>`);
    const hit = want !== "all" && matches(u, c, want) ? ' class="hit"' : "";
    return `<tr${hit}><td class="n"><span class="sw"><i style="background:${sw}"></i></span>${u.c}</td>` +
      `<td class="l">${truth.join("") || '<span class="muted">none</span>'}</td><td class="l">${calls}</td>` +
      `<td>${errors(u) || ""}</td></tr>`;
  }).join("");
}
function detail(id) {
  const it = D.items.find((x) => x.id === id);
  const views = CELL ? ["rgb_big", "green_big"] : ["rgb", "green"];
  const imgs = views.filter((k) => it[k]).map((k) => `<img src="${esc(it[k])}" alt="${k} ${esc(id)}"` +
    (CELL ? ' class="big"' : "") + ">");
  const cams = Object.entries(it.cams || {}).map(([k, src]) => `<figure><img src="${esc(src)}" alt="${D.method} ` +
    `${esc(C[k])}"><figcaption>${esc(C[k])}: p ${fmt(it.p[k], 3)}, ${outcome(it, +k)}</figcaption></figure>`);
  const camPart = cams.length ? `<h3>${esc(D.method)} maps (each scaled to its own maximum; no colour: a zero ` +
    `map, no evidence)</h3><div class="cams">${cams.join("")}</div>` : "";
  const tableHtml = CELL ? `<p class="muted">Numbers on the picture: cell ids. Tags: probability and outcome at ` +
    `the tuned threshold (green TP, orange FP, red FN). Highlighted: cells that match the filter.</p>` +
    `<table><tr><th>cell</th><th class="l">true classes</th><th class="l">called classes</th><th>errors</th>` +
    `</tr>${cellRows(it)}</table>`
    : `<table><tr><th>class</th><th>p</th><th>threshold</th><th>true</th><th>outcome</th></tr>${classRows(it)}</table>`;
  $("detailbox").innerHTML = `<p><b>${esc(id)}</b> <button id="close">close</button></p>${imgs.join(" ")}` +
    camPart + tableHtml;
  $("detailbox").classList.toggle("wide", CELL);
  $("detail").style.display = "block";
  $("close").onclick = () => { $("detail").style.display = "none"; };
}
$("grid").addEventListener("click", (e) => {
  const card = e.target.closest(".card");
  if (card) detail(card.dataset.id);
});
$("detail").addEventListener("click", (e) => { if (e.target.id === "detail") $("detail").style.display = "none"; });
for (const id of ["cls", "outcome", "sort", "view"]) $(id).addEventListener("change", () => { page = 0; render(); });
$("prev").onclick = () => { page--; render(); };
$("next").onclick = () => { page++; render(); };
render();
</script></body></html>
"""
