"""Seeded, parameterised image degradations.

One module serves training, evaluation and the tests, so "sigma 25 noise" means
the same thing everywhere. Every function takes a clean float32 HxWx3 image in
[0, 1] and a ``numpy.random.Generator``, and returns ``Degraded`` with the
parameters it drew, so a result can always be reproduced and reported.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

Array = np.ndarray


@dataclass
class Degraded:
    image: Array
    task: str
    params: dict = field(default_factory=dict)


def _clip(x: Array) -> Array:
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)


def _uniform(rng: np.random.Generator, lo: float, hi: float, value: float | None) -> float:
    return float(value) if value is not None else float(rng.uniform(lo, hi))


# --- noise -----------------------------------------------------------------


def gaussian_noise(img: Array, rng: np.random.Generator, sigma: float | None = None) -> Degraded:
    """Additive white Gaussian noise, sigma on the 0-255 scale (5-50)."""
    s = _uniform(rng, 5, 50, sigma)
    out = img + rng.standard_normal(img.shape, dtype=np.float32) * (s / 255.0)
    return Degraded(_clip(out), "noise", {"kind": "gaussian", "sigma": s})


def poisson_gaussian_noise(
    img: Array, rng: np.random.Generator, sigma: float | None = None, photons: float | None = None
) -> Degraded:
    """Signal-dependent shot noise plus read noise, as a camera sensor makes."""
    s = _uniform(rng, 5, 30, sigma)
    peak = _uniform(rng, 20, 200, photons)
    shot = rng.poisson(np.clip(img, 0, 1) * peak).astype(np.float32) / peak
    out = shot + rng.standard_normal(img.shape, dtype=np.float32) * (s / 255.0)
    return Degraded(_clip(out), "noise", {"kind": "poisson-gaussian", "sigma": s, "photons": peak})


# --- blur ------------------------------------------------------------------


def _convolve(img: Array, kernel: Array) -> Array:
    kernel = (kernel / kernel.sum()).astype(np.float32)
    return np.stack(
        [ndimage.convolve(img[..., c], kernel, mode="reflect") for c in range(img.shape[2])], axis=-1
    )


def gaussian_kernel(sigma: float) -> Array:
    r = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float32)
    g = np.exp(-(x**2) / (2 * sigma**2))
    return np.outer(g, g)


def motion_kernel(length: int, angle_deg: float) -> Array:
    """A straight line of ``length`` pixels at ``angle_deg``, anti-aliased by supersampling."""
    size = length if length % 2 else length + 1
    k = np.zeros((size * 4, size * 4), np.float32)
    c = (size * 4 - 1) / 2
    t = np.linspace(-(length * 4 - 1) / 2, (length * 4 - 1) / 2, length * 16)
    a = np.deg2rad(angle_deg)
    xs = np.clip(np.round(c + t * np.cos(a)).astype(int), 0, size * 4 - 1)
    ys = np.clip(np.round(c - t * np.sin(a)).astype(int), 0, size * 4 - 1)
    k[ys, xs] = 1.0
    return k.reshape(size, 4, size, 4).sum(axis=(1, 3))


def disk_kernel(radius: float) -> Array:
    r = int(np.ceil(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x**2 + y**2 <= radius**2 + 0.5).astype(np.float32)


def gaussian_blur(img: Array, rng: np.random.Generator, sigma: float | None = None) -> Degraded:
    s = _uniform(rng, 0.8, 3.0, sigma)
    return Degraded(_clip(_convolve(img, gaussian_kernel(s))), "blur", {"kind": "gaussian", "sigma": s})


def motion_blur(
    img: Array, rng: np.random.Generator, length: int | None = None, angle: float | None = None
) -> Degraded:
    n = int(length) if length is not None else int(rng.integers(5, 16))
    a = _uniform(rng, 0, 180, angle)
    return Degraded(_clip(_convolve(img, motion_kernel(n, a))), "blur", {"kind": "motion", "length": n, "angle": a})


def defocus_blur(img: Array, rng: np.random.Generator, radius: float | None = None) -> Degraded:
    r = _uniform(rng, 1.0, 4.0, radius)
    return Degraded(_clip(_convolve(img, disk_kernel(r))), "blur", {"kind": "defocus", "radius": r})


# --- low light -------------------------------------------------------------


def low_light(
    img: Array,
    rng: np.random.Generator,
    exposure: float | None = None,
    gamma: float | None = None,
    photons: float | None = None,
) -> Degraded:
    """Under-exposure: scale, a gamma that crushes shadows, and shot + read noise."""
    e = _uniform(rng, 0.05, 0.5, exposure)
    g = _uniform(rng, 1.0, 1.6, gamma)
    dark = e * np.power(np.clip(img, 0, 1), g)
    peak = _uniform(rng, 300, 3000, photons)
    noisy = rng.poisson(dark * peak).astype(np.float32) / peak
    noisy += rng.standard_normal(img.shape, dtype=np.float32) * (2.0 / 255.0)
    return Degraded(_clip(noisy), "low-light", {"exposure": e, "gamma": g, "photons": peak})


# --- haze ------------------------------------------------------------------


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, cells: int = 4, extent: float = 1.0) -> Array:
    """A smooth random field in [0, 1]: coarse noise up-sampled with cubic splines.

    With ``extent`` > 1 the image is a random window on a field ``extent`` times
    its size, as a training patch is a window on a whole hazy photo: the window
    sees only part of the field's range (a patch can be uniformly far away).
    """
    h, w = shape
    coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
    if extent <= 1.0:
        field_ = ndimage.zoom(coarse, (h / (cells + 1), w / (cells + 1)), order=3, mode="nearest")[:h, :w]
        field_ = np.pad(field_, ((0, h - field_.shape[0]), (0, w - field_.shape[1])), mode="edge")
        lo, hi = field_.min(), field_.max()
        return (field_ - lo) / max(hi - lo, 1e-6)
    full_h, full_w = h * extent, w * extent
    y0, x0 = rng.uniform(0, full_h - h), rng.uniform(0, full_w - w)
    ys = (y0 + np.arange(h, dtype=np.float32)) * cells / (full_h - 1)
    xs = (x0 + np.arange(w, dtype=np.float32)) * cells / (full_w - 1)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    field_ = ndimage.map_coordinates(coarse, [yy, xx], order=3, mode="nearest")
    lo, hi = coarse.min(), coarse.max()
    return np.clip((field_ - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def haze(
    img: Array,
    rng: np.random.Generator,
    beta: float | None = None,
    airlight: float | None = None,
    extent: float | None = None,
) -> Degraded:
    """Atmospheric scattering I = J t + A (1 - t), t = exp(-beta d), d a smooth random depth.

    ``extent``: how many times larger than ``img`` the hazy scene is (1: the
    depth spans its whole range across ``img``, as for a whole photo; drawn
    log-uniformly in [1, 8] when not given, so training patches also meet
    uniformly dense or uniformly light haze).
    """
    b = _uniform(rng, 0.6, 2.5, beta)
    a = _uniform(rng, 0.7, 1.0, airlight)
    tint = np.array([1.0, 1.0, 1.0], np.float32) + rng.uniform(-0.04, 0.04, 3).astype(np.float32)
    e = float(extent) if extent is not None else float(np.exp(rng.uniform(0.0, np.log(8.0))))
    depth = 0.3 + 0.7 * smooth_field(img.shape[:2], rng, extent=e)
    t = np.exp(-b * depth)[..., None]
    A = np.clip(a * tint, 0, 1)
    out = img * t + A * (1 - t)
    return Degraded(_clip(out), "haze", {"beta": b, "airlight": a, "extent": e})


# --- rain ------------------------------------------------------------------


def rain(
    img: Array,
    rng: np.random.Generator,
    density: float | None = None,
    length: int | None = None,
    angle: float | None = None,
    intensity: float | None = None,
) -> Degraded:
    """Rain streaks: sparse drops smeared along a near-vertical direction, added as light."""
    d = _uniform(rng, 0.002, 0.02, density)
    n = int(length) if length is not None else int(rng.integers(10, 31))
    a = _uniform(rng, 60, 120, angle)
    k = _uniform(rng, 0.5, 0.9, intensity)
    h, w = img.shape[:2]
    drops = (rng.random((h, w)) < d).astype(np.float32) * rng.uniform(0.6, 1.0, (h, w)).astype(np.float32)
    kernel = motion_kernel(n, a)
    streaks = ndimage.convolve(drops, kernel / kernel.max(), mode="wrap")
    streaks = ndimage.gaussian_filter(streaks, 0.6)
    streaks = np.clip(streaks * k, 0, 1)[..., None]
    out = 1 - (1 - img) * (1 - streaks)  # screen blend: streaks brighten, never darken
    return Degraded(_clip(out), "rain", {"density": d, "length": n, "angle": a, "intensity": k})


# --- JPEG / resolution -----------------------------------------------------


def _to_pil(img: Array) -> Image.Image:
    return Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))


def _from_pil(im: Image.Image) -> Array:
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def jpeg(img: Array, rng: np.random.Generator, quality: int | None = None) -> Degraded:
    q = int(quality) if quality is not None else int(rng.integers(10, 61))
    buf = io.BytesIO()
    _to_pil(img).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    return Degraded(_from_pil(Image.open(buf)), "jpeg", {"quality": q})


def downscale(img: Array, rng: np.random.Generator, factor: int | None = None) -> Degraded:
    """Down-scale x2 / x4 (bicubic, antialiased) and back: the paper's super-resolution task."""
    f = int(factor) if factor is not None else int(rng.choice([2, 4]))
    h, w = img.shape[:2]
    small = _to_pil(img).resize((max(1, w // f), max(1, h // f)), Image.Resampling.BICUBIC, reducing_gap=None)
    back = small.resize((w, h), Image.Resampling.BICUBIC)
    return Degraded(_from_pil(back), "upsampling", {"factor": f})


# --- enhancement -----------------------------------------------------------


def enhancement(
    img: Array,
    rng: np.random.Generator,
    cast: Array | None = None,
    contrast: float | None = None,
    saturation: float | None = None,
) -> Degraded:
    """A photo that needs retouching: colour cast, flat contrast, washed-out colour."""
    c = np.asarray(cast, np.float32) if cast is not None else rng.uniform(0.8, 1.2, 3).astype(np.float32)
    k = _uniform(rng, 0.55, 0.9, contrast)
    s = _uniform(rng, 0.3, 0.85, saturation)
    out = img * c
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * s
    mean = out.mean()
    out = mean + (out - mean) * k + rng.uniform(-0.05, 0.08)
    return Degraded(_clip(out), "enhancement", {"cast": c.tolist(), "contrast": k, "saturation": s})


Degradation = Callable[..., Degraded]

#: Every degradation of each task; training picks one at random, evaluation names one.
TASK_DEGRADATIONS: dict[str, tuple[Degradation, ...]] = {
    "noise": (gaussian_noise, poisson_gaussian_noise),
    "blur": (gaussian_blur, motion_blur, defocus_blur),
    "rain": (rain,),
    "haze": (haze,),
    "low-light": (low_light,),
    "enhancement": (enhancement,),
    "upsampling": (downscale,),
    "jpeg": (jpeg,),
}

TASKS: tuple[str, ...] = tuple(TASK_DEGRADATIONS)


def degrade(img: Array, task: str, rng: np.random.Generator) -> Degraded:
    """Apply a random degradation of ``task`` (one of ``TASKS``)."""
    try:
        options = TASK_DEGRADATIONS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}") from None
    fn = options[int(rng.integers(len(options)))]
    return fn(img, rng)
