"""The training loop: one engine for every backbone, loss and augmentation.

Keeps the accelerator busy: batches arrive as uint8 and are converted, augmented and normalised on the device;
no per-step host-device synchronisation (losses are summed on the device and read once per epoch).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from locbench.config import RunConfig, dump_config, load_config
from locbench.engine import checkpoint as ckpt
from locbench.engine.data import EpochSampler, channel_stats, make_loader, prepare_data, to_unit
from locbench.engine.device import amp_dtype, peak_memory_mb, pick_device, use_channels_last
from locbench.engine.seed import derive_seed, seed_everything, set_deterministic
from locbench.errors import LocbenchError
from locbench.store.atomic import ensure_writable_dir, remove_stale_tmp
from locbench.store.rundir import RunDir, environment

log = logging.getLogger(__name__)


class RunDiverged(LocbenchError):
    """The loss became NaN or infinite; the run folder says so (status ``diverged``)."""

    exit_code = 3


@dataclass
class DistEnv:
    """torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK); a single process when absent."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> DistEnv:
        return cls(
            int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        )

    @property
    def main(self) -> bool:
        return self.rank == 0


class Normalize(nn.Module):
    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _Squeeze(nn.Module):
    """Augment and normalise each distinct stain once, then repeat it: ``green`` mode feeds the same stain
    three times, so this does a third of the augmentation work (bench_pipeline.py: 8% of a small model's step
    at 64 px). Only for channel-independent augmentation (same random draws, same pixels as the full path)."""

    def __init__(self, first: list[int], repeat: list[int], mean: list[float], std: list[float], device) -> None:
        super().__init__()
        self.first = torch.tensor(first, device=device)
        self.repeat = torch.tensor(repeat, device=device)
        self.normalize = Normalize([mean[i] for i in first], [std[i] for i in first]).to(device)

    @classmethod
    def plan(cls, channels, augment, mean, std, device) -> _Squeeze | None:
        from locbench.augment.batch import RandomAffineBatch

        distinct = list(dict.fromkeys(channels))
        # a transform drawing per-channel numbers (intensity jitter) would draw fewer of them: full path then
        if len(distinct) == len(channels) or not all(isinstance(t, RandomAffineBatch) for t in augment.transforms):
            return None
        return cls([channels.index(c) for c in distinct], [distinct.index(c) for c in channels], mean, std, device)

    def pick(self, x: torch.Tensor) -> torch.Tensor:
        """The distinct stains of a (N, C, H, W) batch."""
        return x.index_select(1, self.first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the distinct stains and repeat them into the model's channel order."""
        return self.normalize(x).index_select(1, self.repeat)


def train(cfg: RunConfig, out: str | Path, *, resume: bool = False) -> Path:
    """Train one configuration into the run folder ``out`` and return its path.

    With ``resume`` an interrupted run continues from its newest good checkpoint and ends with the same numbers
    as an uninterrupted run (on CPU). Raises :class:`RunDiverged` when the loss stops being finite.
    """
    from locbench.augment import build_augmentation
    from locbench.losses import build_loss
    from locbench.models import build_model, count_params, measure_gmacs

    run = RunDir(Path(out))
    dist = DistEnv.from_env()
    device = _setup_device(cfg, dist)
    seed_everything(cfg.train.seed)
    set_deterministic(True)

    lock = run.lock()
    if dist.main:
        _check_run_folder(run, cfg, resume)
        ensure_writable_dir(run.root, what="--out")  # a file there or a read-only folder: say so before any work
        if not lock.acquire(blocking=False):
            raise LocbenchError(f"{run.root} is being trained by another process right now")
        if remove_stale_tmp(run.root):  # scratch files of writes a kill interrupted: never read, only disk space
            log.info("removed scratch files an interrupted write left in %s", run.root)
        _attach_log_file(run)
        run.write_config(dump_config(cfg))
        run.write_env(environment(str(device)))
        run.set_status("running")
    if dist.world > 1:
        torch.distributed.barrier()
    try:
        return _train(
            cfg, run, dist, device, resume, build_augmentation, build_loss, build_model, count_params, measure_gmacs
        )
    except RunDiverged as e:
        if dist.main:
            run.set_status("diverged", str(e))
        raise
    except KeyboardInterrupt:
        if dist.main:
            run.set_status("failed", "interrupted (Ctrl-C); resume with --resume", must=False)
        raise
    except BaseException as e:
        if dist.main:
            import traceback

            # must=False: on a full disk this write fails too, and the error to report is the first one
            run.set_status("failed", f"{type(e).__name__}: {e}", must=False, traceback=traceback.format_exc())
        raise
    finally:
        _detach_log_file()
        lock.release()


def _train(cfg, run, dist, device, resume, build_augmentation, build_loss, build_model, count_params, measure_gmacs):
    data = prepare_data(cfg, run.split)
    train_ds, val_ds = data.dataset("train"), data.dataset("val")
    if len(train_ds) < 2 or len(val_ds) < 1:
        raise LocbenchError(
            f"too few images to train: {len(train_ds)} for training, {len(val_ds)} for validation; "
            "use more data or change data.val_frac"
        )
    num_classes, in_chans = len(data.class_names), len(data.channels)
    absent = [c for c, k in zip(data.class_names, data.targets("val").sum(0), strict=True) if k == 0]
    if absent:
        log.info(
            "%d of %d classes have no positive in the validation part; they are left out of its averages "
            "and listed in summary.json: %s",
            len(absent),
            num_classes,
            ", ".join(absent),
        )
    torch.manual_seed(derive_seed(cfg.train.seed, "init"))
    model = build_model(cfg.model, num_classes=num_classes, in_chans=in_chans, img_size=cfg.data.img_size)
    params = count_params(model)
    gmacs = measure_gmacs(model, in_chans, cfg.data.img_size)
    mean, std = channel_stats(train_ds, seed=cfg.train.seed)
    normalize = Normalize(mean, std).to(device)

    channels_last = use_channels_last(cfg.train.channels_last, device, cfg.model.timm_name)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    targets_train = data.targets("train")
    loss_fn = build_loss(cfg.loss, _class_weights(cfg.loss.class_weights, targets_train, num_classes)).to(device)
    augment = build_augmentation(cfg.augment)
    squeeze = _Squeeze.plan(data.channels, augment, mean, std, device)
    optimizer = _optimizer(cfg.optim, model)
    sampler = EpochSampler(
        len(train_ds), seed=cfg.train.seed, batch_size=cfg.train.batch_size, rank=dist.rank, world=dist.world
    )
    steps_per_epoch = max(1, len(sampler) // cfg.train.batch_size + (len(sampler) % cfg.train.batch_size > 0))
    if cfg.train.max_steps:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps)
    scheduler = _scheduler(cfg.optim, optimizer, steps_per_epoch, cfg.train.epochs)
    dtype = amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    ema = _ema(cfg.optim, model)

    state = {"epoch": 0, "best_map": -math.inf, "best_epoch": None, "bad_epochs": 0}
    if resume:
        state = _restore(run, model, optimizer, scheduler, scaler, ema, state, device)

    train_model = model
    if dist.world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.train.compile:
        train_model = torch.compile(train_model)

    pin = device.type == "cuda"
    workers = _loader_workers(cfg, device, data)
    train_loader = make_loader(train_ds, batch_size=cfg.train.batch_size, workers=workers, sampler=sampler, pin=pin)
    val_loader = make_loader(val_ds, batch_size=cfg.train.batch_size * 2, workers=workers, pin=pin)
    loggers = _make_loggers(cfg, run) if dist.main else []
    meta_common = {
        "num_classes": num_classes,
        "in_chans": in_chans,
        "class_names": data.class_names,
        "channels": list(data.channels),
        "norm_mean": mean,
        "norm_std": std,
    }
    log.info(
        "training %s (%s params, %.2f GMACs at %d px) on %s for %d epochs, %d steps each",
        cfg.model.backbone,
        f"{params:,}",
        gmacs,
        cfg.data.img_size,
        device,
        cfg.train.epochs,
        steps_per_epoch,
    )

    epoch_times, throughputs = [], []
    for epoch in range(state["epoch"], cfg.train.epochs):
        seed_everything(derive_seed(cfg.train.seed, "epoch", epoch))
        aug_gen = torch.Generator().manual_seed(derive_seed(cfg.train.seed, "augment", epoch))
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        train_loss, seen = _train_epoch(
            train_model,
            train_loader,
            optimizer,
            scheduler,
            scaler,
            ema,
            loss_fn,
            augment,
            squeeze or normalize,
            aug_gen,
            device,
            dtype,
            channels_last,
            cfg,
            epoch,
            steps_per_epoch,
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise RunDiverged(
                f"training loss became {train_loss} in epoch {epoch + 1}; lower the learning rate "
                "or enable gradient clipping (--set optim.clip_grad=1.0)"
            )
        eval_model = ema.module if ema is not None else model
        if dist.main:
            val = evaluate_model(eval_model, val_loader, normalize, loss_fn, device, dtype, channels_last)
            from locbench.metrics import compute_metrics

            m = compute_metrics(val["probs"], val["targets"], class_names=data.class_names, thresholds=0.5)
            epoch_s = time.perf_counter() - t0
            epoch_times.append(epoch_s)
            throughputs.append(seen * dist.world / train_s)
            record = {
                "epoch": epoch + 1,
                "train/loss": train_loss,
                "val/loss": val["loss"],
                "val/macro_f1": m["macro_f1"],
                "val/map": m["map"],
                "time/epoch_s": epoch_s,
                "train/img_per_s": throughputs[-1],
                "lr": optimizer.param_groups[0]["lr"],
            }
            run.append_metrics(record)
            for lg in loggers:
                lg.log(record, epoch + 1)
            improved = m["map"] is not None and m["map"] > state["best_map"]
            if improved:
                state.update(best_map=m["map"], best_epoch=epoch + 1, bad_epochs=0)
                ckpt.save_checkpoint(
                    run.best, {"model": eval_model.state_dict()}, dict(meta_common, epoch=epoch + 1, val_map=m["map"])
                )
                run.write_predictions("val", data.ids("val"), val["probs"], val["targets"])
            else:
                state["bad_epochs"] += 1
            log.info(
                "epoch %d/%d  train loss %.4f  val loss %.4f  val mAP %.4f  macro F1 %.4f  %.1f img/s  %.1fs%s",
                epoch + 1,
                cfg.train.epochs,
                train_loss,
                val["loss"],
                _num(m["map"]),
                _num(m["macro_f1"]),
                throughputs[-1],
                epoch_s,
                "  (best)" if improved else "",
            )
            state["epoch"] = epoch + 1
            full = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler else None,
                "ema": ema.state_dict() if ema is not None else None,
            }
            ckpt.save_checkpoint(run.epoch_stem(epoch + 1), full, dict(meta_common, epoch=epoch + 1, train_state=state))
            ckpt.prune(run.checkpoints, keep=2)
        if dist.world > 1:
            stop = torch.tensor([_should_stop(cfg, state) if dist.main else 0], device=device)
            torch.distributed.broadcast(stop, 0)
            if stop.item():
                break
        elif _should_stop(cfg, state):
            log.info("early stop: no better val mAP for %d epochs", cfg.train.early_stop)
            break

    if dist.main:
        _finish(run, cfg, data, state, params, gmacs, epoch_times, throughputs, device)
        for lg in loggers:
            lg.close()
    if dist.world > 1:
        # every rank waits for rank 0's summary, then leaves the group together: a rank that exits while another
        # still holds gloo connections aborts ("terminate called without an active exception")
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return run.root


def _train_epoch(
    model,
    loader,
    optimizer,
    scheduler,
    scaler,
    ema,
    loss_fn,
    augment,
    normalize,
    aug_gen,
    device,
    dtype,
    channels_last,
    cfg,
    epoch,
    steps,
):
    model.train()
    total = torch.zeros((), device=device, dtype=torch.float64)
    seen = 0
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    bar = _progress(steps, f"epoch {epoch + 1}/{cfg.train.epochs}", cfg.log.progress)
    for step, (x, y) in enumerate(loader):
        if step >= steps:
            break
        x = x.to(device, non_blocking=True)
        if isinstance(normalize, _Squeeze):
            x = normalize.pick(x)
        x = to_unit(x)
        y = y.to(device, non_blocking=True)
        x, y = augment(x, y, aug_gen)
        x = normalize(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        _clip(cfg.optim, model, cfg.model.timm_name)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model.module if hasattr(model, "module") else model)
        total += loss.detach().double() * x.shape[0]
        seen += x.shape[0]
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:  # one sync every 10 steps only for the on-screen number
                bar.set_postfix(loss=f"{(total / seen).item():.4f}")
    if bar is not None:
        bar.close()
    return (total / max(seen, 1)).item(), seen


@torch.no_grad()
def evaluate_model(model, loader, normalize, loss_fn, device, dtype, channels_last) -> dict[str, Any]:
    """Probabilities, targets and mean loss over a loader (no augmentation)."""
    model.eval()
    probs, targets = [], []
    total = torch.zeros((), device=device, dtype=torch.float64)
    n = 0
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    for x, y in loader:
        x = normalize(to_unit(x.to(device, non_blocking=True)))
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(x)
        logits = logits.float()
        if loss_fn is not None:
            total += loss_fn(logits, y).double() * x.shape[0]
        n += x.shape[0]
        probs.append(torch.sigmoid(logits))
        targets.append(y)
    return {
        "probs": torch.cat(probs).cpu().numpy().astype(np.float32),
        "targets": torch.cat(targets).cpu().numpy().astype(np.uint8),
        "loss": (total / max(n, 1)).item(),
    }


def _finish(run, cfg, data, state, params, gmacs, epoch_times, throughputs, device) -> None:
    """Tune thresholds on the best epoch's validation predictions and write summary.json; status done."""
    from locbench.metrics import compute_metrics, tune_thresholds

    preds = run.read_predictions("val")
    probs, targets = preds.probs, preds.targets
    thresholds = tune_thresholds(probs, targets)
    at_half = compute_metrics(probs, targets, class_names=data.class_names, thresholds=0.5)
    tuned = compute_metrics(probs, targets, class_names=data.class_names, thresholds=thresholds)
    per_class = {}
    for name in data.class_names:
        row = dict(at_half["per_class"][name])
        row["f1_tuned"] = tuned["per_class"][name]["f1"]
        row["threshold"] = float(thresholds[data.class_names.index(name)])
        per_class[name] = row
    history = run.read_metrics()
    if not epoch_times:  # resumed after the last epoch had finished: take the times from the log
        epoch_times = [r["time/epoch_s"] for r in history]
        throughputs = [r["train/img_per_s"] for r in history]
    summary = {
        "format_version": 1,
        "val": {
            "macro_f1": at_half["macro_f1"],
            "micro_f1": at_half["micro_f1"],
            "map": at_half["map"],
            "macro_f1_tuned": tuned["macro_f1"],
            "micro_f1_tuned": tuned["micro_f1"],
            "n_images": int(len(targets)),
            "per_class": per_class,
            "absent_classes": at_half["absent_classes"],
        },
        "best_epoch": state["best_epoch"],
        "epochs_run": len(history),
        "cost": {
            "params": params,
            "gmacs": gmacs,
            "train_img_per_s": statistics.median(throughputs) if throughputs else None,
            "epoch_s": statistics.median(epoch_times) if epoch_times else None,
            "peak_mem_mb": peak_memory_mb(device),
        },
        "device": str(device),
    }
    run.write_thresholds(data.class_names, thresholds)
    run.write_summary(summary)
    run.set_status("done")
    log.info(
        "done: best epoch %s, val mAP %.4f, macro F1 %.4f at 0.5, %.4f with tuned thresholds -> %s",
        state["best_epoch"],
        _num(at_half["map"]),
        _num(at_half["macro_f1"]),
        _num(tuned["macro_f1"]),
        run.root,
    )


def _num(x: float | None) -> float:
    """A metric for a log line: None (undefined, no class present) prints as nan."""
    return float("nan") if x is None else x


def _loader_workers(cfg, device: torch.device, data) -> int:
    """Loader processes: none when a CPU device trains from the cache.

    A cached batch is a memory-map row copy (about 0.3 ms for 32 images in this process); shipped from worker
    processes it costs 4-8x that in CPU time, taken from the cores the model trains on (benchmarks/
    bench_pipeline.py, docs/PERFORMANCE.md). Decoding files (no cache) or feeding an accelerator keeps workers.
    """
    if device.type == "cpu" and getattr(data, "cache", None) is not None and cfg.data.workers > 0:
        log.info("reading the cache in the training process (data.workers=%d unused on a CPU device)", cfg.data.workers)
        return 0
    return cfg.data.workers


def _should_stop(cfg, state) -> bool:
    return bool(cfg.train.early_stop and state["bad_epochs"] >= cfg.train.early_stop)


def _check_run_folder(run: RunDir, cfg: RunConfig, resume: bool) -> None:
    if not run.config.exists():
        return
    if not resume:
        status = run.status()
        raise LocbenchError(
            f"{run.root} already holds a run (status: {status}); use --resume to continue it, or another --out"
        )
    old = load_config(run.config)
    diff = _config_diff(old.to_dict(), cfg.to_dict())
    changed = [k for k in diff if not k.startswith(("log.", "data.workers", "train.device", "data.cache_dir"))]
    if "data.split" in changed and _same_split(cfg.data.split, run.split):
        changed.remove("data.split")  # the split the run used, at another path (a moved or copied sweep folder)
    if changed and not all(k == "train.epochs" for k in changed):
        raise LocbenchError(
            f"cannot resume {run.root}: the configuration differs from the saved one in {', '.join(changed)}; "
            "resume with the same settings or start a new run folder"
        )
    if changed and cfg.optim.schedule != "constant":
        # the cosine curve spans all epochs: the epochs already run followed another curve than the new config's
        raise LocbenchError(
            f"cannot resume {run.root} with train.epochs {old.train.epochs} -> {cfg.train.epochs}: its "
            f"{cfg.optim.schedule} learning-rate schedule depends on the number of epochs; start a new run folder"
        )


def _same_split(path: str | None, saved: Path) -> bool:
    """Whether the split file ``path`` holds the same split as the run's own copy ``saved``."""
    import json

    try:
        return path is not None and json.loads(Path(path).read_text()) == json.loads(saved.read_text())
    except (OSError, ValueError):
        return False


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, key + ".")
        elif va != vb:
            out.append(key)
    return out


def _setup_device(cfg, dist: DistEnv) -> torch.device:
    if dist.world > 1:
        import torch.distributed as td

        if not td.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and cfg.train.device != "cpu" else "gloo"
            td.init_process_group(backend)
        if torch.cuda.is_available() and cfg.train.device != "cpu":
            torch.cuda.set_device(dist.local_rank)
            return torch.device("cuda", dist.local_rank)
        return torch.device("cpu")
    return pick_device(cfg.train.device)


def _restore(run, model, optimizer, scheduler, scaler, ema, state, device):
    found = ckpt.latest_good(run.checkpoints)
    if found is None:
        log.info("no checkpoint in %s yet: starting from the beginning", run.root)
        run.clear_metrics()
        return state
    stem, _ = found
    saved, meta = ckpt.load_checkpoint(stem, device="cpu")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    if ema is not None and saved.get("ema"):
        ema.load_state_dict(saved["ema"])
    state = dict(meta["train_state"])
    # metrics lines written after that checkpoint belong to the lost epoch: drop them
    run.truncate_metrics(state["epoch"])
    log.info(
        "resuming %s after epoch %d (best val mAP %.4f at epoch %s)",
        run.root,
        state["epoch"],
        state["best_map"],
        state["best_epoch"],
    )
    return state


def _class_weights(setting, targets: np.ndarray, num_classes: int) -> torch.Tensor | None:
    if setting is None:
        return None
    if setting == "balanced":
        pos = targets.sum(0).astype(np.float64)
        w = np.where(pos > 0, len(targets) / np.maximum(pos, 1), 0.0)
        w = w / w[w > 0].mean()
        return torch.tensor(w, dtype=torch.float32)
    if len(setting) != num_classes:
        raise LocbenchError(f"loss.class_weights has {len(setting)} values; the data has {num_classes} classes")
    return torch.tensor(setting, dtype=torch.float32)


def _optimizer(ocfg, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if ocfg.name == "adam":
        return torch.optim.Adam(params, lr=ocfg.lr, weight_decay=ocfg.weight_decay)
    if ocfg.name == "adamw":
        return torch.optim.AdamW(params, lr=ocfg.lr, weight_decay=ocfg.weight_decay)
    return torch.optim.SGD(params, lr=ocfg.lr, momentum=0.9, nesterov=True, weight_decay=ocfg.weight_decay)


def _scheduler(ocfg, optimizer, steps_per_epoch: int, epochs: int):
    total = steps_per_epoch * epochs
    warmup = int(ocfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if ocfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _ema(ocfg, model):
    if not ocfg.ema:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ocfg.ema_decay), use_buffers=True)


def _clip(ocfg, model, backbone: str) -> None:
    if ocfg.clip_grad is None:
        return
    mode = ocfg.clip_mode
    if mode == "auto":
        mode = "agc" if "nfnet" in backbone else "norm"
    if mode == "agc":
        from timm.utils import adaptive_clip_grad

        adaptive_clip_grad(model.parameters(), clip_factor=ocfg.clip_grad)
    else:
        torch.nn.utils.clip_grad_norm_(model.parameters(), ocfg.clip_grad)


def _progress(total: int, desc: str, mode: str):
    if mode == "lines" or (mode == "auto" and not sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit="step", dynamic_ncols=True)


_file_handler: logging.Handler | None = None
_saved_logger: tuple[int, bool, logging.Handler] | None = None


class _ToRootHandlers(logging.Handler):
    """Hands records on to the root logger's handlers, as propagation would."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().callHandlers(record)


def _attach_log_file(run: RunDir) -> None:
    """Copy locbench's log lines (INFO and up) into RUN_DIR/train.log."""
    global _file_handler, _saved_logger
    _file_handler = logging.FileHandler(run.log_file)
    _file_handler.setLevel(logging.INFO)
    _file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logger = logging.getLogger("locbench")
    logger.addHandler(_file_handler)
    level = logger.getEffectiveLevel()
    if level > logging.INFO:
        # Under -q, or with no logging set up (a submitit job, a library caller), the logger would drop the epoch
        # lines before the file saw them: let INFO through to the file, pass on to the caller's handlers only
        # what they would have got.
        forward = _ToRootHandlers(level)
        _saved_logger = (logger.level, logger.propagate, forward)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(forward)


def _detach_log_file() -> None:
    global _file_handler, _saved_logger
    logger = logging.getLogger("locbench")
    if _saved_logger is not None:
        logger.setLevel(_saved_logger[0])
        logger.propagate = _saved_logger[1]
        logger.removeHandler(_saved_logger[2])
        _saved_logger = None
    if _file_handler is not None:
        logger.removeHandler(_file_handler)
        _file_handler.close()
        _file_handler = None


def _make_loggers(cfg, run: RunDir) -> list:
    from locbench.engine.loggers import make_loggers

    return make_loggers(cfg, run)
