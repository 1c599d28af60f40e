"""The benchmark scripts run end to end in their --quick mode and write the JSON their docs describe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures.benchmarks import load_benchmark

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
BARE_VARIANTS = ("fp32", "bf16", "bf16_cl", "bf16_cl_fast")


def _load(name: str):
    return load_benchmark(name, as_name=f"bench_{name}_under_test")


@pytest.fixture(autouse=True)
def _keep_threads():
    """The scripts set torch's thread count for timing; give the rest of the test session its own back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run(name: str, tmp_path: Path, capsys) -> tuple[dict, dict, str]:
    out = tmp_path / f"{name}.json"
    returned = _load(name).main(["--quick", "--out", str(out)])
    written = json.loads(out.read_text())
    return returned, written, capsys.readouterr().out


def test_common_table_and_line_fit():
    common = _load("_common")
    text = common.table(["name", "x"], [["a", 1.23456], ["bb", 12345.6]])
    assert text.splitlines() == ["name       x", "a       1.23", "bb    12,346"]
    md = common.table(["a", "b"], [[1, None]], markdown=True)
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | - |"]
    scaling = _load("bench_scaling")
    assert scaling.fit_line([1.0, 2.0, 3.0], [3.0, 5.0, 7.0]) == pytest.approx((1.0, 2.0))


def test_clock_counts_cpu_of_this_process():
    common = _load("_common")
    with common.Clock() as c:
        sum(i * i for i in range(200_000))
    assert c.wall > 0 and 0 < c.cpu_self <= c.wall * 1.5 + 0.01
    assert c.cpu == pytest.approx(c.cpu_self + c.cpu_children)


def test_bench_loading_quick(tmp_path, capsys):
    returned, written, out = _run("bench_loading", tmp_path, capsys)
    assert written == json.loads(json.dumps(returned))
    (ds,) = written["datasets"]
    assert ds["fields"] == 3 and ds["img_size"] == 32
    names = list(ds["results"])
    assert names[0].startswith("study") and any("cache" in n for n in names)
    for r in ds["results"].values():
        assert r["samples_per_s"] > 0 and r["runs"][0]["samples"] == ds["samples_per_pass"]
    assert ds["results"][names[0]]["speedup_vs_study"] == pytest.approx(1.0)
    assert "x study" in out


def test_bench_pipeline_quick(tmp_path, capsys):
    _, written, out = _run("bench_pipeline", tmp_path, capsys)
    (r,) = written["results"]
    assert r["backbone"].startswith("test_resnet") and r["epochs"] == 2
    assert len(r["train_epoch_calls"]) == 2 and len(r["evaluate_calls"]) == 2
    assert len(r["epochs_detail"]) == 2
    for key in ("ratio_train_loop", "ratio_epoch", "ratio_run", "ratio_train_loop_cpu"):
        assert 0 < r[key] < 10, key
    # the whole run includes its epochs: its ratio cannot beat the per-epoch one
    assert r["ratio_run"] <= r["ratio_epoch"] * 1.05
    assert "bare/train" in out


def test_bench_study_quick(tmp_path, capsys):
    _, written, out = _run("bench_study", tmp_path, capsys)
    r = written["result"]
    assert len(r["study"]["epoch_s"]) == len(r["locbench"]["epoch_s"]) == r["epochs"] == 2
    assert r["train_images"] + r["val_images"] == 12
    assert r["speedup_total"] == pytest.approx(r["study"]["total_s"] / r["locbench"]["total_s"])
    assert len(r["locbench"]["epoch_cpu_s"]) == 2 and r["speedup_epoch_cpu"] > 0
    assert "locbench train" in out


def test_bench_gpu_cpu_fallback_quick(tmp_path, capsys):
    _, written, out = _run("bench_gpu", tmp_path, capsys)
    assert written["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert {r["variant"] for r in written["bare"]} == {"fp32", "bf16", "bf16_cl", "bf16_cl_fast"}
    assert all(r["img_per_s"] > 0 for r in written["bare"])
    (pipe,) = written["pipeline"]
    assert pipe["img_per_s"] > 0 and pipe["ratio_to_bare"] > 0
    md = (tmp_path / "bench_gpu.md").read_text()
    assert "| test_resnet.r160_in1k | 32 |" in md and md in out


@pytest.mark.slow
def test_gpu_sh_dry_run_takes_the_gpu_runs_paths_on_the_cpu(tmp_path):
    """`bash benchmarks/gpu.sh --dry-run`: every loop and variant of the GPU run, and a pipeline whose engine
    decided as on CUDA (bf16 autocast, channels_last but for the NFNet, loader workers over the cache)."""
    out = tmp_path / "dry.json"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    done = subprocess.run(
        ["bash", str(BENCH / "gpu.sh"), "--dry-run", "--out", str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["device"] == "cpu"
    bare = {(r["backbone"], r["variant"]): r for r in report["bare"]}
    assert set(bare) == {(b, v) for b in ("test_resnet.r160_in1k", "test_nfnet") for v in BARE_VARIANTS}
    assert all(r["img_per_s"] > 0 for r in bare.values())
    resnet, nfnet = report["pipeline"]
    ran = ("amp", "channels_last", "grad_scaler", "loader_workers", "pin_memory")
    assert [resnet[k] for k in ran] == ["bfloat16", True, False, 2, False]  # pinning needs CUDA
    assert [nfnet[k] for k in ran] == ["bfloat16", False, False, 2, False]  # NFNets keep the contiguous layout
    assert (resnet["bare_reference"], nfnet["bare_reference"]) == ("bf16_cl", "bf16")
    assert resnet["img_per_s"] > 0 and nfnet["ratio_to_bare"] > 0
    md = out.with_suffix(".md").read_text()
    assert "dry run" in md and "| bfloat16, contiguous, 2 workers |" in md


def test_bench_scaling_quick(tmp_path, capsys):
    _, written, out = _run("bench_scaling", tmp_path, capsys)
    rows = written["cache"]["rows"]
    assert [r["fields"] for r in rows] == [8, 16]
    # green at 32 px: one uint8 plane of 32 x 32 per field, plus the .npy header
    assert rows[1]["bytes"] - rows[0]["bytes"] == 8 * 32 * 32
    assert written["cache_fit"]["bytes"]["per_field"] == pytest.approx(32 * 32)
    (rep,) = written["report"]
    assert rep["runs"] == 8 and rep["report_s"] > 0
    assert "21,806 (fit)" in out


@pytest.mark.slow
def test_bench_tta_ensemble_quick(tmp_path, capsys):
    _, written, out = _run("bench_tta_ensemble", tmp_path, capsys)
    assert len(written["runs"]) == 4 and all(set(s) == {"none", "flips"} for s in written["runs"].values())
    tta = written["tta"]["map"]["flips"]
    assert tta["vs_none"]["n"] == 4
    diffs = [s["flips"]["map"] - s["none"]["map"] for s in written["runs"].values()]
    assert tta["vs_none"]["diff"] == pytest.approx(sum(diffs) / 4)
    assert len(written["ensembles"]) == 2 and written["ensemble"]["map"]["vs_member_mean"]["n"] == 2
    assert set(written["tta_forward_s"]) == {"none", "flips"}
    assert "Test-time augmentation" in out and "Ensembles of 2 runs" in out


def test_bench_probe_quick(tmp_path, capsys):
    _, written, out = _run("bench_probe", tmp_path, capsys)
    probe, fine = written["sweeps"]["probe"], written["sweeps"]["finetune"]
    assert probe["runs"] == fine["runs"] == 2 * 3 * 2  # backbones x head settings x seeds
    assert probe["embedding_passes"] == 2 * 2  # once per backbone and split, shared by the heads
    assert 0 < probe["embedding_s"] < probe["wall_s"]
    assert written["finetune_over_probe_wall"] == pytest.approx(fine["wall_s"] / probe["wall_s"])
    assert len(written["points"]) == 6
    for point in written["points"]:
        for side in ("probe", "finetune"):
            assert len(point[side]["per_seed"]) == 2 and point[side]["lo"] <= point[side]["mean"] <= point[side]["hi"]
    assert "fine-tuning / probing" in out and "test_vit/linear-lr1e-3" in out


def test_bench_cell_probe_quick(tmp_path, capsys):
    _, written, out = _run("bench_cell_probe", tmp_path, capsys)
    crops, fields = written["sweeps"]["crops"], written["sweeps"]["cell_mask"]
    assert crops["runs"] == fields["runs"] == 2 * 2  # backbones x seeds
    assert 0 < fields["embedding_s"] < fields["wall_s"] and 0 < crops["embedding_s"] < crops["wall_s"]
    assert written["crops_over_cell_mask_wall"] == pytest.approx(crops["wall_s"] / fields["wall_s"])
    assert [p["backbone"] for p in written["points"]] == ["test_vit", "test_resnet"]
    for point in written["points"]:
        for side in ("crops", "cell_mask"):
            assert len(point[side]["per_seed"]) == 2 and point[side]["lo"] <= point[side]["mean"] <= point[side]["hi"]
    assert "crops / cell_mask" in out and "cell_mask test cell mAP" in out
