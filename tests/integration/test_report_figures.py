"""What the report's figures show: one loss per panel, whole epochs, stable costs, readable labels, honest
intervals, and the sentence that replaces an ANOVA with nothing left to test against."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from locbench.figures import place_labels
from locbench.report import build, build_report, plots, stats
from locbench.report.build import _ci
from locbench.report.stats import Estimate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report_fixtures import make_sweep  # noqa: E402


@pytest.fixture
def figures(monkeypatch) -> list:
    """Every matplotlib figure the report renders, kept instead of encoded."""
    kept: list = []
    real = plots._png
    monkeypatch.setattr(plots, "_png", lambda fig: kept.append(fig) or real(fig))
    return kept


def _axes_titled(figs: list, title: str) -> list:
    return [ax for f in figs for ax in f.axes if ax.get_title() == title]


def test_each_loss_has_its_own_panel_and_epochs_are_whole(tmp_path: Path, figures: list):
    root = make_sweep(tmp_path / "s", backbones=("resnet18",), seeds=(0, 1), epochs=3, problems=False)
    build_report(root, n_resamples=50)
    md = (root / "report.md").read_text()
    assert "Each loss (bce, focal) has its own panels" in md
    for title in ("train loss (bce)", "train loss (focal)", "val loss (bce)", "val loss (focal)"):
        (ax,) = _axes_titled(figures, title)
        loss = title.split("(")[1].rstrip(")")
        # a loss panel holds only (and all) the grid points trained with that loss
        assert len(ax.get_lines()) == 2 and all(f"loss={loss}" in line.get_label() for line in ax.get_lines())
    assert not _axes_titled(figures, "train loss")
    for ax in _axes_titled(figures, "val mAP") + _axes_titled(figures, "train loss (bce)"):
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_one_loss_keeps_one_loss_panel(tmp_path: Path, figures: list):
    root = make_sweep(tmp_path / "s", losses=("bce",), seeds=(0, 1), problems=False)
    build_report(root, n_resamples=50)
    assert len(_axes_titled(figures, "train loss")) == 1
    assert "has its own panels" not in (root / "report.md").read_text()


def test_cost_plots_use_counted_costs_and_time_only_with_its_spread(tmp_path: Path, monkeypatch):
    seen: list = []
    real = plots.pareto
    monkeypatch.setattr(plots, "pareto", lambda panels, **kw: seen.append(panels) or real(panels, **kw))
    one = make_sweep(tmp_path / "one", augs=("standard",), seeds=(0,), problems=False)
    build_report(one, n_resamples=50)
    assert [p[0] for p in seen[-1]] == ["GMACs per image (forward)", "parameters (millions)"]
    assert "Seconds per epoch are not plotted: with one run per configuration" in (one / "report.md").read_text()
    three = make_sweep(tmp_path / "three", augs=("standard",), seeds=(0, 1), problems=False)
    build_report(three, n_resamples=50)
    labels = [p[0] for p in seen[-1]]
    assert labels[:2] == ["GMACs per image (forward)", "parameters (millions)"] and "seconds per training" in labels[2]
    timed = seen[-1][2][1]
    assert all({"xlo", "xhi"} <= set(p) and p["xlo"] <= p["x"] <= p["xhi"] for p in timed)
    assert "the horizontal bars show their range over seeds" in (three / "report.md").read_text()


@pytest.mark.parametrize("fitted", [False, True])
def test_anova_with_no_residual_df_is_replaced_by_a_sentence(tmp_path: Path, monkeypatch, fitted: bool):
    # one seed, one two-level axis: two values for an intercept and a term, nothing left to estimate the noise with
    root = make_sweep(tmp_path / "s", backbones=("resnet18",), augs=("standard",), seeds=(0,), problems=False)
    if fitted:  # a model that was fitted but has no residual (a perfect fit) reads the same
        real = build.analyze

        def analyze(*a, **kw):
            an = real(*a, **kw)
            term = stats.AnovaTest("loss.name", math.nan, 1, 0, math.nan, note="no residual degrees of freedom")
            return dataclasses.replace(an, anova=[term])

        monkeypatch.setattr(build, "analyze", analyze)
    build_report(root, n_resamples=50)
    effects = (root / "report.md").read_text().split("## Effects of each axis")[1].split("\n## ")[0]
    assert "No test of main effects and interactions" in effects and "no residual degrees of freedom" in effects
    assert "residual df" not in effects and "n/a" not in effects
    assert "<h3>Tests of main effects and interactions</h3><p>No test" in (root / "report.html").read_text()


def test_intervals_are_clipped_to_the_metric_range_and_lopsided_ones_marked():
    assert _ci(Estimate(mean=0.98, std=0.1, n=3, lo=0.9, hi=1.07, method="t")) == "0.980 [0.900, 1.000]*"
    assert _ci(Estimate(mean=0.02, std=0.1, n=3, lo=-0.03, hi=0.07, method="t")) == "0.020 [0.000, 0.070]"
    assert _ci(Estimate(mean=0.224, std=0.1, n=3, lo=0.195, hi=0.436, method="bootstrap")).endswith("*")
    assert _ci(Estimate(mean=0.3, std=0.1, n=3, lo=0.25, hi=0.36, method="t")) == "0.300 [0.250, 0.360]"


def test_lopsided_intervals_are_explained_where_they_appear(tmp_path: Path):
    root = make_sweep(tmp_path / "s", seeds=(0,), n_val=30, problems=False)
    build_report(root, n_resamples=200)
    md = (root / "report.md").read_text()
    board = md.split("## Leaderboard")[1].split("\n## ")[0]
    assert ("]*" in board) == ("*: a lopsided interval" in board)


def test_heatmap_keeps_full_class_names(figures: list):
    names = ["Vesicles and punctate cytosolic patterns", "Nucleoli fibrillar center", "Cytosol"]
    plots.heatmap(np.full((2, 3), 0.5), ["a", "b"], names, title="t", cbar="AP")
    ax = figures[-1].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names


def test_point_labels_never_overlap_and_the_rest_are_listed():
    fig = Figure(figsize=(4, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    xs, ys = rng.random(40), rng.random(40)
    ax.scatter(xs, ys)
    names = [f"class number {i}" for i in range(40)]
    key = place_labels(ax, xs, ys, names, fontsize=7)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the text alone, without a leader line
    assert len(boxes) == 40
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    inside = ax.get_window_extent(renderer)
    assert all(inside.x0 - 1 <= b.x0 and b.x1 <= inside.x1 + 1 for b in boxes)
    # what found no free spot is numbered on the plot and named in the returned key
    numbered = [t.get_text() for t in ax.texts if t.get_text().isdigit()]
    assert [k.split(": ")[0] for k in key] == numbered
    assert sorted([t.get_text() for t in ax.texts if not t.get_text().isdigit()] + [k.split(": ")[1] for k in key]) == (
        sorted(names)
    )
    assert 0 < len(key) < 40
