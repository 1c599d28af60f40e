"""Hooks into the training loop (:class:`locbench.engine.fit.Trainer`): loggers, progress bars and benchmarks
follow the loop through these instead of patching it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from locbench.engine.fit import Trainer


class Callback:
    """Override the hooks you need; each does nothing by default.

    Training hooks run on every process; validation and epoch-end hooks on the main process only (rank 0, the one
    that validates and writes the run folder).
    """

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before the first training step of ``epoch`` (counted from 0)."""

    def on_step_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        """After an optimiser step; ``loss`` is the step's loss on the device (reading it waits for the device)."""

    def on_train_epoch_end(self, trainer: Trainer, epoch: int, loss: float, seen: int) -> None:
        """After the epoch's training steps: their mean loss and the images this process trained on."""

    def on_validation_start(self, trainer: Trainer, epoch: int) -> None:
        """Before the forward pass over the validation part (main process)."""

    def on_validation_end(self, trainer: Trainer, epoch: int, val: dict[str, Any]) -> None:
        """After it: ``val`` holds ``probs``, ``targets`` and the mean ``loss`` (main process)."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After the epoch's metrics line (``record``, as in metrics.jsonl) and checkpoints are written (main
        process)."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After summary.json is written (main process)."""


class ProgressBar(Callback):
    """A bar over each epoch's steps with the running loss, when stderr is a terminal (``log.progress``)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.bar = None

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if self.mode != "lines" and (self.mode != "auto" or sys.stderr.isatty()):
            desc = f"epoch {epoch + 1}/{trainer.cfg.train.epochs}"
            self.bar = tqdm(total=trainer.steps, desc=desc, leave=False, unit="step", dynamic_ncols=True)

    def on_step_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if step % 10 == 0:  # one sync every 10 steps only for the on-screen number
                self.bar.set_postfix(loss=f"{(trainer.loss_sum / trainer.seen).item():.4f}")

    def on_train_epoch_end(self, trainer: Trainer, epoch: int, loss: float, seen: int) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
