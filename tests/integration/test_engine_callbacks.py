"""Callbacks follow the training loop: every hook in order, the epoch records as metrics.jsonl has them."""

from __future__ import annotations

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
