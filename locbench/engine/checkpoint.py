"""Checkpoints as safetensors (weights and optimizer tensors) plus a JSON file of everything else.

No pickle anywhere: loading runs no code from the file. The JSON holds the SHA-256 of the tensor file, so a
truncated or corrupt checkpoint is detected and the previous one is used instead. Files are written tmp + rename,
tensors first and JSON last: a checkpoint counts only once its JSON exists and its checksum matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from locbench.errors import LocbenchError
from locbench.store.atomic import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_EPOCH_RE = re.compile(r"^epoch-(\d+)\.json$")


def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state (dicts, lists, tensors, numbers) into a JSON skeleton and a flat tensor dict."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(o: Any, key: str) -> Any:
        if isinstance(o, torch.Tensor):
            tensors[key] = o.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(o, dict):
            items = enumerate(o.items())
            return {"__dict__": [[walk(k, f"{key}.k{i}"), walk(v, f"{key}.{i}")] for i, (k, v) in items]}
        if isinstance(o, (list, tuple)):
            return {
                "__list__" if isinstance(o, list) else "__tuple__": [walk(v, f"{key}.{i}") for i, v in enumerate(o)]
            }
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        raise TypeError(f"cannot store {type(o).__name__} in a checkpoint")

    return walk(obj, prefix or "s"), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            return [unflatten_state(v, tensors) for v in skeleton["__list__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
    return skeleton


def save_checkpoint(path_stem: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write ``{stem}.safetensors`` and ``{stem}.json``; ``state`` may nest dicts/lists of tensors."""
    skeleton, tensors = flatten_state(state)
    blob = save(tensors)
    atomic_write_bytes(path_stem.with_suffix(".safetensors"), blob)
    meta = dict(meta, format_version=FORMAT_VERSION, sha256=hashlib.sha256(blob).hexdigest(), skeleton=skeleton)
    atomic_write_json(path_stem.with_suffix(".json"), meta)


def verify(path_stem: Path) -> dict[str, Any] | None:
    """The checkpoint's metadata if both files exist and the checksum matches, else None (with a warning)."""
    meta_path, blob_path = path_stem.with_suffix(".json"), path_stem.with_suffix(".safetensors")
    if not meta_path.exists() or not blob_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("checkpoint metadata %s is corrupt; ignoring it", meta_path)
        return None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise LocbenchError(
            f"{meta_path} was written by a newer locbench (checkpoint format {meta['format_version']}, "
            f"this one reads {FORMAT_VERSION}); upgrade locbench"
        )
    digest = hashlib.sha256(blob_path.read_bytes()).hexdigest()
    if digest != meta.get("sha256"):
        log.warning("checkpoint %s is truncated or corrupt (checksum mismatch); ignoring it", blob_path)
        return None
    return meta


def load_checkpoint(path_stem: Path, device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a verified checkpoint: (state, metadata). Raises :class:`LocbenchError` if it is missing or corrupt."""
    meta = verify(path_stem)
    if meta is None:
        raise LocbenchError(f"checkpoint {path_stem}.safetensors is missing or corrupt")
    try:
        tensors = load_file(str(path_stem.with_suffix(".safetensors")), device=str(device))
    except Exception as e:  # safetensors parses a header and raw tensors only: a bad file is refused, never run
        raise LocbenchError(
            f"checkpoint {path_stem}.safetensors is not a safetensors file ({type(e).__name__}: {e}); "
            "locbench checkpoints are safetensors + JSON, never pickles: use a run folder locbench wrote"
        ) from None
    return unflatten_state(meta["skeleton"], tensors), meta


def epoch_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``(epoch, stem)`` of the per-epoch checkpoints in ``ckpt_dir``, newest first."""
    out = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            m = _EPOCH_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), p.with_suffix("")))
    return sorted(out, reverse=True)


def latest_good(ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest per-epoch checkpoint whose checksum holds; corrupt newer ones are skipped with a warning."""
    for _, stem in epoch_checkpoints(ckpt_dir):
        meta = verify(stem)
        if meta is not None:
            return stem, meta
    return None


def prune(ckpt_dir: Path, keep: int = 2) -> None:
    """Delete all but the ``keep`` newest per-epoch checkpoints (the newest good one is always kept)."""
    for _, stem in epoch_checkpoints(ckpt_dir)[keep:]:
        for suffix in (".json", ".safetensors"):
            stem.with_suffix(suffix).unlink(missing_ok=True)
