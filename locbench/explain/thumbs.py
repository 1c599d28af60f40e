"""Small JPEG thumbnails of fields (the composite and the green protein stain alone) for pages a person browses.

A report or image browser links them by relative path, so the page stays small and opens from ``file://``. Each
field gets two files in one folder, named from its id (made safe for a file name, with a short hash so that ids
differing only in unsafe characters do not collide). The folder's ``thumbs.json`` records what each pair was made
from (the stains' files, their sizes and modification times, the side and the stretch), so drawing the same fields
again (a browser rewritten for a new run of the same data, a report rebuilt) reuses them instead of decoding every
field again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from locbench.data.channels import composite_rgb, display_planes
from locbench.data.images import read_field_raw
from locbench.errors import LocbenchError
from locbench.store.atomic import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

#: Pixels per side of a thumbnail.
THUMB_SIZE = 160


def thumb_name(image_id: str) -> str:
    """The file stem of a field's thumbnails: a safe version of the id and 8 hex digits of its hash."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._")[:60] or "field"
    return f"{safe}-{hashlib.sha1(image_id.encode('utf-8')).hexdigest()[:8]}"


def write_thumbnails(
    table,
    ids: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    size: int = THUMB_SIZE,
    stretch: bool | None = None,
) -> dict[str, dict[str, str]]:
    """Write ``NAME.jpg`` (composite of the stains) and ``NAME_green.jpg`` (the protein stain alone, contrast-stretched
    unless ``stretch`` is False) per field.

    Args:
        table: The dataset (a :class:`~locbench.data.formats.Table`) the ids belong to.
        ids: Field ids; unknown ids and unreadable fields are skipped with a warning (a page then shows the id).
        out_dir: Folder for the files (created).
        size: Pixels per side (the field is padded to a square, as the models see it).
        stretch: Per-image contrast stretch of the composite (see :func:`~locbench.data.channels.display_planes`;
            default: for 16-bit fields only).

    Returns:
        id -> ``{"rgb": file name, "green": file name}`` for every field written (names relative to ``out_dir``).
    """
    out = Path(out_dir)
    where = {fid: i for i, fid in enumerate(table.ids)}
    stains = list(table.stains)
    made = _read_manifest(out)
    done: dict[str, dict[str, str]] = {}
    reused = 0
    for fid in dict.fromkeys(ids):
        if fid not in where:
            log.warning("no field %s in %s: no thumbnail", fid, table.root)
            continue
        name = thumb_name(fid)
        files = {"rgb": f"{name}.jpg", "green": f"{name}_green.jpg"}
        key = _source_key(table.sources(where[fid]), size, stretch)
        if key is not None and made.get(name) == key and all((out / f).is_file() for f in files.values()):
            done[fid] = files
            reused += 1
            continue
        try:
            raw = read_field_raw(table.sources(where[fid]), stains, size)
        except (LocbenchError, OSError, ValueError) as e:
            log.warning("field %s: %s; no thumbnail", fid, e)
            continue
        planes = dict(zip(stains, display_planes(raw, stretch=stretch), strict=True))
        # The green stain alone is for seeing where the protein is: stretched unless asked not to, so a weakly
        # stained field is not black (its brightness is still in the composite).
        if "green" in stains:
            green = display_planes(raw[[stains.index("green")]], stretch=stretch is not False)[0]
        else:
            green = np.zeros(raw.shape[1:], np.float32)
        write_jpeg(out / files["rgb"], composite_rgb(planes))
        write_jpeg(out / files["green"], composite_rgb({"green": green}))
        done[fid] = files
        made[name] = key
    if len(done) > reused:
        atomic_write_json(out / MANIFEST, made)
    if reused:
        log.info("%d of %d thumbnails reused from %s (their fields have not changed)", reused, len(done), out)
    return done


#: What each thumbnail pair in a folder was made from.
MANIFEST = "thumbs.json"


def _read_manifest(out: Path) -> dict:
    try:
        made = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return made if isinstance(made, dict) else {}


def _source_key(sources, size: int, stretch: bool | None) -> list | None:
    """What a field's thumbnails depend on: each stain's file (and channel), size and modification time, the side
    and the stretch; None when a file cannot be stat'ed (then it is read, and the read reports why)."""
    key: list = [size, stretch]
    for stain, src in sorted(sources.items()):
        try:
            st = os.stat(src)
        except OSError:
            return None
        key.append([stain, os.fspath(src), str(getattr(src, "channel", None)), st.st_size, st.st_mtime_ns])
    return key


def write_jpeg(path: Path, rgb: np.ndarray) -> Path:
    """``(H, W, 3)`` floats in [0, 1] as a JPEG (quality 88, no chroma subsampling), written atomically (without an
    fsync: a picture for a page, made again from the data when lost)."""
    buf = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
        buf, format="JPEG", quality=88, subsampling=0
    )
    return atomic_write(path, lambda f: f.write(buf.getvalue()), sync=False)
