"""Progress inside an epoch: a bar in images on a terminal, log lines with img/s and the time left otherwise."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import torch

from locbench.engine import callbacks
from locbench.engine.callbacks import ProgressBar, duration


def fake_trainer(steps: int = 4, batch: int = 8, images: int = 30):
    cfg = SimpleNamespace(train=SimpleNamespace(epochs=3, batch_size=batch))
    parts = SimpleNamespace(steps=steps, sampler=list(range(images)))
    return SimpleNamespace(cfg=cfg, parts=parts, dist=SimpleNamespace(main=True), seen=0, loss_sum=torch.zeros(()))


def run_epoch(bar: ProgressBar, trainer, epoch: int = 1) -> None:
    bar.on_epoch_start(trainer, epoch)
    for step in range(trainer.parts.steps):
        n = min(trainer.cfg.train.batch_size, len(trainer.parts.sampler) - trainer.seen)
        trainer.seen += n
        trainer.loss_sum += 0.5 * n
        bar.on_step_end(trainer, step, torch.tensor(0.5))
    bar.on_train_epoch_end(trainer, epoch, 0.5, trainer.seen)


def test_lines_every_interval_with_throughput_and_eta(monkeypatch, caplog):
    clock = iter([0.0, 10.0, 20.0, 45.0, 45.0, 50.0])  # epoch start; steps end at 10, 20, 45, 50 s
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    trainer = fake_trainer()
    with caplog.at_level(logging.INFO, logger="locbench"):
        run_epoch(ProgressBar("lines"), trainer)
    lines = [r.getMessage() for r in caplog.records]
    # after the first step, then once 30 s have passed since the last line (at 45 s), not at 20 s or 50 s
    assert lines == [
        "epoch 2/3  step 1/4  8/30 images  loss 0.5000  0.8 img/s  epoch ETA 28s",
        "epoch 2/3  step 3/4  24/30 images  loss 0.5000  0.5 img/s  epoch ETA 11s",
    ]


def test_bar_counts_images(monkeypatch, capsys):
    trainer = fake_trainer()
    bar = ProgressBar("bar")
    seen = []
    real_update = callbacks.tqdm.update

    def update(self, n=1):
        seen.append(n)
        return real_update(self, n)

    monkeypatch.setattr(callbacks.tqdm, "update", update)
    run_epoch(bar, trainer)
    assert seen == [8, 8, 8, 6] and bar.bar is None
    assert "img" in capsys.readouterr().err


def test_duration():
    assert [duration(s) for s in (4.4, 59.6, 200, 3 * 3600 + 300)] == ["4s", "1m00s", "3m20s", "3h05m"]
