import numpy as np
import pytest

from engine.edit.upsampling import (
    DEFAULT_FACTOR,
    Enlargement,
    ResultTooLargeError,
    check_result_size,
    parse_enlargement,
    resample,
)


@pytest.mark.parametrize("text, expected", [
    ("make this image bigger", Enlargement(DEFAULT_FACTOR)),
    ("enlarge it x3 please", Enlargement(3.0)),
    ("super-resolve by a factor of 4", Enlargement(4.0)),
    ("I need it three times larger for the poster", Enlargement(3.0)),
    ("blow it up to 250%", Enlargement(2.5)),
    ("resize up to 2400 px wide", Enlargement(width=2400)),
    ("it should be 1800 pixels tall", Enlargement(height=1800)),
    ("upscale to 1920x1080", Enlargement(width=1920, height=1080)),
    ("quadruple the resolution", Enlargement(4.0)),
    ("enlarge it 1.5x", Enlargement(1.5)),
    ("increase resolution 6-fold", Enlargement(6.0)),
    ("upscale by 50%", Enlargement(DEFAULT_FACTOR)),  # a degree, not a size
])
def test_sizes_are_read_from_the_instruction(text, expected):
    assert parse_enlargement(text) == expected


def test_target_sizes_follow_the_input():
    assert Enlargement(2.0).target_size(300, 400) == (600, 800)
    assert Enlargement(width=1000).target_size(300, 400) == (750, 1000)
    assert Enlargement(height=900).target_size(300, 400) == (900, 1200)
    assert Enlargement.from_params({}).target_size(10, 10) == (20, 20)
    assert Enlargement.from_params(Enlargement(width=50).to_params()) == Enlargement(width=50)


def test_limit_message_states_the_size():
    check_result_size(1000, 1000, limit=1_000_000)
    with pytest.raises(ResultTooLargeError, match=r"16000 x 12000 px would make a 192 MP photo.*limit of 100 MP"):
        check_result_size(12000, 16000, limit=100_000_000)


def test_resample_is_float_exact_size_and_in_range():
    rng = np.random.default_rng(0)
    img = rng.random((31, 17, 3), dtype=np.float32)
    out = resample(img, (62, 34))
    assert out.shape == (62, 34, 3) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    flat = np.full((8, 8, 3), 0.3, np.float32)
    assert np.allclose(resample(flat, (32, 32)), 0.3, atol=1e-5)
    assert resample(img, img.shape[:2]) is img
