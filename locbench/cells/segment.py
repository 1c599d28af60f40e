"""Cell segmentation: a backend interface, three backends, and a cached pass over a dataset.

A backend turns the stains of one field into an instance mask (0 background, 1..N cells) at full resolution.
``watershed`` needs nothing but scikit-image and is the default; ``hpacellseg`` (the HPA's own U-Nets, the
model behind the Kaggle 2021 masks) and ``cellpose`` run when the user has installed them and their weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import watershed

from locbench.cells.metric import compare_masks, pool_agreement
from locbench.data.formats import load_table
from locbench.data.images import read_field_stains
from locbench.data.pool import MIN_FIELDS_FOR_POOL, Progress, cpu_workers, imap_bounded
from locbench.errors import BadInputError, LocbenchError
from locbench.registry import Registry
from locbench.store.atomic import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

#: Stains a segmenter may read; the protein (green) channel is never used to find cells.
SEGMENTATION_CHANNELS = ("red", "blue", "yellow")
#: Written by :func:`segment_dataset` beside the masks: backend, options, and what each mask was made from.
MANIFEST = "segment.json"
#: Appended to after every mask of a run (id, fingerprint); folded into the manifest when the run ends.
PROGRESS_LOG = "segment.log"


@runtime_checkable
class Segmenter(Protocol):
    """Turns one field's stains into an (H, W) int32 instance mask: 0 background, 1..N cells."""

    def segment(self, channels: dict[str, np.ndarray]) -> np.ndarray: ...


#: name → factory(**options) -> Segmenter
SEGMENTERS: Registry[Callable[..., Segmenter]] = Registry("segmenters")


def make_segmenter(name: str, **options: Any) -> Segmenter:
    """Build the backend ``name`` with its keyword options (e.g. ``weights=`` for the model backends)."""
    return SEGMENTERS.get(name)(**options)


# --------------------------------------------------------------------------------------------------------------
# watershed: classical, offline
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatershedSegmenter:
    """Nuclei from the blue stain, cell bodies grown from them by watershed on the red/yellow stains.

    All sizes are in pixels of the working image (the field scaled so its longer side is ``work_size``); a
    2048 px HPA field is worked on at 512 px, where a nucleus is ~40 px across and a cell ~90 px.
    """

    work_size: int = 512
    """Longer side of the working image; the mask is scaled back up with nearest-neighbour."""
    nucleus_sigma: float = 2.0
    """Gaussian smoothing of the blue stain before Otsu."""
    min_nucleus_area: int = 150
    """Nuclei (after splitting) smaller than this are dropped as debris."""
    nucleus_min_distance: int = 25
    """Smallest distance between two nucleus centres (distance-transform peaks) when splitting touching nuclei."""
    cyto_sigma: float = 2.0
    """Gaussian smoothing of the cytoplasm stains."""
    cyto_threshold: float = 0.3
    """Foreground where the cytoplasm signal exceeds this fraction of its Otsu threshold."""
    min_cell_area: int = 600
    """Cells smaller than this are dropped."""
    cyto_channels: tuple[str, ...] = ("red", "yellow")
    """Stains that outline the cell bodies (microtubules, ER)."""

    def segment(self, channels: dict[str, np.ndarray]) -> np.ndarray:
        """Segment one field; see the class docstring. Returns an (H, W) int32 mask."""
        blue = _require(channels, "blue")
        shape = blue.shape
        scale = min(1.0, self.work_size / max(shape))
        nuc_img = gaussian(_resize(_to_float(blue), scale), sigma=self.nucleus_sigma)
        cyto_stains = [_resize(_normalize(_to_float(_require(channels, c))), scale) for c in self.cyto_channels]
        cyto = gaussian(np.mean(cyto_stains, axis=0), sigma=self.cyto_sigma)

        # Nuclei: Otsu on the smoothed DNA stain, holes filled, debris removed.
        if float(nuc_img.max() - nuc_img.min()) < 1e-6:
            return np.zeros(shape, dtype=np.int32)
        nuclei_fg = ndi.binary_fill_holes(nuc_img > threshold_otsu(nuc_img))
        nuclei_fg = _drop_small(ndi.label(nuclei_fg)[0], self.min_nucleus_area) > 0
        # Touching nuclei: one seed per distance-transform peak, split by watershed on the distance.
        dist = ndi.distance_transform_edt(nuclei_fg)
        dist = gaussian(dist, sigma=1.0)
        blobs = ndi.label(nuclei_fg)[0]
        peaks = peak_local_max(dist, min_distance=self.nucleus_min_distance, labels=blobs, exclude_border=False)
        markers = np.zeros(dist.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        nuclei = watershed(-dist, markers, mask=nuclei_fg)
        nuclei = _drop_small(nuclei, self.min_nucleus_area)
        if not nuclei.any():
            return np.zeros(shape, dtype=np.int32)

        # Cell bodies: foreground from the cytoplasm stains (plus the nuclei themselves), flooded from the nuclei.
        otsu = threshold_otsu(cyto) if float(cyto.max() - cyto.min()) > 1e-6 else math.inf
        cell_fg = ndi.binary_fill_holes((cyto > self.cyto_threshold * otsu) | (nuclei > 0))
        cells = watershed(-cyto, nuclei, mask=cell_fg)
        cells = _drop_small(cells, self.min_cell_area)
        cells = _relabel(cells)
        return upscale_nearest(cells, shape)


@SEGMENTERS.register("watershed", doc="Classical: Otsu nuclei on blue, watershed cell bodies on red/yellow (offline)")
def _make_watershed(**options: Any) -> Segmenter:
    options.pop("weights", None)  # no weights; accepted so every backend takes the same options
    return WatershedSegmenter(**options)


def _require(channels: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in channels:
        raise LocbenchError(f"segmentation needs the {name!r} stain; got {sorted(channels)}")
    return np.asarray(channels[name])


def _to_float(img: np.ndarray) -> np.ndarray:
    """Intensities to float32 in [0, 1] by the dtype's range (8-bit / 255, 16-bit / 65535)."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    return img.astype(np.float32)


def _normalize(img: np.ndarray) -> np.ndarray:
    # Stains differ in brightness from field to field; a high percentile puts red and yellow on one footing.
    hi = float(np.percentile(img, 99.5))
    return np.clip(img / hi, 0.0, 1.0) if hi > 0 else img


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return img
    h, w = img.shape
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def upscale_nearest(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resize of a label image to ``shape`` (exact for any ratio, any label count)."""
    if labels.shape == tuple(shape):
        return labels.astype(np.int32, copy=False)
    h, w = labels.shape
    rows = np.minimum((np.arange(shape[0]) + 0.5) * h / shape[0], h - 1).astype(np.intp)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * w / shape[1], w - 1).astype(np.intp)
    return labels[rows[:, None], cols[None, :]].astype(np.int32)


def _drop_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Zero every label with fewer than ``min_area`` pixels (by count, whatever its connectivity)."""
    counts = np.bincount(labels.ravel())
    small = counts < min_area
    small[0] = False
    if small.any():
        labels = labels.copy()
        labels[small[labels]] = 0
    return labels


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 1..N in order of first appearance of their value (stable across runs)."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[labels]


# --------------------------------------------------------------------------------------------------------------
# Model backends: plug in when installed, never download
# --------------------------------------------------------------------------------------------------------------

#: File names the HPA segmentation release uses for its weights (hpacellseg's NUCLEI/MULTI_CHANNEL_CELL models).
HPA_NUCLEI_WEIGHTS = "dpn_unet_nuclei_v1.pth"
HPA_CELL_WEIGHTS = "dpn_unet_cell_3ch_v1.pth"


class HPACellSegmenter:
    """The HPA Cell Segmentation U-Nets (package ``hpacellseg``), as used to make the Kaggle 2021 masks.

    ``weights`` is a folder holding ``dpn_unet_nuclei_v1.pth`` and ``dpn_unet_cell_3ch_v1.pth``. hpacellseg
    downloads missing weights by itself; this adapter refuses to start without them so nothing is fetched.
    """

    def __init__(self, *, weights: str | os.PathLike | None = None, device: str = "cpu", scale_factor: float = 0.25):
        try:
            from hpacellseg.cellsegmentator import CellSegmentator
            from hpacellseg.utils import label_cell
        except ImportError as e:
            raise LocbenchError(
                f"backend 'hpacellseg' needs the HPA cell segmentation package ({e}). Install it with "
                "`pip install https://github.com/CellProfiling/HPA-Cell-Segmentation/archive/master.zip`, "
                "or use --backend watershed"
            ) from None
        folder = Path(weights) if weights else None
        missing = [n for n in (HPA_NUCLEI_WEIGHTS, HPA_CELL_WEIGHTS) if folder is None or not (folder / n).is_file()]
        if missing:
            raise LocbenchError(
                f"backend 'hpacellseg' needs its weights in a folder given with --weights (got {weights!r}); "
                f"missing: {', '.join(missing)}. Download them once from https://zenodo.org/record/4665863 "
                "(locbench does not download) and pass that folder"
            )
        self._label_cell = label_cell
        self._model = CellSegmentator(
            str(folder / HPA_NUCLEI_WEIGHTS),
            str(folder / HPA_CELL_WEIGHTS),
            scale_factor=scale_factor,
            device=device,
            padding=True,
            multi_channel_model=True,
        )

    def segment(self, channels: dict[str, np.ndarray]) -> np.ndarray:
        red, yellow, blue = (_require(channels, c) for c in ("red", "yellow", "blue"))
        # hpacellseg takes lists of images per stain: [[microtubules], [ER], [nuclei]].
        nuc = self._model.pred_nuclei([blue])
        cell = self._model.pred_cells([[red], [yellow], [blue]])
        _, cell_mask = self._label_cell(nuc[0], cell[0])
        return _relabel(np.asarray(cell_mask).astype(np.int32))


class CellposeSegmenter:
    """Cellpose (package ``cellpose``) on the cytoplasm stains with the nucleus as a helper channel.

    ``weights`` is the path to a Cellpose model file (e.g. ``~/.cellpose/models/cpsam`` or ``cyto3``);
    Cellpose fetches missing built-in models by itself, so this adapter requires an existing file.
    """

    def __init__(self, *, weights: str | os.PathLike | None = None, device: str = "cpu", diameter: float | None = None):
        try:
            import cellpose
            from cellpose import models
        except ImportError as e:
            raise LocbenchError(
                f"backend 'cellpose' needs the cellpose package ({e}). Install it with `pip install cellpose`, "
                "or use --backend watershed"
            ) from None
        if not weights or not Path(weights).is_file():
            raise LocbenchError(
                f"backend 'cellpose' needs a model file given with --weights (got {weights!r}). Fetch one once "
                "(e.g. `python -c \"from cellpose import models; models.CellposeModel(pretrained_model='cpsam')\"` "
                "puts it in ~/.cellpose/models/) and pass its path; locbench does not download"
            )
        version = getattr(cellpose, "version", None) or getattr(cellpose, "__version__", "0")
        self._major = int(str(version).split(".")[0] or 0) if str(version)[:1].isdigit() else 0
        self._model = models.CellposeModel(gpu=device != "cpu", pretrained_model=str(weights))
        self._diameter = diameter

    def segment(self, channels: dict[str, np.ndarray]) -> np.ndarray:
        cyto = np.mean([_normalize(_to_float(_require(channels, c))) for c in ("red", "yellow")], axis=0)
        nuclei = _normalize(_to_float(_require(channels, "blue")))
        image = np.stack([cyto, nuclei, np.zeros_like(cyto)], axis=-1)
        kwargs: dict[str, Any] = {"diameter": self._diameter}
        if self._major < 4:
            kwargs["channels"] = [1, 2]  # cellpose < 4: segment channel 1 (cytoplasm) with nuclei in channel 2
        masks = self._model.eval(image, **kwargs)[0]
        return _relabel(np.asarray(masks).astype(np.int32))


@SEGMENTERS.register("hpacellseg", doc="HPA Cell Segmentation U-Nets (pip package hpacellseg + weights folder)")
def _make_hpacellseg(**options: Any) -> Segmenter:
    return HPACellSegmenter(**options)


@SEGMENTERS.register("cellpose", doc="Cellpose (pip install cellpose + a model file via --weights)")
def _make_cellpose(**options: Any) -> Segmenter:
    return CellposeSegmenter(**options)


# --------------------------------------------------------------------------------------------------------------
# Reading fields and masks
# --------------------------------------------------------------------------------------------------------------


def read_stains(paths: Mapping[str, str | os.PathLike], names: Sequence[str] = SEGMENTATION_CHANNELS) -> dict:
    """Read the named stains of one field at full resolution, in their own dtype (uint8 or uint16).

    ``paths`` maps a stain to its file or :class:`~locbench.data.images.StainFile` (``Table.sources(i)``)."""
    missing = [name for name in names if name not in paths]
    if missing:
        raise LocbenchError(f"field has no {missing[0]!r} stain; this step needs {', '.join(names)}")
    return read_field_stains(paths, names)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read an instance mask PNG (8- or 16-bit) as int32."""
    img = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise LocbenchError(f"cannot read mask {path}")
    if img.ndim == 3:
        raise LocbenchError(f"mask {path} has {img.shape[2]} colour planes; expected a single-channel label image")
    return img.astype(np.int32)


def mask_path(masks_dir: str | os.PathLike, image_id: str) -> Path | None:
    """The mask of ``image_id`` in ``masks_dir``: ``{ID}.png`` (locbench, synth) or ``{ID}_predictedmask.png``."""
    folder = Path(masks_dir)
    for name in (f"{image_id}.png", f"{image_id}_predictedmask.png"):
        if (folder / name).is_file():
            return folder / name
    return None


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an instance mask as a 16-bit PNG (atomic)."""
    if mask.max(initial=0) > np.iinfo(np.uint16).max:
        raise LocbenchError(f"mask for {path} has {int(mask.max())} cells; a 16-bit PNG holds at most 65535")
    ok, buf = cv2.imencode(".png", mask.astype(np.uint16))
    if not ok:
        raise LocbenchError(f"could not encode mask {path} as PNG")
    atomic_write_bytes(path, buf.tobytes())


# --------------------------------------------------------------------------------------------------------------
# A dataset pass with a cache
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentResult:
    """What :func:`segment_dataset` did: where the masks are, and how many were made or reused."""

    masks_dir: Path
    ids: tuple[str, ...]
    computed: int
    reused: int


class _Fields:
    """The ids and stain paths of a dataset: a locbench ``Table`` or anything ``load_table`` reads."""

    def __init__(self, table_or_dir: Any) -> None:
        if not (hasattr(table_or_dir, "ids") and hasattr(table_or_dir, "paths")):
            table_or_dir = load_table(table_or_dir)
        self.ids = list(table_or_dir.ids)
        # where each stain is read from (a multi-channel file's channel included) when the table says so
        self.paths = getattr(table_or_dir, "sources", table_or_dir.paths)


def _fingerprint(paths: Mapping[str, Path]) -> str:
    """Cheap identity of a field's source images: names, sizes, mtimes of the stains segmentation reads."""
    parts = []
    for c in SEGMENTATION_CHANNELS:
        st = Path(paths[c]).stat()
        channel = getattr(paths[c], "channel", None)  # a StainFile's channel in a multi-channel file
        where = Path(paths[c]).name + ("" if channel is None else f"#{channel!r}")
        parts.append(f"{where}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _backend_key(backend: str, options: Mapping[str, Any]) -> dict:
    # Weights enter the key by path only; hashing a model file per run would cost more than it saves.
    return {"backend": backend, "options": {k: _jsonable(v) for k, v in sorted(options.items())}}


def _jsonable(v: Any) -> Any:
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, tuple):
        return list(v)
    return v


class FieldHook(Protocol):
    """Work a segmentation worker does on a field it has just segmented, while the field's stains are decoded.

    ``stains`` are read besides :data:`SEGMENTATION_CHANNELS`; the hook is called with the field id, every stain
    read, the new mask (already written) and where the stains were read from (``Table.sources(i)``). It must be
    picklable (it travels to worker processes).
    """

    stains: tuple[str, ...]

    def __call__(
        self, image_id: str, stains: dict[str, np.ndarray], mask: np.ndarray, sources: Mapping[str, Any]
    ) -> None: ...


_WORKER: dict[str, Any] = {}


def _init_worker(backend: str, options: dict, hook: FieldHook | None) -> None:
    _WORKER.update(segmenter=make_segmenter(backend, **options), hook=hook)


def _segment_one(job: tuple[str, dict[str, Path], Path]) -> tuple[str, int]:
    image_id, paths, out = job
    hook: FieldHook | None = _WORKER["hook"]
    stains = read_stains(paths, (*SEGMENTATION_CHANNELS, *(hook.stains if hook else ())))
    mask = _WORKER["segmenter"].segment(stains)
    write_mask(out, mask)
    if hook is not None:
        hook(image_id, stains, mask, paths)
    return image_id, int(mask.max(initial=0))


def _read_manifest(out: Path, key: dict) -> dict[str, str]:
    """Fields already segmented in ``out`` (id → fingerprint): the manifest's, then the log of an unfinished run.

    Raises when the folder holds masks of another backend or other options."""
    done: dict[str, str] = {}
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if {"backend": manifest.get("backend"), "options": manifest.get("options")} != key:
            raise LocbenchError(
                f"{out} holds masks from backend {manifest.get('backend')!r} with options {manifest.get('options')}; "
                f"this run is {key['backend']!r} with {key['options']}. Use another --out folder or delete that one"
            )
        done = dict(manifest.get("fields", {}))
    log_path = out / PROGRESS_LOG
    if log_path.is_file():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            image_id, sep, fingerprint = line.rpartition("\t")
            if sep and len(fingerprint) == 16:  # a line cut short by a kill is ignored: that field is redone
                done[image_id] = fingerprint
    return done


def segment_dataset(
    table_or_dir: Any,
    *,
    backend: str = "watershed",
    out_dir: str | os.PathLike,
    workers: int | None = 1,
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
    hook: FieldHook | None = None,
) -> SegmentResult:
    """Segment every field of a dataset into ``out_dir/{ID}.png`` (16-bit instance masks), reusing earlier work.

    ``out_dir/segment.json`` records the backend, its options and a fingerprint of each field's stains; a second
    call with the same backend and options recomputes only fields whose images changed or whose mask is gone.
    Each mask is written atomically and then noted in ``out_dir/segment.log`` (one line a field), so a run killed
    at any point resumes with only the fields then in flight to redo; the log is folded into the manifest at the end.

    Args:
        table_or_dir: a locbench ``Table`` (``ids``, ``paths(i)``) or a dataset folder (``train.csv``, ``train/``).
        backend: a name in :data:`SEGMENTERS`.
        out_dir: mask folder; created if needed.
        workers: processes (None: one per CPU); 1 segments in this process. At most two fields per worker are
            queued at a time, so memory does not grow with the number of fields.
        options: keyword options of the backend (e.g. ``{"weights": "models/"}``).
        progress: a progress bar on a terminal (a log line every 10 s otherwise) with fields/s and time left.
        hook: also run this on every field segmented, in the worker, with the stains it asks for (see
            :class:`FieldHook`): the cell crop cache uses it to cut crops from the same decode.

    Raises:
        LocbenchError: ``out_dir`` holds masks from another backend or other options (use another folder).
    """
    options = dict(options or {})
    SEGMENTERS.get(backend)  # an unknown name fails before any file is read
    workers = cpu_workers() if workers is None else max(1, workers)
    fields = _Fields(table_or_dir)
    out = Path(out_dir)
    key = _backend_key(backend, options)
    manifest_path = out / MANIFEST
    done = _read_manifest(out, key)

    fingerprints = {image_id: _fingerprint(fields.paths(i)) for i, image_id in enumerate(fields.ids)}
    jobs = [
        (image_id, fields.paths(i), out / f"{image_id}.png")
        for i, image_id in enumerate(fields.ids)
        if done.get(image_id) != fingerprints[image_id] or not (out / f"{image_id}.png").is_file()
    ]
    reused = len(fields.ids) - len(jobs)
    log.info("segment: %d fields with %s (%d workers), %d reused from %s", len(jobs), backend, workers, reused, out)
    if jobs:
        out.mkdir(parents=True, exist_ok=True)
        # Build the backend here first: a missing package or weights fails before any worker starts.
        segmenter = make_segmenter(backend, **options)
        if not manifest_path.is_file():  # the backend is on record before the first mask
            atomic_write_json(manifest_path, {**key, "fields": done})
        if len(jobs) < MIN_FIELDS_FOR_POOL:
            workers = 1
        if workers <= 1:
            _WORKER.update(segmenter=segmenter, hook=hook)
        bar = Progress(len(jobs), "segment", enabled=progress)
        try:
            with open(out / PROGRESS_LOG, "a", encoding="utf-8") as progress_log:
                for image_id, n_cells in imap_bounded(
                    _segment_one,
                    jobs,
                    workers=workers,
                    initializer=_init_worker,
                    initargs=(backend, options, hook),
                ):
                    done[image_id] = fingerprints[image_id]
                    # One line a field, after its mask is in place: a killed run resumes where it stopped.
                    progress_log.write(f"{image_id}\t{fingerprints[image_id]}\n")
                    progress_log.flush()
                    log.debug("segment: %s -> %d cells", image_id, n_cells)
                    bar.update()
        finally:
            _WORKER.clear()
            bar.close()
        atomic_write_json(manifest_path, {**key, "fields": done})
        (out / PROGRESS_LOG).unlink(missing_ok=True)
    elif not manifest_path.is_file():
        atomic_write_json(manifest_path, {**key, "fields": done})
    return SegmentResult(masks_dir=out, ids=tuple(fields.ids), computed=len(jobs), reused=reused)


def compare_mask_dirs(
    pred_dir: str | os.PathLike, truth_dir: str | os.PathLike, ids: list[str], *, iou_threshold: float = 0.5
) -> tuple[list[dict], dict]:
    """:func:`~locbench.cells.metric.compare_masks` for each id, plus the pooled totals.

    Returns:
        (one dict per id with ``"id"`` added, the pooled dict from ``pool_agreement``).
    """
    missing = [f"{i} (in {d})" for i in ids for d in (pred_dir, truth_dir) if mask_path(d, i) is None]
    if missing:
        raise BadInputError("masks are missing", missing, "segment those fields first, or compare other folders")
    rows = []
    for image_id in ids:
        pred = read_mask(mask_path(pred_dir, image_id))
        truth = read_mask(mask_path(truth_dir, image_id))
        if pred.shape != truth.shape:
            raise LocbenchError(f"mask {image_id} is {pred.shape} in {pred_dir} but {truth.shape} in {truth_dir}")
        rows.append({"id": image_id, **compare_masks(pred, truth, iou_threshold=iou_threshold)})
    return rows, pool_agreement(rows)
