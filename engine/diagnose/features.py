"""What the diagnosis looks at: a sub-sampled copy of the whole photo plus a few full-resolution crops.

Global properties (exposure, colour, haze) are read on a copy taken every k-th
pixel, k chosen so the copy's long side is about ``ANALYSIS_SIDE``; taking
pixels rather than averaging them keeps the noise of the copy as strong as the
photo's, so a 12 MP photo and a 600 px one read alike. Pixel-level properties
(noise, blur, JPEG blocks, rain streaks, enlargement) are read on ``CROPS``
crops at full resolution on a fixed grid, each at an offset that is a multiple
of 8 so a JPEG's block grid stays where it was. The cost is bounded whatever
the photo's size.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from engine.diagnose import measures

Array = np.ndarray

ANALYSIS_SIDE = 768
CROP = 192
#: Crop grid (columns, rows) for a landscape photo; transposed for a portrait one.
GRID = (3, 2)

_CROP_KEYS = (
    ["noise_mad", "noise_flat", "chroma_noise", "block_aligned", "block_best"]
    + [f"band{i}" for i in range(len(measures.BANDS) - 1)]
    + ["dir_h", "dir_v", "dir_d", "grad_p50", "grad_p99", "lap_kurtosis", "lap_std", "crete",
       "tophat", "coherence", "streak_across", "streak_bright", "periodicity"]
    + [f"mirror{f}" for f in measures.MIRROR_FACTORS]
)
_CROP_MIN = ("noise_mad", "noise_flat", "chroma_noise")
_CROP_MAX = ("band4", "band5", "band6", "band7", "band8", "band9", "band10", "grad_p99", "crete", "block_aligned",
             "tophat", "coherence", "streak_bright")
_GLOBAL_KEYS = (
    "exp_mean", "exp_p1", "exp_p5", "exp_p50", "exp_p95", "exp_p99", "exp_dark", "exp_clipped", "exp_spread",
    "col_saturation", "col_saturation_p90", "col_chroma", "col_cast", "col_cast_rb",
    "dc_p10", "dc_p50", "dc_p90", "dc_ratio",
)

#: The classifier's input, in order.
FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"crop_{k}" for k in _CROP_KEYS)
    + tuple(f"crop_min_{k}" for k in _CROP_MIN)
    + tuple(f"crop_max_{k}" for k in _CROP_MAX)
    + _GLOBAL_KEYS
)


@dataclass
class Analysis:
    """Named measures of one photo and the classifier's feature vector."""

    values: dict[str, float]
    vector: Array
    width: int
    height: int


def copy_step(height: int, width: int, side: int = ANALYSIS_SIDE) -> int:
    """The k of :func:`analysis_copy`: every k-th pixel of every k-th row, from ``k // 2``, long side about ``side``."""
    return max(1, math.ceil(max(height, width) / side))


def analysis_copy(rgb: Array, side: int = ANALYSIS_SIDE) -> Array:
    """Every k-th pixel, so the long side is at most about ``side`` (a view when k is 1)."""
    k = copy_step(*rgb.shape[:2], side)
    return np.ascontiguousarray(rgb[k // 2 :: k, k // 2 :: k]) if k > 1 else rgb


def crop_boxes(height: int, width: int, size: int = CROP, grid: tuple[int, int] = GRID) -> list[tuple[int, int, int]]:
    """``(top, left, side)`` of the full-resolution crops: centred in the cells of a grid, 8-aligned."""
    side = min(size, (min(height, width) // 8) * 8)
    if side < 32:
        return [(0, 0, min(height, width))]
    cols, rows = grid if width >= height else grid[::-1]
    boxes = []
    for r in range(rows):
        for c in range(cols):
            cy = (r + 0.5) * height / rows
            cx = (c + 0.5) * width / cols
            top = int(min(max(0, cy - side / 2), height - side)) // 8 * 8
            left = int(min(max(0, cx - side / 2), width - side)) // 8 * 8
            boxes.append((top, left, side))
    return list(dict.fromkeys(boxes))


def cut_crops(rgb: Array) -> list[Array]:
    """The full-resolution crops of :func:`crop_boxes` (views of ``rgb``)."""
    return [rgb[t : t + s, x : x + s] for t, x, s in crop_boxes(*rgb.shape[:2])]


def _crop_values(rgb: Array) -> dict[str, float]:
    g = measures.luma(rgb)
    mad, flat = measures.noise_sigma(rgb[..., 1])
    chroma = measures.noise_sigma((rgb[..., 0] - rgb[..., 2]) * 0.5)[1]
    aligned, best = measures.blockiness(g)
    coefficients = measures.windowed_spectrum(g)
    bands, directional = measures.spectrum_bands(g, coefficients)
    grads = measures.gradients(g)
    st = measures.streaks(g)
    out = {"noise_mad": math.log1p(mad), "noise_flat": math.log1p(flat), "chroma_noise": math.log1p(chroma),
           "block_aligned": aligned, "block_best": best}
    out |= {f"band{i}": float(b) for i, b in enumerate(bands)}
    out |= {"dir_h": float(directional[0]), "dir_v": float(directional[1]), "dir_d": float(directional[2])}
    out |= {"grad_p50": grads["p50"], "grad_p99": grads["p99"], "lap_kurtosis": grads["lap_kurtosis"],
            "lap_std": grads["lap_std"], "crete": grads["crete"]}
    out |= {"tophat": st["tophat"], "coherence": st["coherence"], "streak_across": st["across"],
            "streak_bright": st["bright"],
            "periodicity": measures.upsampling_periodicity(g)}
    out |= {f"mirror{f}": c for f, c in zip(measures.MIRROR_FACTORS, measures.mirror_coherence(coefficients))}
    return out


#: Crops are measured on this many threads (numpy and scipy release the GIL in their loops).
WORKERS = max(1, min(2, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="diagnose")
        return _pool


def analyse(rgb: Array) -> Analysis:
    """Measure a float32 HxWx3 photo in ``[0, 1]`` (the crops on ``WORKERS`` threads)."""
    rgb = np.asarray(rgb, np.float32)
    h, w = rgb.shape[:2]
    return analyse_parts(analysis_copy(rgb), cut_crops(rgb), w, h)


def analyse_parts(copy: Array, crops: list[Array], width: int, height: int) -> Analysis:
    """:func:`analyse` of a ``width`` x ``height`` photo from only the parts it reads: its :func:`analysis_copy`
    and its :func:`cut_crops` (float32 RGB in ``[0, 1]``), so a caller that never holds the whole photo (the
    engine server, sent just those regions by the GIMP plug-in) measures it exactly as ``analyse`` does."""
    if WORKERS > 1 and len(crops) > 1:
        per_crop = list(_executor().map(_crop_values, crops))
    else:
        per_crop = [_crop_values(c) for c in crops]
    values: dict[str, float] = {}
    for k in _CROP_KEYS:
        values[f"crop_{k}"] = float(np.median([c[k] for c in per_crop]))
    for k in _CROP_MIN:
        values[f"crop_min_{k}"] = float(min(c[k] for c in per_crop))
    for k in _CROP_MAX:
        values[f"crop_max_{k}"] = float(max(c[k] for c in per_crop))
    gray = measures.luma(copy)
    values |= {f"exp_{k}": v for k, v in measures.exposure(gray).items()}
    values |= {f"col_{k}": v for k, v in measures.colour(copy).items()}
    values |= {f"dc_{k}": v for k, v in measures.dark_channel(copy).items()}
    vector = np.array([values[n] for n in FEATURE_NAMES], np.float32)
    return Analysis(values, vector, width, height)


def noise_sigma_255(values: dict[str, float]) -> float:
    """The photo's noise level on the 0-255 scale (the flattest crop's estimate)."""
    return math.expm1(values["crop_min_noise_flat"])
