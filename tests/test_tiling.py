import numpy as np
import pytest
import torch

from engine.jobs import Cancelled, CancelToken
from engine.model.tiling import run_tiled, spans, tile_grid
from engine.training.metrics import psnr


@pytest.mark.parametrize("length, tile, overlap", [(100, 32, 8), (64, 64, 8), (65, 32, 16), (10, 32, 8),
                                                    (1080, 864, 48), (6000, 800, 48), (4000, 1344, 64)])
def test_spans_cover_with_overlap_and_little_waste(length, tile, overlap):
    s = spans(length, tile, overlap)
    assert s[0][0] == 0 and s[-1][1] == length
    for (_, a1), (b0, _) in zip(s, s[1:]):
        assert b0 <= a1 - overlap
    assert all(b - a <= max(tile, 16) for a, b in s)
    covered = sum(b - a for a, b in s)
    assert covered <= length + len(s) * (overlap + 16)  # no tile is mostly a repeat of its neighbour


def test_pixelwise_function_is_reproduced_exactly():
    x = torch.rand(1, 3, 70, 90)
    calls = []
    out = run_tiled(lambda t: t * 2, x, tile=32, overlap=8, progress=lambda d, n: calls.append((d, n)))
    assert torch.allclose(out, x * 2, atol=1e-6)
    assert calls[-1] == (len(tile_grid(70, 90, 32, 8)),) * 2


@pytest.mark.parametrize("h, w, tile, overlap", [(70, 90, 32, 8), (200, 50, 48, 16), (31, 31, 32, 8)])
def test_rows_handed_to_a_sink_are_the_blended_result_in_order_once(h, w, tile, overlap):
    """A position-dependent fn (tiles disagree) so the blend weights matter; the sink sees every row once."""
    x = torch.rand(1, 3, h, w)
    fn = lambda t: t * 2 + t.mean()  # noqa: E731  (depends on the tile: overlaps blend different values)
    whole = run_tiled(fn, x, tile=tile, overlap=overlap)
    got, ranges = torch.full_like(whole, float("nan")), []

    def sink(y0, y1, rows):
        ranges.append((y0, y1))
        got[:, :, y0:y1] = rows

    assert run_tiled(fn, x, tile=tile, overlap=overlap, sink=sink) is None
    assert ranges[0][0] == 0 and ranges[-1][1] == h
    assert all(a1 == b0 for (_, a1), (b0, _) in zip(ranges, ranges[1:]))
    assert torch.allclose(got, whole, atol=1e-6)


def test_cancel_between_tiles():
    token = CancelToken()

    def fn(t):
        token.cancel()
        return t

    with pytest.raises(Cancelled):
        run_tiled(fn, torch.rand(1, 3, 64, 64), tile=32, overlap=8, cancel=token)


def test_tiled_vs_whole_with_the_bundled_model():
    from engine.model.pipeline import Restorer
    from engine.model.registry import DEFAULT_MODEL, ModelNotFoundError

    try:
        whole = Restorer.from_pretrained(DEFAULT_MODEL, device="cpu")
    except ModelNotFoundError:
        pytest.skip("bundled model not present")
    from engine.training.data import package_photos
    from engine.training.degradations import gaussian_noise

    img = package_photos(512)[1][:320, :448].astype(np.float32) / 255
    noisy = gaussian_noise(img, np.random.default_rng(0), sigma=25).image
    a = whole.restore(noisy, "remove the noise")
    tiled = Restorer(whole.bundle, device="cpu", tile=192, overlap=48)
    b = tiled.restore(noisy, "remove the noise")
    assert psnr(a, b) >= 45


def test_restorer_tiles_when_over_budget(tiny_restorer, photo):
    from engine.model.pipeline import Restorer

    small_budget = Restorer(tiny_restorer.bundle, device="cpu", memory_budget=tiny_restorer.estimate_bytes(48, 48))
    assert small_budget.plan_tile(480, 640) is not None
    assert tiny_restorer.plan_tile(48, 64) is None
    seen = []
    out = small_budget.restore(np.tile(photo, (6, 6, 1)), "remove the noise", progress=lambda d, n: seen.append(n))
    assert out.shape == (288, 384, 3) and seen[-1] > 1
