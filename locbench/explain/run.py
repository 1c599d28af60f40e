"""``explain_run``: everything ``locbench explain`` and the report's error-analysis section show for one run.

From the stored predictions alone (no re-inference): error tables and the performance-against-frequency plot.
With the model and the images: CAM grids of chosen validation images (true positives, false positives and
false negatives of a few classes, or the images asked for), and on synthetic data (``masks/`` + ``cells.csv``)
the localization check. Output files (in ``out``, default ``RUN_DIR/explain``)::

    errors.json  errors.md  errors.html  perf_vs_frequency.png
    thumbs/<id>.jpg, thumbs/<id>_green.jpg       the images the error tables name (composite, green stain)
    cams/<method>/<class>.png                     one grid per explained class (or selected.png for --ids)
    localization.json  localization.md  localization.png   synthetic data only
    explain.json                                  what was written, notes, and why CAMs were skipped if so
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure

from locbench.cells.labels import read_cells_csv
from locbench.data.channels import resolve_channels
from locbench.data.dataset import FieldDataset
from locbench.data.formats import table_from_config
from locbench.engine.data import to_unit
from locbench.engine.device import pick_device
from locbench.errors import BadInputError, LocbenchError
from locbench.explain import cam
from locbench.explain.localization import localization_markdown, localization_report, read_mask
from locbench.explain.mistakes import error_tables, errors_html, errors_markdown, plot_perf_vs_frequency
from locbench.explain.overlay import CamPanel, CamRow, outcome, render_cam_grid, rgb_composite
from locbench.explain.thumbs import write_thumbnails
from locbench.infer import load_run, run_level
from locbench.store.atomic import atomic_write, atomic_write_json, atomic_write_text
from locbench.store.outputs import check_output, data_inputs
from locbench.store.rundir import RunDir

log = logging.getLogger(__name__)

#: Order of the images in a class's grid: hits first, then the two kinds of errors.
KINDS = ("TP", "FP", "FN")
#: Thumbnails per class and kind of error, and per confused pair; confused pairs with thumbnails.
THUMBS_PER_ROW = 4
THUMB_PAIRS = 8
#: Images per ``compute_cams`` call: bounds memory for large models while keeping the passes batched.
CAM_BATCH = 16


@dataclass(frozen=True)
class Scored:
    """A run's stored validation predictions with its tuned thresholds: what the CAM stage explains."""

    ids: list[str]
    probs: np.ndarray
    targets: np.ndarray
    thresholds: np.ndarray
    names: list[str]


def explain_run(
    run_dir: str | os.PathLike,
    *,
    data: str | None = None,
    ids: Sequence[str] | None = None,
    classes: Sequence[str | int] | None = None,
    n: int = 8,
    method: str = "gradcam",
    methods: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    device: str = "auto",
    per_kind: int = 2,
    max_classes: int = 3,
    panels: int = 3,
    localize: int = 32,
    strict: bool = True,
    force: bool = True,
    part: str = "val",
) -> dict[str, Any]:
    """Write the error analysis, CAM grids and (synthetic data) localization check of one finished run.

    Args:
        run_dir: A run folder (``predictions/val.npz`` and ``thresholds.json`` are required; CAMs also need
            ``config.yaml`` and ``checkpoints/best.*``).
        data: Where the run's dataset is now, when it moved (default: the ``data.path`` of its config).
        ids: Explain these validation images (one grid, ``selected.png``) instead of choosing TP/FP/FN images.
        classes: Class names or indices to explain: with ``ids`` the maps drawn for each image; without, the
            classes whose TP/FP/FN images are chosen (default: the ``max_classes`` classes with most errors).
        n: The most distinct images to explain (shared by all classes, filled round-robin over them).
        method: The CAM method (see :data:`locbench.explain.cam.METHODS`).
        methods: Several methods (one set of grids each); overrides ``method``.
        out: Output folder (default ``RUN_DIR/explain``).
        device: ``auto``, ``cpu``, ``cuda``, ...
        per_kind: Up to this many TP, FP and FN images per class.
        max_classes: How many classes get a grid when ``classes`` is not given.
        panels: Maps per image in a class grid: that class first, then the image's other true or predicted
            classes (errors first).
        localize: Validation images (with a true class) scored by the localization check; 0 turns it off.
        strict: Raise when the CAM stage fails (data moved, bad checkpoint, ...). With ``False`` the failure is
            recorded in the result's ``cam_error`` and the error tables are still written.
        force: Replace a non-empty ``out`` (the CLI's --force; the report rewrites its own folders). An ``out`` in
            the run folder (but its explain/) or in the dataset is refused either way.
        part: Which stored predictions are explained: ``val`` (default) or ``test`` (``predictions/test.npz``, at
            the thresholds tuned on validation; what a report scored on the test part shows). ``ids`` name images
            of that part.

    Returns:
        A JSON-able dict: ``run``, ``out``, ``files`` (name -> path), ``cam_grids`` (``path``, ``method``,
        ``class``, ``ids``), ``localization`` (the report of
        :func:`~locbench.explain.localization.localization_report` without its items, or ``None``),
        ``notes``, ``cam_error`` (``None`` unless CAMs failed and ``strict`` is off) and ``thumbs`` (image id ->
        ``{"rgb", "green"}`` JPEG paths relative to ``out``, for the images the error tables name; image-level
        runs). Also written to ``explain.json``.

    Raises:
        LocbenchError: a missing run folder or predictions, an unknown class, image id or method; with
            ``strict``, any user-fixable failure of the CAM stage.
    """
    run_path = Path(run_dir)
    use = list(methods) if methods else [method]
    bad = [m for m in use if m not in cam.METHODS]
    if bad:
        raise LocbenchError(f"unknown CAM method(s) {bad}; valid methods: {', '.join(cam.METHODS)}")
    if n < 1 or per_kind < 1 or max_classes < 1 or panels < 1:
        raise LocbenchError(
            f"n, per_kind, max_classes and panels must be at least 1 (got {n}, {per_kind}, {max_classes}, {panels})"
        )
    if not run_path.is_dir():
        raise LocbenchError(f"run folder {run_path} does not exist; pass a folder written by `locbench train`")
    if part not in ("val", "test"):
        raise LocbenchError(f"part must be val or test, not {part!r}")
    folder = RunDir(run_path)
    stored = folder.read_predictions(part)
    pred_ids, probs, targets = [str(i) for i in stored.ids], stored.probs, stored.targets
    names, thresholds = folder.read_thresholds(probs.shape[1])
    class_idx = _class_indices(classes, names)
    rows_asked = _rows_of(ids, pred_ids, run_path, part) if ids else None

    out_dir = folder.explain_dir
    if out is not None:  # never into the run folder (but its explain/) or the dataset; a non-empty one with force
        reads = [run_path, *data_inputs(data or _data_path(folder))]
        out_dir = check_output(out, reads=reads, allowed=[folder.explain_dir], force=force, folder=True)
    result: dict[str, Any] = {
        "run": str(run_path),
        "out": str(out_dir),
        "files": {},
        "cam_grids": [],
        "localization": None,
        "notes": [],
        "cam_error": None,
        "thumbs": {},
        "part": part,
    }
    tables = error_tables(pred_ids, probs, targets, thresholds, names)
    files = result["files"]
    files["errors.json"] = str(atomic_write_json(out_dir / "errors.json", tables))
    files["errors.md"] = str(atomic_write_text(out_dir / "errors.md", errors_markdown(tables)))
    files["errors.html"] = str(atomic_write_text(out_dir / "errors.html", errors_html(tables)))
    files["perf_vs_frequency.png"] = str(plot_perf_vs_frequency(tables, out_dir / "perf_vs_frequency.png"))

    try:
        if run_level(run_path) == "cell":
            # A cell-level run predicts crops ("FIELD/CELL"); a field-sized CAM of a crop model would mislead.
            result["notes"].append(
                "class activation maps skipped: this is a cell-level run (its predictions are per cell crop, ids "
                "FIELD/CELL); the error tables above are per cell"
            )
        else:
            _thumbnails(result, run_path, tables, data, out_dir)
            _cam_section(
                result,
                run_path,
                rows_asked,
                Scored(pred_ids, probs, targets, thresholds, names),
                class_idx=class_idx,
                methods=use,
                data=data,
                device=device,
                n=n,
                per_kind=per_kind,
                max_classes=max_classes,
                panels=panels,
                localize=localize,
                out_dir=out_dir,
            )
    except Exception as e:
        if strict:
            raise
        # The report must still be written when CAMs cannot be (data moved, damaged checkpoint, ...).
        result["cam_error"] = str(e) if isinstance(e, LocbenchError) else f"{type(e).__name__}: {e}"
        log.warning("%s: class activation maps failed: %s", run_path, result["cam_error"], exc_info=True)
    atomic_write_json(out_dir / "explain.json", result)
    return result


def _thumbnails(
    result: dict[str, Any], run_path: Path, tables: dict[str, Any], data: str | None, out_dir: Path
) -> None:
    """Thumbnails of the images the error tables name (hardest per class, examples of confused pairs), for the
    report's picture strips; ``result["thumbs"]``: id -> file names relative to ``out_dir``."""
    ids = [
        r["id"]
        for h in tables["hardest"].values()
        for kind in ("false_negatives", "false_positives")
        for r in h[kind][:THUMBS_PER_ROW]
    ]
    ids += [e["id"] for p in tables["confused_pairs"][:THUMB_PAIRS] for e in p.get("examples", [])[:THUMBS_PER_ROW]]
    if not ids:
        return
    table = run_table(load_run(run_path), data)
    made = write_thumbnails(table, ids, out_dir / "thumbs")
    result["thumbs"] = {i: {k: f"thumbs/{v}" for k, v in names.items()} for i, names in made.items()}


def _class_indices(classes: Sequence[str | int] | None, names: list[str]) -> list[int] | None:
    if not classes:
        return None
    out, bad = [], []
    lower = {n.lower(): i for i, n in enumerate(names)}
    for c in classes:
        s = str(c).strip()
        if s.isdigit() and int(s) < len(names):
            out.append(int(s))
        elif s.lower() in lower:
            out.append(lower[s.lower()])
        else:
            bad.append(s)
    if bad:
        raise BadInputError(
            f"{len(bad)} unknown class(es)", bad, f"use class names or indices 0-{len(names) - 1}: {', '.join(names)}"
        )
    return list(dict.fromkeys(out))


def _rows_of(ids: Sequence[str], pred_ids: list[str], run_path: Path, part: str = "val") -> list[int]:
    where = {i: r for r, i in enumerate(pred_ids)}
    missing = [str(i) for i in ids if str(i) not in where]
    if missing:
        raise BadInputError(
            f"{len(missing)} image id(s) not among the run's {part} predictions ({run_path}/predictions/{part}.npz)",
            missing,
            f"explain {part} images of this run (their ids are in errors.md and the split's {part} part)",
        )
    return list(dict.fromkeys(where[str(i)] for i in ids))


def select_images(
    probs: np.ndarray,
    targets: np.ndarray,
    thresholds: np.ndarray,
    *,
    classes: Sequence[int] | None = None,
    n: int = 8,
    per_kind: int = 2,
    max_classes: int = 3,
) -> dict[int, list[tuple[int, str]]]:
    """Pick the images to explain per class from stored predictions: up to ``per_kind`` TP, FP and FN each.

    TP and FP images are the most confident ones (highest probability), FN images the worst misses (lowest).
    Classes default to the ``max_classes`` with most errors (FP + FN), or, when no class has an error, those
    with most true positives. At most ``n`` distinct images in total, taken round-robin (FN, FP, TP of each
    class, then the second of each), so one class cannot fill the budget.

    Args:
        probs: ``(N, C)`` probabilities.
        targets: ``(N, C)`` 0/1 truth.
        thresholds: ``(C,)`` thresholds; positive means ``prob >= threshold``.
        classes: Class indices to explain (in this order).
        n: Distinct images at most.
        per_kind: Images per class and kind at most.
        max_classes: Classes when ``classes`` is not given.

    Returns:
        ``{class index: [(row, "TP" | "FP" | "FN"), ...]}`` with rows in TP, FP, FN order; classes without any
        chosen image are left out.
    """
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(targets).astype(bool)
    pred = probs >= np.asarray(thresholds, dtype=np.float64)[None, :]
    masks = {"TP": pred & truth, "FP": pred & ~truth, "FN": ~pred & truth}
    if classes is None:
        errors = (masks["FP"] | masks["FN"]).sum(axis=0)
        hits = masks["TP"].sum(axis=0)
        key = errors if errors.any() else hits
        # Stable order: most errors first, ties in class order.
        classes = [int(c) for c in np.argsort(-key, kind="stable")[:max_classes] if key[c] > 0]
    queues: dict[int, dict[str, list[int]]] = {}
    for c in classes:
        queues[c] = {}
        for kind in KINDS:
            rows = np.flatnonzero(masks[kind][:, c])
            order = probs[rows, c] if kind == "FN" else -probs[rows, c]
            queues[c][kind] = [int(r) for r in rows[np.argsort(order, kind="stable")][:per_kind]]
    chosen: dict[int, list[tuple[int, str]]] = {c: [] for c in classes}
    seen: set[int] = set()
    for depth in range(per_kind):
        for c in classes:
            for kind in ("FN", "FP", "TP"):
                q = queues[c][kind]
                if depth >= len(q) or (q[depth] not in seen and len(seen) >= n):
                    continue
                seen.add(q[depth])
                chosen[c].append((q[depth], kind))
    return {c: sorted(v, key=lambda rk: KINDS.index(rk[1])) for c, v in chosen.items() if v}


def _panel_classes(row: int, focus: int | None, probs, truth, pred, k: int, fixed: list[int] | None) -> list[int]:
    """The classes drawn for one image: ``fixed`` if given, else the focus class, then the image's errors, then
    its hits (each by probability), capped at ``k``; an image with no true or predicted class gets its top one."""
    if fixed:
        return list(fixed)
    p, t, y = probs[row], truth[row], pred[row]
    rank = np.where(t != y, 0, np.where(t & y, 1, 2))
    order = [int(c) for c in np.lexsort((-p, rank)) if rank[c] < 2]
    if focus is not None:
        order = [focus, *(c for c in order if c != focus)]
    return (order or [int(np.argmax(p))])[:k]


def _cam_section(
    result: dict[str, Any],
    run_path: Path,
    rows_asked: list[int] | None,
    scored: Scored,
    *,
    class_idx: list[int] | None,
    n: int,
    per_kind: int,
    max_classes: int,
    **cam_options: Any,
) -> None:
    """Choose the images to explain (``rows_asked``, else TP/FP/FN images per class), then :func:`_cam_stage`."""
    if rows_asked is not None:
        groups = {"selected": [(r, "") for r in rows_asked]}
    else:
        groups = select_images(
            scored.probs,
            scored.targets,
            scored.thresholds,
            classes=class_idx,
            n=n,
            per_kind=per_kind,
            max_classes=max_classes,
        )
    if not groups:
        result["notes"].append(
            f"no image to explain: no class has a positive or a prediction in the {_part_word(result)} set"
        )
    _cam_stage(result, run_path, groups, scored, class_idx=class_idx, **cam_options)


def _cam_stage(
    result: dict[str, Any],
    run_path: Path,
    groups: dict[Any, list[tuple[int, str]]],
    scored: Scored,
    *,
    class_idx: list[int] | None,
    methods: list[str],
    data: str | None,
    device: str,
    panels: int,
    localize: int,
    out_dir: Path,
) -> None:
    """CAM grids for ``groups`` and the localization check; fills ``result`` in place."""
    pred_ids, probs, thresholds, names = scored.ids, scored.probs, scored.thresholds, scored.names
    truth = np.asarray(scored.targets).astype(bool)
    pred = probs >= thresholds[None, :]
    wanted: dict[int, list[int]] = {}  # row -> classes to map, over every grid the image appears in
    layout: list[tuple[Any, list[tuple[int, str, list[int]]]]] = []
    for key, items in groups.items():
        focus = key if isinstance(key, int) else None
        rows = []
        for row, kind in items:
            cls = _panel_classes(row, focus, probs, truth, pred, panels, class_idx if focus is None else None)
            rows.append((row, kind, cls))
            wanted[row] = list(dict.fromkeys([*wanted.get(row, []), *cls]))
        layout.append((key, rows))

    loc_rows: list[int] = []
    run = load_run(run_path)
    table = run_table(run, data)
    root = Path(table.root)
    synthetic = (root / "masks").is_dir() and (root / "cells.csv").exists()
    if synthetic and localize > 0:
        # The explained images first (their maps are computed anyway), then the other images with a true class.
        with_truth = [r for r in range(len(pred_ids)) if truth[r].any()]
        loc_rows = list(dict.fromkeys([*(r for r in wanted if truth[r].any()), *with_truth]))[:localize]
    elif not synthetic:
        result["notes"].append(
            f"localization check skipped: {root} has no masks/ and cells.csv (only synthetic datasets know which "
            "cells carry which class)"
        )
    if not wanted and not loc_rows:
        return

    dev = pick_device(device)
    model = run.model(dev, tta=False)  # a CAM hooks one pass through a layer: never over TTA views
    channels = list(run.meta.get("channels") or resolve_channels(run.config.data.channels))
    all_rows = list(dict.fromkeys([*wanted, *loc_rows]))
    images = load_images(table, [pred_ids[r] for r in all_rows], channels, run.config.data)
    pos = {r: i for i, r in enumerate(all_rows)}
    for m_i, method in enumerate(methods):
        need = {r: list(wanted.get(r, [])) for r in all_rows}
        if m_i == 0:  # localization scores the first method's maps of every true class
            for r in loc_rows:
                need[r] = list(dict.fromkeys([*need[r], *np.flatnonzero(truth[r]).tolist()]))
        cams = batched_cams(model, images, [pos[r] for r in need], list(need.values()), method, dev)
        by_key = {(r, c): cams[r_i][j] for r_i, r in enumerate(need) for j, c in enumerate(need[r])}
        for key, rows in layout:
            label = names[key] if isinstance(key, int) else "selected"
            grid = [
                CamRow(
                    image_id=pred_ids[row],
                    rgb=rgb_composite(images[pos[row]], channels),
                    panels=[
                        CamPanel(
                            cam=by_key[(row, c)],
                            # An all-zero map tints the whole image one colour: say it means "no evidence".
                            class_name=names[c] + ("" if by_key[(row, c)].any() else " (zero map)"),
                            prob=float(probs[row, c]),
                            outcome=outcome(probs[row, c], truth[row, c], thresholds[c]),
                            threshold=float(thresholds[c]),
                        )
                        for c in cls
                    ],
                    caption=(f"{kind} of {label}\n" if kind else "")
                    + "true: "
                    + (", ".join(names[c] for c in np.flatnonzero(truth[row])) or "none"),
                )
                for row, kind, cls in rows
            ]
            path = render_cam_grid(grid, out_dir / "cams" / _slug(method) / f"{_slug(label)}.png")
            result["cam_grids"].append(
                {"path": str(path), "method": method, "class": label, "ids": [pred_ids[r] for r, _, _ in rows]}
            )
        if m_i == 0 and loc_rows:
            _localization(
                result,
                root,
                [(pred_ids[r], c, by_key[(r, c)]) for r in loc_rows for c in np.flatnonzero(truth[r])],
                names,
                method,
                out_dir,
            )


def _data_path(folder: RunDir) -> str | None:
    """The ``data.path`` of the run's config (None when unreadable: the CAM stage names the problem)."""
    try:
        path = folder.read_config().get("data", {}).get("path")
    except (OSError, ValueError, yaml.YAMLError, LocbenchError):
        return None
    return path if isinstance(path, str) else None


def run_table(run, data: str | None):
    """The run's dataset (or ``data``, where it is now) as a table, checked to have the run's classes."""
    where = data or run.config.data.path
    try:
        table = table_from_config(run.config.data, path=data)
    except LocbenchError as e:
        raise LocbenchError(
            f"cannot read the run's images from {where} ({e}); pass --data DIR where the dataset is now"
        ) from None
    if list(table.scheme.classes) != list(run.class_names):
        raise LocbenchError(
            f"the data in {where} has {len(table.scheme.classes)} classes ({table.scheme.name}), the run "
            f"{len(run.class_names)}; pass --data with the dataset the run was trained on"
        )
    return table


def load_images(table, ids: list[str], channels: list[str], dcfg) -> np.ndarray:
    """``(B, C, S, S)`` float32 in [0, 1], the model's input (its normalisation is folded into the model)."""
    where = {i: r for r, i in enumerate(table.ids)}
    missing = [i for i in ids if i not in where]
    if missing:
        raise BadInputError(
            f"{len(missing)} validation image(s) of the run are not in the dataset {table.root}",
            missing,
            "pass --data with the dataset the run was trained on",
        )
    ds = FieldDataset(table, [where[i] for i in ids], channels=channels, size=dcfg.img_size, resize_policy=dcfg.resize)
    return np.stack([to_unit(ds[k][0]).numpy() for k in range(len(ds))])


def batched_cams(model, images: np.ndarray, idx: list[int], lists: list[list[int]], method: str, dev) -> list:
    """Maps of ``lists[i]`` for image ``images[idx[i]]``, batched: ``compute_cams`` needs the same number of
    classes per image, so shorter lists are padded with their first class and the padding dropped."""
    out: list[np.ndarray] = [np.zeros((0, *images.shape[-2:]), np.float32)] * len(idx)
    todo = [i for i in range(len(idx)) if lists[i]]
    # Images with the same number of classes share a batch: no padding work for the common case.
    todo.sort(key=lambda i: len(lists[i]))
    for start in range(0, len(todo), CAM_BATCH):
        chunk = todo[start : start + CAM_BATCH]
        k = max(len(lists[i]) for i in chunk)
        padded = [lists[i] + [lists[i][0]] * (k - len(lists[i])) for i in chunk]
        x = torch.from_numpy(images[[idx[i] for i in chunk]]).to(dev)
        maps = cam.compute_cams(model, x, padded, method=method)
        for j, i in enumerate(chunk):
            out[i] = maps[j, : len(lists[i])]
    return out


def _part_word(result: dict[str, Any]) -> str:
    return "test" if result.get("part") == "test" else "validation"


def _localization(
    result: dict[str, Any],
    root: Path,
    pairs: list[tuple[str, int, np.ndarray]],
    names: list[str],
    method: str,
    out_dir: Path,
) -> None:
    cells = read_cells_csv(root / "cells.csv", num_classes=len(names))
    masks = {i: read_mask(root / "masks" / f"{i}.png") for i in dict.fromkeys(p[0] for p in pairs)}
    cams = np.stack([p[2] for p in pairs])[:, None]
    report = localization_report([p[0] for p in pairs], cams, [[p[1]] for p in pairs], masks, cells, names)
    report["method"] = method
    report["n_images"] = len(masks)
    files = result["files"]
    files["localization.json"] = str(atomic_write_json(out_dir / "localization.json", report))
    note = (
        f"\n{report['n_images']} {_part_word(result)} images, every true class, {method} maps; "
        f"{report['skipped']} (image, class) pair(s) skipped (no carrying cell visible or an all-zero map).\n"
    )
    files["localization.md"] = str(atomic_write_text(out_dir / "localization.md", localization_markdown(report) + note))
    files["localization.png"] = str(plot_localization(report, out_dir / "localization.png"))
    result["localization"] = {k: v for k, v in report.items() if k != "items"}


def plot_localization(report: dict[str, Any], out_png: str | os.PathLike) -> Path:
    """Bars per class (and overall): share of CAM mass inside the carrying cells against chance; writes a PNG.

    Args:
        report: The dict from :func:`~locbench.explain.localization.localization_report`.
        out_png: Where to write the PNG (atomically).

    Returns:
        The path written.
    """
    rows = [(k, v) for k, v in report["per_class"].items() if v["n"]]
    if report["overall"]["n"]:
        rows.append(("overall", report["overall"]))
    fig = Figure(figsize=(max(6.0, 0.55 * len(rows) + 2.0), 4.2), layout="constrained")
    ax = fig.add_subplot()
    if rows:
        x = np.arange(len(rows))
        share = [v["mean_share"] for _, v in rows]
        chance = [v["mean_chance"] for _, v in rows]
        ax.bar(x - 0.2, share, width=0.4, label="CAM mass inside carrying cells", color="#2c7fb8")
        ax.bar(x + 0.2, chance, width=0.4, label="chance (their share of the field)", color="#bdbdbd")
        ax.set_xticks(x, [f"{k}\n(n={v['n']})" for k, v in rows], rotation=45, ha="right", fontsize=7)
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no (image, class) pair could be scored", ha="center", va="center")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("share")
    ax.set_title(f"{report.get('method', 'CAM')} mass on the cells carrying the class vs chance", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return atomic_write(out_png, lambda f: f.write(buf.getvalue()))


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s.replace("+", "p")).strip("_") or "class"
