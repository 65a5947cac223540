"""Reading and writing photos for InstructIR Studio.

Everything the network sees is a :class:`Picture`: float32 RGB in ``[0, 1]``
with EXIF orientation already applied, plus the metadata needed to write the
result back the way the photographer expects (bit depth, alpha, grayscale,
ICC profile, EXIF).

Pillow 13 facts this module is built around (verified by experiment):

* 16-bit grayscale PNG/TIFF open as mode ``I;16`` and write back losslessly.
* 16-bit RGB(A) PNG/TIFF open as 8-bit ``RGB``/``RGBA`` (Pillow keeps only the
  high byte) and Pillow cannot *write* 16-bit colour at all.  We recover the
  full 16 bits on read by decoding a second time with the byte-swapped raw
  mode (e.g. ``RGB;16L`` instead of ``RGB;16B``), which hands us the low bytes
  through Pillow's own decompressor/unfilter code; 16-bit LA PNGs are decoded
  once with raw mode ``RGBA`` to get all four bytes.  On write, 16-bit colour
  PNG and TIFF are produced by small writers in this module (zlib + numpy,
  TIFF IFD via Pillow's ``ImageFileDirectory_v2``).  Layouts outside that
  (planar TIFF, premultiplied alpha, ...) still load, at 8-bit precision, and
  still report ``bit_depth == 16`` because that is what the source stored.
* Pillow cannot read 16-bit gray+alpha TIFF, so such output is written as
  16-bit RGBA TIFF instead (PNG keeps gray+alpha).
* TIFF files get their EXIF orientation applied by Pillow during ``load()``;
  other formats do not.  We apply whatever orientation is still tagged after
  loading, so both cases end up upright exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import struct
import sys
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, TiffImagePlugin, TiffTags, UnidentifiedImageError, features

from engine.errors import StudioError
from engine.io import atomic
from engine.io.atomic import OutputExistsError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_WRITE_FORMATS",
    "CorruptImageError",
    "ImageError",
    "ImageTooLargeError",
    "OutputExistsError",
    "Picture",
    "UnsupportedImageError",
    "load_image",
    "output_path_for",
    "picture_from_array",
    "save_image",
    "to_uint",
]


class ImageError(StudioError):
    """Any problem reading or writing a photo; the message is shown to the user."""

    code = "image"


class UnsupportedImageError(ImageError):
    """The file is not an image, or is in a format/colour space we cannot read or write."""

    code = "unsupported-image"


class CorruptImageError(ImageError):
    """The file looks like an image but its data is truncated or broken."""

    code = "corrupt-image"


class ImageTooLargeError(ImageError):
    """The image has more pixels than allowed (guards against decompression bombs)."""

    code = "image-too-large"


DEFAULT_MAX_PIXELS = 200_000_000
#: File suffixes taken as photos when a folder is walked (batch input, training data).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"})

#: File suffix (lower case) -> Pillow format name, for every format we can write.
SUPPORTED_WRITE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
}

_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}
_METADATA_FORMATS = {"JPEG", "PNG", "TIFF", "WEBP"}  # carry ICC + EXIF
_ALPHA_FORMATS = {"PNG", "TIFF", "WEBP"}  # Pillow ignores 32-bit BMP alpha on read
_GRAY_FORMATS = {"PNG", "TIFF", "JPEG", "BMP"}  # WEBP has no grayscale mode
_SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}

#: Rec. 709 luma weights: how a gray source's (RGB) result is written back as gray.
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)

_EXIF_HEADER = b"Exif\x00\x00"
_ORIENTATION = 0x0112
#: TIFF tags describing pixel layout: meaningless (or harmful) once copied
#: into another file's EXIF block.
# fmt: off
_STRUCTURAL_TAGS = frozenset({
    256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284,  # size, samples, strips
    317, 320, 322, 323, 324, 325, 338, 339,  # predictor, palette, tiles, extra samples
    513, 514, 530,  # JPEG-in-TIFF, YCbCr subsampling
    700, 33723, 34377, 34675,  # XMP, IPTC, Photoshop, ICC (carried separately)
})
# fmt: on

# File signatures of formats we know: a file that starts like one of these but
# cannot be identified is broken rather than "not an image".
_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"MM\x00+",
    b"BM",
)

_bomb_lock = threading.RLock()  # re-entrant: a guarded decode may re-open the file


# --------------------------------------------------------------------------- Picture


@dataclass(eq=False)
class Picture:
    """A decoded photo plus the metadata needed to write the result faithfully.

    ``rgb`` is float32 HxWx3 in ``[0, 1]`` (grayscale replicated to three
    channels so the network always sees RGB); ``alpha`` is float32 HxW or None.
    ``exif`` keeps the ``Exif\\0\\0`` header and has Orientation reset, because
    the pixels are already upright.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    grayscale: bool
    format: str | None
    icc_profile: bytes | None
    exif: bytes | None
    source: Path | None = None

    def __post_init__(self) -> None:
        self.rgb = np.asarray(self.rgb, dtype=np.float32)
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"Picture.rgb must be HxWx3, got shape {self.rgb.shape}")
        if self.alpha is not None:
            self.alpha = np.asarray(self.alpha, dtype=np.float32)
            if self.alpha.shape != self.rgb.shape[:2]:
                raise ValueError(f"Picture.alpha must be HxW {self.rgb.shape[:2]}, got {self.alpha.shape}")
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), Pillow's order."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    def with_rgb(self, rgb: np.ndarray) -> Picture:
        """Same metadata, new pixels (e.g. the network output).

        If the size changed (upsampling), alpha is resized with Pillow bicubic
        so the transparency still lines up with the picture.
        """
        rgb = np.asarray(rgb, dtype=np.float32)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"with_rgb needs an HxWx3 array, got shape {rgb.shape}")
        alpha = self.alpha
        if alpha is not None and alpha.shape != rgb.shape[:2]:
            h, w = rgb.shape[:2]
            resized = Image.fromarray(alpha).resize((w, h), Image.Resampling.BICUBIC)
            alpha = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
        return dataclasses.replace(self, rgb=rgb, alpha=alpha)


def _to_float(arr: np.ndarray) -> np.ndarray:
    """Integer/bool/float array -> float32 in [0, 1] (floats are taken as-is)."""
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32)
        out /= 255.0
        return out
    if arr.dtype == np.uint16:
        out = arr.astype(np.float32)
        out /= 65535.0
        return out
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    raise TypeError(f"unsupported pixel dtype {arr.dtype}: use uint8, uint16 or float in [0, 1]")


def picture_from_array(rgb: np.ndarray, alpha: np.ndarray | None = None, bit_depth: int | None = None) -> Picture:
    """Wrap an in-memory array as a :class:`Picture` (tests, plugins, clipboard).

    Accepts uint8, uint16 or float ([0, 1]) arrays shaped HxW (gray), HxWx1,
    HxWx2 (gray+alpha), HxWx3 or HxWx4 (RGBA).  ``bit_depth`` defaults to 16
    for uint16 input and 8 otherwise.
    """
    arr = np.asarray(rgb)
    if bit_depth is None:
        bit_depth = 16 if arr.dtype == np.uint16 else 8
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected HxW or HxWx1/2/3/4 pixels, got shape {arr.shape}")
    channels = arr.shape[2]
    grayscale = channels <= 2
    if channels in (2, 4):
        if alpha is not None:
            raise ValueError("alpha given twice: as a channel and as the alpha argument")
        alpha = arr[:, :, -1]
        arr = arr[:, :, :-1]
    colour = _to_float(arr)
    if grayscale:
        colour = np.repeat(colour, 3, axis=2)
    alpha_f = None
    if alpha is not None:
        alpha_f = _to_float(np.asarray(alpha))
        if alpha_f.ndim == 3 and alpha_f.shape[2] == 1:
            alpha_f = alpha_f[:, :, 0]
    return Picture(
        rgb=np.ascontiguousarray(colour),
        alpha=None if alpha_f is None else np.ascontiguousarray(alpha_f),
        bit_depth=bit_depth,
        grayscale=grayscale,
        format=None,
        icc_profile=None,
        exif=None,
    )


def to_uint(picture_or_rgb: Picture | np.ndarray, bit_depth: int) -> np.ndarray:
    """Quantise float [0, 1] pixels to uint8/uint16 (round to nearest, clip, NaN -> 0).

    Integer input is first scaled to [0, 1] by its dtype, so uint16 -> 8 bit works too.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    arr = picture_or_rgb.rgb if isinstance(picture_or_rgb, Picture) else np.asarray(picture_or_rgb)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = _to_float(arr)
    top = 255.0 if bit_depth == 8 else 65535.0
    out = np.clip(arr, 0.0, 1.0).astype(np.float32, copy=False)
    np.nan_to_num(out, copy=False, nan=0.0)
    out *= top
    np.rint(out, out=out)
    return out.astype(np.uint8 if bit_depth == 8 else np.uint16)


# --------------------------------------------------------------------------- loading


def _describe(path: Path) -> str:
    return f"'{path}'"


@contextlib.contextmanager
def _bomb_guard() -> Iterator[None]:
    """Let *our* max_pixels decide, not Pillow's global MAX_IMAGE_PIXELS.

    Pillow refuses images over 2 x MAX_IMAGE_PIXELS (~179 MP) on open, below
    DEFAULT_MAX_PIXELS, and its message cannot name the dimensions.  Its check
    is switched off only around ``Image.open`` (header only, our own check
    follows before any pixel is decoded) and around decoding images already
    checked, under a lock, and always restored.
    """
    with _bomb_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        original = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = original


def _too_large(path: Path, width: int, height: int, max_pixels: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{_describe(path)} is {width} x {height} = {width * height:,} pixels, more than the "
        f"limit of {max_pixels:,} pixels. It was not opened, to protect the computer from "
        "running out of memory. Downscale it first or raise the limit."
    )


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Image.open with our error mapping and a size check before any decoding."""
    try:
        with _bomb_guard():
            im = Image.open(path)
    except FileNotFoundError:
        raise ImageError(f"Photo not found: {_describe(path)} does not exist.") from None
    except IsADirectoryError:
        raise ImageError(f"{_describe(path)} is a folder, not a photo.") from None
    except PermissionError:
        raise ImageError(f"No permission to read {_describe(path)}.") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"{_describe(path)} is larger than the limit of {max_pixels:,} pixels ({exc})."
        ) from None
    except UnidentifiedImageError:
        raise _unidentified(path) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise CorruptImageError(f"{_describe(path)} looks like an image but could not be read: {exc}.") from None
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise _too_large(path, width, height, max_pixels)
    return im


def _unidentified(path: Path) -> ImageError:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        head = b""
    if not head:
        return CorruptImageError(f"{_describe(path)} is empty (0 bytes); the file is damaged.")
    if head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return CorruptImageError(f"{_describe(path)} looks like an image but its header is damaged or truncated.")
    return UnsupportedImageError(
        f"{_describe(path)} is not an image this program can read "
        "(supported: JPEG, PNG, TIFF, WebP, BMP, GIF and other common formats)."
    )


def _rawmodes(im: Image.Image) -> list[str]:
    modes = []
    for tile in im.tile:
        args = tile.args
        raw = args if isinstance(args, str) else (args[0] if args else None)
        if isinstance(raw, str):
            modes.append(raw)
    return modes


_NATIVE_SWAP = "B" if sys.byteorder == "little" else "L"
_SPLIT16 = {f"{base};16{end}" for base in ("RGB", "RGBA", "RGBX") for end in ("B", "L", "N")}


def _swap_rawmode(raw: str) -> str:
    """RGB;16B <-> RGB;16L (N = native): same bit layout, other byte of each sample."""
    end = raw[-1]
    return raw[:-1] + {"B": "L", "L": "B", "N": _NATIVE_SWAP}[end]


def _decode_with(path: Path, max_pixels: int, remap: Callable[[str], str]) -> np.ndarray:
    """Decode ``path`` again with every tile's raw mode passed through ``remap``."""
    im = _open(path, max_pixels)
    with im:
        tiles = []
        for tile in im.tile:
            args = tile.args
            if isinstance(args, str):
                args = remap(args)
            else:
                args = (remap(args[0]), *args[1:])
            tiles.append(tile._replace(args=args))
        im.tile = tiles
        im.load()
        return np.asarray(im).copy()


def _float_from_int_mode(arr: np.ndarray) -> np.ndarray:
    """Mode 'I' (32-bit int): 16-bit data in practice; wider data is scaled down."""
    arr = arr.astype(np.float64)
    top = 65535.0 if arr.size == 0 or arr.max() <= 65535 else float(2**31 - 1)
    return np.clip(arr / top, 0.0, 1.0).astype(np.float32)


def _float_from_float_mode(arr: np.ndarray) -> np.ndarray:
    """Mode 'F': assume [0, 1]; data clearly in 0-255 or 0-65535 is rescaled."""
    arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    peak = float(arr.max()) if arr.size else 0.0
    if peak > 1.001:
        arr = arr / (255.0 if peak <= 255.0 else 65535.0 if peak <= 65535.0 else peak)
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


#: (colour, alpha, bit_depth, grayscale, drop_icc) as produced by _decode.
_Decoded = tuple[np.ndarray, "np.ndarray | None", int, bool, bool]


def _decode(im: Image.Image, path: Path, max_pixels: int) -> _Decoded:
    """Pixels of an opened image -> (colour HxWxC float, alpha, bit_depth, grayscale, drop_icc).

    ``colour`` is HxW for grayscale sources (replicated to RGB later).
    """
    mode = im.mode
    raws = _rawmodes(im)
    sixteen = any(";16" in r for r in raws) or mode.startswith("I;16")
    planar = im.format == "TIFF" and getattr(im, "tag_v2", {}).get(284, 1) != 1

    if im.format == "PNG" and raws == ["LA;16B"]:
        # Pillow turns 16-bit LA into 8-bit RGBA; raw mode RGBA yields all 4 bytes.
        b = _decode_with(path, max_pixels, lambda _raw: "RGBA").astype(np.uint16)
        gray = ((b[..., 0] << 8) | b[..., 1]).astype(np.float32) / 65535.0
        alpha = ((b[..., 2] << 8) | b[..., 3]).astype(np.float32) / 65535.0
        return gray, alpha, 16, True, False

    im.load()

    if (
        mode in ("RGB", "RGBA")
        and im.format in ("PNG", "TIFF")
        and raws
        and all(r in _SPLIT16 for r in raws)
        and not planar
    ):
        high = np.asarray(im).astype(np.uint16)
        low = _decode_with(path, max_pixels, _swap_rawmode)
        full = ((high << 8) | low).astype(np.float32) / 65535.0
        if mode == "RGBA":
            return full[..., :3], full[..., 3], 16, False, False
        return full, None, 16, False, False

    bit_depth = 16 if sixteen else 8
    drop_icc = False
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return _to_float(np.asarray(im).astype(np.uint16)), None, 16, True, False
    if mode == "I":
        return _float_from_int_mode(np.asarray(im)), None, 16, True, False
    if mode == "F":
        return _float_from_float_mode(np.asarray(im)), None, 16, True, False
    if mode == "1":
        im = im.convert("L")
        mode = "L"
    elif mode == "La":
        im = im.convert("LA")
        mode = "LA"
    if mode == "L":
        return _to_float(np.asarray(im)), None, bit_depth, True, False
    if mode == "LA":
        arr = _to_float(np.asarray(im))
        return arr[..., 0], arr[..., 1], bit_depth, True, False

    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "CMYK":
        # Naive CMYK -> RGB; the CMYK ICC profile no longer describes the pixels.
        im = im.convert("RGB")
        drop_icc = True
    elif mode not in ("RGB", "RGBA"):
        try:
            im = im.convert("RGB")
        except ValueError:
            raise UnsupportedImageError(
                f"{_describe(path)} uses the {mode} colour space, which is not supported."
            ) from None
        drop_icc = True
    arr = _to_float(np.asarray(im))
    if im.mode == "RGBA":
        return arr[..., :3], arr[..., 3], bit_depth, False, drop_icc
    return arr, None, bit_depth, False, drop_icc


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an HxW[xC] array (same maps as ImageOps.exif_transpose)."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = np.rot90(arr, -1)
    elif orientation == 7:
        arr = arr[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        arr = np.rot90(arr, 1)
    return np.ascontiguousarray(arr)


def _reset_orientation(raw: bytes) -> bytes:
    """Raw EXIF with IFD0 Orientation patched to 1, in place.

    Patching the bytes (instead of re-serialising with Pillow) keeps maker
    notes and offsets exactly as the camera wrote them.
    """
    body = raw[len(_EXIF_HEADER) :] if raw.startswith(_EXIF_HEADER) else raw
    try:
        order = {b"II": "<", b"MM": ">"}[body[:2]]
        (ifd,) = struct.unpack(order + "I", body[4:8])
        (count,) = struct.unpack(order + "H", body[ifd : ifd + 2])
        for i in range(count):
            at = ifd + 2 + 12 * i
            tag, typ, n = struct.unpack(order + "HHI", body[at : at + 8])
            if tag == _ORIENTATION and typ == 3 and n == 1:
                patched = bytearray(body)
                patched[at + 8 : at + 10] = struct.pack(order + "H", 1)
                body = bytes(patched)
                break
    except (KeyError, struct.error):
        pass  # unparseable EXIF: carry it unchanged rather than lose it
    return _EXIF_HEADER + body


def _exif_from_tiff(exif: Image.Exif) -> bytes | None:
    """EXIF for a TIFF source: its tags minus the pixel-layout ones."""
    for tag in list(exif):
        if tag in _STRUCTURAL_TAGS:
            del exif[tag]
    if _ORIENTATION in exif:
        exif[_ORIENTATION] = 1
    if not len(exif):
        return None
    try:
        return exif.tobytes()
    except Exception as exc:  # odd tag types Pillow cannot re-serialise
        log.warning("dropping EXIF that could not be re-encoded: %s", exc)
        return None


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Read a photo into a :class:`Picture` (upright, float32 RGB in [0, 1]).

    Raises ImageError subclasses with messages fit for the user: missing file,
    not an image, damaged file, or over ``max_pixels`` (checked from the header
    before any pixel is decoded).  16-bit colour PNG/TIFF are read at full
    precision (see module docstring); multi-frame files give their first frame.
    """
    path = Path(path)
    im = _open(path, max_pixels)
    try:
        with im:
            fmt = im.format
            w, h = im.size
            limit = Image.MAX_IMAGE_PIXELS
            big = limit is not None and w * h > limit  # Pillow re-checks while decoding TIFF
            try:
                with _bomb_guard() if big else contextlib.nullcontext():
                    colour, alpha, bit_depth, grayscale, drop_icc = _decode(im, path, max_pixels)
                exif_obj = im.getexif()
            except ImageError:
                raise
            except Image.DecompressionBombError as exc:
                raise ImageTooLargeError(
                    f"{_describe(path)} is larger than the limit of {max_pixels:,} pixels ({exc})."
                ) from None
            except MemoryError:
                raise ImageError(f"Not enough memory to open {_describe(path)} ({w} x {h} pixels).") from None
            except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error) as exc:
                raise CorruptImageError(
                    f"{_describe(path)} is damaged or incomplete and could not be read ({exc})."
                ) from None
            orientation = exif_obj.get(_ORIENTATION, 1)
            if fmt == "TIFF" or "exif" not in im.info:
                exif = _exif_from_tiff(exif_obj) if fmt == "TIFF" else None
            else:
                exif = _reset_orientation(im.info["exif"])
            icc = im.info.get("icc_profile") or None
    except ImageError:
        raise
    except Exception as exc:  # anything Pillow throws that we did not foresee
        raise CorruptImageError(f"{_describe(path)} could not be read ({exc}).") from None

    if drop_icc:
        icc = None
    if not isinstance(orientation, int) or orientation not in range(1, 9):
        orientation = 1
    colour = _orient(colour, orientation)
    if alpha is not None:
        alpha = _orient(alpha, orientation)
    if colour.ndim == 2:
        colour = np.repeat(colour[:, :, None], 3, axis=2)
    return Picture(
        rgb=colour,
        alpha=alpha,
        bit_depth=bit_depth,
        grayscale=grayscale,
        format=fmt,
        icc_profile=icc,
        exif=exif,
        source=path,
    )


# --------------------------------------------------------------------------- saving


def _resolve_format(path: Path, format: str | None) -> str:
    supported = ", ".join(sorted(SUPPORTED_WRITE_FORMATS))
    if format:
        name = format.upper().lstrip(".")
        name = _FORMAT_ALIASES.get(name, name)
        if name in SUPPORTED_WRITE_FORMATS.values():
            return name
        raise UnsupportedImageError(f"Cannot write {_describe(path)} as {format}: supported formats are {supported}.")
    fmt = SUPPORTED_WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UnsupportedImageError(
            f"Cannot write {_describe(path)}: unknown file type '{path.suffix or '(none)'}'. Use one of {supported}."
        )
    return fmt


def _icc_fits(icc: bytes | None, gray: bool) -> bytes | None:
    """Only embed a profile whose colour space matches the pixels we write."""
    if not icc or len(icc) < 128:
        return None
    space = icc[16:20]
    if space == (b"GRAY" if gray else b"RGB "):
        return icc
    log.info("not embedding ICC profile for %r pixels: profile is %r", "gray" if gray else "RGB", space)
    return None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _encode_png16(pixels: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """16-bit PNG (gray+alpha, RGB or RGBA), which Pillow cannot write itself.

    Rows use the Sub filter (vectorised with numpy, byte arithmetic wraps mod
    256 as the spec requires) and are compressed in bands to bound memory.
    """
    h, w, c = pixels.shape
    colour_type = {2: 4, 3: 2, 4: 6}[c]
    out = io.BytesIO()
    out.write(b"\x89PNG\r\n\x1a\n")
    out.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)))
    if icc:
        out.write(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if exif:
        body = exif[len(_EXIF_HEADER) :] if exif.startswith(_EXIF_HEADER) else exif
        out.write(_png_chunk(b"eXIf", body))
    bpp = 2 * c
    compressor = zlib.compressobj(6)
    pending = bytearray()
    band = max(1, (1 << 22) // max(1, w * bpp))
    for top in range(0, h, band):
        rows = pixels[top : top + band].astype(">u2").view(np.uint8).reshape(-1, w * bpp)
        filtered = np.empty((rows.shape[0], w * bpp + 1), np.uint8)
        filtered[:, 0] = 1  # Sub
        filtered[:, 1 : 1 + bpp] = rows[:, :bpp]
        np.subtract(rows[:, bpp:], rows[:, :-bpp], out=filtered[:, 1 + bpp :])
        pending += compressor.compress(filtered.tobytes())
        if len(pending) >= 1 << 20:
            out.write(_png_chunk(b"IDAT", bytes(pending)))
            pending.clear()
    pending += compressor.flush()
    out.write(_png_chunk(b"IDAT", bytes(pending)))
    out.write(_png_chunk(b"IEND", b""))
    return out.getvalue()


def _encode_tiff16(pixels: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """16-bit RGB/RGBA TIFF (Adobe-deflate strips), which Pillow cannot write itself.

    The IFD is serialised by Pillow's ImageFileDirectory_v2 (it also writes the
    EXIF sub-IFDs); strip data follows it, with offsets fixed up by Pillow.
    """
    h, w, c = pixels.shape
    row_bytes = w * c * 2
    rows_per_strip = max(1, min(h, (1 << 20) // row_bytes))
    strips = []
    for top in range(0, h, rows_per_strip):
        strips.append(zlib.compress(pixels[top : top + rows_per_strip].astype("<u2").tobytes(), 6))

    def build(with_exif: bool) -> TiffImagePlugin.ImageFileDirectory_v2:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
        if with_exif and exif:
            info = Image.Exif()
            info.load(exif)
            for key in info:
                if key in _STRUCTURAL_TAGS or key == _ORIENTATION:
                    continue
                if key in TiffTags.TAGS_V2_GROUPS:
                    ifd[key] = info.get_ifd(key)
                else:
                    ifd[key] = info[key]
        ifd[256] = w
        ifd[257] = h
        ifd[258] = (16,) * c
        ifd[259] = 8  # Adobe deflate
        ifd[262] = 2  # RGB
        ifd[274] = 1
        ifd[277] = c
        ifd[278] = rows_per_strip
        ifd[284] = 1
        offsets, at = [], 0
        for strip in strips:
            offsets.append(at)
            at += len(strip)
        ifd[273] = tuple(offsets)  # relative: Pillow adds the data start
        ifd[279] = tuple(len(s) for s in strips)
        if c == 4:
            ifd[338] = (2,)  # unassociated alpha
        if icc:
            ifd[34675] = icc
        return ifd

    out = io.BytesIO()
    try:
        build(True).save(out)
    except Exception as exc:  # EXIF with tag types Pillow cannot write
        log.warning("writing TIFF without EXIF, it could not be encoded: %s", exc)
        out = io.BytesIO()
        build(False).save(out)
    for strip in strips:
        out.write(strip)
    return out.getvalue()


def _encode(picture: Picture, fmt: str, quality: int, bit_depth: int) -> bytes:
    """Encode the picture to bytes in memory.

    Encoding to memory first keeps Pillow's C encoders away from the real
    file descriptor, so a full disk surfaces as a clean OSError(ENOSPC) from
    our own write instead of an opaque "encoder error".
    """
    rgb = picture.rgb
    # A gray source stays gray, whatever faint colour an RGB network gave its result: written as its luma.
    gray = picture.grayscale and fmt in _GRAY_FORMATS
    alpha = picture.alpha if fmt in _ALPHA_FORMATS else None
    if gray and alpha is not None and bit_depth == 16 and fmt == "TIFF":
        gray = False  # Pillow cannot read 16-bit gray+alpha TIFF: write RGBA instead

    colour = to_uint(rgb @ _LUMA if gray else rgb, bit_depth)
    channels = [colour[..., None] if gray else colour]
    if alpha is not None:
        channels.append(to_uint(alpha, bit_depth)[..., None])
    pixels = np.concatenate(channels, axis=2) if len(channels) > 1 else channels[0]
    if gray and alpha is None:
        pixels = pixels[..., 0]

    meta = fmt in _METADATA_FORMATS
    icc = _icc_fits(picture.icc_profile, gray) if meta else None
    exif = picture.exif if meta else None
    if exif and not exif.startswith(_EXIF_HEADER):
        exif = _EXIF_HEADER + exif
    if exif and fmt == "JPEG" and len(exif) > 65533:
        log.warning("EXIF block too large for JPEG (%d bytes): not carried", len(exif))
        exif = None

    if bit_depth == 16 and pixels.ndim == 3:
        if fmt == "PNG":
            return _encode_png16(pixels, icc, exif)
        return _encode_tiff16(pixels, icc, exif)

    im = Image.fromarray(np.ascontiguousarray(pixels))  # L, LA, RGB, RGBA or I;16
    params: dict = {}
    if icc:
        params["icc_profile"] = icc
    if exif:
        params["exif"] = exif
    if fmt == "JPEG":
        params.update(quality=int(quality), subsampling=0 if quality >= 90 else 2)
    elif fmt == "WEBP":
        # exact: keep the colour under fully transparent pixels in lossless mode
        params.update(quality=int(quality), lossless=quality >= 100, exact=True)
    elif fmt == "TIFF" and features.check("libtiff"):
        params["compression"] = "tiff_adobe_deflate"
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        try:
            return a.resolve() == b.resolve()
        except OSError:
            return False


def save_image(
    picture: Picture,
    path: str | os.PathLike,
    *,
    format: str | None = None,
    overwrite: bool = False,
    quality: int = 95,
    bit_depth: int | None = None,
) -> Path:
    """Write ``picture`` atomically and return the path written.

    The data goes to a hidden temp file in the destination folder, is fsynced,
    then moved into place, so a crash or full disk never leaves a half-written
    photo or damages an existing file.  Existing files (and, via any path
    spelling, the picture's own source) are only replaced with overwrite=True.

    Format comes from ``format`` or the suffix.  ICC/EXIF are carried for
    JPEG, PNG, TIFF and WebP; alpha for PNG, TIFF and WebP (JPEG and BMP
    drop it: JPEG has no transparency, and 32-bit BMP alpha is ignored by
    most readers, Pillow included).  PNG/TIFF keep 16 bits when
    ``bit_depth`` (default: the picture's) is 16; other formats are 8-bit.
    JPEG uses 4:4:4 chroma for quality >= 90; WebP is lossless at quality 100.
    Grayscale sources are written as grayscale (the result's Rec. 709 luma), at their depth.
    """
    path = Path(path)
    fmt = _resolve_format(path, format)
    depth = bit_depth if bit_depth is not None else picture.bit_depth
    if depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {depth}")
    if fmt not in _SIXTEEN_BIT_FORMATS:
        depth = 8

    folder = path.parent
    if path.is_dir():
        raise ImageError(f"{_describe(path)} is a folder; give a file name to save to.")
    if not folder.is_dir():
        raise ImageError(f"Cannot save {_describe(path)}: the folder '{folder}' does not exist.")
    if not overwrite and picture.source is not None and _same_file(path, picture.source):
        raise OutputExistsError(
            f"Not overwriting the original photo {_describe(path)}. Save under another name, "
            "or explicitly allow overwriting the original."
        )
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{_describe(path)} already exists; not overwriting it. Choose another name.")

    try:
        data = _encode(picture, fmt, quality, depth)
    except MemoryError:
        raise ImageError(f"Not enough memory to encode {_describe(path)}.") from None
    except Exception as exc:
        raise ImageError(f"Could not encode {_describe(path)} as {fmt}: {exc}.") from exc

    return atomic.write_bytes(path, data, overwrite=overwrite)


def output_path_for(source: str | os.PathLike, out: str | os.PathLike | None = None, suffix: str = "_restored") -> Path:
    """Where to save the result of ``source``.

    ``photo.jpg`` -> ``photo_restored.jpg`` next to it; if ``out`` is a folder
    (existing, or spelled with a trailing slash) the same name goes inside it;
    otherwise ``out`` is the file path itself.  Sources we cannot write back
    in their own format (GIF, HEIC, ...) get ``.png``.
    """
    source = Path(source)
    ext = source.suffix if source.suffix.lower() in SUPPORTED_WRITE_FORMATS else ".png"
    name = f"{source.stem}{suffix}{ext}"
    if out is None:
        return source.with_name(name)
    out_str = os.fspath(out)
    out = Path(out_str)
    if out.is_dir() or out_str.endswith(("/", os.sep)):
        return out / name
    return out


# Keep Pillow strict: a truncated file must raise, never load half a photo.
if ImageFile.LOAD_TRUNCATED_IMAGES:
    log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: damaged files may load silently")
