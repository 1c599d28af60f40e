"""Using a finished run at image level: load it, evaluate it on a split or another dataset, predict new images."""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from locbench.config import RunConfig, load_config
from locbench.data.channels import resolve_channels
from locbench.data.dataset import FieldDataset
from locbench.data.formats import Table, table_from_config
from locbench.data.schemes import SCHEMES, ClassScheme
from locbench.data.splits import load_split
from locbench.engine import checkpoint as ckpt
from locbench.engine.device import Accel, pick_device
from locbench.engine.inputs import Normalize
from locbench.errors import LocbenchError
from locbench.infer.stream import rows_key, stream_probs
from locbench.metrics import compute_metrics, crossfit_metrics, never_predicted, small_sample_note
from locbench.models import ProbabilityMean, build_model, quirks, tta_views
from locbench.store.atomic import atomic_write
from locbench.store.partial import RowLog, partial_path
from locbench.store.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass
class FinishedRun:
    """A finished run folder opened for use: its typed configuration, summary, thresholds, the best checkpoint's
    metadata and (loaded on demand) model. Every file is read through :class:`~locbench.store.rundir.RunDir`."""

    folder: RunDir
    config: RunConfig
    summary: dict[str, Any]
    class_names: list[str]
    thresholds: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    thresholds_from: str = "tuned on the run's validation part"
    """Where :attr:`thresholds` come from (``infer.tta.use_tta`` tunes them again for another test-time
    augmentation)."""

    @property
    def path(self) -> Path:
        return self.folder.root

    @property
    def untrainable(self) -> list[str]:
        """Classes with no positive training example: their threshold is above every score, never predicted."""
        return [c for c, never in zip(self.class_names, never_predicted(self.thresholds), strict=True) if never]

    def model(self, device: str | torch.device = "cpu", *, tta: bool = True) -> torch.nn.Module:
        """The best checkpoint's model, in eval mode, with input normalisation folded in (takes [0, 1] input),
        averaged over the test-time augmentation of ``config.infer.tta`` (``tta=False``: a single pass, as class
        activation maps need); an ensemble folder's: the mean probability of its members' models
        (:class:`~locbench.models.tta.ProbabilityMean`)."""
        members = self.folder.ensemble_members()
        nets = [load_run(m).bare_model() for m in members] if members else [self.bare_model()]
        views = tta_views(self.config.infer.tta if tta else "none")
        model = nets[0] if len(nets) == 1 and len(views) == 1 else ProbabilityMean(nets, views)
        return model.to(device).eval()

    def bare_model(self) -> torch.nn.Module:
        """The best checkpoint's model on the CPU, normalisation folded in, without test-time augmentation."""
        state, meta = ckpt.load_checkpoint(self.folder.best, device="cpu")
        net = build_model(
            _no_pretrained(self.config.model),
            num_classes=meta["num_classes"],
            in_chans=meta["in_chans"],
            img_size=self.config.data.img_size,
        )
        try:
            net.load_state_dict(state["model"])
        except RuntimeError as e:
            raise LocbenchError(
                f"checkpoint {self.folder.best}.safetensors does not fit the model its config describes "
                f"({str(e).splitlines()[0]}); was the run folder edited by hand?"
            ) from None
        return torch.nn.Sequential(Normalize(meta["norm_mean"], meta["norm_std"]), net).eval()


def _no_pretrained(mcfg):
    return dataclasses.replace(mcfg, pretrained=False, pretrained_file=None)


def load_run(path: str | Path) -> FinishedRun:
    """Open a finished run folder (status ``done``); a run being trained right now is refused."""
    run = RunDir(Path(path))
    if not run.root.is_dir():
        raise LocbenchError(f"run folder {run.root} does not exist")
    if not run.config.exists():
        raise LocbenchError(f"{run.root} is not a run folder (no config.yaml)")
    if run.state() == "running":  # e.g. `train --resume` extending it: its checkpoint and thresholds still change
        raise LocbenchError(
            f"{run.root} is being trained right now (another process holds its lock): its checkpoint is still "
            "changing; wait until that training ends (`locbench status` on its sweep shows it), then run this again"
        )
    summary = run.read_summary()
    cfg = load_config(run.config)
    classes, thresholds = run.read_thresholds()
    meta = run.read_best_meta()
    _check_checkpoint_fits(run, cfg, classes, meta)
    return FinishedRun(run, cfg, summary, classes, thresholds, meta)


def _check_checkpoint_fits(run: RunDir, cfg: RunConfig, classes: list[str], meta: dict[str, Any]) -> None:
    """The best checkpoint must belong to this run: the same classes as thresholds.json, the channels of config.yaml
    (a checkpoint copied in from another run would otherwise predict the wrong classes, or crash mid-way)."""
    if not meta:
        return
    where = f"{run.best}.json"
    n = meta.get("num_classes")
    if n is not None and (n != len(classes) or meta.get("class_names", classes) != classes):
        raise LocbenchError(
            f"{where}: the checkpoint predicts {n} classes but the run's thresholds.json lists {len(classes)} "
            f"({', '.join(classes[:3])}, ...); the checkpoint comes from another run: use that run's folder"
        )
    want = list(resolve_channels(cfg.data.channels))
    have = meta.get("channels")
    if have is not None and (list(have) != want or meta.get("in_chans", len(have)) != len(want)):
        raise LocbenchError(
            f"{where}: the checkpoint takes channels {','.join(have)} but the run's config.yaml says "
            f"data.channels={cfg.data.channels} ({','.join(want)}); the checkpoint comes from another run"
        )


def as_run(run: FinishedRun | str | os.PathLike) -> FinishedRun:
    """``run`` itself, or the finished run in folder ``run`` (:func:`load_run`)."""
    return run if isinstance(run, FinishedRun) else load_run(run)


def run_level(path: str | os.PathLike) -> str:
    """The ``train.level`` of a run folder's ``config.yaml`` (``image`` or ``cell``)."""
    run = RunDir(Path(path))
    if not run.config.exists():
        raise LocbenchError(f"{run.root} is not a run folder (no config.yaml)")
    return load_config(run.config).train.level


def infer_probs(
    run: FinishedRun,
    dataset,
    *,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    partial: str | os.PathLike | None = None,
    ids: Sequence[str] | None = None,
    settings: dict[str, Any] | None = None,
    what: str = "fields",
) -> np.ndarray:
    """(N, C) float32 probabilities of the run's best model for every item of ``dataset``, streamed
    (:func:`~locbench.infer.stream.stream_probs`: decoding overlaps the model, only the probabilities are kept).

    Batches are twice the run's training batch (no gradients are kept) and ``workers`` defaults to the run's
    ``data.workers``, unless given. The model runs as in the run's validation (:class:`~locbench.engine.device.Accel`
    of its ``train.amp``, ``train.channels_last`` and ``train.gpu_paths_on_cpu`` on this device): the thresholds were
    tuned on probabilities computed that way. With ``partial`` (a file, :func:`~locbench.store.partial.partial_path`
    of the output), each batch is kept there as it finishes and a re-run continues after the last one kept; ``ids``
    (one per item) and ``settings`` (what else changes the numbers) tell whether the file is of the same pass.
    """
    cfg = run.config
    batch_size = cfg.train.batch_size * 2 if batch_size is None else batch_size
    workers = cfg.data.workers if workers is None else workers
    dev = pick_device(device)
    accel = Accel.for_config(cfg.train, dev, quirks(cfg.model.backbone))
    model = accel.place(run.model(dev))
    rows = None
    if partial is not None:
        if ids is None or len(ids) != len(dataset):
            raise ValueError("a resumable pass needs one id per item")
        key = rows_key(
            checkpoint=str(run.meta.get("sha256", run.path)),
            model=model,
            ids=ids,
            settings={**(settings or {}), "batch_size": batch_size, "device": dev.type, "accel": accel.describe()},
        )
        rows = RowLog(partial, key=key, columns=len(run.class_names))
    return stream_probs(
        model,
        dataset,
        accel=accel,
        columns=len(run.class_names),
        batch_size=batch_size,
        workers=workers,
        rows=rows,
        progress=cfg.log.progress,
        what=what,
    )


def field_probs(
    run: FinishedRun,
    table: Table,
    indices: np.ndarray | None = None,
    *,
    device: str = "auto",
    workers: int | None = None,
    partial: str | os.PathLike | None = None,
) -> np.ndarray:
    """:func:`infer_probs` of the whole fields of ``table`` (rows ``indices``, default all), at the run's image size,
    decoded from the files (``partial``: see :func:`infer_probs`)."""
    cfg = run.config
    indices = np.arange(len(table)) if indices is None else indices
    channels = run.meta.get("channels", cfg.data.channels)
    ds = FieldDataset(table, indices, channels=channels, size=cfg.data.img_size, resize_policy=cfg.data.resize)
    settings = {
        "images": str(table.image_dir),
        "channels": list(ds.channels),
        "size": ds.size,
        "resize": ds.resize_policy,
    }
    ids = [table.ids[i] for i in indices]
    return infer_probs(run, ds, device=device, workers=workers, partial=partial, ids=ids, settings=settings)


def check_compatible(run: FinishedRun, table: Table) -> None:
    """Refuse data of another class scheme than the run's."""
    names = list(table.scheme.classes)
    if names != run.class_names:
        raise LocbenchError(
            f"the data's classes ({table.scheme.name}, {len(names)} classes) differ from the run's "
            f"({len(run.class_names)} classes); evaluate on data of the same class scheme"
        )


def default_split(run: FinishedRun) -> str:
    """The part a run is scored on unless told otherwise: ``test`` when its split has one, else ``val``."""
    return "test" if "test" in load_split(run.folder.split).parts else "val"


def split_rows(run: FinishedRun, table: Table, split: str | None, *, other_data: bool) -> tuple[np.ndarray, str]:
    """Table rows of a run's split part and the part's name (``all``: every row; None: :func:`default_split`).

    With ``other_data`` (``--data`` given) and a table that lacks the part's ids, ``table`` is another dataset:
    every row, named ``all``.
    """
    if split == "all":
        return np.arange(len(table)), "all"
    saved = load_split(run.folder.split)
    split = split or ("test" if "test" in saved.parts else "val")
    if split not in saved.parts:
        raise LocbenchError(
            f"the run's split has no part {split!r} (it has {', '.join(saved.parts)}); "
            "use --split all to evaluate every image of --data"
        )
    if other_data and not set(saved.parts[split]) <= set(table.ids):
        log.info("--data is another dataset: evaluating all of its %d fields", len(table))
        return np.arange(len(table)), "all"
    return saved.indices(table, split), split


def evaluate(
    path: FinishedRun | str | os.PathLike,
    *,
    data: str | None = None,
    split: str | None = None,
    device: str = "auto",
    workers: int | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of a run's best model on a split part of its data (``val``, ``test``; default the test part where
    there is one), or on all images of another dataset (``data`` given and its ids not in the run's split).
    Written to ``RUN_DIR/eval/<name>.json``.

    Tuned F1 is never measured on the images its thresholds were tuned on: on ``val`` it is cross-fitted
    (:func:`~locbench.metrics.crossfit_metrics`), on images that include validation ones (``all`` of the run's
    own data) it is left out (None); ``tuned_f1`` says which.
    """
    run = as_run(path)
    cfg = run.config
    table = table_from_config(cfg.data, path=data)
    check_compatible(run, table)
    indices, name = split_rows(run, table, split, other_data=data is not None)
    # the probabilities are kept beside the result as they are computed: a killed evaluation continues
    partial = partial_path(run.folder.eval_path(name, out=out))
    probs = field_probs(run, table, indices, device=device, workers=workers, partial=partial)
    targets = table.targets[indices]
    at_half = compute_metrics(probs, targets, class_names=run.class_names, thresholds=0.5)
    tuned, how = _tuned_metrics(run, table, indices, name, probs, targets)
    result = {
        "run": str(run.path),
        "data": str(data or cfg.data.path),
        "split": name,
        "n_images": int(len(indices)),
        "macro_f1": at_half["macro_f1"],
        "micro_f1": at_half["micro_f1"],
        "map": at_half["map"],
        "macro_f1_tuned": tuned["macro_f1"] if tuned else None,
        "micro_f1_tuned": tuned["micro_f1"] if tuned else None,
        "tuned_f1": how,
        "absent_classes": at_half["absent_classes"],
        "untrainable_classes": run.untrainable,
        "tta": cfg.infer.tta,
        "thresholds": run.thresholds_from,
        "sample_note": small_sample_note(len(indices), targets.sum(axis=0)),
        "per_class": {
            c: dict(
                at_half["per_class"][c],
                f1_tuned=tuned["per_class"][c]["f1"] if tuned else None,
                threshold=float(run.thresholds[i]),
            )
            for i, c in enumerate(run.class_names)
        },
    }
    out_path = run.folder.write_eval(name, result, out=out)
    partial.unlink(missing_ok=True)
    result["path"] = str(out_path)
    result["_metrics_at_half"] = at_half
    result["_metrics_tuned"] = tuned
    return result


#: What ``tuned_f1`` says when the scored images include some the thresholds were tuned on.
TUNED_LEFT_OUT = "left out: the images include validation images the thresholds were tuned on (use --split test)"


def _tuned_metrics(
    run: FinishedRun, table: Table, indices: np.ndarray, name: str, probs: np.ndarray, targets: np.ndarray
) -> tuple[dict[str, Any] | None, str]:
    """Tuned-threshold metrics of the scored images, and what they are: ``val thresholds`` (images the thresholds
    never saw), ``cross-fitted`` (the validation part) or :data:`TUNED_LEFT_OUT` (None: mixed images)."""
    saved = load_split(run.folder.split) if run.folder.split.exists() else None
    val_ids = set(saved.parts.get("val", [])) if saved else set()
    if name == "val":
        # untrainable classes stay never predicted in every fold, as in the run's own thresholds
        trainable = (~never_predicted(run.thresholds)).astype(np.int64)
        tuned = crossfit_metrics(probs, targets, class_names=run.class_names, train_positives=trainable)
        if tuned is not None:
            for i, c in enumerate(run.class_names):  # the thresholds kept are tuned on all of validation
                tuned["per_class"][c]["threshold"] = float(run.thresholds[i])
        return tuned, "cross-fitted"
    if val_ids.intersection(table.ids[i] for i in indices):
        return None, TUNED_LEFT_OUT
    return compute_metrics(probs, targets, class_names=run.class_names, thresholds=run.thresholds), "val thresholds"


def predict(
    path: FinishedRun | str | os.PathLike,
    *,
    data: str,
    out: str | Path,
    output_format: str = "csv",
    device: str = "auto",
    workers: int | None = None,
) -> Path:
    """Per-image probabilities and labels (the run's tuned thresholds) for the images in ``data``.

    Untrainable classes (no positive training example, :attr:`FinishedRun.untrainable`) are never among the
    labels; their probabilities are written like every other class's.

    ``data`` is a dataset folder or CSV (labels, if any, are ignored), or a folder of ``{id}_{stain}.png|tif``
    images without a CSV. ``output_format``: ``csv`` (id, labels, names, one probability column per class) or
    ``kaggle2018`` (``Id,Predicted``, that competition's submission).
    """
    if output_format not in ("csv", "kaggle2018"):
        raise LocbenchError(f"--format {output_format!r}: use csv or kaggle2018")
    run = as_run(path)
    table = prediction_table(run, data)
    out = Path(out)
    # each batch's probabilities are kept beside the output as they are computed: a killed run of this command
    # continues where it stopped, and the output appears, whole, only at the end
    partial = partial_path(out)
    probs = field_probs(run, table, device=device, workers=workers, partial=partial)
    pred = probs >= run.thresholds[None, :]

    def write(f) -> None:  # row by row into the file: no copy of the whole text in memory
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        w = csv.writer(text, lineterminator="\n")
        if output_format == "kaggle2018":
            w.writerow(["Id", "Predicted"])
            for fid, row in zip(table.ids, pred, strict=True):
                w.writerow([fid, " ".join(str(j) for j in np.flatnonzero(row))])
        else:
            w.writerow(["id", "labels", "names", *[f"p_{c}" for c in run.class_names]])
            for fid, row, p in zip(table.ids, pred, probs, strict=True):
                idx = np.flatnonzero(row)
                names = "|".join(run.class_names[j] for j in idx)
                w.writerow([fid, " ".join(map(str, idx)), names, *[f"{v:.6f}" for v in p]])
        text.flush()
        text.detach()

    atomic_write(out, write)
    partial.unlink(missing_ok=True)
    log.info("wrote predictions for %d images to %s", len(table), out)
    return out


def prediction_table(run: FinishedRun, data: str) -> Table:
    """A table for ``data``: a labelled dataset, or a bare folder of stain images (targets all zero)."""
    p = Path(data)
    has_csv = p.is_file() or (p / "train.csv").exists() or any(p.glob("*.csv")) if p.exists() else False
    if not p.exists():
        raise LocbenchError(f"--data {p} does not exist")
    if has_csv:
        table = table_from_config(run.config.data, path=p)
        check_compatible(run, table)
        return table
    images = p / "test" if (p / "test").is_dir() else p / "train" if (p / "train").is_dir() else p
    names = run.config.data.stains  # the run's own stain names: {id}_GFP.tif when it was trained on those
    green = f"_{names['green'] or 'green'}"
    found = sorted(list(images.glob(f"*{green}.png")) + list(images.glob(f"*{green}.tif*")))
    if not found:
        raise LocbenchError(f"{images}: no label CSV and no {{id}}{green}.png / .tif images to predict")
    ids = [f.name.rsplit(green, 1)[0] for f in found]
    exts = [f.name.rsplit(green, 1)[1] for f in found]
    scheme = next(
        (s for s in SCHEMES.values() if list(s.classes) == run.class_names),
        ClassScheme("custom", tuple(run.class_names)),
    )
    return Table(
        root=p,
        format="images",
        scheme=scheme,
        ids=ids,
        targets=np.zeros((len(ids), len(run.class_names)), dtype=np.uint8),
        image_dir=images,
        exts=exts,
        stain_names=names,
    )
