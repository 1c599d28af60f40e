"""The training loop: one engine for every backbone, loss and augmentation.

Keeps the accelerator busy: batches arrive as uint8 and are converted, augmented and normalised on the device;
no per-step host-device synchronisation (losses are summed on the device and read once per epoch).

:func:`train` readies the run folder and hands over to a :class:`Trainer`: :meth:`Trainer.setup` builds data,
model, optimisation and loggers once (:class:`Parts`), :meth:`Trainer.fit` runs the epochs and calls the
:class:`~locbench.engine.callbacks.Callback` hooks on the way.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import traceback
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from locbench.augment import build_augmentation
from locbench.config import RunConfig
from locbench.data.formats import Table, table_from_config
from locbench.data.splits import load_split
from locbench.engine import checkpoint as ckpt
from locbench.engine import optim, probe
from locbench.engine.callbacks import Callback, CpuEstimate, ProgressBar
from locbench.engine.data import (
    EpochSampler,
    PreparedData,
    channel_stats,
    check_part_sizes,
    loader_workers,
    make_loader,
    prepare_data,
    train_val_datasets,
)
from locbench.engine.device import Accel, describe_device, reset_peak_memory
from locbench.engine.distributed import DistEnv
from locbench.engine.evaluate import evaluate_model
from locbench.engine.inputs import Normalize, TrainInputs
from locbench.engine.loggers import LogFile, check_mlflow, make_loggers
from locbench.engine.resume import ready_run_folder, restore_checkpoint
from locbench.engine.seed import derive_seed, seed_everything, set_deterministic
from locbench.engine.summary import finish_run, nan_if_none
from locbench.errors import LocbenchError, interrupt_reason
from locbench.losses import build_loss, class_weights
from locbench.metrics import compute_metrics
from locbench.models import TTA_PASSES, build_model, count_params, measure_gmacs, with_tta
from locbench.models.weights import require_weights
from locbench.store.rundir import RunDir

log = logging.getLogger(__name__)


class RunDiverged(LocbenchError):
    """The loss became NaN or infinite; the run folder says so (status ``diverged``)."""

    exit_code = 3


def train(
    cfg: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    mlflow_parent: str | None = None,
) -> Path:
    """Train one configuration into the run folder ``out`` and return its path.

    With ``resume`` an interrupted run continues from its newest good checkpoint and ends with the same numbers
    as an uninterrupted run (on CPU). ``callbacks`` follow the loop (:class:`~locbench.engine.callbacks.Callback`).
    With ``log.mlflow`` on, the MLflow run is nested under the run ``mlflow_parent`` where given (a sweep's).
    Raises :class:`RunDiverged` when the loss stops being finite.
    """
    run = RunDir(Path(out))
    dist = DistEnv.from_env()
    device = dist.device(cfg.train.device)
    reset_peak_memory(device)
    seed_everything(cfg.train.seed)
    set_deterministic(True)

    if dist.main and cfg.model.pretrained and not cfg.model.pretrained_file:
        # before the run folder exists: offline without the weights, say so within seconds and leave nothing behind
        require_weights([cfg.model.backbone], what=f"model.pretrained for {cfg.model.backbone}")
    if dist.main:
        check_mlflow(cfg, what=f"run {run.root.name}")  # a tracking server that is down: now, not after training
    # the data, the split file or the split fractions are checked before the run folder exists: a typo makes none
    table = table_from_config(cfg.data)
    if cfg.data.split:
        load_split(cfg.data.split, table)
    elif not (resume and run.split.exists()):
        check_part_sizes(cfg.data, table)
    lock = run.lock()
    log_file = LogFile(run.log_file)
    if dist.main:
        ready_run_folder(run, cfg, resume=resume, lock=lock, log_file=log_file, device=device)
        log.info("device: %s", describe_device(cfg.train.device, device))
    dist.barrier()
    trainer = None
    try:
        trainer = Trainer(cfg, run, dist, device, callbacks)
        trainer.mlflow_parent = mlflow_parent
        trainer.table = table if cfg.train.level == "image" else None  # cell-level data reads its own
        trainer.setup(resume=resume)
        return trainer.fit()
    except RunDiverged as e:
        if dist.main:
            run.set_status("diverged", str(e))
        _end_callbacks(trainer, "diverged")
        raise
    except KeyboardInterrupt as e:
        # never `failed`: the status stays `running` and the lock is released below, so the run reads as
        # interrupted and the same command resumes it from its last finished epoch (a half epoch is not saved)
        if dist.main and run.status() == "running":
            run.set_status("running", interrupt_reason(e), must=False)
        _end_callbacks(trainer, "interrupted")
        raise
    except BaseException as e:
        if dist.main:
            # must=False: on a full disk this write fails too, and the error to report is the first one
            run.set_status("failed", f"{type(e).__name__}: {e}", must=False, traceback=traceback.format_exc())
        _end_callbacks(trainer, "failed")
        raise
    finally:
        log_file.detach()
        lock.release()


def _end_callbacks(trainer: Trainer | None, status: str) -> None:
    """Let the callbacks close what they opened (an MLflow run) when training ends early as ``status``
    (diverged, interrupted or failed); a callback failing here never hides the error that ended the run."""
    if trainer is None or not trainer.dist.main:
        return
    try:
        trainer._call("on_train_error", status)
    except Exception:
        log.warning("a callback failed while the run ended as %s", status, exc_info=True)


@dataclass
class TrainState:
    """Where training stands: saved with every epoch checkpoint (``train_state``), restored on resume."""

    epoch: int = 0
    best_map: float = -math.inf
    best_epoch: int | None = None
    bad_epochs: int = 0


@dataclass
class Parts:
    """What :meth:`Trainer.setup` builds once for the whole run."""

    data: PreparedData
    model: nn.Module
    """The model itself: checkpoints, EMA and gradient clipping use it."""
    net: nn.Module
    """What runs the training forward pass: ``model``, wrapped for DDP and compiled as configured."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    ema: nn.Module | None
    loss_fn: nn.Module
    inputs: TrainInputs | probe.FeatureInputs
    """A training batch to the model's input: augmented, normalised, in the chosen memory layout (a probe's
    embeddings: moved to the device)."""
    normalize: nn.Module
    """Loader batch ([0, 1] floats) to the model's input: the normalisation (a probe's embeddings: none)."""
    sampler: EpochSampler
    train_loader: DataLoader
    val_loader: DataLoader
    steps: int
    """Training steps per epoch."""
    dtype: torch.dtype | None
    channels_last: bool
    params: int
    gmacs: float
    meta: dict[str, Any]
    """What every checkpoint's metadata holds (classes, stains, normalisation)."""

    def checkpoint(self) -> dict[str, Any]:
        """The state an epoch checkpoint saves (and :func:`~locbench.engine.resume.restore_checkpoint` loads)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }


class Trainer:
    """Trains one configuration into a run folder that :func:`train` has readied: ``setup()``, then ``fit()``."""

    def __init__(
        self, cfg: RunConfig, run: RunDir, dist: DistEnv, device: torch.device, callbacks: Sequence[Callback] = ()
    ) -> None:
        self.cfg, self.run, self.dist, self.device = cfg, run, dist, device
        self.callbacks: list[Callback] = [ProgressBar(cfg.log.progress), CpuEstimate(), *callbacks]
        self.mlflow_parent: str | None = None  # the MLflow run to nest this run under (a sweep's)
        self.state = TrainState()
        self.parts: Parts
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        """Running sum of the training loss over this epoch's images (on the device)."""
        self.seen = 0
        """Images trained on in this epoch so far (this process)."""
        self.table: Table | None = None
        """The run's table when :func:`train` has read it already (to check the data before making the folder)."""
        self.probe = cfg.model.mode == "probe"
        """A frozen-backbone probe: the data are cached embeddings and only the head trains and evaluates on them."""

    def forward_model(self, model: nn.Module) -> nn.Module:
        """What runs on the loaders' batches: ``model``, or a probe's head (its batches are embeddings)."""
        return model.head if self.probe else model

    def setup(self, *, resume: bool = False) -> Parts:
        """Build data, model, optimisation, loaders and loggers; with ``resume`` load the newest good checkpoint."""
        cfg, device = self.cfg, self.device
        data = prepare_data(cfg, self.run.split, table=self.table)
        train_ds, val_ds = train_val_datasets(data)
        num_classes, in_chans = len(data.class_names), len(data.channels)
        if self.probe:
            model = probe.build_probe_model(cfg, num_classes=num_classes, in_chans=in_chans)
        else:
            torch.manual_seed(derive_seed(cfg.train.seed, "init"))
            model = build_model(cfg.model, num_classes=num_classes, in_chans=in_chans, img_size=cfg.data.img_size)
        params, gmacs = count_params(model), measure_gmacs(model, in_chans, cfg.data.img_size)
        if self.probe:
            mean, std = channel_stats(probe.stats_items(cfg, data, train_ds), seed=probe.STATS_SEED)
        else:
            mean, std = channel_stats(train_ds, seed=cfg.train.seed)
        accel = Accel.for_config(cfg.train, device, model.quirks)
        if self.probe:
            # a probe's batches are (N, D) embeddings: no memory layout to choose for them
            accel = replace(accel, channels_last=False)
            # the frozen backbone runs once per item, here; from now on the data are its embeddings
            features = probe.probe_embeddings(
                cfg,
                data,
                model,
                mean=mean,
                std=std,
                device=device,
                dtype=accel.dtype,
                workers=loader_workers(cfg, device, data),
            )
            data = probe.ProbeData(data, features)
            train_ds, val_ds = data.dataset("train"), data.dataset("val")
        accel.place(model)
        loss_fn = build_loss(cfg.loss, class_weights(cfg.loss.class_weights, data.targets("train"), num_classes))
        if self.probe:
            inputs = probe.FeatureInputs(device)
        else:
            inputs = TrainInputs(data.channels, build_augmentation(cfg.augment), mean, std, device, accel.channels_last)
        optimizer = optim.build_optimizer(cfg.optim, model)  # the trainable parameters: a probe's head alone
        bs = cfg.train.batch_size
        sampler = EpochSampler(
            len(train_ds), seed=cfg.train.seed, batch_size=bs, rank=self.dist.rank, world=self.dist.world
        )
        steps = max(1, len(sampler) // bs + (len(sampler) % bs > 0))
        if cfg.train.max_steps:
            steps = min(steps, cfg.train.max_steps)
        scheduler = optim.build_scheduler(cfg.optim, optimizer, steps, cfg.train.epochs)
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range and needs none
        scaler = torch.amp.GradScaler(device.type) if accel.dtype == torch.float16 else None
        ema = optim.build_ema(cfg.optim, model)
        if resume:
            stateful = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "ema": ema}
            saved = restore_checkpoint(self.run, stateful)
            self.state = TrainState(**saved) if saved else self.state
        net = self.dist.wrap(self.forward_model(model), device)
        if cfg.train.compile:
            net = torch.compile(net)
        pin, workers = device.type == "cuda", loader_workers(cfg, device, data)
        self.parts = Parts(
            data=data,
            model=model,
            net=net,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            ema=ema,
            loss_fn=loss_fn.to(device),
            inputs=inputs,
            normalize=nn.Identity() if self.probe else Normalize(mean, std).to(device),
            sampler=sampler,
            train_loader=make_loader(train_ds, batch_size=bs, workers=workers, sampler=sampler, pin=pin),
            val_loader=make_loader(val_ds, batch_size=bs * 2, workers=workers, pin=pin),
            steps=steps,
            dtype=accel.dtype,
            channels_last=accel.channels_last,
            params=params,
            gmacs=gmacs,
            meta=dict(num_classes=num_classes, in_chans=in_chans, class_names=data.class_names),
        )
        self.parts.meta.update(channels=list(data.channels), norm_mean=mean, norm_std=std)
        if self.dist.main:
            self.callbacks += make_loggers(cfg, self.run, mlflow_parent=self.mlflow_parent)
        log.info(
            "training %s (%s params, %.2f GMACs at %d px) on %s (%s) for %d epochs, %d steps each",
            cfg.model.backbone,
            f"{params:,}",
            gmacs,
            cfg.data.img_size,
            device,
            accel.describe(),
            cfg.train.epochs,
            steps,
        )
        return self.parts

    def fit(self) -> Path:
        """Run the epochs left (until an early stop), predict the test part with the best checkpoint, then tune
        thresholds and write the summary; the run's path."""
        cfg, p = self.cfg, self.parts
        epoch_times: list[float] = []
        throughputs: list[float] = []
        self._call("on_fit_start")
        for epoch in range(self.state.epoch, cfg.train.epochs):
            seed_everything(derive_seed(cfg.train.seed, "epoch", epoch))
            p.sampler.set_epoch(epoch)
            t0 = time.perf_counter()
            train_loss, seen = self.train_epoch(epoch)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            train_s = time.perf_counter() - t0
            if not math.isfinite(train_loss):
                raise RunDiverged(
                    f"training loss became {train_loss} in epoch {epoch + 1}; lower the learning rate "
                    "or enable gradient clipping (--set optim.clip_grad=1.0)"
                )
            if self.dist.main:
                throughputs.append(seen * self.dist.world / train_s)
                epoch_times.append(self._end_epoch(epoch, train_loss, throughputs[-1], t0))
            if self._stop_early():
                break
        if self.dist.main:
            self.predict_test()
            finish_run(
                self.run,
                p.data.class_names,
                best_epoch=self.state.best_epoch,
                params=p.params,
                gmacs=p.gmacs,
                epoch_times=epoch_times,
                throughputs=throughputs,
                device=self.device,
                train_positives=p.data.targets("train").sum(axis=0),
                n_fields=len(p.data.parts["val"]),
                n_test_fields=len(p.data.parts["test"]) if "test" in p.data.parts else None,
                weights=p.model.weights.to_dict() if p.model.weights is not None else None,
            )
            self._call("on_train_end")
        self.dist.close()
        return self.run.root

    def predict_test(self) -> None:
        """The best checkpoint's predictions of the test part (``predictions/test.npz``), made once training is
        over: the first and only time the test images are read. Nothing chosen during training (checkpoint,
        early stop, thresholds) can depend on them. Runs without a test part have nothing to do here.

        With test-time augmentation (``infer.tta``) the test part is predicted with it, and so is the validation
        part again (``predictions/val.npz``), so that the thresholds are tuned on probabilities of the same kind
        as those they are applied to; the best epoch is still the one of the plain validation pass."""
        p, tta = self.parts, self.cfg.infer.tta
        parts = (["val"] if tta != "none" else []) + (["test"] if "test" in p.data.parts else [])
        if not parts:
            return
        state, _ = ckpt.load_checkpoint(self.run.best, device="cpu")
        model = copy.deepcopy(p.ema.module if p.ema is not None else p.model)
        model.load_state_dict(state["model"])
        model = with_tta(self.forward_model(model), tta)
        for part in parts:
            ds = p.data.dataset(part)
            if len(ds) == 0:  # a cell run whose test fields hold no cell
                log.warning("the %s part holds no item to predict; the summary has no %s block", part, part)
                continue
            loader = make_loader(
                ds,
                batch_size=self.cfg.train.batch_size * 2,
                workers=loader_workers(self.cfg, self.device, p.data),
                pin=self.device.type == "cuda",
            )
            out = evaluate_model(model, loader, p.normalize, None, self.device, p.dtype, p.channels_last)
            self.run.write_predictions(part, p.data.ids(part), out["probs"], out["targets"])
            log.info(
                "%s part: %d items predicted with the best checkpoint (epoch %s)%s",
                part,
                len(ds),
                self.state.best_epoch,
                f", test-time augmentation {tta} (x{TTA_PASSES[tta]} forward passes)" if tta != "none" else "",
            )

    def train_epoch(self, epoch: int) -> tuple[float, int]:
        """One epoch of training steps: their mean loss and the images this process trained on."""
        cfg, p = self.cfg, self.parts
        aug_gen = torch.Generator().manual_seed(derive_seed(cfg.train.seed, "augment", epoch))
        self._call("on_epoch_start", epoch)
        p.net.train()
        self.loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self.seen = 0
        autocast = torch.autocast(self.device.type, dtype=p.dtype) if p.dtype is not None else nullcontext()
        for step, (x, y) in enumerate(p.train_loader):
            if step >= p.steps:
                break
            x, y = p.inputs(x, y, aug_gen)
            with autocast:
                logits = p.net(x)
            loss = p.loss_fn(logits.float(), y)  # the loss in float32, as validation computes it
            p.optimizer.zero_grad(set_to_none=True)
            if p.scaler is not None:
                p.scaler.scale(loss).backward()
                p.scaler.unscale_(p.optimizer)
            else:
                loss.backward()
            optim.clip_gradients(cfg.optim, p.model, p.model.quirks)
            if p.scaler is not None:
                p.scaler.step(p.optimizer)
                p.scaler.update()
            else:
                p.optimizer.step()
            p.scheduler.step()
            if p.ema is not None:
                p.ema.update_parameters(p.model)
            self.loss_sum += loss.detach().double() * x.shape[0]
            self.seen += x.shape[0]
            self._call("on_step_end", step, loss)
        mean = (self.loss_sum / max(self.seen, 1)).item()
        self._call("on_train_epoch_end", epoch, mean, self.seen)
        return mean, self.seen

    def _end_epoch(self, epoch: int, train_loss: float, img_per_s: float, t0: float) -> float:
        """Validate, write the metrics line and the checkpoints (main process); the epoch's seconds."""
        cfg, p, state = self.cfg, self.parts, self.state
        eval_model = p.ema.module if p.ema is not None else p.model
        self._call("on_validation_start", epoch)
        val = evaluate_model(
            self.forward_model(eval_model), p.val_loader, p.normalize, p.loss_fn, self.device, p.dtype, p.channels_last
        )
        self._call("on_validation_end", epoch, val)
        if not (math.isfinite(val["loss"]) and np.isfinite(val["probs"]).all()):
            # the training loss of a step is computed before its update: weights that the epoch's last step made
            # non-finite show first here
            raise RunDiverged(
                f"validation loss became {val['loss']} after epoch {epoch + 1} (the weights stopped being finite); "
                "lower the learning rate or enable gradient clipping (--set optim.clip_grad=1.0)"
            )
        m = compute_metrics(val["probs"], val["targets"], class_names=p.data.class_names, thresholds=0.5)
        epoch_s = time.perf_counter() - t0
        record = {
            "epoch": epoch + 1,
            "train/loss": train_loss,
            "val/loss": val["loss"],
            "val/macro_f1": m["macro_f1"],
            "val/map": m["map"],
            "time/epoch_s": epoch_s,
            "train/img_per_s": img_per_s,
            "lr": p.optimizer.param_groups[0]["lr"],
        }
        self.run.append_metrics(record)
        improved = m["map"] is not None and m["map"] > state.best_map
        if improved:
            state.best_map, state.best_epoch, state.bad_epochs = m["map"], epoch + 1, 0
            meta = dict(p.meta, epoch=epoch + 1, val_map=m["map"])
            ckpt.save_checkpoint(self.run.best, {"model": eval_model.state_dict()}, meta)
            self.run.write_predictions("val", p.data.ids("val"), val["probs"], val["targets"])
        else:
            state.bad_epochs += 1
        log.info(
            "epoch %d/%d  train loss %.4f  val loss %.4f  val mAP %.4f  macro F1 %.4f  %.1f img/s  %.1fs%s",
            epoch + 1,
            cfg.train.epochs,
            train_loss,
            val["loss"],
            nan_if_none(m["map"]),
            nan_if_none(m["macro_f1"]),
            img_per_s,
            epoch_s,
            "  (best)" if improved else "",
        )
        state.epoch = epoch + 1
        meta = dict(p.meta, epoch=epoch + 1, train_state=asdict(state))
        ckpt.save_checkpoint(self.run.epoch_stem(epoch + 1), p.checkpoint(), meta)
        ckpt.prune(self.run.checkpoints, keep=2)
        self._call("on_epoch_end", record)
        return epoch_s

    def _stop_early(self) -> bool:
        """Whether ``train.early_stop`` epochs passed without a better val mAP (rank 0 decides for all)."""
        patience = self.cfg.train.early_stop
        stop = self.dist.main and bool(patience and self.state.bad_epochs >= patience)
        if stop:
            log.info("early stop: no better val mAP for %d epochs", patience)
        return self.dist.from_main(stop, self.device)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)
