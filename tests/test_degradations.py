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


@pytest.mark.parametrize("task", D.TASKS)
def test_every_task_is_seeded_recorded_and_in_range(clean, task):
    a = D.degrade(clean, task, np.random.default_rng(7))
    b = D.degrade(clean, task, np.random.default_rng(7))
    assert a.task == task and a.params == b.params and a.params
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.shape == clean.shape and a.image.dtype == np.float32
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0
    assert np.abs(a.image - clean).mean() > 1e-3, "a degradation must change the photo"


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
