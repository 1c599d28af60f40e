"""DDP under torchrun on the CPU (gloo): two processes train one run folder of the usual shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest_plugins = ["fixtures.synth_data"]


@pytest.mark.slow
def test_torchrun_two_processes_write_one_complete_run_folder(kit, tmp_path, run_contract):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free rendezvous port: no clash with other torchrun jobs on this machine
        "--nproc_per_node",
        "2",
        "-m",
        "locbench",
        "-q",
        "train",
        "--out",
        str(run),
        *kit.set_args(kit.overrides(train__epochs=2)),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count(f"run folder: {run}") == 2  # both ranks finish
    run_contract(run, epochs=2)
    # each rank trained on its half of the training part: 27 images (48 less val and test) -> 13 per rank -> 2 steps
    log = (run / "train.log").read_text()
    assert "for 2 epochs, 2 steps each" in log
    assert "Traceback" not in proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["device"] == "cpu"
    assert summary["test"]["n_images"] > 0  # rank 0 alone predicted the test part, once
