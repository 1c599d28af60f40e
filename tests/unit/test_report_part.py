"""Which part of the runs a report scores: the test part when every finished run has one, else validation, and
every label says which."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report_fixtures import make_sweep  # noqa: E402

from locbench.report import build_report  # noqa: E402
from locbench.report.collect import collect, metric_label  # noqa: E402


def test_a_sweep_whose_runs_all_have_a_test_part_is_scored_on_it(tmp_path):
    sweep = collect(make_sweep(tmp_path / "s", seeds=(0, 1), problems=False, test=True))
    assert sweep.part == "test" and all(r.part == "test" for r in sweep.runs)
    run = sweep.runs[0]
    for m in ("map", "macro_f1", "macro_f1_tuned"):
        assert run.value(m) == run.summary["test"][m] != run.summary["val"][m]
    assert run.predictions().ids[0].startswith("test")
    assert sweep.metric_label("map") == "test mAP"


def test_one_run_without_a_test_part_puts_every_run_on_validation(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=(0, 1), problems=False, test=True)
    first = sorted(p for p in root.iterdir() if p.is_dir())[0]
    summary = json.loads((first / "summary.json").read_text())
    del summary["test"]
    (first / "summary.json").write_text(json.dumps(summary))
    sweep = collect(root)
    assert sweep.part == "val" and all(r.part == "val" for r in sweep.runs)
    assert sweep.runs[1].value("map") == sweep.runs[1].summary["val"]["map"]
    assert sweep.metric_label("macro_f1_tuned") == "val macro F1 (tuned, cross-fitted)"


def test_an_in_sample_tuned_f1_is_never_read(tmp_path):
    """A validation block without ``tuned_f1: cross-fitted`` (written by an older locbench, tuned and scored on the
    same images) gives no tuned F1; its other numbers stay."""
    root = make_sweep(tmp_path / "s", seeds=(0,), problems=False)
    run_dir = sorted(p for p in root.iterdir() if p.is_dir())[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    del summary["val"]["tuned_f1"]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    run = next(r for r in collect(root).runs if r.path == run_dir)
    assert math.isnan(run.value("macro_f1_tuned")) and math.isnan(run.value("micro_f1_tuned"))
    assert run.value("map") == summary["val"]["map"]


def test_labels_name_the_part():
    assert metric_label("map", "test") == "test mAP"
    assert metric_label("macro_f1_tuned", "test") == "test macro F1 (tuned)"
    assert metric_label("macro_f1", "val") == "val macro F1 @0.5"


def test_the_report_and_leaderboard_say_which_part(tmp_path):
    root = make_sweep(tmp_path / "s", backbones=("resnet18",), seeds=(0, 1, 2), problems=False, test=True)
    build_report(root, metric="macro_f1_tuned")
    md = (root / "report.md").read_text()
    assert "primary metric test macro F1 (tuned)" in md and "measured on each run's test part" in md
    rows = list(csv.DictReader((root / "leaderboard.csv").open()))
    assert {r["part"] for r in rows} == {"test"} and {r["tuned_f1"] for r in rows} == {"val thresholds"}
    sweep = collect(root)
    point = sweep.point(rows[0]["point"])
    want = sum(r.summary["test"]["macro_f1_tuned"] for r in point.done) / len(point.done)
    assert math.isclose(float(rows[0]["macro_f1_tuned_mean"]), want, rel_tol=1e-9)

    val_root = make_sweep(tmp_path / "v", backbones=("resnet18",), seeds=(0, 1, 2), problems=False)
    build_report(val_root, metric="macro_f1_tuned")
    md = (val_root / "report.md").read_text()
    assert "val macro F1 (tuned, cross-fitted)" in md and "No test part" in md
    assert "confusion at the tuned thresholds (cross-fitted on validation)" in md
    assert {r["part"] for r in csv.DictReader((val_root / "leaderboard.csv").open())} == {"val"}
