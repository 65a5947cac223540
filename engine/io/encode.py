"""Writing a :class:`~engine.io.picture.Picture` back in its mode, depth, alpha, ICC and EXIF; atomically.

16-bit colour PNG and TIFF are produced by small writers here (zlib + numpy,
TIFF IFD via Pillow's ``ImageFileDirectory_v2``), since Pillow cannot write
them; the file itself goes through the one atomic writer (``engine.io.atomic``).
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, TiffImagePlugin, TiffTags, features

from engine.io import atomic
from engine.io.atomic import OutputExistsError
from engine.io.atomic import describe as _describe
from engine.io.picture import (
    ALPHA_FORMATS,
    EXIF_HEADER,
    FORMAT_ALIASES,
    GRAY_FORMATS,
    LUMA,
    METADATA_FORMATS,
    ORIENTATION_TAG,
    SIXTEEN_BIT_FORMATS,
    STRUCTURAL_TAGS,
    SUPPORTED_WRITE_FORMATS,
    ImageError,
    Picture,
    UnsupportedImageError,
    to_uint,
)

log = logging.getLogger(__name__)

def _resolve_format(path: Path, format: str | None) -> str:
    supported = ", ".join(sorted(SUPPORTED_WRITE_FORMATS))
    if format:
        name = format.upper().lstrip(".")
        name = FORMAT_ALIASES.get(name, name)
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
        body = exif[len(EXIF_HEADER) :] if exif.startswith(EXIF_HEADER) else exif
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
                if key in STRUCTURAL_TAGS or key == ORIENTATION_TAG:
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
    gray = picture.grayscale and fmt in GRAY_FORMATS
    alpha = picture.alpha if fmt in ALPHA_FORMATS else None
    if gray and alpha is not None and bit_depth == 16 and fmt == "TIFF":
        gray = False  # Pillow cannot read 16-bit gray+alpha TIFF: write RGBA instead

    colour = to_uint(rgb @ LUMA if gray else rgb, bit_depth)
    channels = [colour[..., None] if gray else colour]
    if alpha is not None:
        channels.append(to_uint(alpha, bit_depth)[..., None])
    pixels = np.concatenate(channels, axis=2) if len(channels) > 1 else channels[0]
    if gray and alpha is None:
        pixels = pixels[..., 0]

    meta = fmt in METADATA_FORMATS
    icc = _icc_fits(picture.icc_profile, gray) if meta else None
    exif = picture.exif if meta else None
    if exif and not exif.startswith(EXIF_HEADER):
        exif = EXIF_HEADER + exif
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
    if fmt not in SIXTEEN_BIT_FORMATS:
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
