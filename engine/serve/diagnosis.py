"""The ``diagnose`` request: the engine's diagnosis of a layer from the few parts of it the diagnosis reads.

``engine.diagnose`` looks at a copy of the photo taken every k-th pixel (long side
about ``ANALYSIS_SIDE``) plus a few crops at full resolution. A GIMP layer can be
tens of megapixels, so the server does not ask for it whole: it answers a
``diagnose`` request with the regions it needs (:func:`regions`), the plug-in sends
just those (well under a megapixel whatever the layer's size), and
``engine.diagnose.features.analyse_parts`` measures them exactly as ``analyse``
measures the whole photo (``tests/test_server_diagnose.py`` checks both give the
same feature vector, so a change there cannot go unnoticed here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.diagnose import features
from engine.serve.protocol import DTYPE_SIZES

_NP = {"u8": np.dtype("u1"), "u16": np.dtype("<u2"), "f32": np.dtype("<f4")}
_SCALE = {"u8": 255.0, "u16": 65535.0, "f32": 1.0}


@dataclass(frozen=True)
class Region:
    """Pixels ``x + i * step`` (i < width) of rows ``y + j * step`` (j < height) of the layer."""

    x: int
    y: int
    width: int
    height: int
    step: int

    def to_list(self) -> list[int]:
        return [self.x, self.y, self.width, self.height, self.step]

    def nbytes(self, channels: int, dtype: str) -> int:
        return self.width * self.height * channels * DTYPE_SIZES[dtype]


def _copy_region(width: int, height: int) -> Region:
    """The every-k-th-pixel copy of ``features.analysis_copy`` as a region."""
    k = features.copy_step(height, width)
    if k == 1:
        return Region(0, 0, width, height, 1)
    o = k // 2
    return Region(o, o, len(range(o, width, k)), len(range(o, height, k)), k)


def regions(width: int, height: int) -> list[Region]:
    """What the diagnosis of a ``width`` x ``height`` layer asks for: the sub-sampled copy first, then the crops.

    A layer small enough to be its own copy (long side up to ``ANALYSIS_SIDE``) is asked for whole, once:
    its crops are cut from it here."""
    copy = _copy_region(width, height)
    if copy.step == 1:
        return [copy]
    return [copy] + [Region(left, top, side, side, 1) for top, left, side in features.crop_boxes(height, width)]


def split(width: int, height: int, parts: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(sub-sampled copy, full-resolution crops) from the received :func:`regions`, in their order."""
    if len(parts) == 1:
        return parts[0], features.cut_crops(parts[0])
    return parts[0], list(parts[1:])


def to_rgb(data, region: Region, channels: int, dtype: str) -> np.ndarray:
    """Wire pixels of a region as float32 RGB in [0, 1] (gray repeated, alpha dropped, floats clipped)."""
    a = np.frombuffer(data, _NP[dtype]).reshape(region.height, region.width, channels)
    colour = a[..., :3] if channels >= 3 else np.repeat(a[..., :1], 3, axis=2)
    rgb = colour.astype(np.float32)
    if dtype != "f32":
        rgb /= np.float32(_SCALE[dtype])
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def diagnose_regions(width: int, height: int, parts: list[np.ndarray], model=None,
                     photo_size: tuple[int, int] | None = None):
    """The ``Diagnosis`` of a ``width`` x ``height`` image from the float RGB of its :func:`regions`, in order.

    ``photo_size``: when the image is part of a larger one (a selection in a layer), the size of the
    whole; the resolution is judged on it (a small selection of a large photo is not a small photo)."""
    from engine.diagnose import core

    copy, crops = split(width, height, parts)
    w, h = photo_size or (width, height)
    return core.from_analysis(features.analyse_parts(copy, crops, w, h), model or core.default_model())


def reply(diagnosis, seconds: float, width: int, height: int) -> dict:
    """The ``diagnosis`` frame: what ``instructir diagnose --json`` prints (``width``/``height``: the part
    diagnosed), plus the time it took."""
    d = diagnosis.to_dict()
    d.pop("path", None)
    return dict(d, type="diagnosis", clean=diagnosis.clean, seconds=round(seconds, 3), width=width, height=height)
