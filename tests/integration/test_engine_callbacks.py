"""Callbacks follow the training loop: every hook in order, the epoch records as metrics.jsonl has them."""

from __future__ import annotations

import pytest
import torch

from locbench.config import load_config
from locbench.engine.callbacks import Callback
from locbench.engine.fit import Trainer, train
from locbench.store.atomic import read_jsonl

pytest_plugins = ["fixtures.synth_data"]


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.records: list[dict] = []

    def on_epoch_start(self, trainer, epoch):
        assert isinstance(trainer, Trainer)
        self.events.append(("epoch_start", epoch))

    def on_step_end(self, trainer, step, loss):
        assert isinstance(loss, torch.Tensor) and loss.ndim == 0
        self.events.append(("step", step))

    def on_train_epoch_end(self, trainer, epoch, loss, seen):
        assert loss > 0 and seen == trainer.seen
        self.events.append(("train_epoch_end", epoch))

    def on_validation_start(self, trainer, epoch):
        self.events.append(("validation_start", epoch))

    def on_validation_end(self, trainer, epoch, val):
        assert set(val) == {"probs", "targets", "loss"}
        self.events.append(("validation_end", epoch))

    def on_epoch_end(self, trainer, record):
        self.records.append(record)
        self.events.append(("epoch_end", record["epoch"] - 1))

    def on_train_end(self, trainer):
        self.events.append(("train_end",))


def test_callbacks_see_every_hook_in_order(kit, tmp_path):
    rec = Recorder()
    cfg = load_config(None, kit.overrides(train__epochs=2, train__max_steps=2))
    run = train(cfg, tmp_path / "run", callbacks=[rec])
    per_epoch = lambda e: [  # noqa: E731
        ("epoch_start", e),
        ("step", 0),
        ("step", 1),
        ("train_epoch_end", e),
        ("validation_start", e),
        ("validation_end", e),
        ("epoch_end", e),
    ]
    assert rec.events == [*per_epoch(0), *per_epoch(1), ("train_end",)]
    assert rec.records == read_jsonl(run / "metrics.jsonl")


class EstimateProbe(Callback):
    """Runs the CPU estimate once more inside a real run and checks it leaves the run untouched."""

    def on_fit_start(self, trainer):
        from locbench.engine.callbacks import CpuEstimate

        before = {k: v.clone() for k, v in trainer.parts.model.state_dict().items()}
        rng = torch.get_rng_state()
        est = CpuEstimate()
        est.on_fit_start(trainer)
        self.epoch_s = est.epoch_s
        after = trainer.parts.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # weights and batch-norm statistics
        assert torch.equal(rng, torch.get_rng_state())
        assert all(p.grad is None for p in trainer.parts.model.parameters())
        # the extrapolation, written out: steps of 2 and 6 images took 3 s and 5 s -> 2 s per step + 0.5 s per image
        fake = CpuEstimate()
        fake.measure = lambda trainer, sizes: [3.0, 5.0]
        fake.on_fit_start(trainer)
        val_n = len(trainer.parts.val_loader.dataset)
        val_batches = -(-val_n // 16)  # validation batches are twice the training batch (8)
        assert fake.epoch_s == pytest.approx(2 * 2 + 0.5 * 16 + (2 * val_batches + 0.5 * val_n) / 3)


def test_cpu_run_prints_device_estimate_and_progress_lines(kit, tmp_path, caplog, monkeypatch):
    import logging

    from locbench.engine import callbacks

    monkeypatch.setattr(callbacks, "LINE_EVERY_S", 0.0)  # a line after every step
    monkeypatch.setattr(callbacks, "LONG_EPOCH_S", 0.0)  # and the advice, as for a long run
    probe = EstimateProbe()
    cfg = load_config(None, kit.overrides(train__epochs=1, train__max_steps=2, train__device="auto"))
    with caplog.at_level(logging.INFO, logger="locbench"):
        train(cfg, tmp_path / "run", callbacks=[probe])
    text = caplog.text
    assert probe.epoch_s is not None and probe.epoch_s > 0
    if not torch.cuda.is_available():
        assert "device: cpu (" in text and "train.device auto found no GPU" in text
    assert "estimated time on cpu: " in text and "per epoch" in text
    assert "measured on steps of 2 and 6 images of test_resnet at 32 px" in text
    assert "that is long for a CPU: train on a GPU (--device cuda)" in text  # 1 epoch of test_resnet at 32 px
    lines = [r.getMessage() for r in caplog.records if "img/s  epoch ETA" in r.getMessage()]
    assert [line.split("  ")[1] for line in lines] == ["step 1/2", "step 2/2"]
    assert lines[0].startswith("epoch 1/1") and "16/16 images" in lines[1]
    # the estimate is written to train.log too, after the device line
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert log_text.index("device: ") < log_text.index("estimated time on cpu")


def test_smaller_run_hint_names_only_flags_that_change_something():
    from locbench.config import RunConfig
    from locbench.engine.callbacks import smaller_run_hint

    cfg = RunConfig()
    assert "e.g. --backbone resnet18 --img-size 128; or train on a GPU" in smaller_run_hint(cfg)
    small = cfg.replace({"model.backbone": "resnet18", "data.img_size": 128})
    assert "e.g. --epochs 5; or" in smaller_run_hint(small)
