"""How dark a photo really is, so that brightening a photo that is not dark changes it only a little.

The low-light task is trained to lift dark photos. On a well-exposed photo it
still lifts everything and blows the highlights out: the bundled model leaves
a well-exposed Kodak photo at 10.7 dB of itself when asked to brighten it
(bench/quality.py, ``low-light-bright``). The restorer therefore tempers the
low-light correction by how dark its input is: the median and the 95th
percentile of the luma of a subsampled copy. A dark photo gets the whole
correction; a well-exposed one :data:`BRIGHT_FLOOR` of it (on Kodak24, clean
photos score a median darkness of 0.1, the synthetic low-light ones 1.0).
"""

from __future__ import annotations

import numpy as np

LOW_LIGHT_INTENT = "low-light"
#: The share of the low-light correction a photo that is not dark at all keeps.
BRIGHT_FLOOR = 0.2
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
_SAMPLES = 250_000


def _ramp_down(x: float, full: float, none: float) -> float:
    """1 at or below ``full``, 0 at or above ``none``, linear between."""
    return float(np.clip((none - x) / (none - full), 0.0, 1.0))


def darkness(image: np.ndarray) -> float:
    """0 for a well-exposed photo, 1 for a clearly dark one (HxWx3 float in [0, 1])."""
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / _SAMPLES)))
    luma = image[::step, ::step] @ _LUMA
    median, p95 = np.percentile(luma, [50, 95])
    return max(_ramp_down(float(median), 0.18, 0.38), _ramp_down(float(p95), 0.45, 0.75))


def brightening_share(image: np.ndarray) -> float:
    """The share of the low-light correction that ``image`` calls for, in [BRIGHT_FLOOR, 1]."""
    return BRIGHT_FLOOR + (1.0 - BRIGHT_FLOOR) * darkness(image)


def temper(image: np.ndarray, restored: np.ndarray, share: float | None = None) -> np.ndarray:
    """``image + share * (restored - image)``, in place on ``restored``, by bands of rows.

    ``share`` defaults to ``brightening_share(image)``; a caller working on a band
    of rows passes the share of the whole photo.
    """
    share = np.float32(brightening_share(image) if share is None else share)
    if share >= 1:
        return restored
    for r in range(0, restored.shape[0], 256):
        band = restored[r:r + 256]
        band -= image[r:r + 256]
        band *= share
        band += image[r:r + 256]
    return restored
