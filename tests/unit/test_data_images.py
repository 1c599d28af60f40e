"""Image reading (8/16-bit PNG and TIFF, broken files), resizing, channel modes and composites."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fixtures.data_factory import field_pixels

from locbench.data.channels import composite_rgb, resolve_channels, unique_stains
from locbench.data.images import ImageReadError, read_field, read_field_raw, read_image, write_image
from locbench.errors import LocbenchError


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_read_image_roundtrip(tmp_path, ext, dtype):
    img = field_pixels(0, 20, dtype)["green"]
    write_image(tmp_path / f"g{ext}", img)
    out = read_image(tmp_path / f"g{ext}")
    assert out.dtype == dtype and np.array_equal(out, img)


def test_sixteen_bit_is_scaled_not_truncated(tmp_path):
    img = np.array([[0, 100], [32768, 65535]], dtype=np.uint16)
    paths = {}
    for c in ("red", "green"):
        paths[c] = write_image(tmp_path / f"{c}.png", img)
    out = read_field(paths, ("green",), 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], img / 65535.0, rtol=1e-6)
    assert 0 < out[0, 0, 1] < 1 / 255  # 100/65535: keeping only the high byte would give 0


def test_eight_bit_scaled_by_255(tmp_path):
    img = np.array([[0, 1], [128, 255]], dtype=np.uint8)
    paths = {"green": write_image(tmp_path / "g.png", img)}
    np.testing.assert_allclose(read_field(paths, ("green",), 2)[0], img / 255.0, rtol=1e-6)


def test_resize_is_inter_area(tmp_path):
    img = field_pixels(1, 64)["red"]
    paths = {"red": write_image(tmp_path / "r.png", img)}
    expected = cv2.resize(img, (16, 16), interpolation=cv2.INTER_AREA)
    assert np.array_equal(read_field_raw(paths, ("red",), 16)[0], expected)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("green", ("green", "green", "green")),
        ("rgb", ("red", "green", "blue")),
        ("rgby", ("red", "green", "blue", "yellow")),
        ("green, blue", ("green", "blue")),
        (["yellow", "red"], ("yellow", "red")),
    ],
)
def test_channel_modes(tmp_path, mode, expected):
    pix = field_pixels(2, 16)
    paths = {c: write_image(tmp_path / f"{c}.png", img) for c, img in pix.items()}
    channels = resolve_channels(mode)
    assert channels == expected
    out = read_field_raw(paths, channels, 16)
    assert out.shape == (len(expected), 16, 16) and out.dtype == np.uint8
    for k, c in enumerate(expected):
        assert np.array_equal(out[k], pix[c])


@pytest.mark.parametrize("mode", ["purple", "red,,green", ""])
def test_unknown_channel_mode(mode):
    with pytest.raises(LocbenchError, match="channel mode"):
        resolve_channels(mode)


def test_unique_channels_canonical_order():
    assert unique_stains(("yellow", "green", "green", "red")) == ("red", "green", "yellow")


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b"this is not a png", "cannot be decoded"), (None, "truncated")],
)
def test_broken_files_raise_image_read_error(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content is None:  # a real PNG cut in half
        write_image(path, field_pixels(3, 64)["red"])
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason):
        read_image(path)


def test_broken_tiff_and_missing_file(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError, match="TIFF"):
        read_image(tmp_path / "x.tif")
    whole = write_image(tmp_path / "w.tif", field_pixels(4, 64, np.uint16)["red"]).read_bytes()
    (tmp_path / "half.tif").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageReadError, match="TIFF"):
        read_image(tmp_path / "half.tif")
    with pytest.raises(ImageReadError, match="missing"):
        read_image(tmp_path / "none.png")


def test_stains_of_different_sizes_are_refused(tmp_path):
    paths = {
        "red": write_image(tmp_path / "r.png", np.zeros((32, 32), np.uint8)),
        "green": write_image(tmp_path / "g.png", np.zeros((32, 30), np.uint8)),
    }
    with pytest.raises(ImageReadError, match="differ in size"):
        read_field_raw(paths, ("red", "green"), 16)


def test_color_png_stain_uses_its_brightest_plane(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 200  # a red-tinted stain image
    path = tmp_path / "r.png"
    cv2.imwrite(str(path), bgr)
    assert read_image(path).shape == (8, 8) and read_image(path).max() == 200


def test_composite_adds_yellow_to_red_and_green():
    z = np.zeros((2, 2), np.float32)
    rgb = composite_rgb({"red": z, "green": z + 0.25, "blue": z + 0.5, "yellow": z + 0.5})
    assert rgb.shape == (2, 2, 3)
    np.testing.assert_allclose(rgb[0, 0], [0.5, 0.75, 0.5])
    assert composite_rgb({"red": z + 0.9, "yellow": z + 0.9}).max() == 1.0  # clipped


def test_header_shape_reads_sizes_without_decoding(tmp_path):
    import tifffile

    from locbench.data.images import header_shape, write_image

    write_image(tmp_path / "a.png", np.zeros((30, 50), np.uint8))
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((3, 20, 40), np.uint16), photometric="minisblack")
    assert header_shape(tmp_path / "a.png") == (30, 50)
    assert header_shape(tmp_path / "b.tif") == (3, 20, 40)
    (tmp_path / "c.png").write_bytes(b"not an image at all")
    assert header_shape(tmp_path / "c.png") is None  # the decoder says what is wrong


def test_images_over_the_pixel_limit_are_refused_and_the_limit_can_be_raised(tmp_path, monkeypatch):
    from locbench.data.images import MAX_PIXELS_ENV, ImageReadError, read_image, write_image

    path = write_image(tmp_path / "a.png", np.full((30, 50), 7, np.uint8))
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ImageReadError, match=r"50 x 30 pixels \(1,500 in all\), over the limit of 1,000") as err:
        read_image(path)
    assert MAX_PIXELS_ENV in str(err.value)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1_500")
    assert read_image(path).shape == (30, 50)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(LocbenchError, match=MAX_PIXELS_ENV):
        read_image(path)


def test_multichannel_files_over_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    import tifffile

    from locbench.data.images import MAX_PIXELS_ENV, ImageReadError, read_channels

    path = tmp_path / "field.ome.tif"
    tifffile.imwrite(path, np.zeros((4, 30, 50), np.uint16), metadata={"axes": "CYX"})
    monkeypatch.setenv(MAX_PIXELS_ENV, "5000")  # 4 planes x 1,500 pixels
    with pytest.raises(ImageReadError, match=r"over the limit of 5,000"):
        read_channels(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "6000")
    assert read_channels(path)[0].shape == (4, 30, 50)
