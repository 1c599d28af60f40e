"""Synthetic HPA-like datasets with known truth: ``synthesize(out, ...)`` and ``locbench synth OUT``.

Each field is a few cells drawn in the four HPA stains (see :mod:`locbench.data.synth_patterns` for the cell
layout and for which green pattern each class gets). Labels follow the real competitions:

- An image's label set is a real label row drawn from the complete Kaggle label file of the chosen scheme, so
  class frequencies and co-occurrences match HPA's (stored in ``hpa_label_stats.json``, computed once from
  ``kaggle2021_train_full.csv`` / ``kaggle2018_train_full.csv``; :func:`compute_label_stats` regenerates it).
- Weak labels, as in the 2021 competition: each cell carries a non-empty subset of the image's labels and the
  image label is the union over its cells. ``Negative`` is exclusive. A cell with ``Mitotic spindle`` is drawn in
  metaphase, one with ``Cytokinetic bridge`` in telophase; a few unlabelled cells divide too.

Output folder (both formats; only the CSV header and label syntax differ)::

    train.csv                         2021: ID,Label with "|"; 2018: Id,Target with spaces
    train/{ID}_{red,green,blue,yellow}.png   8-bit, size x size
    masks/{ID}.png                    cell instances, 0 background, 1..N (16-bit when N > 255)
    cells.csv                         ID,cell,Label: the truth for every cell
    synth.json                        the parameters used

Every field has its own random stream seeded from ``(seed, index)``, so the output is the same byte for byte
for a seed, whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import shutil
import textwrap
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from locbench.data import synth_patterns as sp
from locbench.data.channels import STAINS
from locbench.data.schemes import ClassScheme, get_scheme
from locbench.errors import LocbenchError
from locbench.store.atomic import atomic_write, atomic_write_json, atomic_write_text, ensure_writable_dir

log = logging.getLogger(__name__)

STATS_PATH = Path(__file__).with_name("hpa_label_stats.json")
EDITIONS = {"2021": ("hpa2021", "ID", "Label", "|"), "2018": ("hpa2018", "Id", "Target", " ")}

#: Share of cells without a mitotic label that are drawn dividing anyway (dividing cells are not a giveaway).
SPONTANEOUS_MITOSIS = 0.03


# ---------------------------------------------------------------------------------------------------------------
# Label statistics


def compute_label_stats(csv: str | os.PathLike, *, edition: str) -> dict:
    """Class frequencies, co-occurrence counts and every label combination with its count, from a label CSV.

    Args:
        csv: a complete Kaggle label file (``ID,Label`` with ``|`` for 2021, ``Id,Target`` with spaces for 2018).
        edition: ``"2021"`` or ``"2018"``.

    Returns:
        ``{"source", "scheme", "classes", "images", "frequency", "cooccurrence", "combinations"}``;
        ``combinations`` is a list of ``[[class indices], count]``, most frequent first.
    """
    scheme_name, id_col, label_col, sep = _edition(edition)
    classes = get_scheme(scheme_name).classes
    table = pd.read_csv(csv, dtype=str)
    if list(table.columns[:2]) != [id_col, label_col]:
        raise LocbenchError(
            f"{csv}: expected header {id_col},{label_col} for format {edition}, got {list(table.columns)}"
        )
    combos = Counter(tuple(sorted({int(v) for v in str(s).split(sep) if v.strip()})) for s in table[label_col])
    co = np.zeros((len(classes), len(classes)), np.int64)
    for combo, n in combos.items():
        idx = np.array(combo)
        co[np.ix_(idx, idx)] += n
    return {
        "source": f"{Path(csv).name} (complete Kaggle {edition} train labels, {len(table)} images)",
        "scheme": scheme_name,
        "classes": list(classes),
        "images": len(table),
        "frequency": [round(float(v), 6) for v in np.diag(co) / len(table)],
        "cooccurrence": co.tolist(),
        "combinations": [[list(c), n] for c, n in sorted(combos.items(), key=lambda kv: (-kv[1], kv[0]))],
    }


def load_label_stats(edition: str) -> dict:
    """The stored statistics of one format (``"2021"`` or ``"2018"``), from ``hpa_label_stats.json``."""
    _edition(edition)
    if not STATS_PATH.exists():
        raise LocbenchError(f"{STATS_PATH} is missing from the install; reinstall locbench (it ships with it)")
    return json.loads(STATS_PATH.read_text(encoding="utf-8"))[edition]


def _edition(edition: str) -> tuple[str, str, str, str]:
    if edition not in EDITIONS:
        raise LocbenchError(f"unknown synthetic format {edition!r}; valid: {', '.join(EDITIONS)}")
    return EDITIONS[edition]


# ---------------------------------------------------------------------------------------------------------------
# Labels


def sample_image_labels(rng: np.random.Generator, stats: dict) -> tuple[int, ...]:
    """One image's class indices: a real label combination drawn with its real frequency."""
    counts = np.array([n for _, n in stats["combinations"]], np.float64)
    k = int(rng.choice(len(counts), p=counts / counts.sum()))
    return tuple(stats["combinations"][k][0])


def assign_cell_labels(
    rng: np.random.Generator, labels: tuple[int, ...], n_cells: int, scheme: ClassScheme
) -> list[tuple[int, ...]]:
    """Split an image label set over its cells: each cell gets a non-empty subset, the union is ``labels``.

    Mitotic classes go to one or two cells each (they are rare events in a field), different cells where
    possible; every other class is in each cell with a per-class probability in [0.4, 0.9].
    """
    cells: list[set[int]] = [set() for _ in range(n_cells)]
    mitotic = [k for k in labels if scheme.classes[k] in sp.DIVIDING_STAGE]
    other = [k for k in labels if k not in mitotic]
    free = list(rng.permutation(n_cells))
    for k in mitotic:
        n = min(int(rng.integers(1, 3)), n_cells)
        chosen = [free.pop() for _ in range(min(n, len(free)))] or [int(rng.integers(n_cells))]
        for c in chosen:
            cells[c].add(k)
    for k in other:
        has = rng.random(n_cells) < rng.uniform(0.4, 0.9)
        if not has.any():
            has[rng.integers(n_cells)] = True
        for c in np.flatnonzero(has):
            cells[c].add(k)
    for c in range(n_cells):
        if not cells[c]:
            cells[c].add(int(rng.choice(other)) if other else int(rng.choice(mitotic)))
    return [tuple(sorted(s)) for s in cells]


def make_id(seed: int, index: int) -> str:
    """An HPA-looking image id (uuid-like, 36 characters), the same for a (seed, index)."""
    h = hashlib.sha1(f"locbench-synth:{seed}:{index}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-11e8-{h[12:16]}-{h[16:28]}"


# ---------------------------------------------------------------------------------------------------------------
# One field


@dataclass(frozen=True)
class Field:
    """One synthetic field: its stains, cell mask and truth."""

    id: str
    stains: dict[str, np.ndarray]  # stain → uint8 (S, S)
    mask: np.ndarray  # (S, S) int32, 0 background, 1..N
    nucleus: np.ndarray  # (S, S) bool
    labels: tuple[int, ...]  # image label: union of the cells'
    cell_labels: list[tuple[int, ...]]
    stages: list[str]


def make_field(
    seed: int,
    index: int,
    *,
    scheme: ClassScheme,
    stats: dict | None = None,
    size: int = 256,
    cells_per_field: tuple[int, int] = (5, 12),
    noise: float = 0.03,
    intensity_spread: float = 0.35,
    background: float = 0.03,
    labels: tuple[int, ...] | None = None,
) -> Field:
    """Draw field ``index`` of the dataset with ``seed``.

    Args:
        seed: dataset seed.
        index: field number; the field's random streams come from ``(seed, index)``.
        scheme: the class scheme.
        stats: label statistics (:func:`load_label_stats`) to sample the image label from; not needed with
            ``labels``.
        size: side in pixels.
        cells_per_field: (min, max) cells placed; a cell cut to a sliver by the border is dropped.
        noise: camera noise level (see :func:`locbench.data.synth_patterns.draw_field`).
        intensity_spread: per-cell brightness spread (log-normal sigma).
        background: stain offset (fraction of full scale).
        labels: force the image's class indices instead of sampling them (tests, previews).

    Returns:
        The field; the geometry does not depend on the labels, so the same (seed, index) with other
        ``labels`` keeps the same cells.
    """
    geo_rng, label_rng, draw_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(3))
    n_cells = int(geo_rng.integers(cells_per_field[0], cells_per_field[1] + 1))
    geom = sp.make_geometry(geo_rng, size=size, n_cells=n_cells)
    if labels is None:
        if stats is None:
            raise ValueError("make_field needs stats or labels")
        labels = sample_image_labels(label_rng, stats)
    labels = tuple(sorted(set(labels)))
    cell_labels = assign_cell_labels(label_rng, labels, geom.n, scheme)
    stages = []
    for cl in cell_labels:
        names = [scheme.classes[k] for k in cl]
        stage = next((sp.DIVIDING_STAGE[c] for c in names if c in sp.DIVIDING_STAGE), None)
        if stage is None and label_rng.random() < SPONTANEOUS_MITOSIS:
            stage = str(label_rng.choice(["metaphase", "telophase"]))
        stages.append(stage or "interphase")
    sp.set_stages(geo_rng, geom, stages)
    floats = sp.draw_field(
        draw_rng,
        geom,
        [tuple(scheme.classes[k] for k in cl) for cl in cell_labels],
        intensity_spread=intensity_spread,
        background=background,
        noise=noise,
    )
    stains = {c: np.rint(v * 255).astype(np.uint8) for c, v in floats.items()}
    union = tuple(sorted(set().union(*cell_labels)))
    return Field(make_id(seed, index), stains, geom.labels, geom.nucleus, union, cell_labels, stages)


# ---------------------------------------------------------------------------------------------------------------
# Dataset


def synthesize(
    out: str | os.PathLike,
    *,
    images: int = 200,
    size: int = 256,
    edition: str = "2021",
    seed: int = 0,
    noise: float = 0.03,
    intensity_spread: float = 0.35,
    cells_per_field: tuple[int, int] | None = None,
    background: float = 0.03,
    workers: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic HPA-like dataset with known per-cell truth to ``out``.

    Args:
        out: dataset folder to create.
        images: number of fields.
        size: field side in pixels (at least 64).
        edition: ``"2021"`` (19 classes, ``ID,Label``, ``|``) or ``"2018"`` (28 classes, ``Id,Target``, spaces).
        seed: dataset seed; the same seed gives the same bytes.
        noise: camera noise: shot noise with ``1/noise**2`` photons at full scale plus Gaussian read noise of
            ``noise/2`` (0 = clean).
        intensity_spread: log-normal sigma of the per-cell protein brightness (the other stains vary half as much).
        cells_per_field: (min, max) cells per field; default 5-12, fewer where small fields cannot hold 12.
        background: stain offset, as a fraction of full scale.
        workers: processes drawing fields in parallel (the output does not depend on it).
        overwrite: replace a dataset already in ``out``.

    Returns:
        ``out`` as a Path.

    Raises:
        LocbenchError: bad parameters, or ``out`` already holds a dataset and ``overwrite`` is False.
    """
    out = Path(out)
    scheme_name, id_col, label_col, sep = _edition(edition)
    if cells_per_field is None:
        most = max(1, int(sp._FILL * size * size / (math.pi * 144)))  # cells of at least ~12 px radius
        cells_per_field = (min(5, most), min(12, most))
    _check(images=images, size=size, noise=noise, spread=intensity_spread, cells=cells_per_field, bg=background)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise LocbenchError(f"{out} is not empty; choose a new folder or pass overwrite (--overwrite)")
        for name in ("train.csv", "cells.csv", "synth.json", "preview.png", "train", "masks"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    ensure_writable_dir(out, what="OUT")  # a file there, or a read-only folder: say so before drawing anything
    # Images go to a staging folder renamed into place at the end; train.csv is written last, so a folder
    # with a train.csv is complete.
    stage = out / ".synth-partial"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "train").mkdir(parents=True)
    (stage / "masks").mkdir()
    params = dict(
        scheme=get_scheme(scheme_name),
        size=size,
        cells_per_field=tuple(cells_per_field),
        noise=noise,
        intensity_spread=intensity_spread,
        background=background,
    )
    jobs = [(seed, i, edition, stage, params) for i in range(images)]
    rows: list[tuple[str, tuple[int, ...], list[tuple[int, ...]]]] = []
    step = max(1, images // 10)
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")  # safe even when the caller has torch threads running
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for row in pool.map(_write_field, jobs, chunksize=max(1, images // (4 * workers))):
                rows.append(row)
                _progress(len(rows), images, step)
    else:
        for job in jobs:
            rows.append(_write_field(job))
            _progress(len(rows), images, step)
    for name in ("train", "masks"):
        os.replace(stage / name, out / name)
    stage.rmdir()

    def label_text(ks: tuple[int, ...]) -> str:
        return sep.join(str(k) for k in ks)

    cell_lines = ["ID,cell,Label"] + [
        f"{fid},{c},{label_text(cl)}" for fid, _, cls in rows for c, cl in enumerate(cls, start=1)
    ]
    atomic_write_text(out / "cells.csv", "\n".join(cell_lines) + "\n")
    atomic_write_json(
        out / "synth.json",
        {
            "generator": "locbench.data.synth",
            "format": edition,
            "scheme": scheme_name,
            "images": images,
            "size": size,
            "seed": seed,
            "noise": noise,
            "intensity_spread": intensity_spread,
            "cells_per_field": list(cells_per_field),
            "background": background,
            "label_stats": load_label_stats(edition)["source"],
        },
    )
    train = [f"{id_col},{label_col}"] + [f"{fid},{label_text(labels)}" for fid, labels, _ in rows]
    atomic_write_text(out / "train.csv", "\n".join(train) + "\n")
    log.info("synth: wrote %d fields (%s scheme, %d px) to %s", images, scheme_name, size, out)
    return out


def _check(*, images, size, noise, spread, cells, bg) -> None:
    problems = []
    if images < 1:
        problems.append(f"images={images}: need at least 1")
    if size < 64:
        problems.append(f"size={size}: need at least 64 pixels")
    if noise < 0 or spread < 0:
        problems.append(f"noise={noise}, intensity_spread={spread}: must be >= 0")
    if not 0 <= bg < 1:
        problems.append(f"background={bg}: must be in [0, 1)")
    lo, hi = cells
    if not 1 <= lo <= hi:
        problems.append(f"cells_per_field={cells}: need 1 <= min <= max")
    elif math.sqrt(sp._FILL * size * size / (math.pi * hi)) < 12:
        most = int(sp._FILL * size * size / (math.pi * 144))
        problems.append(f"cells_per_field max {hi}: cells would be too small at {size} px (at most {most})")
    if problems:
        raise LocbenchError("locbench synth: bad parameters: " + "; ".join(problems))


def _progress(done: int, total: int, step: int) -> None:
    if done % step == 0 or done == total:
        log.info("synth: %d/%d fields", done, total)


def _write_field(job) -> tuple[str, tuple[int, ...], list[tuple[int, ...]]]:
    seed, index, edition, stage, params = job
    f = make_field(seed, index, stats=load_label_stats(edition), **params)
    for stain in STAINS:
        Image.fromarray(f.stains[stain]).save(stage / "train" / f"{f.id}_{stain}.png", format="PNG")
    mask = f.mask.astype(np.uint16 if f.mask.max() > 255 else np.uint8)
    Image.fromarray(mask).save(stage / "masks" / f"{f.id}.png", format="PNG")
    return f.id, f.labels, f.cell_labels


# ---------------------------------------------------------------------------------------------------------------
# Preview


def composite(stains: dict[str, np.ndarray]) -> np.ndarray:
    """RGB view of a field: red, green, blue, with yellow added to red and green (uint8 (S, S, 3))."""
    r, g, b, y = (stains[c].astype(np.float32) for c in STAINS)
    return np.clip(np.stack([r + 0.6 * y, g + 0.6 * y, b], axis=-1), 0, 255).astype(np.uint8)


def write_preview(out: str | os.PathLike, k: int = 8) -> Path:
    """Render the first ``k`` fields of a synthetic dataset as RGB composites with their class names.

    Writes and returns ``out/preview.png``.
    """
    out = Path(out)
    info = json.loads((out / "synth.json").read_text(encoding="utf-8"))
    scheme_name, _, _, sep = _edition(info["format"])
    classes = get_scheme(scheme_name).classes
    lines = (out / "train.csv").read_text(encoding="utf-8").splitlines()[1 : k + 1]
    cols = min(4, len(lines))
    rows = math.ceil(len(lines) / cols)
    fig = Figure(figsize=(4 * cols, 4.6 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for n, line in enumerate(lines):
        fid, labels = line.split(",", 1)
        stains = {c: np.asarray(Image.open(out / "train" / f"{fid}_{c}.png")) for c in STAINS}
        ax = fig.add_subplot(rows, cols, n + 1)
        ax.imshow(composite(stains))
        names = ", ".join(classes[int(v)] for v in labels.split(sep) if v)
        ax.set_title(textwrap.fill(names, 40), fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write(out / "preview.png", lambda f: f.write(buf.getvalue()))
