"""Error analysis from stored predictions only (``predictions/val.npz`` + ``thresholds.json``), no re-inference.

What it answers: which classes fail and how (TP/FP/FN/TN), which classes are mistaken for which (a false
positive of A in the same image as a missed B), whether a class's performance follows its frequency, and which
images are the hardest for each class (the ones to look at, with CAMs, first).

A sample is predicted positive when ``prob >= threshold``, and AP/F1 come from
:func:`locbench.metrics.compute_metrics`, so every number agrees with ``summary.json``.
"""

from __future__ import annotations

import io
import logging
import os
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from locbench.errors import LocbenchError
from locbench.figures import place_labels
from locbench.metrics import check_inputs, compute_metrics
from locbench.metrics.multilabel import check_thresholds
from locbench.store.atomic import atomic_write
from locbench.tables import html_table, markdown_table

log = logging.getLogger(__name__)


def error_tables(
    ids: Sequence[str],
    probs: np.ndarray,
    targets: np.ndarray,
    thresholds: np.ndarray | Sequence[float] | float,
    class_names: Sequence[str],
    *,
    top_k: int = 10,
) -> dict[str, Any]:
    """Per-class error counts, confused class pairs and hardest images, as a JSON-able dict.

    Args:
        ids: ``N`` image ids, in row order.
        probs: ``(N, C)`` probabilities in [0, 1].
        targets: ``(N, C)`` 0/1 ground truth.
        thresholds: One threshold or ``C`` (from ``thresholds.json``); positive means ``prob >= threshold``.
        class_names: ``C`` class names, in column order.
        top_k: How many hardest images to keep per class and kind of error.

    Returns:
        ``{"n_images", "classes", "per_class", "confused_pairs", "hardest"}`` where

        - ``per_class``: one dict per class, in column order: ``class``, ``tp``, ``fp``, ``fn``, ``tn``,
          ``support`` (positives), ``frequency`` (support / N), ``ap`` and ``f1`` (``None`` for a class absent
          from ``targets``), ``threshold``.
        - ``confused_pairs``: ``{"fp_class", "fn_class", "count", "examples"}`` for every ordered pair (A, B),
          A != B, counting images where A is a false positive and B a false negative; most frequent first, then
          by class order. ``examples``: up to ``top_k`` of those images (``id``, ``fp_prob``, ``fn_prob``), the
          most confident false alarms first.
        - ``hardest``: ``{class: {"false_negatives": [{"id", "prob"}], "false_positives": [...]}}``; missed
          positives with the lowest probability first, false alarms with the highest first.

    Raises:
        LocbenchError: on mismatched shapes, invalid probabilities or targets, or a wrong number of ids,
            thresholds or class names.
    """
    probs, truth = check_inputs(probs, targets)
    n, c = probs.shape
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise LocbenchError(f"got {len(ids)} ids for {n} prediction rows; the predictions file is inconsistent")
    names = [str(x) for x in class_names]
    thr = check_thresholds(thresholds, c)
    metrics = compute_metrics(probs, truth, class_names=names, thresholds=thr)

    pred = probs >= thr[None, :]
    fp = pred & ~truth
    fn = ~pred & truth
    counts = {
        "tp": (pred & truth).sum(axis=0),
        "fp": fp.sum(axis=0),
        "fn": fn.sum(axis=0),
        "tn": (~pred & ~truth).sum(axis=0),
    }
    per_class = []
    for j, name in enumerate(names):
        m = metrics["per_class"][name]
        support = int(truth[:, j].sum())
        per_class.append(
            {
                "class": name,
                **{key: int(v[j]) for key, v in counts.items()},
                "support": support,
                "frequency": support / n,
                "ap": m["ap"],
                "f1": m["f1"],
                "threshold": float(thr[j]),
            }
        )

    # pair[a, b] = number of images with a false positive of a and a false negative of b.
    pair = fp.T.astype(np.int64) @ fn.astype(np.int64)
    np.fill_diagonal(pair, 0)  # a class cannot be both a false positive and a false negative in one image
    a_idx, b_idx = np.nonzero(pair)
    order = sorted(zip(a_idx, b_idx, strict=True), key=lambda ab: (-pair[ab], ab[0], ab[1]))
    confused = []
    for a, b in order:
        rows = np.flatnonzero(fp[:, a] & fn[:, b])
        rows = rows[np.argsort(-probs[rows, a], kind="stable")][:top_k]  # the most confident false alarms first
        confused.append(
            {
                "fp_class": names[a],
                "fn_class": names[b],
                "count": int(pair[a, b]),
                "examples": [
                    {"id": ids[i], "fp_prob": float(probs[i, a]), "fn_prob": float(probs[i, b])} for i in rows
                ],
            }
        )

    hardest: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for j, name in enumerate(names):
        fn_rows = np.nonzero(fn[:, j])[0]
        fp_rows = np.nonzero(fp[:, j])[0]
        # Stable sorts keep file order among equal probabilities, so the tables are reproducible.
        fn_rows = fn_rows[np.argsort(probs[fn_rows, j], kind="stable")][:top_k]
        fp_rows = fp_rows[np.argsort(-probs[fp_rows, j], kind="stable")][:top_k]
        hardest[name] = {
            "false_negatives": [{"id": ids[i], "prob": float(probs[i, j])} for i in fn_rows],
            "false_positives": [{"id": ids[i], "prob": float(probs[i, j])} for i in fp_rows],
        }
    return {
        "n_images": int(n),
        "classes": names,
        "per_class": per_class,
        "confused_pairs": confused,
        "hardest": hardest,
    }


def _number(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _table_rows(tables: dict[str, Any], max_pairs: int, max_images: int) -> dict[str, Any]:
    """The cells of the three tables as strings, shared by the Markdown and HTML renderers."""
    per_class = [
        [
            e["class"],
            str(e["support"]),
            f"{100 * e['frequency']:.1f}%",
            str(e["tp"]),
            str(e["fp"]),
            str(e["fn"]),
            str(e["tn"]),
            _number(e["ap"]),
            _number(e["f1"]),
            f"{e['threshold']:.3f}",
        ]
        for e in sorted(tables["per_class"], key=lambda e: -e["support"])
    ]
    pairs = [[p["fp_class"], p["fn_class"], str(p["count"])] for p in tables["confused_pairs"][:max_pairs]]
    hardest = []
    for name, h in tables["hardest"].items():
        fns = ", ".join(f"{r['id']} ({r['prob']:.2f})" for r in h["false_negatives"][:max_images])
        fps = ", ".join(f"{r['id']} ({r['prob']:.2f})" for r in h["false_positives"][:max_images])
        if fns or fps:
            hardest.append([name, fns or "–", fps or "–"])
    return {
        "per_class": (["class", "support", "freq", "TP", "FP", "FN", "TN", "AP", "F1", "thr"], per_class),
        "pairs": (["false positive", "missed (false negative)", "images"], pairs),
        "hardest": (["class", "missed, lowest prob first", "false alarms, highest prob first"], hardest),
    }


def errors_markdown(tables: dict[str, Any], *, max_pairs: int = 15, max_images: int = 5) -> str:
    """Render :func:`error_tables` output as Markdown (per-class counts, confused pairs, hardest images).

    Args:
        tables: The dict from :func:`error_tables`.
        max_pairs: How many confused pairs to list.
        max_images: How many image ids per class and kind of error.

    Returns:
        Markdown text ending in a newline.
    """
    sections = _sections(tables, max_pairs, max_images, _markdown, str)
    return "\n\n".join(f"## {title}\n\n{body}" for title, body in sections) + "\n"


def errors_html(tables: dict[str, Any], *, max_pairs: int = 15, max_images: int = 5) -> str:
    """The sections of :func:`errors_markdown` as an HTML fragment for the report to embed: three ``<table>``s
    under ``<h2>`` headings, every cell escaped, no ``<html>``/``<body>``."""
    sections = _sections(tables, max_pairs, max_images, _html, lambda note: f"<p>{note}</p>")
    return "\n".join(f"<h2>{title}</h2>\n{body}" for title, body in sections) + "\n"


def _sections(
    tables: dict[str, Any],
    max_pairs: int,
    max_images: int,
    table: Callable[[list[str], list[list[str]]], str],
    note: Callable[[str], str],
) -> list[tuple[str, str]]:
    """(heading, body) of the three sections: a table rendered by ``table``, or a ``note`` when it has no row."""
    t = _table_rows(tables, max_pairs, max_images)
    sections = (
        (f"Errors by class ({tables['n_images']} images)", "per_class", None),
        ("Most confused class pairs", "pairs", "No image has both a false positive and a missed class."),
        ("Hardest images", "hardest", "No errors."),
    )
    return [(title, table(*t[key]) if t[key][1] or empty is None else note(empty)) for title, key, empty in sections]


# The explain files' own tables: no alignment marks, no label class (the report restyles the HTML, see
# report.explain_section._fit_page).
def _markdown(header: list[str], rows: list[list[str]]) -> str:
    return markdown_table(header, rows, left=None)


def _html(header: list[str], rows: list[list[str]]) -> str:
    return html_table(header, rows, left=0, table_class="errors", scroll=False)


def plot_perf_vs_frequency(tables: dict[str, Any], out_png: str | os.PathLike) -> Path:
    """Scatter each class's AP and F1 against its support (log scale), labelled by class; writes a PNG.

    Classes absent from the split (AP undefined) are left out of the plot.

    Args:
        tables: The dict from :func:`error_tables`.
        out_png: Where to write the PNG (atomically).

    Returns:
        The path written.
    """
    rows = [e for e in tables["per_class"] if e["ap"] is not None]
    # A fixed layout: the labels are placed against the final axes, which a constrained layout would move.
    fig = Figure(figsize=(9.5, 5.6))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.08, right=0.74, bottom=0.1, top=0.93)
    ax = fig.add_subplot()
    if rows:
        support = np.array([e["support"] for e in rows], dtype=float)
        ax.scatter(support, [e["ap"] for e in rows], label="AP", marker="o")
        ax.scatter(support, [e["f1"] for e in rows], label="F1 at threshold", marker="x")
        ax.set_xscale("log")
        ax.set_xlim(support.min() / 1.6, support.max() * 1.6)
    else:
        ax.text(0.5, 0.5, "no class has a positive in this split", ha="center", va="center")
    ax.set_xlabel("support (positive images, log scale)")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.06)
    ax.set_title(f"Per-class performance against frequency ({tables['n_images']} images)")
    if rows:
        # Labels on the AP points; those that find no free spot are numbered and listed in the legend.
        key = place_labels(
            ax,
            support,
            [e["ap"] for e in rows],
            [e["class"] for e in rows],
            avoid=[(x, e["f1"]) for x, e in zip(support, rows, strict=True) if e["f1"] is not None],
            fontsize=7,
        )
        handles, names = ax.get_legend_handles_labels()
        handles += [Line2D([], [], linestyle="none")] * len(key)
        key = ["\n".join(textwrap.wrap(k, 30, subsequent_indent="   ")) for k in key]
        ax.legend(handles, names + key, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return atomic_write(out_png, lambda f: f.write(buf.getvalue()))


def hardest_ids(tables: dict[str, Any], n: int) -> list[str]:
    """Up to ``n`` distinct image ids worth explaining first, from :func:`error_tables` output.

    Classes with the most errors (FP + FN) go first; ids are taken round-robin over those classes, alternating
    each class's worst missed positive and worst false alarm, so one class cannot fill the whole figure.

    Args:
        tables: The dict from :func:`error_tables`.
        n: How many ids at most.

    Returns:
        Image ids, most telling first.
    """
    by_errors = sorted(tables["per_class"], key=lambda e: -(e["fp"] + e["fn"]))
    queues = []
    for e in by_errors:
        h = tables["hardest"][e["class"]]
        fns, fps = h["false_negatives"], h["false_positives"]
        merged = [r["id"] for pair in zip(fns, fps, strict=False) for r in pair]
        longer = fns if len(fns) > len(fps) else fps
        merged += [r["id"] for r in longer[min(len(fns), len(fps)) :]]
        if merged:
            queues.append(merged)
    out: list[str] = []
    depth = 0
    while len(out) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and q[depth] not in out:
                out.append(q[depth])
                if len(out) == n:
                    break
        depth += 1
    return out
