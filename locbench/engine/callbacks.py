"""Hooks into the training loop (:class:`locbench.engine.fit.Trainer`): loggers, progress bars and benchmarks
follow the loop through these instead of patching it."""

from __future__ import annotations

import copy
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from locbench.engine.fit import Trainer

log = logging.getLogger(__name__)

#: Seconds between progress lines inside an epoch when the output is not a terminal.
LINE_EVERY_S = 30.0
#: An estimated epoch longer than this (seconds), or a run longer than LONG_RUN_S, gets the advice to go smaller.
LONG_EPOCH_S = 60.0
LONG_RUN_S = 15 * 60.0


class Callback:
    """Override the hooks you need; each does nothing by default.

    Training hooks run on every process; validation and epoch-end hooks on the main process only (rank 0, the one
    that validates and writes the run folder).
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """After :meth:`~locbench.engine.fit.Trainer.setup`, before the first epoch (every process)."""

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

    def on_train_error(self, trainer: Trainer, status: str) -> None:
        """Training ended early as ``status`` (``diverged``, ``interrupted`` or ``failed``); the error is re-raised
        after every callback has been told (main process)."""


def duration(seconds: float) -> str:
    """``45s``, ``3m20s``, ``2h05m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def epoch_images(trainer: Trainer) -> int:
    """Images this process trains on per epoch."""
    p = trainer.parts
    return min(len(p.sampler), p.steps * trainer.cfg.train.batch_size)


class ProgressBar(Callback):
    """Progress inside an epoch with the running loss, throughput (img/s) and the time left: a bar when stderr is a
    terminal (``log.progress`` auto or bar), else a log line after the first step and then every
    :data:`LINE_EVERY_S` seconds (main process)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.bar = None
        self.lines = False
        self.t0 = self.last = 0.0
        self.epoch = 0

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.t0 = self.last = time.perf_counter()
        self.epoch = epoch
        self.lines = False
        if self.mode != "lines" and (self.mode != "auto" or sys.stderr.isatty()):
            desc = f"epoch {epoch + 1}/{trainer.cfg.train.epochs}"
            total = epoch_images(trainer)
            self.bar = tqdm(total=total, desc=desc, leave=False, unit="img", dynamic_ncols=True)
        else:
            self.lines = trainer.dist.main

    def on_step_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        if self.bar is not None:
            self.bar.update(trainer.seen - self.bar.n)
            if step % 10 == 0:  # one sync every 10 steps only for the on-screen number
                self.bar.set_postfix(loss=f"{(trainer.loss_sum / trainer.seen).item():.4f}")
        elif self.lines and (step == 0 or time.perf_counter() - self.last >= LINE_EVERY_S):
            # the first step's line gives the measured rate and time left at once; then one every LINE_EVERY_S
            self.last = now = time.perf_counter()
            total, seen = epoch_images(trainer), trainer.seen
            rate = seen / max(now - self.t0, 1e-9)
            log.info(
                "epoch %d/%d  step %d/%d  %d/%d images  loss %.4f  %.1f img/s  epoch ETA %s",
                self.epoch + 1,
                trainer.cfg.train.epochs,
                step + 1,
                trainer.parts.steps,
                seen,
                total,
                (trainer.loss_sum / max(seen, 1)).item(),
                rate,
                duration(max(total - seen, 0) / rate) if rate > 0 else "?",
            )

    def on_train_epoch_end(self, trainer: Trainer, epoch: int, loss: float, seen: int) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CpuEstimate(Callback):
    """Before the first epoch of a run on a CPU: the time an epoch will take, with advice to go smaller when that is
    long. Measured on training steps (forward, loss, backward) of a copy of the model at the run's image size, stains
    and augmentation, on zero images: one untimed step, then a step of ``small`` and one of ``large`` images, whose
    times give a fixed cost per step and a cost per image (on a CPU a step of 2 images costs far more than 1/16 of a
    step of 32), extrapolated to the run's batch size and images. The run's weights, batch-norm statistics and
    random streams are untouched: the copy has its own, and the random state is restored afterwards."""

    def __init__(self, small: int = 2, large: int = 6) -> None:
        self.small, self.large = small, large
        self.epoch_s: float | None = None
        """The estimate, once made (seconds per epoch)."""

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.device.type != "cpu" or not trainer.dist.main or trainer.state.epoch >= trainer.cfg.train.epochs:
            return
        if trainer.probe:  # a probe's epochs train a head on embeddings: milliseconds, nothing to warn about
            return
        cfg, p = trainer.cfg, trainer.parts
        bs = cfg.train.batch_size
        large, small = min(self.large, bs), min(self.small, bs)
        t_small, t_large = self.measure(trainer, [small, large])
        per_image = t_large / large
        if large > small:
            # fixed cost per step + cost per image; noise can tilt the line, so the cost per image stays between
            # a fifth of the large step's average and that average
            per_image = min(max((t_large - t_small) / (large - small), per_image / 5), per_image)
        per_step = max(t_large - per_image * large, 0.0)
        train_n, val_n = epoch_images(trainer) * trainer.dist.world, len(p.val_loader.dataset)
        val_batches = -(-val_n // (2 * bs))
        # validation is a forward pass only: about a third of a training step's cost
        self.epoch_s = per_step * p.steps + per_image * train_n + (per_step * val_batches + per_image * val_n) / 3
        epochs = cfg.train.epochs - trainer.state.epoch
        total = self.epoch_s * epochs
        log.info(
            "estimated time on cpu: %s per epoch, %s for %d epoch%s (%d training + %d validation images; "
            "%.2f s per image at batch %d, measured on %s of %s at %d px)",
            duration(self.epoch_s),
            duration(total),
            epochs,
            "s" if epochs != 1 else "",
            train_n,
            val_n,
            (per_step * p.steps + per_image * train_n) / max(train_n, 1),
            bs,
            f"steps of {small} and {large} images" if large > small else f"a step of {large} images",
            cfg.model.backbone,
            cfg.data.img_size,
        )
        if self.epoch_s > LONG_EPOCH_S or total > LONG_RUN_S:
            log.warning("that is long for a CPU: %s", smaller_run_hint(cfg))

    def measure(self, trainer: Trainer, sizes: list[int]) -> list[float]:
        """Seconds of one training step on each of ``sizes`` images, after an untimed one (the first step of a model
        pays for memory allocation)."""
        cfg, p = trainer.cfg, trainer.parts
        model = copy.deepcopy(p.model).train()
        n = max(sizes)
        x = torch.zeros(n, len(p.data.channels), cfg.data.img_size, cfg.data.img_size, dtype=torch.uint8)
        y = torch.zeros(n, len(p.data.class_names))
        times = []
        with torch.random.fork_rng(devices=[]):
            gen = torch.Generator().manual_seed(0)
            for k in [sizes[0], *sizes]:
                t0 = time.perf_counter()
                xb, yb = p.inputs(x[:k], y[:k], gen)
                p.loss_fn(model(xb), yb).backward()
                model.zero_grad(set_to_none=True)
                times.append(time.perf_counter() - t0)
        del model
        return times[1:]


def smaller_run_hint(cfg: Any) -> str:
    """What makes a CPU run shorter, as flags that change something in ``cfg``."""
    flags = []
    if cfg.model.backbone not in SMALL_BACKBONES and not cfg.model.backbone.startswith("test_"):
        flags.append("--backbone resnet18")
    if cfg.data.img_size > 128:
        flags.append("--img-size 128")
    if not flags and cfg.train.epochs > 4:
        flags.append(f"--epochs {cfg.train.epochs // 4}")
    gpu = "train on a GPU (--device cuda)"
    if not flags:
        return gpu
    return f"a smaller backbone or image size trains much faster, e.g. {' '.join(flags)}; or {gpu}"


#: Backbones a CPU trains in reasonable time; the advice does not suggest one of these again.
SMALL_BACKBONES = frozenset({"resnet18", "resnet10t", "mobilenetv3_small_100", "efficientnet_b0"})
