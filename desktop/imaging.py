"""float32 RGB <-> QImage for display. The document keeps float; only what is shown is quantised to 8 bits.

Everything here is safe on worker threads (QImage, never QPixmap), so big
conversions can happen off the UI thread.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    out = np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5
    return np.ascontiguousarray(out.astype(np.uint8))


def to_qimage(rgb: np.ndarray) -> QImage:
    """HxWx3 float32 in [0, 1] -> a QImage that owns its pixels, in the format screens paint from.

    Format_RGB32 (bytes B, G, R, 255) is what a QPixmap holds on every raster platform, so
    ``QPixmap.fromImage`` on the UI thread is a copy, not a per-pixel conversion of a 24 MP photo.
    """
    h, w = rgb.shape[:2]
    bgrx = np.empty((h, w, 4), dtype=np.uint8)
    scaled = np.clip(rgb, 0.0, 1.0) * 255.0
    scaled += 0.5
    bgrx[..., 2::-1] = scaled  # R, G, B into bytes 2, 1, 0 (the float -> uint8 cast truncates, as rounding)
    bgrx[..., 3] = 255
    return QImage(bgrx.data, w, h, 4 * w, QImage.Format.Format_RGB32).copy()


def thumbnail(rgb: np.ndarray, side: int = 160) -> QImage:
    """A small preview: strided down in numpy first (cheap on 24 MP), then smoothly scaled."""
    h, w = rgb.shape[:2]
    step = max(1, int(max(h, w) // (side * 2)))
    small = to_qimage(rgb[::step, ::step])
    return small.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
