"""Image quality metrics on float images in [0, 1] (benchmarks, export checks, tests)."""

from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB; the MSE floor of 1e-20 caps identical images at 200 dB."""
    return float(10 * np.log10(1 / max(float(np.mean((np.asarray(a) - np.asarray(b)) ** 2)), 1e-20)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two HxWx3 images (scikit-image's implementation)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=1.0))
