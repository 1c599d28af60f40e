"""Reading one stain image or one field of view (several stains) from PNG or TIFF files.

Rules (nothing is guessed silently; a file that breaks them is refused with its name, shape and axes):

- A stain file holds one 2-D plane. Alpha planes are never image data: gray+alpha is read as gray, RGBA as RGB.
- A colour (RGB) file for one stain is read as the maximum over its colour planes (a stain saved as gray copied to
  three planes, or tinted in its own colour, keeps its intensity either way).
- TIFF files are read by their axes (tifffile's series metadata): length-1 axes are dropped, samples (``S``) are
  colour; several pages, channels, z-planes or time points cannot be one stain and are refused.
- One multi-channel file per field (TIFF, OME-TIFF, OME-Zarr; a :class:`StainFile` with a ``channel``): the file
  may have one axis besides Y and X (channels ``C``, pages, or samples), and each stain is the plane chosen by a
  0-based index or by its OME channel name (``Channel/@Name`` in OME-TIFF, ``omero.channels[].label`` in OME-Zarr;
  exact, else case-insensitive). Declared alpha samples are dropped first; z-stacks and time series are refused.
  The file is read once for all the stains of a field. OME-Zarr needs the optional ``zarr`` package.
- An image larger than :func:`max_pixels` (100 megapixels unless ``$LOCBENCH_MAX_PIXELS`` says otherwise) is
  refused from its header, before any pixel is decoded: a small file can hold a huge image (a 30000 x 30000 PNG of
  one colour is under 1 MB and would take 0.9 GB or more to decode).
- Non-square fields are brought to ``size`` × ``size`` by a resize policy (``DataConfig.resize``): ``pad`` (the
  default: scale the longer side to ``size``, keeping the aspect ratio, and pad the shorter one with zeros,
  centred), ``crop`` (scale the shorter side to ``size``, cut the centre) or ``stretch`` (scale each side on its
  own). Square fields are resized the same way by all three.
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO as _BytesIO
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile
from PIL import Image

from locbench.errors import LocbenchError
from locbench.store.atomic import atomic_write_bytes

#: cv2 interpolation for every resize: area averaging is the fast, alias-free way to shrink microscopy images.
RESIZE_METHOD = "cv2.INTER_AREA"
#: How a non-square field becomes square (see the module docstring); the first is the default.
RESIZE_POLICIES = ("pad", "crop", "stretch")
_TIFF_SUFFIXES = (".tif", ".tiff")
_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
#: Largest image read, in pixels (width x height x planes), unless ``$LOCBENCH_MAX_PIXELS`` sets another.
MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "LOCBENCH_MAX_PIXELS"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


#: Axes that may hold the stains of a multi-channel file: channels, generic pages (tifffile's I and Q), samples.
_CHANNEL_AXES = "CIQS"


@dataclass(frozen=True)
class StainFile:
    """Where one stain of a field is: its file and, in a multi-channel file, the channel (0-based index or OME
    channel name). Path-like (``os.fspath`` gives the file), so code that only stats or names files takes it too."""

    path: Path
    channel: int | str | None = None

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def __str__(self) -> str:
        return str(self.path) if self.channel is None else f"{self.path} (channel {self.channel!r})"


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
    check_size(path)
    if path.suffix.lower() in _TIFF_SUFFIXES:
        img = _read_tiff(path)
    else:
        # imdecode on the bytes rather than imread: same decoder, but it does not choke on non-ASCII paths.
        img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ImageReadError(path, "cannot be decoded (truncated or not an image)")
    if img.ndim == 3:
        img = _colour_to_stain(path, img, alpha=img.shape[2] in (2, 4))
    if img.ndim != 2 or min(img.shape) == 0:
        raise ImageReadError(path, f"is not a 2-D image (shape {img.shape})")
    if img.dtype not in _MAX:
        raise ImageReadError(path, f"has pixel type {img.dtype}; only 8-bit and 16-bit unsigned images are read")
    return img


def max_pixels() -> int:
    """The largest image read, in pixels: ``$LOCBENCH_MAX_PIXELS`` if set, else :data:`MAX_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not value:
        return MAX_PIXELS
    try:
        limit = int(float(value)) if "e" in value.lower() else int(value)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise LocbenchError(f"${MAX_PIXELS_ENV}={value!r}: expected a positive number of pixels, e.g. 400000000")
    return limit


def header_shape(path: str | os.PathLike) -> tuple[int, ...] | None:
    """The shape an image file decodes to, read from its header alone (no pixel is decoded); None if unknown.

    PNG: width and height from the IHDR chunk; TIFF: the first series' shape from the page headers (tifffile);
    other formats: the size Pillow reads on opening (it decodes lazily).
    """
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(24)
    if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return (height, width)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        try:
            with tifffile.TiffFile(path) as tif:
                return tuple(int(n) for n in tif.series[0].shape)
        except Exception:  # broken headers: the read itself reports them, with the reason
            return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return (im.height, im.width)
    except Image.DecompressionBombError as e:  # over Pillow's own limit, which says no more than that
        raise ImageReadError(path, f"is too large to read ({e}); it was not decoded. Shrink the image first") from None
    except Exception:  # not an image Pillow knows: the decoder says what is wrong
        return None


def check_size(path: str | os.PathLike) -> None:
    """Refuse an image whose header promises more than :func:`max_pixels` pixels, before decoding it.

    Raises:
        ImageReadError: naming the file, its size in pixels, the limit and how to raise it.
    """
    shape = header_shape(path)
    if shape is None:
        return
    pixels = int(np.prod(shape, dtype=np.int64))
    limit = max_pixels()
    if pixels <= limit:
        return
    size = f"{shape[1]} x {shape[0]}" if len(shape) == 2 else f"of shape {shape}"
    raise ImageReadError(
        path,
        f"is {size} pixels ({pixels:,} in all), over the limit of {limit:,} pixels per image file; it was not "
        f"decoded (that would take {pixels / 1e9:.1f} GB or more). If the image is legitimate, raise the limit "
        f"with the environment variable {MAX_PIXELS_ENV} (e.g. {MAX_PIXELS_ENV}={max(pixels, 1) * 2:_}), or "
        "shrink the image first",
    )


def _colour_to_stain(path: Path, img: np.ndarray, *, alpha: bool) -> np.ndarray:
    """(H, W, S) samples → (H, W): the alpha plane (last) dropped, then the maximum over the colour planes."""
    if alpha:
        img = img[..., :-1]
    if img.shape[2] not in (1, 3):
        raise ImageReadError(
            path, f"has {img.shape[2]} colour samples per pixel (shape {img.shape}); expected gray or RGB"
        )
    return img.max(axis=2)


def _read_tiff(path: Path) -> np.ndarray:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            img = series.asarray()
            alpha = len(tif.pages[0].extrasamples) > 0  # an extra sample per pixel: alpha (or unspecified)
    except Exception as e:  # tifffile raises many types for broken files; all mean "unreadable" here
        raise ImageReadError(path, f"cannot be read as TIFF ({type(e).__name__}: {e})") from None
    if img.size == 0:
        raise ImageReadError(path, "cannot be read as TIFF (no image data: truncated or corrupt)")
    shape = img.shape
    keep = [k for k, n in enumerate(img.shape) if n > 1 or axes[k] in "YX"]  # 1-long pages, channels... go
    squeezed = "".join(axes[k] for k in keep)
    img = img.reshape([img.shape[k] for k in keep])
    if "S" in squeezed and squeezed.replace("S", "") == "YX":
        img = np.moveaxis(img, squeezed.index("S"), -1)  # samples (colour) last, as cv2 gives colour images
        return _colour_to_stain(path, img, alpha=alpha)
    if squeezed != "YX":
        raise ImageReadError(
            path,
            f"is not one 2-D plane (shape {shape}, axes {axes!r}): several pages, channels or z-planes cannot be "
            "one stain. For one multi-channel file per field, give a pattern without {channel} (e.g. "
            "'{id}.ome.tif') and choose each stain's channel by index or OME name with data.stains (--stains)",
        )
    return img


def read_channels(path: str | os.PathLike) -> tuple[np.ndarray, list[str] | None]:
    """Read a multi-channel file (TIFF, OME-TIFF, OME-Zarr, or a colour PNG) as (C, H, W) planes, with the OME
    channel names when the file has them (one per plane), else None.

    Raises:
        ImageReadError: missing, unreadable, or more than one axis besides Y, X (a z-stack, a time series).
    """
    path = Path(path)
    if path.suffix.lower() == ".zarr" or (path / "zarr.json").is_file() or (path / ".zattrs").is_file():
        return _read_ome_zarr(path)
    if not path.exists():
        raise ImageReadError(path, "file is missing")
    check_size(path)
    if path.suffix.lower() in _TIFF_SUFFIXES:
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                img, axes = series.asarray(), series.axes
                # extrasamples 1 and 2 are declared alpha; 0 (unspecified) may be a stain and is kept
                alpha = sum(1 for e in tif.pages[0].extrasamples if int(e) in (1, 2))
                names = _ome_tiff_channel_names(tif.ome_metadata) if tif.is_ome else None
        except Exception as e:  # tifffile raises many types for broken files; all mean "unreadable" here
            raise ImageReadError(path, f"cannot be read as TIFF ({type(e).__name__}: {e})") from None
        if alpha and "S" in axes:
            img = np.take(img, range(img.shape[axes.index("S")] - alpha), axis=axes.index("S"))
        return _planes(path, img, axes), names
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(path, "cannot be decoded (truncated or not an image)")
    if img.ndim == 2:
        return img[None], None
    if img.shape[2] in (2, 4):
        img = img[..., :-1]  # alpha is never image data
    if img.shape[2] == 1:
        return img.transpose(2, 0, 1), None
    return np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)), None  # cv2's BGR → planes R, G, B


def _planes(path: Path, img: np.ndarray, axes: str) -> np.ndarray:
    """(C, H, W) from an array with named axes: length-1 axes dropped, at most one channel-like axis besides YX."""
    keep = [k for k, n in enumerate(img.shape) if n > 1 or axes[k] in "YX"]
    squeezed = "".join(axes[k] for k in keep)
    planes = img.reshape([img.shape[k] for k in keep])
    extra = squeezed.replace("Y", "").replace("X", "")
    if len(squeezed) != len(extra) + 2 or len(extra) > 1 or (extra and extra not in _CHANNEL_AXES):
        raise ImageReadError(
            path, f"has axes {axes!r} (shape {img.shape}): expected Y, X and at most one channel axis (no z, no time)"
        )
    if not extra:
        return planes[None]
    order = [squeezed.index(extra), squeezed.index("Y"), squeezed.index("X")]
    return np.ascontiguousarray(planes.transpose(order))


def _ome_tiff_channel_names(xml: str | None) -> list[str] | None:
    """Channel names of the first image of an OME-XML header (tifffile parses the XML into a dict)."""
    if not xml:
        return None
    image = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    image = image[0] if isinstance(image, list) else image
    channels = image.get("Pixels", {}).get("Channel", [])
    channels = [channels] if isinstance(channels, dict) else channels
    names = [str(c.get("Name", "")) for c in channels]
    return names if names and all(names) else None


def _read_ome_zarr(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """The full-resolution level of an OME-Zarr image (NGFF 0.4 or 0.5) and its omero channel labels."""
    try:
        import zarr  # optional: only OME-Zarr users need it
    except ImportError:
        raise ImageReadError(
            path, "is an OME-Zarr store; reading it needs the zarr package: pip install 'locbench[zarr]'"
        ) from None
    try:
        group = zarr.open_group(os.fspath(path), mode="r")
        attrs: dict[str, Any] = group.attrs.asdict()
        ome = attrs.get("ome", attrs)  # NGFF 0.5 nests its metadata under "ome"; 0.4 keeps it at the top level
        scale = ome["multiscales"][0]
        axes = "".join(str(a["name"] if isinstance(a, dict) else a)[:1].upper() for a in scale["axes"])
        img = np.asarray(group[scale["datasets"][0]["path"]][...])
    except Exception as e:  # zarr and a malformed store raise many types; all mean "not a readable OME-Zarr"
        raise ImageReadError(path, f"cannot be read as OME-Zarr ({type(e).__name__}: {e})") from None
    labels = [str(c.get("label", "")) for c in ome.get("omero", {}).get("channels", [])]
    return _planes(path, img, axes), labels if labels and all(labels) else None


def pick_channel(path: Path, planes: np.ndarray, names: list[str] | None, channel: int | str) -> np.ndarray:
    """The plane ``channel`` (index, or OME channel name: exact, else case-insensitive) of ``read_channels``."""
    if isinstance(channel, int):
        if not 0 <= channel < len(planes):
            raise ImageReadError(
                path, f"has {len(planes)} channels (0..{len(planes) - 1}); there is no channel {channel}"
            )
        return planes[channel]
    if names is None or len(names) != len(planes):
        raise ImageReadError(
            path, f"has {len(planes)} channels without OME channel names; choose channel {channel!r} by index (0..)"
        )
    k = names.index(channel) if channel in names else None
    if k is None:
        folded = [n.casefold() for n in names]
        k = folded.index(channel.casefold()) if channel.casefold() in folded else None
    if k is None:
        raise ImageReadError(path, f"has no channel named {channel!r}; its channels are {', '.join(names)}")
    return planes[k]


def read_field_stains(sources: Mapping[str, str | os.PathLike], stains: Sequence[str]) -> dict[str, np.ndarray]:
    """Stain → 2-D image at full resolution in its own pixel type, each distinct stain once.

    ``sources`` maps a stain to its file (a path: one file per stain) or to a :class:`StainFile` with a channel
    (a multi-channel file, read once for all the stains it holds).
    """
    files: dict[Path, tuple[np.ndarray, list[str] | None]] = {}
    out: dict[str, np.ndarray] = {}
    for stain in dict.fromkeys(stains):
        if stain not in sources:
            raise ImageReadError(next(iter(sources.values()), "?"), f"has no {stain!r} stain in this dataset")
        src = sources[stain]
        channel = src.channel if isinstance(src, StainFile) else None
        path = Path(src)
        if channel is None:
            out[stain] = read_image(path)
            continue
        if path not in files:
            files[path] = read_channels(path)
        try:
            img = pick_channel(path, *files[path], channel)
        except ImageReadError as e:
            raise ImageReadError(path, f"{e.reason} (stain {stain}: data.stains.{stain})") from None
        if img.dtype not in _MAX:
            raise ImageReadError(path, f"has pixel type {img.dtype}; only 8-bit and 16-bit unsigned images are read")
        out[stain] = img
    return out


def resize(img: np.ndarray, size: int, policy: str = "pad") -> np.ndarray:
    """Resize a 2-D image to ``size`` × ``size`` with area interpolation, keeping its dtype.

    ``policy`` (``pad``, ``crop`` or ``stretch``, see the module docstring) matters only for non-square images.
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy {policy!r}: expected one of {', '.join(RESIZE_POLICIES)}")
    h, w = img.shape
    if (h, w) == (size, size):
        return img
    if h == w or policy == "stretch":
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    scale = size / (min(h, w) if policy == "crop" else max(h, w))  # crop: the short side fills; pad: the long
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    scaled = img if (nh, nw) == (h, w) else cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    if policy == "crop":
        top, left = (nh - size) // 2, (nw - size) // 2
        return np.ascontiguousarray(scaled[top : top + size, left : left + size])
    out = np.zeros((size, size), dtype=img.dtype)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = scaled
    return out


def to_dtype(img: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert between 8-bit and 16-bit so that the same brightness keeps the same value in [0, 1]."""
    dtype = np.dtype(dtype)
    if img.dtype == dtype:
        return img
    if dtype == np.uint16:
        return img.astype(np.uint16) * np.uint16(257)  # 255 * 257 = 65535: exact
    return np.rint(img.astype(np.float32) / 257.0).astype(np.uint8)


def read_field_raw(
    paths: Mapping[str, str | os.PathLike],
    channels: Sequence[str],
    size: int,
    *,
    dtype: np.dtype | None = None,
    resize_policy: str = "pad",
    refuse_upscale: bool = False,
) -> np.ndarray:
    """Read the stains ``channels`` of one field, resized, in their integer pixel type.

    Each distinct stain is read once (``green`` mode reads one file). All stains of a field must have the same
    size: a field whose stains differ is refused rather than silently stretched.

    Args:
        paths: stain → file path or :class:`StainFile` (``Table.sources(i)``).
        channels: stains in output order (repeats allowed).
        size: output side length in pixels.
        dtype: output pixel type; ``None`` keeps the files' type (16-bit if any stain is 16-bit).
        resize_policy: ``pad``, ``crop`` or ``stretch`` for non-square fields (``DataConfig.resize``).
        refuse_upscale: refuse a field whose longer side is shorter than ``size`` (a model input: scaling the
            whole field up would invent detail the microscope never recorded); previews and thumbnails scale freely.

    Returns:
        (len(channels), size, size) ``uint8`` or ``uint16``.

    Raises:
        ImageReadError: a stain is missing or unreadable, stains differ in size, or (``refuse_upscale``) the field
            is smaller than ``size``.
    """
    images = read_field_stains(paths, channels)
    shapes = {c: img.shape for c, img in images.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{c} {h}x{w}" for c, (h, w) in shapes.items())
        raise ImageReadError(paths[channels[0]], f"stains of this field differ in size ({detail})")
    h, w = next(iter(shapes.values()))
    if refuse_upscale and max(h, w) < size:
        raise ImageReadError(
            paths[channels[0]],
            f"is {w} x {h} pixels, smaller than the model input of {size} x {size} (data.img_size); scaling it up "
            f"would invent detail. Use --img-size {max(h, w)} or less (--set data.img_size=...), or larger images",
        )
    if dtype is None:
        dtype = np.uint16 if any(img.dtype == np.uint16 for img in images.values()) else np.uint8
    out = np.empty((len(channels), size, size), dtype=dtype)
    resized = {c: to_dtype(resize(img, size, resize_policy), dtype) for c, img in images.items()}
    for k, stain in enumerate(channels):
        out[k] = resized[stain]
    return out


def scale(raw: np.ndarray) -> np.ndarray:
    """Integer pixels → float32 in [0, 1]: 8-bit divided by 255, 16-bit by 65535 (never truncated to 8 bits)."""
    return raw.astype(np.float32) / np.float32(_MAX[raw.dtype])


def read_field(
    paths: Mapping[str, str | os.PathLike], channels: Sequence[str], size: int, *, resize_policy: str = "pad"
) -> np.ndarray:
    """Read one field as float32 in [0, 1], shape (len(channels), size, size).

    The resize happens on the integer pixels (as the cache does), so this equals the cached pixels / 255
    (or / 65535) exactly.
    """
    return scale(read_field_raw(paths, channels, size, resize_policy=resize_policy))


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
