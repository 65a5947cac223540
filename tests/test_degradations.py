"""The degradation module that training, evaluation and tests share: seeded, recorded, physically sane."""

import numpy as np
import pytest

from engine.training import degradations as D


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128] / 128.0
    base = np.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.3 * np.sin(6 * x)], -1)
    return np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1).astype(np.float32)


OPTIONS = [(task, fn) for task, fns in D.TASK_DEGRADATIONS.items() for fn in fns]


@pytest.mark.parametrize("task,fn", OPTIONS, ids=[f"{t}-{f.__name__}" for t, f in OPTIONS])
def test_every_degradation_is_seeded_recorded_and_in_range(clean, task, fn):
    a = fn(clean, np.random.default_rng(7))
    b = fn(clean, np.random.default_rng(7))
    assert a.task == task and a.params == b.params and a.params
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.shape == clean.shape and a.image.dtype == np.float32
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0
    if fn in D.IDENTITY_DEGRADATIONS:
        np.testing.assert_array_equal(a.image, clean)
    else:
        assert np.abs(a.image - clean).mean() > 1e-3, "a degradation must change the photo"


@pytest.mark.parametrize("task", D.TASKS)
def test_degrade_draws_every_option_of_a_task(clean, task):
    rng = np.random.default_rng(11)
    kinds = {repr(sorted((k, str(v)) for k, v in D.degrade(clean, task, rng).params.items()
                         if k in ("kind", "mixed", "factor")))
             for _ in range(60)}
    names = {fn.__name__ for fn in D.TASK_DEGRADATIONS[task]}
    assert len(kinds) >= min(len(names), 2) or len(names) == 1


def test_unknown_task_names_the_known_ones(clean):
    with pytest.raises(ValueError, match="known: noise"):
        D.degrade(clean, "sepia", np.random.default_rng(0))


def test_gaussian_noise_has_the_sigma_it_records():
    flat = np.full((256, 256, 3), 0.5, np.float32)
    d = D.gaussian_noise(flat, np.random.default_rng(1), sigma=25)
    assert d.params["sigma"] == 25
    assert abs((d.image - flat).std() * 255 - 25) < 0.5


def test_haze_follows_the_scattering_model(clean):
    d = D.haze(clean, np.random.default_rng(3), beta=1.5, airlight=0.85, extent=1.0)
    # Where the scene is black, I = A (1 - t): light everywhere, and t = exp(-beta d), d in [0.3, 1].
    black = D.haze(np.zeros_like(clean), np.random.default_rng(3), beta=1.5, airlight=0.85, extent=1.0).image
    t = 1 - black.mean(axis=2) / 0.85
    assert t.min() == pytest.approx(np.exp(-1.5), abs=0.04) and t.max() == pytest.approx(np.exp(-0.45), abs=0.04)
    assert d.image.std() < clean.std(), "haze flattens contrast"


def test_whole_photo_haze_spans_the_depth_range_but_a_window_may_not():
    rng = np.random.default_rng(5)
    whole = [D.smooth_field((128, 128), rng) for _ in range(20)]
    windows = [D.smooth_field((128, 128), rng, extent=8.0) for _ in range(200)]
    assert all(f.min() == 0.0 and f.max() == 1.0 for f in whole)
    spans = np.array([f.max() - f.min() for f in windows])
    assert spans.mean() < 0.5, "a window on an 8x larger scene sees part of its depth"
    means = np.array([f.mean() for f in windows])
    assert means.min() < 0.25 and means.max() > 0.75, "windows can be uniformly near or uniformly far"
    assert all(0.0 <= f.min() and f.max() <= 1.0 and f.dtype == np.float32 for f in windows)


def test_haze_extent_is_drawn_and_recorded_for_training(clean):
    extents = [D.haze(clean, np.random.default_rng(s)).params["extent"] for s in range(50)]
    assert 1.0 <= min(extents) and max(extents) <= 8.0 and max(extents) > 3.0


def test_downscale_and_jpeg_record_what_they_did(clean):
    assert D.downscale(clean, np.random.default_rng(0), factor=4).params == {"factor": 4}
    q10 = D.jpeg(clean, np.random.default_rng(0), quality=10)
    q60 = D.jpeg(clean, np.random.default_rng(0), quality=60)
    assert q10.params == {"quality": 10}
    assert np.abs(q10.image - clean).mean() > np.abs(q60.image - clean).mean()


# --- camera shake ------------------------------------------------------------------------------


def _residual_corr(res: np.ndarray, axis: int) -> float:
    a = res - res.mean()
    b = np.roll(a, 1, axis=axis)
    return float((a * b).mean() / a.var())


def test_shake_kernels_are_curved_subpixel_and_normalised():
    spreads, levels = [], []
    for seed in range(40):
        size = 7 + 2 * (seed % 18)
        k = D.shake_kernel(size, seed)
        assert k.shape == (size, size) and k.dtype == np.float32
        assert k.min() >= 0 and k.sum() == pytest.approx(1.0, abs=1e-5)
        ys, xs = np.nonzero(k > k.max() * 0.05)
        pts = np.stack([xs, ys], 1).astype(float)
        ev = np.linalg.eigvalsh(np.cov(pts.T, aweights=k[ys, xs]))
        spreads.append(ev[0] / max(ev[1], 1e-9))  # 0 for a straight line
        levels.append(len(np.unique(np.round(k[k > 0] / k.max(), 3))))
    assert np.median(spreads) > 0.05, "random trajectories bend; straight lines would give ~0"
    assert min(levels) > 5, "sub-pixel splatting gives graded weights, not a binary line"
    # the size is the blur's reach: centred on its centre of mass, the farthest point of the path touches the
    # box, so a 41 px kernel spans well over half of it (all of it only when the path is symmetric)
    spans = []
    for seed in range(20):
        ys, xs = np.nonzero(D.shake_kernel(41, seed))
        spans.append(max(ys.max() - ys.min(), xs.max() - xs.min()))
    assert min(spans) >= 21 and max(spans) >= 38


def test_camera_shake_is_rebuilt_from_its_record_and_adds_mild_noise(clean):
    d = D.camera_shake(clean, np.random.default_rng(4))
    p = d.params
    assert p["kind"] == "shake" and 7 <= p["size"] <= 41 and p["size"] % 2 == 1
    assert p["seed"] < D.HELD_OUT_SEED_BASE, "training kernels never use the held-out seeds"
    assert 0 <= p["noise"] <= 4
    k = D.recorded_shake_kernel(p)
    clean_blur = D.fft_blur(clean, k)
    res = d.image - clean_blur
    assert abs(res.std() * 255 - p["noise"]) < max(1.0, 0.5 * p["noise"])
    quiet = D.camera_shake(clean, np.random.default_rng(4), noise=0.0, size=p["size"], seed=p["seed"],
                           anxiety=p["anxiety"], centripetal=p["centripetal"], uneven=p["uneven"])
    np.testing.assert_allclose(quiet.image, np.clip(clean_blur, 0, 1), atol=1e-5)
    grad = lambda x: np.abs(np.diff(x, axis=1)).mean()  # noqa: E731
    assert grad(quiet.image) < 0.8 * grad(clean), "shake blurs"


def test_shake_kernels_sit_on_their_centre_of_mass_and_are_brighter_where_the_camera_paused():
    size = 31
    yy, xx = np.mgrid[:size, :size]
    for seed in range(12):
        for uneven in (0.0, 1.0):
            k = D.shake_kernel(size, seed, uneven=uneven)
            centre = ((k * yy).sum(), (k * xx).sum())
            # off-centre kernels shift the blurred photo by pixels no blind restorer can know
            assert np.allclose(centre, (size - 1) / 2, atol=0.15), (seed, uneven, centre)
    flat = [D.shake_kernel(size, s) for s in range(12)]
    paused = [D.shake_kernel(size, s, uneven=1.0) for s in range(12)]
    peak = lambda k: k.max() / k[k > k.max() * 0.05].mean()  # noqa: E731
    assert np.median([peak(k) for k in paused]) > 1.3 * np.median([peak(k) for k in flat])


def test_camera_shake_sizes_cover_7_to_41(clean):
    small = np.ascontiguousarray(clean[:48, :48])
    sizes = [D.camera_shake(small, np.random.default_rng(s)).params["size"] for s in range(120)]
    assert min(sizes) <= 9 and max(sizes) >= 39 and all(7 <= s <= 41 for s in sizes)


def test_fft_blur_matches_direct_convolution(clean):
    from scipy import ndimage

    k = D.shake_kernel(9, 1)
    direct = np.stack([ndimage.convolve(clean[..., c], k, mode="reflect") for c in range(3)], -1)
    # scipy's 'reflect' repeats the edge pixel, numpy's 'reflect' does not: compare away from the border
    np.testing.assert_allclose(D.fft_blur(clean, k)[8:-8, 8:-8], direct[8:-8, 8:-8], atol=1e-5)


def test_blur_then_noise_is_a_blur_task_with_noise(clean):
    d = D.blur_then_noise(clean, np.random.default_rng(2), noise=6.0)
    assert d.task == "blur" and d.params["mixed"] == "blur+noise" and d.params["noise"] == 6.0
    assert d.params["kind"] in ("defocus", "gaussian")


# --- rain ----------------------------------------------------------------------------------------


def test_rain_layers_vary_and_heavy_rain_is_heavier(clean):
    heavy = [D.rain_layers(clean, np.random.default_rng(s), heavy=True) for s in range(6)]
    light = [D.rain_layers(clean, np.random.default_rng(s), heavy=False) for s in range(6)]
    cover = lambda ds: np.mean([np.abs(d.image - clean).mean() for d in ds])  # noqa: E731
    assert cover(heavy) > 1.5 * cover(light)
    assert all(3 <= len(d.params["layers"]) <= 5 for d in heavy)
    assert all(1 <= len(d.params["layers"]) <= 3 for d in light)
    assert all(d.params["veil"] >= 0.05 for d in heavy) and all(d.params["veil"] <= 0.06 for d in light)
    layers = [layer for d in heavy for layer in d.params["layers"]]
    for key in ("width", "length", "opacity", "angle"):
        values = [layer[key] for layer in layers]
        assert np.std(values) > 0, f"layers vary in {key}"
    for d in heavy:  # angle jitter around one wind direction
        angles = [layer["angle"] for layer in d.params["layers"]]
        assert max(angles) - min(angles) <= 20


def test_rain_streaks_only_add_light_and_follow_the_fall_direction():
    grey = np.full((128, 128, 3), 0.3, np.float32)
    spec = {"density": 0.01, "length": 25, "width": 1.0, "angle": 90.0, "opacity": 0.8, "blur": 0.0}
    d = D.rain_layers(grey, np.random.default_rng(0), layers=[spec], veil=0.0, splashes=0.0)
    assert d.image.min() >= 0.3 - 1e-6, "streaks brighten, never darken"
    streak = d.image[..., 0] - 0.3
    # vertical streaks: strongly correlated along y, much less along x
    assert _residual_corr(streak, 0) > 0.8 > _residual_corr(streak, 1) + 0.2
    assert d.params["layers"] == [spec] and d.params["veil"] == 0.0 and d.params["splashes"] == 0.0


# --- camera noise, low light, mixtures -----------------------------------------------------------


def test_camera_noise_is_spatially_and_channel_correlated():
    grey = np.full((128, 128, 3), 0.5, np.float32)
    white = D.gaussian_noise(grey, np.random.default_rng(0), sigma=15).image - grey
    cam = D.camera_noise(grey, np.random.default_rng(0), sigma=2, photons=2000, demosaic=15, chroma=10,
                         quality=95)
    res = cam.image - grey
    assert abs(_residual_corr(white[..., 1], 1)) < 0.05
    assert _residual_corr(res[..., 1], 1) > 0.2, "demosaiced noise is correlated between neighbours"
    cc = np.corrcoef(res[..., 0].ravel(), res[..., 2].ravel())[0, 1]
    assert cc > 0.2, "part of the noise is shared by the channels"
    assert np.abs(res.reshape(-1, 3).mean(0)).max() < 1.5 / 255, "sensor noise shifts no colour"
    assert cam.params["quality"] == 95 and cam.task == "noise"


def test_noise_then_jpeg_is_a_noise_task(clean):
    d = D.noise_then_jpeg(clean, np.random.default_rng(1), quality=30)
    assert d.task == "noise" and d.params["mixed"] == "noise+jpeg" and d.params["quality"] == 30


def test_low_light_camera_is_dark_noisy_and_cast(clean):
    d = D.low_light_camera(clean, np.random.default_rng(3), exposure=0.1, cast=[1.25, 1.0, 0.7], quality=0)
    assert d.image.mean() < 0.25 * clean.mean()
    ratio = d.image.reshape(-1, 3).mean(0) / clean.reshape(-1, 3).mean(0)
    assert ratio[0] / ratio[1] > 1.1 and ratio[2] / ratio[1] < 0.85, "the colour cast it records"
    assert d.params["cast"] == pytest.approx([1.25, 1.0, 0.7])
    from scipy import ndimage

    smooth = ndimage.uniform_filter(d.image, (5, 5, 1))
    assert (d.image - smooth).std() > 1.0 / 255, "dark photos are noisy"


def test_well_exposed_inputs_have_an_identity_target_only_when_bright(clean):
    bright = np.clip(clean * 0.5 + 0.45, 0, 1).astype(np.float32)
    dark = (clean * 0.3).astype(np.float32)
    rng = np.random.default_rng(0)
    kinds = [D.degrade(bright, "low-light", rng).params.get("kind") for _ in range(200)]
    assert 0.1 < kinds.count("well-exposed") / 200 < 0.4
    assert all(D.degrade(dark, "low-light", rng).params.get("kind") != "well-exposed" for _ in range(100))

    from engine.training.data import PatchSampler

    photo = (np.clip(bright, 0, 1) * 255).astype(np.uint8)
    photo = np.tile(photo, (2, 2, 1))
    sampler = PatchSampler([photo], 64, seed=1, identity_fraction=0.0, margin=8,
                           task_weights={t: (1.0 if t == "low-light" else 0.0) for t in D.TASKS})
    pairs = [sampler.sample() for _ in range(60)]
    same = [np.array_equal(x, y) for x, y, _ in pairs]
    assert 0 < sum(same) < len(same), "some low-light pairs are well-exposed identities, most are dark"
    assert all(t == "low-light" for *_, t in pairs)


# --- up-sampling ------------------------------------------------------------------------------------


def test_upsampling_covers_x2_and_x4_bicubic_down_up(clean):
    from PIL import Image

    factors = {D.degrade(clean, "upsampling", np.random.default_rng(s)).params["factor"] for s in range(30)}
    assert factors == {2, 4}
    for f in (2, 4):
        d = D.downscale(clean, np.random.default_rng(0), factor=f)
        im = Image.fromarray((clean * 255 + 0.5).astype(np.uint8))
        small = im.resize((128 // f, 96 // f), Image.Resampling.BICUBIC, reducing_gap=None)
        back = np.asarray(small.resize((128, 96), Image.Resampling.BICUBIC), np.float32) / 255
        np.testing.assert_array_equal(d.image, back)
    x2 = np.abs(D.downscale(clean, np.random.default_rng(0), factor=2).image - clean).mean()
    x4 = np.abs(D.downscale(clean, np.random.default_rng(0), factor=4).image - clean).mean()
    assert x4 > x2


def test_rain_is_heavy_or_light_as_real_rain_is():
    """Heavy rain costs a photo about 13-19 dB (as Rain100H inputs), light rain much less."""
    from engine.training.metrics import psnr

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:160, 0:160] / 160.0
    photo = np.stack([0.3 + 0.4 * x, 0.35 + 0.3 * y, 0.4 + 0.2 * np.cos(5 * x)], -1).astype(np.float32)
    heavy = [psnr(D.rain_layers(photo, rng, heavy=True).image, photo) for _ in range(8)]
    light = [psnr(D.rain_layers(photo, rng, heavy=False).image, photo) for _ in range(8)]
    assert 12 < np.median(heavy) < 20
    assert np.median(light) > np.median(heavy) + 6


def test_degradation_weights_replace_the_default_draw(clean):
    """A stage can replay one degradation only (weight 0 for the others) or refuse a typo."""
    only_gaussian = {"gaussian_noise": 1.0, "poisson_gaussian_noise": 0.0, "camera_noise": 0.0,
                     "noise_then_jpeg": 0.0}
    rng = np.random.default_rng(3)
    kinds = {D.degrade(clean, "noise", rng, only_gaussian).params.get("kind") for _ in range(20)}
    reference = D.gaussian_noise(clean, np.random.default_rng(0)).params.get("kind")
    assert kinds == {reference}
    default = {D.degrade(clean, "noise", rng).params.get("kind") for _ in range(40)}
    assert len(default) > 1
    with pytest.raises(ValueError, match="camera_noise"):
        D.check_degradation_weights({"noise": {"camera_nose": 1.0}})
    with pytest.raises(ValueError, match="unknown task"):
        D.check_degradation_weights({"sepia": {}})


def test_unrelated_patches_are_damaged_by_the_configs_mixture(clean, monkeypatch):
    """The identity ("unrelated") path draws its already-damaged sources with the stage's degradation weights."""
    from engine.training import data

    seen = []
    real = data.degrade

    def spy(img, task, rng, weights=None):
        seen.append((task, weights))
        return real(img, task, rng, weights)

    monkeypatch.setattr(data, "degrade", spy)
    weights = {"noise": {"gaussian_noise": 1.0, "poisson_gaussian_noise": 0.0, "camera_noise": 0.0,
                         "noise_then_jpeg": 0.0}}
    photo = (np.clip(clean, 0, 1) * 255).astype(np.uint8)
    sampler = data.PatchSampler([photo], 32, seed=5, margin=4, identity_fraction=1.0, degradation_weights=weights)
    for _ in range(60):
        _, _, task = sampler.sample()
        assert task == "unrelated"
    noise = [w for t, w in seen if t == "noise"]
    assert noise and all(w == weights["noise"] for w in noise)
