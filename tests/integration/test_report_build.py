"""``locbench report`` and ``build_report`` on fake sweep folders written to the run-folder contract."""

from __future__ import annotations

import csv
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as sps

from locbench.cli import build_parser, main
from locbench.errors import LocbenchError
from locbench.report import Section, build_report, stats
from locbench.report.analysis import analyze
from locbench.report.collect import collect
from locbench.store.rundir import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report_fixtures import make_sweep  # noqa: E402

STRONG_FOCAL = {
    "model.backbone": {"resnet18": 0.0, "efficientnet_b0": 0.0},
    "loss.name": {"bce": 0.0, "focal": 1.2},
    "augment.preset": {"standard": 0.0, "strong": 0.0},
}
NO_EFFECT = {k: dict.fromkeys(v, 0.0) for k, v in STRONG_FOCAL.items()}


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory) -> Path:
    root = make_sweep(tmp_path_factory.mktemp("sweep") / "ablation")
    build_report(root, n_resamples=200)
    return root


def test_report_writes_three_self_contained_files(sweep_report: Path):
    html = (sweep_report / "report.html").read_text()
    md = (sweep_report / "report.md").read_text()
    # Offline: no external scripts, stylesheets or images; figures are inline base64 PNGs.
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html
    # main effects, per-class AP, training curves, accuracy against cost, class x class false positives, confusion
    # matrices
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 6
    for title in (
        "What was compared and how",
        "Findings",
        "Leaderboard",
        "Comparisons with the baseline",
        "Effects of each axis",
        "Per-class AP",
        "Training curves",
        "Accuracy against cost",
        "Highest-mean configuration in detail",
        "Failed, diverged and unfinished runs",
    ):
        assert f"<h2>{title}</h2>" in html and f"## {title}" in md
    assert "Student t over seeds" in html


def test_leaderboard_csv_has_one_row_per_point_sorted(sweep_report: Path):
    rows = list(csv.DictReader((sweep_report / "leaderboard.csv").open()))
    assert len(rows) == 8
    maps = [float(r["map_mean"]) for r in rows]
    assert maps == sorted(maps, reverse=True)
    base = [r for r in rows if r["baseline"] == "True"]
    assert len(base) == 1 and (base[0]["backbone"], base[0]["loss"], base[0]["augment"]) == (
        "resnet18",
        "bce",
        "standard",
    )
    # The failed run (last grid point, last seed) leaves that point with two seeds; CI bounds bracket the mean.
    last = next(r for r in rows if (r["backbone"], r["loss"], r["augment"]) == ("efficientnet_b0", "focal", "strong"))
    assert last["n_seeds"] == "2"
    for r in rows:
        assert float(r["map_ci_lo"]) <= float(r["map_mean"]) <= float(r["map_ci_hi"])
        assert float(r["gmacs"]) > 0


def test_problem_runs_are_listed_with_their_reason(sweep_report: Path):
    md = (sweep_report / "report.md").read_text()
    section = md.split("## Failed, diverged and unfinished runs")[1]
    assert "c07-s2" in section and "failed" in section and "CUDA out of memory" in section
    assert "c02-s0" in section and "diverged" in section and "NaN" in section
    assert "c00-s3" in section and "running" in section


def test_planted_effect_is_found_and_null_effect_is_not_claimed(tmp_path: Path):
    strong = make_sweep(tmp_path / "strong", effects=STRONG_FOCAL, noise=1.0, problems=False)
    an = analyze(collect(strong))
    claims = [f.text for f in an.findings if f.significant]
    assert any(
        t.startswith("loss=focal (instead of bce; backbone, augment as in the baseline) raised val mAP over the")
        and "3 seeds" in t
        and "Holm-adjusted" in t
        for t in claims
    )
    assert any(t.startswith("loss has a significant main effect") for t in claims)
    null = make_sweep(tmp_path / "null", effects=NO_EFFECT, noise=1.0, problems=False)
    an = analyze(collect(null))
    assert not any(f.significant for f in an.findings)
    assert an.findings[0].text.startswith("No difference in val mAP is statistically significant")
    assert any("not significant" in f.text for f in an.findings)


def test_single_seed_sweep_uses_image_bootstrap_and_reads_each_npz_once(tmp_path: Path, monkeypatch):
    root = make_sweep(tmp_path / "one", backbones=("resnet18",), seeds=(0,), effects=STRONG_FOCAL, problems=False)
    calls: list[Path] = []
    real = RunDir.read_predictions
    monkeypatch.setattr(RunDir, "read_predictions", lambda run, part="val": calls.append(run.root) or real(run, part))
    html = build_report(root, n_resamples=200).read_text()
    assert len(calls) == len(set(calls)) == 4
    assert "bootstrap over validation images (single seed)" in html
    an = analyze(collect(root), n_resamples=200)
    assert an.mode == "bootstrap"
    # The recomputed mAP agrees with summary.json (scikit-learn in the fixture), so no mismatch note.
    assert not any("differs" in n for n in an.notes)
    assert all(an.estimates[c][m].has_ci for c in an.estimates for m in an.estimates[c])
    claims = [f.text for f in an.findings if f.significant]
    assert any(
        t.startswith("loss=focal (instead of bce; augment as in the baseline) raised val mAP") and "single seed" in t
        for t in claims
    )
    no_focal = [c for c in an.comparisons if c.point in ("c01",)]  # augment=strong only: no planted effect
    assert no_focal and not no_focal[0].significant


@pytest.fixture(scope="module")
def clean_sweep(tmp_path_factory) -> Path:
    return make_sweep(tmp_path_factory.mktemp("clean") / "s", problems=False)


def test_baseline_option(clean_sweep: Path):
    sweep = collect(clean_sweep)
    an = analyze(sweep, baseline="backbone=efficientnet_b0,loss=bce,augment=standard")
    assert sweep.point(an.baseline).axes["model.backbone"] == "efficientnet_b0"
    assert an.baseline_why.startswith("chosen with --baseline")
    assert analyze(sweep, baseline="c03-s1").baseline == "c03"
    assert analyze(sweep, baseline="c05").baseline == "c05"
    with pytest.raises(LocbenchError, match="unknown axis"):
        analyze(sweep, baseline="optimizer=sgd")
    with pytest.raises(LocbenchError, match="matches 2 grid points"):
        analyze(sweep, baseline="loss=bce,augment=standard")


def test_extra_sections_are_rendered(tmp_path: Path):
    root = make_sweep(tmp_path / "s", backbones=("resnet18",), augs=("standard",), problems=False)
    extra = Section("Error analysis", "Some **markdown**.\n", "<p id='ea'>html body</p>")
    html = build_report(root, extra_sections=[extra]).read_text()
    assert "<h2>Error analysis</h2><p id='ea'>html body</p>" in html
    assert "## Error analysis\n\nSome **markdown**." in (root / "report.md").read_text()


def test_cli_report_options_and_user_errors(clean_sweep: Path, tmp_path: Path, capsys):
    assert main(["-q", "report", str(clean_sweep), "--metric", "macro_f1", "--point", "c05-s1"]) == 0
    md = (clean_sweep / "report.md").read_text()
    assert "Run c05-s1" in md and "Sorted by mean val macro F1 @0.5" in md
    assert (clean_sweep / "report.html").exists() and (clean_sweep / "leaderboard.csv").exists()
    assert capsys.readouterr().out.strip() == str(clean_sweep / "report.html")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no run folders found" in capsys.readouterr().err
    assert main(["report", str(clean_sweep), "--baseline", "zzz"]) == 2
    assert main(["report", str(clean_sweep), "--point", "nope"]) == 2
    assert "--point nope" in capsys.readouterr().err
    # --cell, the option's name before grid points were called points, still works
    assert build_parser().parse_args(["report", str(clean_sweep), "--cell", "c05-s1"]).point == "c05-s1"


def test_sweep_with_no_finished_run_is_a_user_error(tmp_path: Path):
    run = tmp_path / "s" / "r1"
    run.mkdir(parents=True)
    (run / "status").write_text("running\n")
    with pytest.raises(LocbenchError, match="no finished run"):
        build_report(tmp_path / "s")


def test_corrupt_predictions_are_left_out_with_a_note(tmp_path: Path):
    import numpy as np

    root = make_sweep(tmp_path / "one", backbones=("resnet18",), augs=("standard",), seeds=(0,), problems=False)
    bad = root / "c01-s0" / "predictions" / "val.npz"
    z = dict(np.load(bad))
    z["probs"][0, 0] = np.nan
    np.savez(bad, **z)
    an = analyze(collect(root), n_resamples=100)
    assert any("c01-s0" in n and "NaN" in n and "left out of the bootstrap" in n for n in an.notes)
    assert an.comparisons == []  # the only other grid point cannot be compared on images


def test_a_single_run_folder_gets_a_report_without_claims(tmp_path: Path):
    import shutil

    root = make_sweep(
        tmp_path / "s", backbones=("resnet18",), losses=("bce",), augs=("standard",), seeds=(0,), problems=False
    )
    run = tmp_path / "run"
    shutil.copytree(root / "c00-s0", run)
    (run / "sweep_point.json").unlink()
    md = build_report(run).with_suffix(".md").read_text()
    assert "Nothing was tested" in md and "only one configuration has a finished run" in md
    assert "raised" not in md and "lowered" not in md


def test_an_older_sweep_with_sweep_cell_json_reports_the_same(tmp_path: Path):
    import json

    kw = {"backbones": ("resnet18",), "augs": ("standard",), "seeds": (0, 1)}
    new, old = make_sweep(tmp_path / "new", **kw), make_sweep(tmp_path / "old", **kw)
    for record in old.glob("*/sweep_point.json"):  # as a locbench from before the grid point rename wrote it
        obj = {("cell_id" if k == "point_id" else k): v for k, v in json.loads(record.read_text()).items()}
        record.with_name("sweep_cell.json").write_text(json.dumps(obj))
        record.unlink()
    assert not list(old.glob("*/sweep_point.json")) and list(old.glob("*/sweep_cell.json"))
    sweep = collect(old)
    assert [p.point_id for p in sweep.points] == [p.point_id for p in collect(new).points] == ["c00", "c01"]
    build_report(new, n_resamples=100)
    build_report(old, n_resamples=100)
    assert (old / "leaderboard.csv").read_text() == (new / "leaderboard.csv").read_text()


def test_run_folders_not_started_are_pending(tmp_path: Path):
    root = make_sweep(tmp_path / "s", backbones=("resnet18",), augs=("standard",), problems=False)
    (root / "c09-s0").mkdir()
    (root / "c09-s0" / "sweep_point.json").write_text(
        '{"sweep": "ablation", "point_id": "c09", "axes": {"model.backbone": "resnet18", "loss.name": "asl", '
        '"augment.preset": "standard"}, "seed": 0, "run_id": "c09-s0"}'
    )
    sweep = collect(root)
    (pending,) = sweep.problems
    assert (pending.run_id, pending.status, pending.reason) == ("c09-s0", "pending", "not started yet")
    assert sweep.axes["loss.name"] == ["bce", "focal", "asl"]  # sweep.yaml order, then levels seen only in runs


def test_report_flags_untrainable_classes_threshold_sources_and_small_validation(tmp_path: Path):
    import json

    root = make_sweep(
        tmp_path / "small", backbones=("resnet18",), augs=("standard",), seeds=(0,), n_val=20, problems=False
    )
    for run in sorted(p for p in root.iterdir() if (p / "summary.json").exists()):
        summary = json.loads((run / "summary.json").read_text())
        classes = list(summary["val"]["per_class"])
        never = classes[-2]
        thr = json.loads((run / "thresholds.json").read_text())
        thr["thresholds"][-2] = 2.0
        (run / "thresholds.json").write_text(json.dumps(thr))
        for name, row in summary["val"]["per_class"].items():
            row["threshold_source"] = "untrainable" if name == never else "fallback" if row["support"] < 3 else "tuned"
        summary["val"]["per_class"][never]["threshold"] = 2.0
        summary["untrainable_classes"] = [never]
        summary["train_positives"] = {c: 0 if c == never else 9 for c in classes}
        summary["val"]["n_fields"] = 20
        summary["val"]["sample_note"] = "n = 20 fields: too few to rely on"
        (run / "summary.json").write_text(json.dumps(summary))
    build_report(root, n_resamples=50)
    md = (root / "report.md").read_text()
    head = md.split("## ")[0]
    assert "Warning: 2 of 2 runs were validated on too little data (n = 20 fields: too few to rely on)" in head
    per_class_ap = md.split("## Per-class AP")[1].split("## ")[0]
    assert f"never predicted (untrainable; threshold above every score): {never}" in per_class_ap
    detail = md.split("## Highest-mean configuration in detail")[1].split("## ")[0]
    assert (
        "threshold from" in detail and f"never predicted (untrainable; threshold above every score): {never}" in detail
    )
    row = next(line for line in detail.splitlines() if line.startswith(f"| {never} "))
    assert "| never | untrainable |" in row  # no averaged 2.0: the threshold is "never"
    assert any("| tuned |" in line for line in detail.splitlines())


def test_every_finding_is_in_one_holm_family(tmp_path: Path):
    an = analyze(collect(make_sweep(tmp_path / "s", effects=STRONG_FOCAL, noise=1.0, problems=False)))
    top = an.top
    assert top is not None and not top.shared  # the two highest means are two focal points, neither the baseline
    raw = [c.p for c in an.comparisons] + [t.p for t in an.anova] + [top.p_sel]
    adjusted = [c.p_adj for c in an.comparisons] + [t.p_adj for t in an.anova] + [top.p_adj]
    assert adjusted == pytest.approx(stats.holm(raw))
    # 7 comparisons, 7 ANOVA terms (3 main effects, 3 two-way, the three-way interaction), best vs second
    assert an.family_size == 7 + 7 + 1 and len(an.anova) == 7
    # best vs second: a paired t-test over seeds, its raw p times the 28 pairs the top two could have been
    per_point = {c.point_id: c.by_seed("map") for c in collect(tmp_path / "s").points}
    seeds = sorted(per_point[top.best])
    p = sps.ttest_rel([per_point[top.best][s] for s in seeds], [per_point[top.second][s] for s in seeds]).pvalue
    assert top.test.p == pytest.approx(p) and top.n_pairs == 28 and top.p_sel == pytest.approx(min(1.0, 28 * p))
    text = next(f.text for f in an.findings if f.text.startswith("Highest mean val mAP"))
    assert "28 pairs" in text and f"Holm-adjusting over the {an.family_size} tests" in text
    assert all(f"over the {an.family_size} tests of these findings" in f.text for f in an.findings if "F(" in f.text)


def test_a_single_two_level_axis_is_tested_once(tmp_path: Path):
    root = make_sweep(
        tmp_path / "s",
        backbones=("resnet18",),
        augs=("standard",),
        seeds=(0, 1, 2, 3),
        effects=STRONG_FOCAL,
        noise=1.0,
        problems=False,
    )
    shutil.rmtree(root / "c01-s3")  # a missing run: the ANOVA's seed block absorbs the unpaired seed
    an = analyze(collect(root))
    (cmp,) = an.comparisons
    (term,) = an.anova
    # the main effect with seed as a block and the paired t-test are the same test: F = t^2, same p
    assert cmp.n == 3 and term.df1 == 1 and term.df2 == 2 and term.p == pytest.approx(cmp.p)
    assert "counted once" in term.note and math.isnan(term.p_adj)
    assert an.family_size == 1 and cmp.p_adj == pytest.approx(cmp.p)
    # the top two are the two levels: their test is the comparison, not a second one
    assert an.top is not None and an.top.shared and an.top.p_adj == cmp.p_adj
    texts = [f.text for f in an.findings]
    assert not any("main effect" in t for t in texts)
    assert sum("the only test of these findings" in t for t in texts) == 1  # the comparison
    assert any(
        t.startswith("Highest mean val mAP: loss=focal") and "the same test as their comparison" in t for t in texts
    )


def test_report_says_highest_mean_and_pareto_of_means(clean_sweep: Path):
    build_report(clean_sweep, n_resamples=50)
    md = (clean_sweep / "report.md").read_text()
    assert "## Highest-mean configuration in detail" in md and "Best configuration" not in md
    assert "Sorted by mean val mAP, highest first; the order is by means, not a test" in md
    assert "significantly ahead of the second" in md.split("## Leaderboard")[1].split("##")[0]
    assert "Pareto front of the means against" in md and "is not a test" in md
    assert "One Holm family covers every test whose result appears as a finding" in md


def test_single_seed_bootstrap_retunes_thresholds_only_on_the_tuning_part(tmp_path: Path):
    root = make_sweep(tmp_path / "one", backbones=("resnet18",), seeds=(0,), effects=STRONG_FOCAL, problems=False)
    sweep = collect(root)
    an = analyze(sweep, metric="macro_f1_tuned", n_resamples=300)
    run = sweep.point(an.baseline).done[0]
    pred = run.predictions()
    w = stats.resample_weights(len(pred.ids), 300, seed=0)
    probs = pred.probs.astype(np.float64)
    est = an.estimates[an.baseline]["macro_f1_tuned"]
    retuned = stats.basic_interval(est.mean, stats.weighted_macro_f1_retuned(probs, pred.targets, w))
    fixed = stats.percentile_interval(stats.weighted_macro_f1(probs, pred.targets, w, run.thresholds(sweep.classes)))
    assert (est.lo, est.hi) == pytest.approx(retuned) and retuned != pytest.approx(fixed)
    assert "basic intervals with thresholds re-tuned" in an.method
    assert "re-tuned inside every resample" in build_report(root, metric="macro_f1_tuned", n_resamples=50).read_text()
    # on a test part the thresholds come from validation: fixed in every resample, as for new images
    sweep.part = "test"
    est = analyze(sweep, metric="macro_f1_tuned", n_resamples=300).estimates[an.baseline]["macro_f1_tuned"]
    assert (est.lo, est.hi) == pytest.approx(fixed)
