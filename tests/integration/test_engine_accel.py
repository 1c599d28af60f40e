"""The code paths a GPU run takes, run on a CPU with ``train.gpu_paths_on_cpu`` (a testing aid): bf16 and fp16
autocast, fp16's GradScaler (with gradient clipping, saved and resumed), the channels_last layout and loader
workers over the cache, each through ``train`` -> ``evaluate`` -> ``predict``, against the float32 run.

Tolerances (docs/PERFORMANCE.md, "GPU code paths on a CPU"): the largest probability difference to float32, measured
on this data (48 fields, test_resnet at 32 px, one epoch of 4 steps; the 2-core AMD EPYC development machine)
and allowed (about 3x):

- rounding alone (the float32 run's weights predicted on the path): bf16 7.2e-4 (5e-3), fp16 7.6e-5 (5e-4),
  channels_last 6e-8 (1e-6: float32 summed in another order);
- after training on the path (its own weights): bf16 1.7e-2 (5e-2), fp16 5.2e-3 (2e-2), channels_last 6.3e-5
  (5e-4): Adam's steps are about the learning rate whatever the gradient's size, so rounding that flips the sign
  of a near-zero gradient moves a weight by a full step; losses: bf16 1.1e-4, fp16 3.4e-5 (1e-3), channels_last
  8e-7 (1e-5).

mAP is not compared: a class's probabilities span about 0.013 (median; at most 0.03) across the 10 validation
fields of a model one epoch old, as much as training on a path moves them, so fields reorder (measured: bf16 moved
val mAP by 0.027, fp16 by 0.003, channels_last by 0).
"""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from locbench.cli import main
from locbench.config import load_config
from locbench.data.formats import table_from_config
from locbench.engine import checkpoint as ckpt
from locbench.engine.callbacks import Callback
from locbench.engine.fit import train
from locbench.infer.images import field_probs, load_run
from locbench.models.factory import LocModel
from locbench.store.atomic import read_jsonl

pytest_plugins = ["fixtures.synth_data"]

_BF16 = {"train.amp": "bf16", "train.gpu_paths_on_cpu": True, "train.channels_last": "off"}
#: clip_grad: the GradScaler must unscale before clipping; 100 never clips this model's unscaled gradients
_FP16 = {"train.amp": "fp16", "train.gpu_paths_on_cpu": True, "train.channels_last": "off", "optim.clip_grad": 100.0}
#: each path: its overrides, what its forward passes run under (autocast dtype, channels_last input)
VARIANTS = {
    "bf16": (_BF16, torch.bfloat16, False),
    "fp16": (_FP16, torch.float16, False),
    "channels_last": ({"train.channels_last": "on"}, None, True),
    # a CUDA run's defaults: bf16, channels_last, loader workers although the cache is read
    "gpu_defaults": ({"train.gpu_paths_on_cpu": True, "data.workers": 2}, torch.bfloat16, True),
}
#: largest differences to float32 allowed: (probabilities from rounding alone, probabilities after training, losses)
TOLERANCE = {
    "bf16": (5e-3, 5e-2, 1e-3),
    "fp16": (5e-4, 2e-2, 1e-3),
    "channels_last": (1e-6, 5e-4, 1e-5),
    "gpu_defaults": (5e-3, 5e-2, 1e-3),
}


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory, synth_dir, cache_dir):
    """The float32 reference: one epoch, predicted over the whole dataset."""
    from fixtures.synth_data import Kit, one_torch_thread

    kit = Kit(synth_dir, cache_dir)
    out = tmp_path_factory.mktemp("accel")
    with one_torch_thread():
        run = train(load_config(None, kit.overrides()), out / "fp32")
        args = ["--device", "cpu", "--workers", "0"]
        assert main(["predict", str(run), "--data", str(synth_dir), "--out", str(out / "fp32.csv"), *args]) == 0
    return run, _csv_probs(out / "fp32.csv")


@pytest.fixture
def forwards(monkeypatch) -> list[tuple[bool, torch.dtype | None, bool]]:
    """Every forward pass of a locbench model from now on: (training, autocast dtype or None, channels_last input)."""
    seen: list[tuple[bool, torch.dtype | None, bool]] = []
    forward = LocModel.forward

    def recording(self, x):
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        seen.append((self.training, dtype, x.is_contiguous(memory_format=torch.channels_last)))
        return forward(self, x)

    monkeypatch.setattr(LocModel, "forward", recording)
    return seen


class _FromFitStart(Callback):
    """Forget the forward passes of setup (measuring the model's GMACs): keep those of the loop."""

    def __init__(self, seen: list) -> None:
        self.seen = seen

    def on_fit_start(self, trainer) -> None:
        self.seen.clear()


def _csv_probs(path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        return {
            row["id"]: np.array([float(v) for k, v in row.items() if k.startswith("p_")]) for row in csv.DictReader(f)
        }


def _npz(path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_train_evaluate_predict_on_a_gpu_path_agree_with_float32(variant, fp32_run, kit, tmp_path, forwards):
    over, dtype, channels_last = VARIANTS[variant]
    ref_run, ref_pred = fp32_run
    run = train(load_config(None, dict(kit.overrides(), **over)), tmp_path / "run", callbacks=[_FromFitStart(forwards)])
    # the path was taken: training steps, validation and the test part's prediction
    assert {f[0] for f in forwards} == {True, False}
    assert set(forwards) == {(True, dtype, channels_last), (False, dtype, channels_last)}
    forwards.clear()
    cpu = ["--device", "cpu", "--workers", "0"]
    assert main(["evaluate", str(run), *cpu]) == 0
    assert main(["predict", str(run), "--data", str(kit.data), "--out", str(tmp_path / "pred.csv"), *cpu]) == 0
    assert forwards and set(forwards) == {(False, dtype, channels_last)}  # evaluate and predict run the same way

    # evaluate and predict give what training's own test-part prediction gave (same weights, same path)
    test, summary = _npz(run / "predictions" / "test.npz"), json.loads((run / "summary.json").read_text())
    pred = _csv_probs(tmp_path / "pred.csv")
    ids = [str(i) for i in test["ids"]]
    assert np.abs(np.stack([pred[i] for i in ids]) - test["probs"]).max() <= 5e-7  # the CSV's 6 decimals
    assert json.loads((run / "eval" / "test.json").read_text())["map"] == pytest.approx(
        summary["test"]["map"], abs=1e-6
    )

    # ... and agree with float32 within the path's tolerance
    rounding_tol, trained_tol, loss_tol = TOLERANCE[variant]
    trained = {
        part: np.abs(
            _npz(run / "predictions" / f"{part}.npz")["probs"] - _npz(ref_run / "predictions" / f"{part}.npz")["probs"]
        ).max()
        for part in ("val", "test")
    }
    trained["predict"] = max(np.abs(pred[i] - ref_pred[i]).max() for i in ref_pred)
    assert max(trained.values()) <= trained_tol, trained
    lines, ref_lines = read_jsonl(run / "metrics.jsonl"), read_jsonl(ref_run / "metrics.jsonl")
    losses = [abs(a[k] - b[k]) for a, b in zip(lines, ref_lines, strict=True) for k in ("train/loss", "val/loss")]
    assert max(losses) <= loss_tol, losses
    # the float32 run's own weights predicted on this path: rounding alone
    ref = load_run(ref_run)
    table = table_from_config(ref.config.data)
    on_path = dataclasses.replace(ref, config=ref.config.replace(over))
    rounding = np.abs(
        field_probs(on_path, table, device="cpu", workers=0) - field_probs(ref, table, device="cpu", workers=0)
    ).max()
    assert rounding <= rounding_tol
    if dtype is not None:  # mixed precision changed the numbers: it ran
        assert rounding > 0


@pytest.mark.slow
def test_fp16_grad_scaler_state_is_saved_and_resumed(kit, tmp_path):
    """An fp16 run stopped after epoch 1 and resumed ends as the uninterrupted one, its GradScaler restored."""
    over = dict(kit.overrides(train__epochs=2, optim__schedule="constant"), **_FP16)
    full = train(load_config(None, over), tmp_path / "full")
    saved, _ = ckpt.load_checkpoint(full / "checkpoints" / "epoch-0001")
    assert saved["scaler"] is not None and saved["scaler"] != torch.amp.GradScaler("cpu").state_dict()
    split = tmp_path / "split"
    train(load_config(None, dict(over, **{"train.epochs": 1})), split)
    restored = []

    class Grab(Callback):
        def on_fit_start(self, trainer) -> None:
            restored.append(trainer.parts.scaler.state_dict())

    train(load_config(None, over), split, resume=True, callbacks=[Grab()])
    assert restored == [saved["scaler"]]
    same = ("epoch", "train/loss", "val/loss", "val/map", "lr")
    assert [{k: r[k] for k in same} for r in read_jsonl(split / "metrics.jsonl")] == [
        {k: r[k] for k in same} for r in read_jsonl(full / "metrics.jsonl")
    ]
    for part in ("val", "test"):
        assert np.array_equal(
            _npz(split / "predictions" / f"{part}.npz")["probs"], _npz(full / "predictions" / f"{part}.npz")["probs"]
        )
