"""Image reading guesses nothing: alpha is never image data, colour has one rule, multi-plane files are read by
their axes or refused naming the file, and non-square fields follow the resize policy (pixel values checked)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from locbench.cli import main
from locbench.config import DataConfig
from locbench.data.images import ImageReadError, read_field_raw, read_image, resize
from locbench.errors import LocbenchError

GRAY = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7


def test_gray_alpha_png_is_its_gray_plane(tmp_path):
    for alpha in (255, 0):  # an opaque or a fully transparent alpha plane: never image data
        Image.fromarray(np.dstack([GRAY, np.full_like(GRAY, alpha)]), "LA").save(tmp_path / "ga.png")
        np.testing.assert_array_equal(read_image(tmp_path / "ga.png"), GRAY)


def test_rgba_png_is_the_maximum_of_its_colour_planes(tmp_path):
    rgb = np.stack([GRAY, GRAY // 2, 255 - GRAY], axis=-1)
    bgra = np.dstack([rgb[..., ::-1], np.full_like(GRAY, 255)])
    assert cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb.max(axis=2))
    assert cv2.imwrite(str(tmp_path / "tinted.png"), np.dstack([np.zeros_like(GRAY), GRAY, np.zeros_like(GRAY)]))
    np.testing.assert_array_equal(read_image(tmp_path / "tinted.png"), GRAY)  # a green-tinted stain keeps values


def test_tiff_colour_and_alpha_by_axes(tmp_path):
    rgb = np.stack([GRAY, GRAY // 2, 255 - GRAY], axis=-1)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif"), rgb.max(axis=2))
    rgba = np.dstack([rgb, np.full_like(GRAY, 255)])
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.tif"), rgb.max(axis=2))
    tifffile.imwrite(tmp_path / "one.tif", GRAY[None])  # one page: a single plane
    np.testing.assert_array_equal(read_image(tmp_path / "one.tif"), GRAY)


@pytest.mark.parametrize(
    ("name", "data", "meta"),
    [
        ("pages.tif", np.zeros((10, 64, 64), np.uint8), None),
        ("field.ome.tif", np.zeros((4, 64, 64), np.uint16), {"axes": "CYX", "Channel": {"Name": ["DAPI", "GFP"] * 2}}),
    ],
)
def test_multi_plane_tiffs_are_refused_with_their_shape_and_axes(tmp_path, name, data, meta):
    tifffile.imwrite(tmp_path / name, data, metadata=meta)
    with pytest.raises(ImageReadError, match=rf"{name}: is not one 2-D plane \(shape \({data.shape[0]}, 64, 64\)"):
        read_image(tmp_path / name)


def test_cli_refuses_a_ten_page_tiff_naming_the_file(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    (tmp_path / "train.csv").write_text("ID,Label\na,0\nb,1\n")
    for fid in "ab":
        for stain in ("red", "green", "blue", "yellow"):
            tifffile.imwrite(tmp_path / "train" / f"{fid}_{stain}.tif", GRAY)
    tifffile.imwrite(tmp_path / "train" / "b_green.tif", np.zeros((10, 64, 64), np.uint8))
    args = ["--data", str(tmp_path), "--pattern", "{id}_{channel}.tif", "--img-size", "16", "--channels", "green"]
    rc = main(["cache", *args, "--workers", "0", "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2 and "b_green.tif" in err and "axes 'QYX'" in err and "Traceback" not in err


def test_square_fields_are_resized_alike_by_every_policy():
    img = np.random.default_rng(0).integers(0, 65535, (40, 40), dtype=np.uint16)
    expected = cv2.resize(img, (16, 16), interpolation=cv2.INTER_AREA)
    for policy in ("pad", "crop", "stretch"):
        np.testing.assert_array_equal(resize(img, 16, policy), expected)


def test_non_square_fields_follow_the_policy(tmp_path):
    wide = np.zeros((4, 8), dtype=np.uint8)
    wide[:, :4], wide[:, 4:] = 100, 200  # left half 100, right half 200
    # pad (default): 8 wide -> 4, the 2 rows padded above and below with zeros, the aspect ratio kept
    np.testing.assert_array_equal(
        resize(wide, 4), [[0, 0, 0, 0], [100, 100, 200, 200], [100, 100, 200, 200], [0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(resize(wide, 4, "crop"), [[100, 100, 200, 200]] * 4)  # the centre 4 x 4
    np.testing.assert_array_equal(resize(wide, 4, "stretch"), [[100, 100, 200, 200]] * 4)
    np.testing.assert_array_equal(resize(wide, 8, "stretch"), [[100] * 4 + [200] * 4] * 8)
    tall = wide.T.copy()
    np.testing.assert_array_equal(resize(tall, 4), resize(wide, 4).T)
    # a whole field: every stain the same way
    for stain in ("red", "green"):
        cv2.imwrite(str(tmp_path / f"f_{stain}.png"), wide)
    paths = {s: tmp_path / f"f_{s}.png" for s in ("red", "green")}
    field = read_field_raw(paths, ("green", "red"), 4, resize_policy="pad")
    assert field.shape == (2, 4, 4) and (field[:, 0] == 0).all() and (field[:, 1] == [100, 100, 200, 200]).all()


def test_resize_policy_is_checked_in_the_config():
    assert DataConfig().resize == "pad"
    with pytest.raises(LocbenchError, match="data.resize"):
        DataConfig(resize="squash")


def test_a_field_smaller_than_the_model_input_is_refused_naming_it(tmp_path):
    for stain in ("red", "green"):
        cv2.imwrite(str(tmp_path / f"f_{stain}.png"), np.full((20, 30), 9, np.uint8))
    paths = {s: tmp_path / f"f_{s}.png" for s in ("red", "green")}
    with pytest.raises(ImageReadError, match=r"is 30 x 20 pixels, smaller than the model input of 32 x 32") as e:
        read_field_raw(paths, ("green", "red"), 32, refuse_upscale=True)
    assert e.value.path.name == "f_green.png" and "--img-size 30 or less" in str(e.value)
    assert read_field_raw(paths, ("green",), 30, refuse_upscale=True).shape == (1, 30, 30)  # the longer side fits
    assert read_field_raw(paths, ("green",), 32).shape == (1, 32, 32)  # previews and thumbnails scale freely
