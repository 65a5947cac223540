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


# --- camera shake (random trajectories) -------------------------------------

#: Kernel seeds drawn for training lie below this; held-out evaluation kernels use seeds from here up.
HELD_OUT_SEED_BASE = 2**30


def shake_trajectory(
    rng: np.random.Generator,
    steps: int = 64,
    anxiety: float = 0.05,
    centripetal: float = 0.4,
    big_shake: float = 0.1,
    gaussian: float = 6.0,
) -> Array:
    """A camera-shake trajectory (Boracchi & Foi 2012, as in DeblurGAN): complex positions, ``steps`` long.

    A random walk with inertia: the velocity keeps its length and is nudged by
    Gaussian jitter, pulled back to the start (``centripetal``) and, with
    probability ``big_shake`` x ``anxiety`` per step, turned abruptly.
    """
    v = np.exp(1j * rng.uniform(0, 2 * np.pi))
    unit = 1.0 / (steps - 1)
    v *= unit
    x = np.zeros(steps, np.complex128)
    for t in range(steps - 1):
        jump = 0j
        if rng.random() < big_shake * anxiety:
            jump = 2 * v * np.exp(1j * (np.pi + rng.random() - 0.5))
        dv = jump + anxiety * (gaussian * complex(rng.standard_normal(), rng.standard_normal())
                               - centripetal * x[t]) * unit
        v = v + dv
        v = v / max(abs(v), 1e-12) * unit
        x[t + 1] = x[t] + v
    return x


def trajectory_kernel(traj: Array, size: int, supersample: int = 8, dwell: Array | None = None) -> Array:
    """Rasterise a trajectory into a ``size`` x ``size`` blur kernel, sub-pixel (bilinear splats on a fine grid).

    ``dwell`` (one weight per trajectory point) is how long the camera stayed there: a hand slows down and
    speeds up, so a recorded kernel is bright where it paused and faint where it swept.
    """
    pts = np.stack([traj.real, traj.imag], 1)
    # Dense resampling so that the path, not its vertices, is drawn.
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    rough = max(float(np.abs(pts - pts.mean(0)).max()) * 2, 1e-6)
    n = max(len(pts), int(s[-1] / rough * (size - 1) * supersample * 2) + 2)
    u = np.linspace(0, s[-1], n)
    path = np.stack([np.interp(u, s, pts[:, 0]), np.interp(u, s, pts[:, 1])], 1)
    mass = np.ones(n) if dwell is None else np.interp(u, s, np.asarray(dwell, np.float64))
    mass = mass / mass.sum()
    # Centred on the kernel's centre of mass, not its bounding box: the sharp photo a blind restorer can
    # recover is the one at the camera's mean position; any other centre shifts the target by a few pixels
    # that nothing in the blurry photo tells.
    path = path - (path * mass[:, None]).sum(0)
    extent = max(float(np.abs(path).max()) * 2, 1e-6)
    fine = size * supersample
    path = (path / extent * (size - 1) + (size - 1) / 2) * supersample + (supersample - 1) / 2
    k = np.zeros((fine + 1, fine + 1), np.float64)
    ix = np.clip(np.floor(path).astype(int), 0, fine - 1)
    f = path - ix
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1])
        np.add.at(k, (ix[:, 1] + dy, ix[:, 0] + dx), w * mass)
    k = k[:fine, :fine].reshape(size, supersample, size, supersample).sum(axis=(1, 3))
    return (k / k.sum()).astype(np.float32)


def shake_dwell(rng: np.random.Generator, steps: int, uneven: float) -> Array:
    """How long the camera stays at each of ``steps`` points: log-normal, smooth over ~6 steps; 0 = constant."""
    from scipy.ndimage import gaussian_filter1d

    g = gaussian_filter1d(rng.standard_normal(steps), 3.0, mode="nearest")
    return np.exp(uneven * g / max(float(g.std()), 1e-9))


def shake_kernel(size: int, seed: int, anxiety: float = 0.05, centripetal: float = 0.4,
                 big_shake: float = 0.1, gaussian: float = 6.0, uneven: float = 0.0) -> Array:
    """The camera-shake kernel named by its size and seed (so a recorded one can be rebuilt)."""
    rng = np.random.default_rng(seed)
    traj = shake_trajectory(rng, 64, anxiety, centripetal, big_shake, gaussian)
    dwell = shake_dwell(rng, len(traj), uneven) if uneven > 0 else None
    return trajectory_kernel(traj, size, dwell=dwell)


def recorded_shake_kernel(params: dict) -> Array:
    """The kernel of a ``camera_shake`` from its recorded parameters (records before ``uneven`` had none)."""
    return shake_kernel(params["size"], params["seed"], anxiety=params["anxiety"],
                        centripetal=params["centripetal"], uneven=params.get("uneven", 0.0))


def fft_blur(img: Array, kernel: Array) -> Array:
    """Convolution with reflect borders via real FFTs (fast for large kernels)."""
    from scipy import fft as sfft

    kernel = (kernel / kernel.sum()).astype(np.float32)
    kh, kw = kernel.shape
    ry, rx = kh // 2, kw // 2
    pad = np.pad(img, ((ry, kh - 1 - ry), (rx, kw - 1 - rx), (0, 0)), mode="reflect")
    h, w = pad.shape[:2]
    fh, fw = sfft.next_fast_len(h, True), sfft.next_fast_len(w, True)
    spectrum = sfft.rfft2(pad, (fh, fw), axes=(0, 1)) * sfft.rfft2(kernel, (fh, fw))[..., None]
    out = sfft.irfft2(spectrum, (fh, fw), axes=(0, 1))
    return out[kh - 1 : h, kw - 1 : w].astype(np.float32)


def _camera_read_noise(img: Array, rng: np.random.Generator, sigma: float) -> Array:
    """Mild sensor noise as a camera adds it after the optics: shot noise plus read noise, sigma on 0-255."""
    # shot noise of 0.85 sigma at mid-grey (std sqrt(0.5 / peak)) plus read noise of 0.5 sigma: ~sigma in all
    peak = 0.5 / (0.85 * max(sigma, 1e-3) / 255.0) ** 2
    shot = rng.poisson(np.clip(img, 0, 1) * peak).astype(np.float32) / peak
    return shot + rng.standard_normal(img.shape, dtype=np.float32) * (0.5 * sigma / 255.0)


def camera_shake(
    img: Array,
    rng: np.random.Generator,
    size: int | None = None,
    seed: int | None = None,
    anxiety: float | None = None,
    centripetal: float | None = None,
    noise: float | None = None,
    uneven: float | None = None,
) -> Degraded:
    """Hand-held camera shake: a random-trajectory kernel (7-41 px) with uneven speed along it, then mild
    sensor noise (sigma 0-4 / 255)."""
    n = int(size) if size is not None else int(2 * rng.integers(3, 21) + 1)
    sd = int(seed) if seed is not None else int(rng.integers(HELD_OUT_SEED_BASE))
    a = _uniform(rng, 0.005, 0.1, anxiety)
    c = _uniform(rng, 0.0, 0.7, centripetal)
    s = _uniform(rng, 0.0, 4.0, noise)
    e = _uniform(rng, 0.0, 1.0, uneven)
    kernel = shake_kernel(n, sd, anxiety=a, centripetal=c, uneven=e)
    out = fft_blur(img, kernel)
    if s > 0:
        out = _camera_read_noise(out, rng, s)
    return Degraded(_clip(out), "blur", {"kind": "shake", "size": n, "seed": sd, "anxiety": a,
                                         "centripetal": c, "uneven": e, "noise": s})


def blur_then_noise(img: Array, rng: np.random.Generator, noise: float | None = None) -> Degraded:
    """Defocus or Gaussian blur, then sensor noise (sigma 1-8 / 255): fixed by 'sharpen it'."""
    base = (defocus_blur if rng.random() < 0.5 else gaussian_blur)(img, rng)
    s = _uniform(rng, 1.0, 8.0, noise)
    out = _camera_read_noise(base.image, rng, s)
    return Degraded(_clip(out), "blur", {**base.params, "noise": s, "mixed": "blur+noise"})


# --- multi-layer rain --------------------------------------------------------


def _rain_layer(shape: tuple[int, int], rng: np.random.Generator, spec: dict) -> Array:
    """One layer of streaks: sparse drops smeared along the fall direction, widened and motion-blurred."""
    h, w = shape
    drops = (rng.random((h, w)) < spec["density"]).astype(np.float32)
    drops *= rng.uniform(0.5, 1.0, (h, w)).astype(np.float32)
    length = max(2, int(round(spec["length"])))
    line = motion_kernel(length, spec["angle"])
    streaks = ndimage.convolve(drops, line / line.max(), mode="wrap")
    if spec["width"] > 0.5:  # wider streaks: blur across (and along) the streak
        streaks = ndimage.gaussian_filter(streaks, spec["width"] / 2, mode="wrap") * spec["width"]
    if spec["blur"] > 0:  # motion blur of a falling drop: a longer, fainter tail
        tail = motion_kernel(max(3, int(spec["blur"] * length)), spec["angle"])
        streaks = ndimage.convolve(streaks, tail / tail.sum(), mode="wrap") * 1.5
    streaks = ndimage.gaussian_filter(streaks, 0.5, mode="wrap")
    return np.clip(streaks * spec["opacity"], 0, 1)


def rain_layers(
    img: Array,
    rng: np.random.Generator,
    heavy: bool | None = None,
    layers: list[dict] | None = None,
    veil: float | None = None,
    splashes: float | None = None,
) -> Degraded:
    """Real-looking rain: 1-5 layers of streaks (each its own density, length, width, angle, opacity and
    motion blur), the veil of accumulated rain (a bright, slightly blurred haze) and splashes.

    Heavy rain: more, denser, longer and more opaque layers and a thicker veil.
    ``layers``/``veil``/``splashes`` given explicitly reproduce (or hold out) a rain.
    """
    hv = bool(heavy) if heavy is not None else bool(rng.random() < 0.5)
    h, w = img.shape[:2]
    if layers is None:
        base_angle = rng.uniform(60, 120)
        n = int(rng.integers(3, 6)) if hv else int(rng.integers(1, 4))
        layers = []
        for i in range(n):
            near = i / max(n - 1, 1)  # far layers: fine, faint; near layers: wide, long, blurred
            length = float(rng.uniform(8, 20) + near * rng.uniform(0, 30))
            width = float(rng.uniform(0.3, 1.2) + near * rng.uniform(0, 2.0))
            # the share of the photo a layer's streaks cover sets the drop density
            cover = float(rng.uniform(0.03, 0.1) if hv else rng.uniform(0.005, 0.04))
            layers.append({
                "density": cover / (length * max(width, 1.0)),
                "length": length,
                "width": width,
                "angle": float(base_angle + rng.uniform(-10, 10)),
                "opacity": float(rng.uniform(0.3, 0.7) if hv else rng.uniform(0.2, 0.5)),
                "blur": float(rng.uniform(0, 1.0) * near),
            })
    v = _uniform(rng, 0.05, 0.2, veil) if veil is not None or hv else _uniform(rng, 0.0, 0.06, veil)
    sp = _uniform(rng, 0.0, 0.002 if hv else 0.0005, splashes)
    out = img.copy()
    if v > 0:  # the veil: light scattered by countless far drops, brighter at the top
        light = np.clip(rng.uniform(0.75, 1.0) + rng.uniform(-0.03, 0.03, 3), 0, 1).astype(np.float32)
        field_ = v * (0.6 + 0.4 * smooth_field((h, w), rng, cells=3))[..., None]
        out = ndimage.gaussian_filter(out, (v * 3, v * 3, 0)) if v > 0.15 else out
        out = out * (1 - field_) + light * field_
    total = np.zeros((h, w), np.float32)
    for spec in layers:
        layer = _rain_layer((h, w), rng, spec)
        total = 1 - (1 - total) * (1 - layer)
    if sp > 0:  # splashes: small bright blobs
        blobs = (rng.random((h, w)) < sp).astype(np.float32) * rng.uniform(0.4, 1.0, (h, w)).astype(np.float32)
        blobs = ndimage.grey_dilation(blobs, size=(2, 3))
        total = 1 - (1 - total) * (1 - np.clip(ndimage.gaussian_filter(blobs, 0.8) * 2, 0, 1))
    out = 1 - (1 - out) * (1 - total[..., None])  # screen blend: rain adds light
    return Degraded(_clip(out), "rain", {"kind": "layers", "heavy": hv, "layers": layers, "veil": v,
                                         "splashes": sp})


# --- camera noise ------------------------------------------------------------


def demosaic_noise(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> Array:
    """Noise as it leaves a Bayer sensor: white on the mosaic (one colour per pixel), then bilinearly
    demosaiced, so it is correlated across neighbouring pixels and across channels."""
    h, w = shape
    raw = rng.standard_normal((h, w)).astype(np.float32)
    out = np.zeros((h, w, 3), np.float32)
    masks = np.zeros((h, w, 3), np.float32)
    masks[0::2, 0::2, 0] = 1  # R
    masks[0::2, 1::2, 1] = 1  # G
    masks[1::2, 0::2, 1] = 1  # G
    masks[1::2, 1::2, 2] = 1  # B
    k_rb = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]], np.float32)
    k_g = np.array([[0, 0.25, 0], [0.25, 1.0, 0.25], [0, 0.25, 0]], np.float32)
    for c, k in ((0, k_rb), (1, k_g), (2, k_rb)):
        out[..., c] = ndimage.convolve(raw * masks[..., c], k, mode="mirror")
    out /= max(float(out.std()), 1e-6)
    return out * (sigma / 255.0)


def camera_noise(
    img: Array,
    rng: np.random.Generator,
    sigma: float | None = None,
    photons: float | None = None,
    demosaic: float | None = None,
    chroma: float | None = None,
    quality: int | None = None,
) -> Degraded:
    """Sensor noise as a phone saves it: Poisson-Gaussian, plus demosaiced (spatially correlated) noise and a
    luminance component shared by the channels, then JPEG (quality 40-95)."""
    s = _uniform(rng, 2, 20, sigma)
    peak = _uniform(rng, 30, 400, photons)
    dm = _uniform(rng, 0, 15, demosaic)
    ch = _uniform(rng, 0, 10, chroma)
    q = int(quality) if quality is not None else int(rng.integers(40, 96))
    h, w = img.shape[:2]
    out = rng.poisson(np.clip(img, 0, 1) * peak).astype(np.float32) / peak
    out += rng.standard_normal(img.shape, dtype=np.float32) * (s / 255.0)
    if dm > 0:
        out += demosaic_noise((h, w), rng, dm)
    if ch > 0:  # channel-correlated: the same luminance noise in R, G and B
        lum = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 0.7)
        out += (lum / max(float(lum.std()), 1e-6) * (ch / 255.0))[..., None]
    out = jpeg(_clip(out), rng, quality=q).image
    return Degraded(out, "noise", {"kind": "camera", "sigma": s, "photons": peak, "demosaic": dm,
                                   "chroma": ch, "quality": q})


def noise_then_jpeg(img: Array, rng: np.random.Generator, quality: int | None = None) -> Degraded:
    """White or Poisson-Gaussian noise, then JPEG (quality 30-90): fixed by 'remove the noise'."""
    base = (gaussian_noise if rng.random() < 0.5 else poisson_gaussian_noise)(img, rng)
    q = int(quality) if quality is not None else int(rng.integers(30, 91))
    return Degraded(jpeg(base.image, rng, quality=q).image, "noise",
                    {**base.params, "quality": q, "mixed": "noise+jpeg"})


# --- low light as cameras make it -------------------------------------------


def low_light_camera(
    img: Array,
    rng: np.random.Generator,
    exposure: float | None = None,
    photons: float | None = None,
    cast: Array | None = None,
    quality: int | None = None,
) -> Degraded:
    """A dark photo from a camera: under-exposed, noisy (shot + read + demosaiced noise), the colour cast
    of the wrong white balance under artificial light, sometimes saved as JPEG."""
    e = _uniform(rng, 0.04, 0.4, exposure)
    g = float(rng.uniform(1.0, 1.4))
    peak = _uniform(rng, 100, 2000, photons)
    c = (np.asarray(cast, np.float32) if cast is not None else
         np.array([rng.uniform(0.9, 1.3), 1.0, rng.uniform(0.6, 1.05)], np.float32))
    dark = e * np.power(np.clip(img, 0, 1), g) * c
    out = rng.poisson(np.clip(dark, 0, 1) * peak).astype(np.float32) / peak
    read = float(rng.uniform(1, 4))
    out += rng.standard_normal(img.shape, dtype=np.float32) * (read / 255.0)
    out += demosaic_noise(img.shape[:2], rng, float(rng.uniform(0, 3)))
    q = int(quality) if quality is not None else (int(rng.integers(60, 96)) if rng.random() < 0.5 else 0)
    out = _clip(out)
    if q:
        out = jpeg(out, rng, quality=q).image
    return Degraded(out, "low-light", {"kind": "camera", "exposure": e, "gamma": g, "photons": peak,
                                       "cast": c.tolist(), "read_noise": read, "quality": q})


def well_exposed(img: Array, rng: np.random.Generator) -> Degraded:
    """A photo that is not dark, unchanged: asked to brighten it, the model should change it only a little.

    The training target is the clean photo, i.e. this very input (an identity target).
    """
    return Degraded(_clip(img.copy()), "low-light", {"kind": "well-exposed", "identity": True})


#: Well-exposed (identity) inputs are only drawn for patches at least this bright (mean, 0-1).
WELL_EXPOSED_MIN_MEAN = 0.3


Degradation = Callable[..., Degraded]

#: Every degradation of each task with its relative weight; training draws one by weight, evaluation names one.
#: The simple synthetic ones stay (the existing benchmark uses them); the camera-like ones weigh more.
TASK_OPTIONS: dict[str, tuple[tuple[Degradation, float], ...]] = {
    "noise": ((gaussian_noise, 2.0), (poisson_gaussian_noise, 1.0), (camera_noise, 2.0), (noise_then_jpeg, 1.0)),
    "blur": ((gaussian_blur, 1.0), (motion_blur, 0.5), (defocus_blur, 1.0), (camera_shake, 3.0),
             (blur_then_noise, 1.0)),
    "rain": ((rain, 1.0), (rain_layers, 2.0)),
    "haze": ((haze, 1.0),),
    "low-light": ((low_light, 1.5), (low_light_camera, 1.5), (well_exposed, 1.0)),
    "enhancement": ((enhancement, 1.0),),
    "upsampling": ((downscale, 1.0),),
    "jpeg": ((jpeg, 1.0),),
}

#: Every degradation of each task (without weights).
TASK_DEGRADATIONS: dict[str, tuple[Degradation, ...]] = {t: tuple(f for f, _ in o) for t, o in TASK_OPTIONS.items()}

#: Degradations whose output is the clean photo (their training target is the input itself).
IDENTITY_DEGRADATIONS: frozenset = frozenset({well_exposed})

TASKS: tuple[str, ...] = tuple(TASK_OPTIONS)


def check_degradation_weights(weights: dict[str, dict[str, float]]) -> None:
    """Refuse a config that names a task or degradation that does not exist (a typo would silently do nothing)."""
    for task, by_name in weights.items():
        if task not in TASK_OPTIONS:
            raise ValueError(f"degradation_weights names unknown task {task!r}; known: {', '.join(TASKS)}")
        names = {f.__name__ for f, _ in TASK_OPTIONS[task]}
        unknown = set(by_name) - names
        if unknown:
            raise ValueError(f"degradation_weights[{task!r}] names unknown degradations {sorted(unknown)}; "
                             f"known: {', '.join(sorted(names))}")


def degrade(img: Array, task: str, rng: np.random.Generator,
            weights: dict[str, float] | None = None) -> Degraded:
    """Apply a random degradation of ``task`` (one of ``TASKS``), drawn by the weights of ``TASK_OPTIONS``.

    ``weights`` (degradation function name -> weight) replaces those weights for the
    names it lists: a training stage can replay the simple synthetic degradations an
    earlier stage learned, so the camera-like ones are added without forgetting them.

    A well-exposed (identity) input is only drawn for a photo that is bright enough
    (mean >= ``WELL_EXPOSED_MIN_MEAN``); a darker one gets the under-exposure instead.
    """
    try:
        options = TASK_OPTIONS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}") from None
    w = np.array([float((weights or {}).get(f.__name__, wt)) for f, wt in options], np.float64)
    fn = options[int(rng.choice(len(options), p=w / w.sum()))][0]
    if fn is well_exposed and float(img.mean()) < WELL_EXPOSED_MIN_MEAN:
        fn = low_light
    return fn(img, rng)
