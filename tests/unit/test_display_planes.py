"""Stains shown to a person: 8-bit as they are, 16-bit stretched per image so a dim field is visible."""

from __future__ import annotations

import numpy as np
import pytest

from locbench.data.channels import STRETCH_PERCENTILES, display_planes


def test_8bit_fields_are_shown_as_they_are_by_default() -> None:
    raw = np.array([[[0, 51], [102, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(display_planes(raw), raw / 255.0, rtol=1e-6)


def test_dim_16bit_fields_are_stretched_per_stain_by_default() -> None:
    rng = np.random.default_rng(0)
    # a camera that uses 2% of its 16-bit range: divided by 65535 the field is black
    dim = rng.integers(100, 1300, size=(2, 64, 64)).astype(np.uint16)
    dim[1] //= 4  # a dimmer second stain is stretched on its own
    out = display_planes(dim)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    for k in range(2):
        lo, hi = np.percentile(dim[k].astype(np.float32), STRETCH_PERCENTILES)
        assert out[k].mean() == pytest.approx(np.clip((dim[k] - lo) / (hi - lo), 0, 1).mean(), rel=1e-5)
    assert display_planes(dim, stretch=False).max() < 0.02


def test_stretch_can_be_asked_for_8bit_and_a_flat_stain_is_black() -> None:
    raw = np.stack([np.full((4, 4), 7, np.uint8), np.arange(16, dtype=np.uint8).reshape(4, 4)])
    out = display_planes(raw, stretch=True)
    assert (out[0] == 0).all() and out[1].max() == 1.0
