"""`locbench ensemble` folders (read by evaluate, predict and report), test-time augmentation of finished runs, and
the report's "ensemble of the k best configurations" section."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from locbench.config import load_config
from locbench.data.formats import table_from_config
from locbench.data.splits import load_split
from locbench.engine.summary import summarize
from locbench.errors import LocbenchError
from locbench.infer import evaluate, field_probs, load_run, predict
from locbench.metrics import tune_thresholds
from locbench.report import build_report, stats
from locbench.report.collect import collect
from locbench.report.ensemble import ensemble_section, ensemble_summary, top_points
from locbench.store.rundir import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.cli import run_cli  # noqa: E402
from report_fixtures import make_sweep  # noqa: E402

pytest_plugins = ["fixtures.synth_data"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def members(tmp_path_factory, synth_dir, cache_dir) -> list[Path]:
    """Two finished 1-epoch runs of one split (train.seed 0 and 1, split_seed 0), 4 stains."""
    from fixtures.synth_data import Kit, one_torch_thread

    from locbench.engine.fit import train

    root = tmp_path_factory.mktemp("members")
    kit = Kit(synth_dir, cache_dir)
    with one_torch_thread():
        return [
            train(load_config(None, kit.overrides(train__seed=s, data__channels="rgby")), root / f"r{s}")
            for s in (0, 1)
        ]


@pytest.fixture(scope="module")
def ensemble(members, tmp_path_factory) -> Path:
    from locbench.infer.ensemble import build_ensemble

    return build_ensemble(members, tmp_path_factory.mktemp("ens") / "ens")


def _npz(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_ensemble_folder_averages_and_retunes(members, ensemble):
    names = {p.relative_to(ensemble).as_posix() for p in ensemble.rglob("*") if p.is_file()}
    assert {
        "config.yaml",
        "env.json",
        "ensemble.json",
        "split.json",
        "summary.json",
        "thresholds.json",
        "status",
        "status.json",
        "predictions/val.npz",
        "predictions/test.npz",
    } == names
    assert RunDir(ensemble).state() == "done"
    record = json.loads((ensemble / "ensemble.json").read_text())
    assert [m["path"] for m in record["members"]] == [str(p.resolve()) for p in members]
    assert all(m["sha256"] for m in record["members"])
    summary = json.loads((ensemble / "summary.json").read_text())
    member_summary = json.loads((members[0] / "summary.json").read_text())
    assert summary["train_positives"] == member_summary["train_positives"]
    for part in ("val", "test"):
        got = _npz(ensemble / "predictions" / f"{part}.npz")
        preds = [RunDir(m).read_predictions(part) for m in members]
        want = (
            preds[0].probs.astype(np.float64) + preds[1].probs[[list(preds[1].ids).index(i) for i in preds[0].ids]]
        ) / 2
        assert list(got["ids"]) == list(preds[0].ids)
        np.testing.assert_allclose(got["probs"], want, atol=1e-6)
        assert summary[part]["n_images"] == len(preds[0].ids)
    # thresholds tuned on the averaged validation probabilities, by the training rules (untrainable: never predicted)
    val = _npz(ensemble / "predictions" / "val.npz")
    positives = np.asarray(list(member_summary["train_positives"].values()))
    thresholds = json.loads((ensemble / "thresholds.json").read_text())["thresholds"]
    np.testing.assert_array_equal(thresholds, tune_thresholds(val["probs"], val["targets"], train_positives=positives))
    assert summary["untrainable_classes"] == member_summary["untrainable_classes"]
    assert all(
        thresholds[i] > 1 for i, c in enumerate(summary["val"]["per_class"]) if c in summary["untrainable_classes"]
    )
    _, again = summarize(val["probs"], val["targets"], list(summary["val"]["per_class"]), [], best_epoch=None,
                         cost={}, device="", train_positives=positives)  # fmt: skip
    assert summary["val"]["map"] == again["val"]["map"]


def test_evaluate_and_predict_run_every_member(members, ensemble, synth_dir, tmp_path, capsys):
    # the models averaged on the images give what the stored probabilities average to
    result = evaluate(ensemble, split="test", device="cpu", workers=0)
    summary = json.loads((ensemble / "summary.json").read_text())
    assert result["map"] == pytest.approx(summary["test"]["map"], abs=1e-5)
    assert result["macro_f1_tuned"] == pytest.approx(summary["test"]["macro_f1_tuned"], abs=1e-5)
    out = predict(ensemble, data=str(synth_dir), out=tmp_path / "p.csv", device="cpu", workers=0)
    rows = out.read_text().splitlines()
    assert len(rows) == 1 + 48
    # the CLI too; with a member moved away, a clear refusal (exit 2) instead of a traceback
    code, _ = run_cli(capsys, ["predict", str(ensemble), "--data", str(synth_dir), "--out", str(tmp_path / "q.csv")])
    assert code == 0
    moved = members[1].with_name("moved")
    members[1].rename(moved)
    try:
        code, err = run_cli(
            capsys, ["predict", str(ensemble), "--data", str(synth_dir), "--out", str(tmp_path / "r.csv")]
        )
        assert code == 2 and "member 2" in err and "is not there any more" in err and "locbench ensemble" in err
    finally:
        moved.rename(members[1])


def test_report_reads_an_ensemble_folder(ensemble, tmp_path):
    folder = shutil.copytree(ensemble, tmp_path / "copy")  # members found again by their absolute paths
    out = build_report(folder, n_resamples=100)
    assert out.exists() and "Ablation report" in (folder / "report.md").read_text()


def test_cams_of_an_ensemble_average_its_members(members, ensemble, synth_dir, tmp_path):
    from locbench.explain import compute_cams
    from locbench.explain.run import explain_run
    from locbench.models import ProbabilityMean

    run = load_run(ensemble)
    model = run.model("cpu", tta=False)
    torch = pytest.importorskip("torch")
    x = torch.rand(2, 4, 64, 64)
    got = compute_cams(model, x, [0, 3])
    each = [compute_cams(load_run(m).model("cpu", tta=False), x, [0, 3]) for m in members]
    mean = (each[0] + each[1]) / 2
    top = mean.max(axis=(-2, -1), keepdims=True)
    np.testing.assert_allclose(got, mean / np.where(top > 0, top, 1), atol=1e-6)  # each map to its maximum
    assert np.abs(each[0] - each[1]).max() > 1e-3  # the members point at different places: the mean is not either
    with pytest.raises(LocbenchError, match="one forward pass"):  # a mean over test-time views is refused
        compute_cams(ProbabilityMean(list(model.members), [(False, False, False), (True, False, False)]), x, [0])
    result = explain_run(ensemble, out=tmp_path / "explain", n=2, localize=0, device="cpu")
    assert not result.get("cam_error") and list((tmp_path / "explain").glob("*.png"))


def test_refusals(members, ensemble, tmp_path, capsys):
    # a member whose split differs: one validation id swapped with a training id
    other = shutil.copytree(members[1], tmp_path / "other")
    split = json.loads((other / "split.json").read_text())
    split["parts"]["val"][0], split["parts"]["train"][0] = split["parts"]["train"][0], split["parts"]["val"][0]
    (other / "split.json").write_text(json.dumps(split))
    code, err = run_cli(capsys, ["ensemble", str(members[0]), str(other), "--out", str(tmp_path / "e")])
    assert code == 2 and "different splits" in err
    assert not (tmp_path / "e").exists()
    # one run, a run twice, an ensemble as a member, an output inside a member, an existing output
    for args, words in [
        ([str(members[0])], "at least 2 runs"),
        ([str(members[0]), str(members[0])], "given twice"),
        ([str(members[0]), str(ensemble)], "is an ensemble itself"),
        ([str(members[0]), str(tmp_path / "nothing")], "neither a run folder nor a grid point"),
    ]:
        code, err = run_cli(capsys, ["ensemble", *args, "--out", str(tmp_path / "e")])
        assert code == 2 and words in err, err
    code, err = run_cli(capsys, ["ensemble", *map(str, members), "--out", str(members[0] / "ens")])
    assert code == 2 and "which this command reads" in err
    code, err = run_cli(capsys, ["ensemble", *map(str, members), "--out", str(ensemble)])
    assert code == 2 and "--force" in err
    code, err = run_cli(capsys, ["ensemble", *map(str, members), "--out", str(ensemble), "--force"])
    assert code == 0
    code, err = run_cli(capsys, ["ensemble", *map(str, members), "--out", str(members[1]), "--force"])
    assert code == 2  # never over an input


def test_tta_retunes_thresholds_on_validation(members, tmp_path):
    run = load_run(members[0])
    result = evaluate(run, split="test", device="cpu", workers=0, tta="flips", out=tmp_path / "flips.json")
    assert result["tta"] == "flips" and "re-tuned" in result["thresholds"]
    cfg = load_config(members[0] / "config.yaml")
    table = table_from_config(cfg.data)
    rows = load_split(members[0] / "split.json").indices(table, "val")
    plain = field_probs(run, table, rows, device="cpu", workers=0)
    tta_run = dataclasses.replace(run, config=cfg.replace({"infer.tta": "flips"}))
    probs = field_probs(tta_run, table, rows, device="cpu", workers=0)
    assert np.abs(probs - plain).max() > 1e-4  # the augmentation changes the scores of this (non-invariant) model
    positives = np.asarray(list(run.summary["train_positives"].values()))
    want = tune_thresholds(probs, table.targets[rows], train_positives=positives)
    assert [row["threshold"] for row in result["per_class"].values()] == want.tolist()
    # without --tta: the run's own thresholds and no augmentation
    plain_result = evaluate(run, split="test", device="cpu", workers=0, out=tmp_path / "plain.json")
    assert plain_result["tta"] == "none" and [r["threshold"] for r in plain_result["per_class"].values()] == (
        run.thresholds.tolist()
    )


def test_cli_prints_the_cost(members, tmp_path, capsys):
    from locbench.cli import main

    capsys.readouterr()
    assert main(["evaluate", str(members[0]), "--tta", "d8", "--out", str(tmp_path / "d8.json")]) == 0
    out = capsys.readouterr().out
    assert "test-time augmentation: d8 (x8 forward passes per image)" in out
    assert "thresholds: re-tuned on the run's validation part with d8" in out


def test_training_with_tta_predicts_validation_and_test_with_it(kit, tmp_path):
    from locbench.engine.fit import train

    run = train(load_config(None, kit.overrides(infer__tta="hflip")), tmp_path / "tta")
    finished = load_run(run)
    table = table_from_config(finished.config.data)
    split = load_split(run / "split.json")
    for part in ("val", "test"):
        stored = RunDir(run).read_predictions(part)
        probs = field_probs(finished, table, split.indices(table, part), device="cpu", workers=0)
        np.testing.assert_allclose(stored.probs, probs, atol=1e-5)  # made with hflip, as evaluate makes them
    summary = json.loads((run / "summary.json").read_text())
    val = RunDir(run).read_predictions("val")
    thresholds = tune_thresholds(
        val.probs, val.targets, train_positives=np.asarray(list(summary["train_positives"].values()))
    )
    np.testing.assert_array_equal(finished.thresholds, thresholds)  # fmt: skip


# ---- the report's ensemble section (fake sweeps: no training) ---------------------------------------------------


def test_report_ensemble_of_the_best_over_seeds(tmp_path):
    root = make_sweep(tmp_path / "sweep", problems=False, test=True, augs=("standard",))
    build_report(root, n_resamples=100, extra_sections=[ensemble_section(2, n_resamples=100)])
    md = (root / "report.md").read_text()
    assert "## Ensemble of the 2 best configurations" in md
    sweep = collect(root)
    chosen = top_points(sweep, "map", 2)
    # chosen by validation mAP, not by the test numbers the report shows
    val_means = {c.point_id: np.mean([r.summary["val"]["map"] for r in c.done]) for c in sweep.points}
    assert [c.point_id for c in chosen] == sorted(val_means, key=lambda p: -val_means[p])[:2]
    values = []
    for seed in (0, 1, 2):
        runs = [next(r for r in c.done if r.seed == seed) for c in chosen]
        values.append(ensemble_summary(runs)["test"]["map"])
    est = stats.t_interval(values)
    assert f"{est.mean:.3f} [{est.lo:.3f}, {est.hi:.3f}]" in md


def test_report_ensemble_single_seed_bootstrap_and_cli(tmp_path, capsys):
    root = make_sweep(tmp_path / "sweep", problems=False, test=True, augs=("standard",), seeds=(0,))
    code, _ = run_cli(capsys, ["report", str(root), "--ensemble-top", "3", "--no-explain", "--resamples", "100"])
    assert code == 0
    md = (root / "report.md").read_text()
    section = md.split("## Ensemble of the 3 best configurations")[1]
    assert "bootstrap over test images" in section and "Difference ensemble - best single" in section
    code, err = run_cli(capsys, ["report", str(root), "--ensemble-top", "1", "--no-explain"])
    assert code == 2 and "at least 2" in err


def test_members_given_as_a_sweep_grid_point(tmp_path):
    from locbench.errors import LocbenchError
    from locbench.infer.ensemble import resolve_members

    root = make_sweep(tmp_path / "sweep", problems=False, augs=("standard",), seeds=(0, 1))
    assert resolve_members([root / "c00"]) == [root / "c00-s0", root / "c00-s1"]
    assert resolve_members([root / "c01-s1"]) == [root / "c01-s1"]
    with pytest.raises(LocbenchError, match="neither a run folder nor a grid point"):
        resolve_members([root / "c99"])
