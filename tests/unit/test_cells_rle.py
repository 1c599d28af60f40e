"""Mask strings of the HPA 2021 submission format: exact bytes on a tiny case, round trips, clear errors."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest

from locbench.cells.rle import decode_binary_mask, encode_binary_mask
from locbench.errors import LocbenchError


def test_tiny_mask_has_column_major_rle_counts():
    # Column-major pixels 0,0,1,1 -> runs [2 zeros, 2 ones] -> pycocotools string b"22".
    # Row-major order (a missing asfortranarray) would give runs 1,1,1,1 -> b"1111".
    mask = np.array([[0, 1], [0, 1]], dtype=np.uint8)
    encoded = encode_binary_mask(mask)
    assert zlib.decompress(base64.b64decode(encoded)) == b"22"


@pytest.mark.parametrize("shape", [(7, 13), (64, 64), (1, 5)])
def test_round_trip_random_masks(shape):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) < 0.3
    out = decode_binary_mask(encode_binary_mask(mask), *shape)
    assert out.dtype == bool and out.shape == shape
    np.testing.assert_array_equal(out, mask)


def test_round_trip_empty_full_and_non_binary_values():
    for mask in (np.zeros((9, 4)), np.ones((9, 4)), np.array([[0, 5], [7, 0]])):
        np.testing.assert_array_equal(decode_binary_mask(encode_binary_mask(mask), *mask.shape), mask != 0)


def test_trailing_singleton_axis_is_accepted():
    mask = np.eye(6, dtype=bool)[:, :, None]
    np.testing.assert_array_equal(decode_binary_mask(encode_binary_mask(mask), 6, 6), mask[..., 0])


def test_wrong_size_is_refused():
    s = encode_binary_mask(np.eye(6, dtype=bool))
    with pytest.raises(LocbenchError, match="36 pixels, not 6x5"):
        decode_binary_mask(s, 6, 5)


def test_garbage_string_is_refused():
    with pytest.raises(LocbenchError, match="not base64 of zlib"):
        decode_binary_mask("not-a-mask!", 4, 4)
