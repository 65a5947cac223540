import numpy as np

from engine.model.exposure import BRIGHT_FLOOR, brightening_share, darkness, temper


def test_darkness_tells_dark_from_well_exposed():
    rng = np.random.default_rng(0)
    mid = np.clip(rng.normal(0.55, 0.2, (120, 160, 3)), 0, 1).astype(np.float32)
    assert darkness(mid) == 0 and brightening_share(mid) == BRIGHT_FLOOR
    night = (mid * 0.25).astype(np.float32)
    assert darkness(night) == 1 and brightening_share(night) == 1
    dim = (mid * 0.6).astype(np.float32)
    assert 0 < darkness(dim) < 1


def test_temper_keeps_a_share_of_the_correction_in_place():
    rng = np.random.default_rng(1)
    mid = np.clip(rng.normal(0.55, 0.2, (300, 40, 3)), 0, 1).astype(np.float32)
    lifted = np.clip(mid * 1.8, 0, 1)
    out = temper(mid, lifted.copy())
    np.testing.assert_allclose(out, mid + BRIGHT_FLOOR * (lifted - mid), atol=1e-6)
    night = (mid * 0.2).astype(np.float32)
    lifted = night * 4
    assert temper(night, lifted) is lifted and np.array_equal(lifted, night * 4)
