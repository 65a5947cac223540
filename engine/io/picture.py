"""A decoded photo (:class:`Picture`) and the errors of reading and writing one.

Everything the network sees is float32 RGB in ``[0, 1]`` with EXIF orientation
already applied, plus the metadata needed to write the result back the way the
photographer expects (bit depth, alpha, grayscale, ICC profile, EXIF).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.errors import StudioError


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

FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}
METADATA_FORMATS = {"JPEG", "PNG", "TIFF", "WEBP"}  # carry ICC + EXIF
ALPHA_FORMATS = {"PNG", "TIFF", "WEBP"}  # Pillow ignores 32-bit BMP alpha on read
GRAY_FORMATS = {"PNG", "TIFF", "JPEG", "BMP"}  # WEBP has no grayscale mode
SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}

#: Rec. 709 luma weights: how a gray source's (RGB) result is written back as gray.
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)

EXIF_HEADER = b"Exif\x00\x00"
ORIENTATION_TAG = 0x0112
#: TIFF tags describing pixel layout: meaningless (or harmful) once copied
#: into another file's EXIF block.
# fmt: off
STRUCTURAL_TAGS = frozenset({
    256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284,  # size, samples, strips
    317, 320, 322, 323, 324, 325, 338, 339,  # predictor, palette, tiles, extra samples
    513, 514, 530,  # JPEG-in-TIFF, YCbCr subsampling
    700, 33723, 34377, 34675,  # XMP, IPTC, Photoshop, ICC (carried separately)
})
# fmt: on

# File signatures of formats we know: a file that starts like one of these but
# cannot be identified is broken rather than "not an image".
MAGIC = (
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

BOMB_LOCK = threading.RLock()  # re-entrant: a guarded decode may re-open the file


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


def to_float(arr: np.ndarray) -> np.ndarray:
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
    colour = to_float(arr)
    if grayscale:
        colour = np.repeat(colour, 3, axis=2)
    alpha_f = None
    if alpha is not None:
        alpha_f = to_float(np.asarray(alpha))
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


def to_uint(picture_or_rgb: Picture | np.ndarray, bit_depth: int, band_bytes: int = 1 << 20) -> np.ndarray:
    """Quantise float [0, 1] pixels to uint8/uint16 (round to nearest, clip, NaN -> 0).

    Integer input is first scaled to [0, 1] by its dtype, so uint16 -> 8 bit works too.
    Float input is quantised about ``band_bytes`` at a time into the integer result: saving a
    48 MP up-scaled photo costs its 8- or 16-bit copy, not another float copy.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    arr = picture_or_rgb.rgb if isinstance(picture_or_rgb, Picture) else np.asarray(picture_or_rgb)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = to_float(arr)
    top = np.float32(255.0 if bit_depth == 8 else 65535.0)
    out = np.empty(arr.shape, np.uint8 if bit_depth == 8 else np.uint16)
    src, dst = np.atleast_1d(arr), np.atleast_1d(out)  # views: a 0-d value is a band of one
    rows = max(1, band_bytes // max(1, 4 * src[:1].size))
    for r in range(0, src.shape[0], rows):
        band = np.clip(src[r:r + rows], 0.0, 1.0).astype(np.float32, copy=False)
        band[np.isnan(band)] = 0.0
        band *= top
        np.rint(band, out=band)
        dst[r:r + rows] = band
    return out


# --------------------------------------------------------------------------- loading
