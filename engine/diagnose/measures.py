"""Classical measures of what is wrong with a photo.

Each function takes float32 arrays in ``[0, 1]`` (``gray`` HxW, ``rgb`` HxWx3)
and returns plain numbers, so the learned classifier and the wording of a
diagnosis read the same values. Noise and JPEG grids are pixel-level
phenomena: measure them on full-resolution crops (``engine.diagnose.features``
takes care of that); exposure, colour and haze on the whole (sub-sampled) photo.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

Array = np.ndarray

#: Immerkaer's noise-estimation mask (the difference of two Laplacians); its response to
#: white noise of standard deviation s has standard deviation 6 s (the mask's L2 norm).
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)

#: The IJG standard luminance quantisation table (Annex K of the JPEG standard), row-major.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], np.float64)


def quantiles(values: Array, qs, lo: float = 0.0, hi: float = 1.0, bins: int = 4096) -> Array:
    """Quantiles (``qs`` in percent) of values in ``[lo, hi]`` from a histogram: linear time, to 1/``bins``.

    ``np.percentile`` sorts; on a photo's worth of pixels this is many times faster.
    """
    v = np.asarray(values, np.float32).ravel()
    idx = np.clip(((v - lo) * (bins / (hi - lo))).astype(np.int32), 0, bins - 1)
    cdf = np.cumsum(np.bincount(idx, minlength=bins))
    ranks = np.asarray(qs, np.float64) / 100.0 * (v.size - 1)
    found = np.searchsorted(cdf, ranks, side="right")
    return lo + (found + 0.5) * ((hi - lo) / bins)


def channel_max(rgb: Array) -> Array:
    """Per-pixel maximum of the three channels (element-wise; numpy's axis=2 reduction is slow)."""
    return np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def channel_min(rgb: Array) -> Array:
    return np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def luma(rgb: Array) -> Array:
    """Rec. 601 luma, float32 HxW."""
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114).astype(np.float32, copy=False)


# --- noise -------------------------------------------------------------------


def _valid(a: Array) -> Array:
    return a[1:-1, 1:-1]


def noise_sigma(channel: Array, block: int = 16) -> tuple[float, float]:
    """Noise standard deviation on the 0-255 scale, two robust estimates of Immerkaer's residual.

    ``channel``: one colour channel (not luma: mixing channels averages their noise away).
    Returns ``(mad, flat)``: the median absolute residual over pixels away from edges (Sobel
    gradient below its 60th percentile), and the 10th percentile of per-block residual
    deviations (textures raise most blocks, flat sky or walls keep the low ones at the
    noise level). Blocks with clipped pixels (noise cut off at black or white) are left out.
    Both are exact for white Gaussian noise on a flat image.
    """
    g = channel.astype(np.float32, copy=False)
    if min(g.shape) < 8:
        return 0.0, 0.0
    r = _valid(ndimage.convolve(g, _IMMERKAER, mode="reflect")) / 6.0
    grad = np.abs(_valid(ndimage.sobel(g, 1))) + np.abs(_valid(ndimage.sobel(g, 0)))
    keep = grad <= quantiles(grad, [60], 0.0, 8.0)[0]
    a = np.abs(r[keep]) if keep.any() else np.abs(r).ravel()
    mad = float(quantiles(a, [50], 0.0, 0.25)[0]) / 0.6745 * 255.0
    h, w = (r.shape[0] // block) * block, (r.shape[1] // block) * block
    if h == 0 or w == 0:
        return mad, mad
    blocks = r[:h, :w].reshape(h // block, block, w // block, block).std(axis=(1, 3))
    inner = _valid(g)[:h, :w]
    clipped = ((inner <= 1.5 / 255) | (inner >= 253.5 / 255)).reshape(h // block, block, w // block, block)
    unclipped = blocks[clipped.mean(axis=(1, 3)) < 0.02]
    if unclipped.size == 0:
        return mad, mad
    flat = float(np.percentile(unclipped, 10)) * 255.0 / 0.94  # the 10th percentile of n=256 deviations is 0.94 s
    return mad, flat


# --- JPEG --------------------------------------------------------------------


def jpeg_quality_from_table(table) -> float | None:
    """The IJG quality (1-100) that best explains a luminance quantisation table, None if there is none.

    ``table``: 64 values in zig-zag or natural order (the average scale factor is order-free).
    """
    if table is None:
        return None
    t = np.asarray(list(table), np.float64)
    if t.size != 64:
        return None
    scale = float(np.mean(t / _IJG_LUMA)) * 100.0  # IJG: table = std * S / 100
    if scale <= 0:
        return None
    q = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return float(min(100.0, max(1.0, q)))


def blockiness(gray: Array) -> tuple[float, float]:
    """How much stronger pixel steps are across an 8x8 grid than inside blocks.

    Returns ``(aligned, best)``: the ratio for the grid anchored at the top-left pixel (where
    a JPEG's grid is unless the photo was cropped), and the largest ratio over the 8 x 8
    possible offsets divided by the median one (a grid anywhere). About 1 for a photo that
    was never block-coded, above 1.1 for visible blocking.
    """
    g = gray.astype(np.float32, copy=False)
    if min(g.shape) < 32:
        return 1.0, 1.0
    dx = np.abs(np.diff(g, axis=1)).mean(axis=0)  # column steps: dx[j] is between column j and j+1
    dy = np.abs(np.diff(g, axis=0)).mean(axis=1)
    px = np.array([dx[k::8].mean() for k in range(8)])  # phase k: steps between j = 8m+k and 8m+k+1
    py = np.array([dy[k::8].mean() for k in range(8)])
    eps = 1e-6

    def ratio(p: Array, k: int) -> float:
        return float(p[k] / (np.delete(p, k).mean() + eps))

    aligned = 0.5 * (ratio(px, 7) + ratio(py, 7))
    rx = np.array([ratio(px, k) for k in range(8)])
    ry = np.array([ratio(py, k) for k in range(8)])
    best = 0.5 * (rx.max() / (np.median(rx) + eps) + ry.max() / (np.median(ry) + eps))
    return aligned, float(best)


# --- exposure, colour, haze ----------------------------------------------------------


def exposure(gray: Array) -> dict[str, float]:
    """Luma percentiles, mean and the share of crushed shadows / clipped highlights."""
    v = gray.ravel()
    p1, p5, p50, p95, p99 = quantiles(v, [1, 5, 50, 95, 99])
    return {
        "mean": float(v.mean()), "p1": float(p1), "p5": float(p5), "p50": float(p50), "p95": float(p95),
        "p99": float(p99), "dark": float((v < 0.06).mean()), "clipped": float((v > 0.97).mean()),
        "spread": float(p95 - p5),
    }


def colour(rgb: Array) -> dict[str, float]:
    """Saturation and grey-world colour cast."""
    mx, mn = channel_max(rgb), channel_min(rgb)
    sat = (mx - mn) / np.maximum(mx, 1e-3)
    means = np.array([float(rgb[..., c].mean()) for c in range(3)])
    grey = float(means.mean())
    cast = means / max(grey, 1e-3) - 1.0
    return {
        "saturation": float(sat.mean()), "saturation_p90": float(quantiles(sat, [90])[0]),
        "chroma": float((mx - mn).mean()), "cast": float(np.abs(cast).max()),
        "cast_rb": float(cast[0] - cast[2]),
    }


def dark_channel(rgb: Array, patch: int | None = None) -> dict[str, float]:
    """Dark-channel statistics (He et al.): haze lifts the minimum of every local patch.

    ``patch`` defaults to 1/40 of the shorter side (15 px on a 600 px photo).
    """
    h, w = rgb.shape[:2]
    size = patch or max(3, int(round(min(h, w) / 40)) | 1)
    dark = ndimage.minimum_filter(channel_min(rgb), size=size, mode="nearest")
    p10, p50, p90 = quantiles(dark, [10, 50, 90])
    bright = float(quantiles(channel_max(rgb), [50])[0])
    return {"p10": float(p10), "p50": float(p50), "p90": float(p90), "ratio": float(p50 / max(bright, 1e-3))}


# --- sharpness, spectrum, streaks --------------------------------------------------------

#: Edges of the radial frequency bands (cycles per pixel) of ``spectrum_bands``.
BANDS = (0.02, 0.06, 0.1, 0.14, 0.19, 0.25, 0.28, 0.31, 0.34, 0.38, 0.44, 0.5)


def _radial(n: int) -> tuple[Array, Array]:
    f = np.fft.fftfreq(n).astype(np.float32)
    fy, fx = np.meshgrid(f, np.fft.rfftfreq(n).astype(np.float32), indexing="ij")
    return np.hypot(fx, fy), np.arctan2(np.abs(fy), np.abs(fx))


_GRIDS: dict[int, tuple[Array, Array, Array]] = {}


def _grid(n: int) -> tuple[Array, Array, Array]:
    if n not in _GRIDS:
        r, ang = _radial(n)
        win = np.hanning(n).astype(np.float32)
        _GRIDS[n] = (r, ang, np.outer(win, win))
    return _GRIDS[n]


def windowed_spectrum(gray: Array) -> Array:
    """The real FFT of the largest square of ``gray`` under a Hann window (what ``spectrum_bands`` and
    ``mirror_coherence`` read; computed once per crop)."""
    n = min(gray.shape)
    g = gray[:n, :n].astype(np.float32, copy=False)
    win = _grid(n)[2]
    return np.fft.rfft2((g - g.mean()) * win)


def spectrum_bands(gray: Array, coefficients: Array | None = None) -> tuple[Array, Array]:
    """Log10 power of a square crop in the radial bands ``BANDS``, and of the high bands by direction.

    Returns ``(bands, directional)``: ``bands[i]`` is the mean power between ``BANDS[i]`` and
    ``BANDS[i + 1]`` relative to the first band (so contrast cancels); ``directional`` is the
    power above 0.1 cycles/pixel in frequencies near horizontal (vertical structures, such as
    rain), near vertical and diagonal, relative to their mean. ``coefficients``: the crop's
    ``windowed_spectrum`` when already computed.
    """
    coef = windowed_spectrum(gray) if coefficients is None else coefficients
    r, ang, _ = _grid(coef.shape[0])
    spec = np.abs(coef) ** 2
    out = []
    for lo, hi in zip(BANDS[:-1], BANDS[1:]):
        m = (r >= lo) & (r < hi)
        out.append(float(spec[m].mean()) if m.any() else 1e-12)
    bands = np.log10(np.maximum(out, 1e-12))
    high = r >= 0.1
    sectors = [(ang < np.pi / 8), (ang > 3 * np.pi / 8), (ang >= np.pi / 8) & (ang <= 3 * np.pi / 8)]
    d = np.array([float(spec[high & s].mean()) for s in sectors])
    directional = np.log10(np.maximum(d, 1e-12) / max(float(d.mean()), 1e-12))
    return (bands - bands[0]).astype(np.float32), directional.astype(np.float32)


#: Enlargement factors whose spectral mirror ``mirror_coherence`` tests.
MIRROR_FACTORS = (2, 4)
_MIRRORS: dict[tuple[int, int], tuple[Array, ...]] = {}


def _mirror_pairs(n: int, factor: int) -> tuple[Array, ...]:
    """Index pairs of the rfft of an n x n crop mirrored about ``0.5 / factor`` cycles/pixel, along x and y."""
    key = (n, factor)
    if key not in _MIRRORS:
        k = int(round(n / factor))  # partners' bins add up to k: they mirror about k / 2
        f = np.fft.fftfreq(n)
        ky = np.arange(n)[:, None]
        kx = np.arange(n // 2 + 1)[None, :]
        fy, fx = np.abs(f)[:, None], np.fft.rfftfreq(n)[None, :]
        lo, hi = 0.24 / factor, 0.76 / factor  # a band around the mirror, so both partners carry detail
        # along x: (ky, kx) pairs with (-ky, k - kx), each pair once (kx below the mirror)
        sel_x = (fx >= lo) & (fx <= hi) & (fy <= 0.25) & (2 * kx <= k)
        ax, bx = np.nonzero(sel_x)
        # along y: (ky, kx) pairs with (k - ky, -kx), stored as the conjugate of (ky - k, kx)
        sel_y = (np.abs(f)[:, None] >= lo) & (np.abs(f)[:, None] <= hi) & (f[:, None] > 0) & (fx <= 0.25)
        ay, by = np.nonzero(sel_y & (2 * ky <= k))
        _MIRRORS[key] = (ax, bx, (-ax) % n, k - bx, ay, by, (ay - k) % n, by)
    return _MIRRORS[key]


def mirror_coherence(coefficients: Array) -> tuple[float, ...]:
    """Evidence of an earlier enlargement by each of ``MIRROR_FACTORS``, from the crop's ``windowed_spectrum``.

    Enlarging by ``f`` (any symmetric interpolation kernel, centre-aligned) makes the spectrum above
    ``0.5 / f`` cycles/pixel a mirror image of the one below it, phase included: the product of each
    coefficient with its mirror partner has the same phase everywhere. Returns, per factor, the length of
    the mean unit phasor of those products: about 0.05 for a photo or a blurred one (a zero-phase blur
    keeps phases, a disk's sidelobes flip them at random), 0.7-0.95 for an enlarged one.
    """
    n = coefficients.shape[0]
    out = []
    for factor in MIRROR_FACTORS:
        ax, bx, px, qx, ay, by, py, qy = _mirror_pairs(n, factor)
        # along x and along y apart: a shift of the crop turns each one's common phase by its own amount
        along = []
        for prod in (coefficients[ax, bx] * coefficients[px, qx], coefficients[ay, by] * np.conj(coefficients[py, qy])):
            if prod.size:
                along.append(float(np.abs((prod / np.maximum(np.abs(prod), 1e-20)).mean())))
        out.append(float(np.mean(along)) if along else 0.0)
    return tuple(out)


def gradients(gray: Array) -> dict[str, float]:
    """Edge strength and how peaked the Laplacian is (sharp photos: few strong edges, heavy tails)."""
    g = gray.astype(np.float32, copy=False)
    gx = np.diff(g, axis=1)[:-1]
    gy = np.diff(g, axis=0)[:, :-1]
    mag = np.hypot(gx, gy)
    lap = ndimage.laplace(g)[1:-1, 1:-1]
    var = float(lap.var())
    kurt = float(((lap - lap.mean()) ** 4).mean() / max(var**2, 1e-12))
    p50, p99 = quantiles(mag, [50, 99], 0.0, 1.5)
    # Crete et al. blur measure: how much a further blur removes; a blurred photo loses little.
    blurred = ndimage.uniform_filter1d(g, 9, axis=1)
    d_orig = np.abs(np.diff(g, axis=1))
    d_blur = np.abs(np.diff(blurred, axis=1))
    crete = float(np.maximum(d_orig - d_blur, 0).sum() / max(float(d_orig.sum()), 1e-6))
    return {"p50": float(p50), "p99": float(p99), "lap_kurtosis": math.log10(max(kurt, 1e-3)),
            "lap_std": float(np.sqrt(var)), "crete": crete}


def _line(length: int, angle_deg: float) -> tuple[tuple[int, int], ...]:
    """The pixel offsets ``(dy, dx)`` of a line of ``length`` pixels at ``angle_deg`` from the vertical."""
    t = np.arange(length) - (length - 1) / 2
    a = np.deg2rad(angle_deg)
    return tuple(dict.fromkeys(zip(np.round(t * np.cos(a)).astype(int).tolist(),
                                   np.round(t * np.sin(a)).astype(int).tolist())))


def _line_opening(a: Array, offsets: tuple[tuple[int, int], ...]) -> Array:
    """Grey opening along a line: the minimum over the line's shifts, then the maximum (edges replicated)."""
    r = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    h, w = a.shape

    def shifted(x: Array, sign: int) -> list[Array]:
        p = np.pad(x, r, mode="edge")
        return [p[r + sign * dy : r + sign * dy + h, r + sign * dx : r + sign * dx + w] for dy, dx in offsets]

    eroded = np.minimum.reduce(shifted(a, 1))
    return np.maximum.reduce(shifted(eroded, -1))


#: Lines for streaks falling within 30 degrees of the vertical (rain), and a horizontal one.
_STREAK_LINES = tuple(_line(9, a) for a in (-30, -15, 0, 15, 30))
_FLAT_LINE = _line(9, 90)


def streaks(gray: Array) -> dict[str, float]:
    """Thin bright lines falling within 30 degrees of the vertical (rain), against the same across.

    ``tophat``: mean brightness above a horizontal opening (bright structures narrower than 5 px);
    ``coherence``: the share of it that survives an opening along a 9 px line at the best of
    five near-vertical angles (a streak is long and straight; specks and texture are not);
    ``across``: the same for horizontal lines of the vertical top-hat (architecture has both,
    rain only the first); ``bright``: the share of pixels on a streak brighter by 0.06.
    """
    g = gray.astype(np.float32, copy=False)
    th = g - ndimage.grey_opening(g, size=(1, 5))
    along = np.maximum.reduce([_line_opening(th, k) for k in _STREAK_LINES])
    tv = g - ndimage.grey_opening(g, size=(5, 1))
    flat = _line_opening(tv, _FLAT_LINE)
    total, total_v = float(th.mean()), float(tv.mean())
    return {"tophat": total, "coherence": float(along.mean() / max(total, 1e-6)),
            "across": float(flat.mean() / max(total_v, 1e-6)), "bright": float((along > 0.06).mean())}


def upsampling_periodicity(gray: Array) -> float:
    """Evidence of an earlier x2 enlargement: how unequal second differences are at even and odd pixels.

    Bicubic enlargement makes every other pixel an interpolation of its neighbours, so the
    curvature alternates in strength; returns log10 of the ratio (0 when there is none).
    """
    g = gray.astype(np.float64, copy=False)
    d2x = np.abs(g[:, 2:] - 2 * g[:, 1:-1] + g[:, :-2]).mean(axis=0)
    d2y = np.abs(g[2:] - 2 * g[1:-1] + g[:-2]).mean(axis=1)
    vals = []
    for d in (d2x, d2y):
        e, o = d[0::2].mean(), d[1::2].mean()
        vals.append(abs(math.log10(max(e, 1e-9) / max(o, 1e-9))))
    return float(np.mean(vals))
