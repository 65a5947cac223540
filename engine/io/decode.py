"""Reading photos into a :class:`~engine.io.picture.Picture`: every mode, 8/16-bit, float, orientation.

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
import logging
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from engine.io.atomic import describe as _describe
from engine.io.picture import (
    BOMB_LOCK,
    DEFAULT_MAX_PIXELS,
    EXIF_HEADER,
    MAGIC,
    ORIENTATION_TAG,
    STRUCTURAL_TAGS,
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    Picture,
    UnsupportedImageError,
    to_float,
)

log = logging.getLogger(__name__)

@contextlib.contextmanager
def _bomb_guard() -> Iterator[None]:
    """Let *our* max_pixels decide, not Pillow's global MAX_IMAGE_PIXELS.

    Pillow refuses images over 2 x MAX_IMAGE_PIXELS (~179 MP) on open, below
    DEFAULT_MAX_PIXELS, and its message cannot name the dimensions.  Its check
    is switched off only around ``Image.open`` (header only, our own check
    follows before any pixel is decoded) and around decoding images already
    checked, under a lock, and always restored.
    """
    with BOMB_LOCK, warnings.catch_warnings():
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
    if head.startswith(MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
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
        return to_float(np.asarray(im).astype(np.uint16)), None, 16, True, False
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
        return to_float(np.asarray(im)), None, bit_depth, True, False
    if mode == "LA":
        arr = to_float(np.asarray(im))
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
    arr = to_float(np.asarray(im))
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
    body = raw[len(EXIF_HEADER) :] if raw.startswith(EXIF_HEADER) else raw
    try:
        order = {b"II": "<", b"MM": ">"}[body[:2]]
        (ifd,) = struct.unpack(order + "I", body[4:8])
        (count,) = struct.unpack(order + "H", body[ifd : ifd + 2])
        for i in range(count):
            at = ifd + 2 + 12 * i
            tag, typ, n = struct.unpack(order + "HHI", body[at : at + 8])
            if tag == ORIENTATION_TAG and typ == 3 and n == 1:
                patched = bytearray(body)
                patched[at + 8 : at + 10] = struct.pack(order + "H", 1)
                body = bytes(patched)
                break
    except (KeyError, struct.error):
        pass  # unparseable EXIF: carry it unchanged rather than lose it
    return EXIF_HEADER + body


def _exif_from_tiff(exif: Image.Exif) -> bytes | None:
    """EXIF for a TIFF source: its tags minus the pixel-layout ones."""
    for tag in list(exif):
        if tag in STRUCTURAL_TAGS:
            del exif[tag]
    if ORIENTATION_TAG in exif:
        exif[ORIENTATION_TAG] = 1
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
            orientation = exif_obj.get(ORIENTATION_TAG, 1)
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



# Keep Pillow strict: a truncated file must raise, never load half a photo.
if ImageFile.LOAD_TRUNCATED_IMAGES:
    log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: damaged files may load silently")
