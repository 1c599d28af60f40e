"""Reading one stain image or one field of view (several stains) from PNG or TIFF files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from io import BytesIO as _BytesIO
from pathlib import Path

import cv2
import numpy as np
import tifffile

from locbench.errors import LocbenchError
from locbench.store.atomic import atomic_write_bytes

#: cv2 interpolation for every resize: area averaging is the fast, alias-free way to shrink microscopy images.
RESIZE_METHOD = "cv2.INTER_AREA"
_TIFF_SUFFIXES = (".tif", ".tiff")
_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class ImageReadError(LocbenchError):
    """One image (or one field) cannot be used; callers collect these per id into a BadInputError."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one single-stain image as a 2-D ``uint8`` or ``uint16`` array, unchanged.

    Raises:
        ImageReadError: the file is missing, empty, truncated, not an image, or of an unsupported pixel type.
    """
    path = Path(path)
    try:
        nbytes = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(path, "file is missing") from None
    if nbytes == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    if path.suffix.lower() in _TIFF_SUFFIXES:
        img = _read_tiff(path)
    else:
        # imdecode on the bytes rather than imread: same decoder, but it does not choke on non-ASCII paths.
        img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ImageReadError(path, "cannot be decoded (truncated or not an image)")
    if img.ndim == 3:
        # A stain saved as colour (gray copied to 3 planes, or tinted in its own colour): its maximum over the
        # planes is the stain intensity in both cases.
        img = img.max(axis=2)
    if img.ndim != 2 or min(img.shape) == 0:
        raise ImageReadError(path, f"is not a 2-D image (shape {img.shape})")
    if img.dtype not in _MAX:
        raise ImageReadError(path, f"has pixel type {img.dtype}; only 8-bit and 16-bit unsigned images are read")
    return img


def _read_tiff(path: Path) -> np.ndarray:
    try:
        img = tifffile.imread(path)
    except Exception as e:  # tifffile raises many types for broken files; all mean "unreadable" here
        raise ImageReadError(path, f"cannot be read as TIFF ({type(e).__name__}: {e})") from None
    if img.size == 0:
        raise ImageReadError(path, "cannot be read as TIFF (no image data: truncated or corrupt)")
    img = np.squeeze(img)
    if img.ndim == 3 and img.shape[0] <= 4 < img.shape[-1]:
        img = np.moveaxis(img, 0, -1)  # planar (C, H, W) → (H, W, C), as cv2 gives colour images
    return img


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D image to ``size`` × ``size`` with area interpolation, keeping its dtype."""
    if img.shape == (size, size):
        return img
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def to_dtype(img: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert between 8-bit and 16-bit so that the same brightness keeps the same value in [0, 1]."""
    dtype = np.dtype(dtype)
    if img.dtype == dtype:
        return img
    if dtype == np.uint16:
        return img.astype(np.uint16) * np.uint16(257)  # 255 * 257 = 65535: exact
    return np.rint(img.astype(np.float32) / 257.0).astype(np.uint8)


def read_field_raw(
    paths: Mapping[str, str | os.PathLike], channels: Sequence[str], size: int, *, dtype: np.dtype | None = None
) -> np.ndarray:
    """Read the stains ``channels`` of one field, resized, in their integer pixel type.

    Each distinct stain is read once (``green`` mode reads one file). All stains of a field must have the same
    size: a field whose stains differ is refused rather than silently stretched.

    Args:
        paths: stain → file path (``Table.paths(i)``).
        channels: stains in output order (repeats allowed).
        size: output side length in pixels.
        dtype: output pixel type; ``None`` keeps the files' type (16-bit if any stain is 16-bit).

    Returns:
        (len(channels), size, size) ``uint8`` or ``uint16``.

    Raises:
        ImageReadError: a stain is missing or unreadable, or stains differ in size.
    """
    images: dict[str, np.ndarray] = {}
    for stain in dict.fromkeys(channels):
        if stain not in paths:
            raise ImageReadError(next(iter(paths.values()), "?"), f"has no {stain!r} stain in this dataset")
        images[stain] = read_image(paths[stain])
    shapes = {c: img.shape for c, img in images.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{c} {h}x{w}" for c, (h, w) in shapes.items())
        raise ImageReadError(paths[channels[0]], f"stains of this field differ in size ({detail})")
    if dtype is None:
        dtype = np.uint16 if any(img.dtype == np.uint16 for img in images.values()) else np.uint8
    out = np.empty((len(channels), size, size), dtype=dtype)
    resized = {c: to_dtype(resize(img, size), dtype) for c, img in images.items()}
    for k, stain in enumerate(channels):
        out[k] = resized[stain]
    return out


def scale(raw: np.ndarray) -> np.ndarray:
    """Integer pixels → float32 in [0, 1]: 8-bit divided by 255, 16-bit by 65535 (never truncated to 8 bits)."""
    return raw.astype(np.float32) / np.float32(_MAX[raw.dtype])


def read_field(paths: Mapping[str, str | os.PathLike], channels: Sequence[str], size: int) -> np.ndarray:
    """Read one field as float32 in [0, 1], shape (len(channels), size, size).

    The resize happens on the integer pixels (as the cache does), so this equals the cached pixels / 255
    (or / 65535) exactly.
    """
    return scale(read_field_raw(paths, channels, size))


def write_image(path: str | os.PathLike, img: np.ndarray) -> Path:
    """Write one 2-D uint8/uint16 stain image as PNG or TIFF (by suffix), atomically.

    For tools that produce Kaggle-layout datasets (synthetic data, test fixtures, format conversion).
    """
    path = Path(path)
    if img.ndim != 2 or img.dtype not in _MAX:
        raise ValueError(f"write_image needs a 2-D uint8 or uint16 array, got {img.dtype} {img.shape}")
    if path.suffix.lower() in _TIFF_SUFFIXES:
        buf = _BytesIO()
        tifffile.imwrite(buf, img)
        data = buf.getvalue()
    else:
        ok, enc = cv2.imencode(path.suffix or ".png", img)
        if not ok:
            raise ValueError(f"{path}: OpenCV cannot encode {path.suffix!r} images")
        data = enc.tobytes()
    return atomic_write_bytes(path, data)
