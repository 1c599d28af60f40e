"""Stain composites, CAM grids and the choice of classes to explain."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from locbench.errors import LocbenchError
from locbench.explain import (
    CamPanel,
    CamRow,
    classes_to_explain,
    explain_images,
    outcome,
    render_cam_grid,
    rgb_composite,
)


def _planes(*values: float, size: int = 4) -> np.ndarray:
    return np.stack([np.full((size, size), v, dtype=np.float32) for v in values])


def test_rgby_composite() -> None:
    rgb = rgb_composite(_planes(0.2, 0.3, 0.4, 0.5), ("red", "green", "blue", "yellow"))
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.float32
    # yellow adds to red and green
    np.testing.assert_allclose(rgb[0, 0], [0.7, 0.8, 0.4], rtol=1e-6)
    clipped = rgb_composite(_planes(0.9, 0.9, 0.1, 0.5), ("red", "green", "blue", "yellow"))
    np.testing.assert_allclose(clipped[0, 0], [1.0, 1.0, 0.1], rtol=1e-6)
    np.testing.assert_allclose(rgb_composite(_planes(0.2, 0.3, 0.4), ("red", "green", "blue"))[1, 1], [0.2, 0.3, 0.4])


def test_green_only_images_are_green() -> None:
    image = np.random.default_rng(0).random((3, 5, 5), dtype=np.float32)
    image[1:] = image[0]  # green mode feeds the same stain three times
    rgb = rgb_composite(image, ("green", "green", "green"))
    np.testing.assert_allclose(rgb[..., 1], image[0])
    assert rgb[..., 0].max() == 0 and rgb[..., 2].max() == 0
    one = rgb_composite(torch.from_numpy(image[:1]), ("green",))
    np.testing.assert_allclose(one, rgb)


def test_composite_rejects_bad_channels() -> None:
    with pytest.raises(LocbenchError, match="unknown stain"):
        rgb_composite(_planes(0.1, 0.2), ("green", "purple"))
    with pytest.raises(LocbenchError, match="expected"):
        rgb_composite(_planes(0.1, 0.2), ("green",))


def test_outcome_and_classes_to_explain() -> None:
    assert [outcome(0.7, 1, 0.5), outcome(0.7, 0, 0.5), outcome(0.2, 1, 0.5), outcome(0.5, 0, 0.6)] == [
        "TP",
        "FP",
        "FN",
        "TN",
    ]
    probs = np.array([[0.9, 0.2, 0.6, 0.4], [0.1, 0.2, 0.3, 0.05]])
    targets = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
    # image 0: class 1 FN and class 2 FP (errors, by prob: 2 then 1), then class 0 TP
    # image 1: no errors or hits, so the most probable classes
    assert classes_to_explain(probs, targets, np.full(4, 0.5), k=3) == [[2, 1, 0], [2, 1, 0]]
    assert classes_to_explain(probs, targets, np.full(4, 0.5), k=9)[1] == [2, 1, 0, 3]


def test_render_cam_grid(tmp_path) -> None:
    rgb = np.zeros((32, 32, 3), dtype=np.float32)
    cam = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)  # resized to the image when drawn
    rows = [
        CamRow("img-a", rgb, [CamPanel(cam, "Nucleoli", 0.91, "TP"), CamPanel(cam, "Cytosol", 0.2, "FN")], "true: x"),
        CamRow("img-b", rgb, [CamPanel(cam, "Nucleoli")]),
    ]
    out = render_cam_grid(rows, tmp_path / "cams.png", cmap="inferno", dpi=50)
    with Image.open(out) as im:
        assert im.format == "PNG"
        width, height = im.size
    assert width > height  # 3 columns, 2 rows
    with pytest.raises(LocbenchError, match="no images"):
        render_cam_grid([], tmp_path / "empty.png")


def test_explain_images_end_to_end(tmp_path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=4, in_chans=4)
    display = torch.rand(2, 4, 64, 64)
    probs = np.array([[0.9, 0.1, 0.6, 0.2], [0.3, 0.8, 0.1, 0.1]])
    targets = np.array([[1, 0, 0, 1], [0, 1, 0, 0]])
    cams, chosen = explain_images(
        model,
        (display - 0.5) / 0.25,
        display.numpy(),
        ["a", "b"],
        probs,
        targets,
        np.full(4, 0.5),
        ["c0", "c1", "c2", "c3"],
        ("red", "green", "blue", "yellow"),
        tmp_path / "grid.png",
        k=2,
    )
    assert cams.shape == (2, 2, 64, 64)
    assert chosen == [[2, 3], [1, 0]]  # image a: FP c2 and FN c3; image b: TP c1, then the most probable other
    assert (tmp_path / "grid.png").stat().st_size > 1000
