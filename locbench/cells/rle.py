"""Binary cell masks as the strings the HPA 2021 competition expects.

The competition's encoding is a COCO run-length encoding (pycocotools, column-major), its ``counts`` bytes
compressed with zlib at level 9, then base64. pycocotools does the RLE; only the zlib/base64 wrapping is ours.
"""

from __future__ import annotations

import base64
import binascii
import zlib

import numpy as np
from pycocotools import mask as coco_mask

from locbench.errors import LocbenchError


def encode_binary_mask(mask: np.ndarray) -> str:
    """Encode one binary mask as base64(zlib(COCO RLE counts)).

    Args:
        mask: (H, W) array; any non-zero pixel belongs to the object. A trailing axis of length 1 is allowed.

    Returns:
        The ASCII string the competition's PredictionString holds for this mask.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"encode_binary_mask expects a 2-D mask, got shape {mask.shape}")
    # pycocotools reads (H, W, N) column-major uint8; one mask is N = 1.
    fortran = np.asfortranarray((mask != 0).astype(np.uint8)[:, :, None])
    counts = coco_mask.encode(fortran)[0]["counts"]
    return base64.b64encode(zlib.compress(counts, zlib.Z_BEST_COMPRESSION)).decode("ascii")


def decode_binary_mask(encoded: str, height: int, width: int) -> np.ndarray:
    """Invert :func:`encode_binary_mask`: return the (height, width) ``bool`` mask.

    Raises:
        LocbenchError: the string is not base64/zlib, or its RLE does not cover ``height * width`` pixels.
    """
    try:
        counts = zlib.decompress(base64.b64decode(encoded, validate=True))
    except (binascii.Error, zlib.error, ValueError) as e:
        raise LocbenchError(f"mask string {encoded[:24]!r}... is not base64 of zlib-compressed RLE ({e})") from None
    rle = {"size": [int(height), int(width)], "counts": counts}
    if _rle_length(counts) != height * width:
        raise LocbenchError(
            f"mask string {encoded[:24]!r}... encodes {_rle_length(counts)} pixels, not {height}x{width}; "
            "check ImageWidth/ImageHeight of its row"
        )
    return coco_mask.decode(rle).astype(bool)


def _rle_length(counts: bytes) -> int:
    """Total pixel count of a compressed COCO RLE string (pycocotools' own LEB128-like format)."""
    # pycocotools would read past a truncated string silently; summing the runs catches a wrong H x W.
    pos = 0
    runs: list[int] = []
    while pos < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = counts[pos] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            pos += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        # Runs after the second are stored as differences to the run two places back.
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return sum(runs)
