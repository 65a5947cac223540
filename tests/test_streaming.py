"""The strip path (engine.model.streaming) computes the same network as the whole-tensor pass."""

import pytest
import torch

from engine.model.network import NAFBlock, build_network
from engine.model.streaming import strip_ranges

SMALL = {"width": 8, "enc_blks": [1, 2], "middle_blk_num": 1, "dec_blks": [1, 1], "txtdim": 16}


def _randomise_residual_scales(module: torch.nn.Module) -> None:
    """beta/gamma start at zero, which would hide a wrong branch: give them real values."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0, 0.5)


@pytest.mark.parametrize(("height", "width", "strip"), [(7, 5, 10), (19, 23, 23), (19, 23, 1), (64, 9, 10_000)])
def test_strips_cover_every_row_once(height, width, strip):
    rows = [r for r0, r1 in strip_ranges(height, width, strip) for r in range(r0, r1)]
    assert rows == list(range(height))


@pytest.mark.parametrize("strip_pixels", [1, 40, 97, 10_000])
def test_nafblock_in_strips_matches_whole(strip_pixels):
    torch.manual_seed(0)
    block = NAFBlock(6).eval()
    _randomise_residual_scales(block)
    x = torch.randn(2, 6, 13, 11).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = block(x.clone())
        got = block(x.clone(), strip_pixels)
    assert (got - expected).abs().max() < 1e-5
    assert (expected - x).abs().max() > 0.1  # the block did something


@pytest.mark.parametrize(("strip_pixels", "size"), [(16, (37, 29)), (300, (37, 29)), (50, (32, 32))])
def test_network_in_strips_matches_whole_and_leaves_input_alone(strip_pixels, size):
    torch.manual_seed(1)
    net = build_network(SMALL).eval()
    _randomise_residual_scales(net)
    image = torch.rand(1, 3, *size)
    keep = image.clone()
    text = torch.nn.functional.normalize(torch.randn(1, 16), dim=-1)
    with torch.no_grad():
        expected = net(image, text)
        got = net(image, text, strip_pixels)
    assert got.shape == image.shape
    assert (got - expected).abs().max() < 1e-5
    assert torch.equal(image, keep)  # in-place updates stay on the network's own buffers


def test_training_ignores_strips():
    net = build_network(SMALL).train()
    image = torch.rand(1, 3, 16, 16)
    out = net(image, torch.randn(1, 16), 32)
    out.mean().backward()  # would fail on in-place updates of tensors autograd needs
    assert net.intro.weight.grad is not None


def test_restorer_uses_strips_on_cpu(tiny_restorer):
    assert tiny_restorer.strip_pixels > 0


def test_default_budget_runs_1080p_whole_and_24mp_in_tiles(monkeypatch):
    """The #7 contract: exact whole-image 1080p with the 7D network, a 24 MP photo in tiles, in 2 GB."""
    from engine.model import pipeline
    from engine.model.network import INTENT_CLASSES, OFFICIAL_7D_CONFIG
    from engine.model.registry import ModelBundle

    monkeypatch.setattr(pipeline, "available_memory", lambda: 16 * 2**30)
    net = build_network(OFFICIAL_7D_CONFIG)
    head = {"fc1.weight": torch.zeros(256, 384), "fc1.bias": torch.zeros(256),
            "fc2.weight": torch.zeros(7, 256), "fc2.bias": torch.zeros(7)}
    bundle = ModelBundle("7d", OFFICIAL_7D_CONFIG, INTENT_CLASSES, "all-MiniLM-L6-v2", net.state_dict(), head)
    restorer = pipeline.Restorer(bundle, device="cpu")
    assert restorer.plan_tile(1080, 1920) is None
    tile = restorer.plan_tile(4000, 6000)
    assert tile is not None and restorer.estimate_bytes(tile, tile) + 2 * 4000 * 6000 * 12 <= 1.3e9
    assert pipeline.Restorer(bundle, device="cpu", strip_pixels=0).plan_tile(1080, 1920) is not None


@pytest.mark.parametrize("size", [(37, 29), (64, 48)])
def test_every_strip_reports_its_work_and_the_total_is_known_before(size):
    from engine.model import streaming

    torch.manual_seed(2)
    net = build_network(SMALL).eval()
    reported = []
    with torch.no_grad(), streaming.observe(reported.append):
        net(torch.rand(1, 3, *size), torch.randn(1, 16), 64)
    assert len(reported) > 20  # from the first strip on, not once per image
    assert sum(reported) == streaming.work_units(net, *size)
    with torch.no_grad():  # no observer: nothing is called, nothing breaks
        net(torch.rand(1, 3, *size), torch.randn(1, 16), 64)


def test_restorer_reports_progress_per_strip_and_cancels_between_strips(tiny_restorer, monkeypatch):
    import numpy as np

    from engine.jobs import Cancelled, CancelToken

    monkeypatch.setattr(tiny_restorer, "strip_pixels", 256)
    image = np.random.default_rng(0).random((96, 128, 3), dtype=np.float32)
    seen = []
    tiny_restorer.restore(image, "remove the noise", progress=lambda d, n: seen.append(d / n))
    assert len(seen) > 20 and seen == sorted(seen) and seen[-1] == 1.0

    token, calls = CancelToken(), []

    def cancel_at_a_third(done, total):
        calls.append(done)
        if done / total > 0.3:
            token.cancel()

    with pytest.raises(Cancelled):
        tiny_restorer.restore(image, "remove the noise", progress=cancel_at_a_third, cancel=token)
    assert calls[-1] / 1000 < 0.4  # stopped at the next strip, not at the end of the pass

    monkeypatch.setattr(tiny_restorer, "tile", 64)  # tiles: each tile's strips fill its share of the whole
    seen.clear()
    tiny_restorer.restore(image, "remove the noise", progress=lambda d, n: seen.append(d / n))
    assert len(seen) > 20 and seen == sorted(seen) and seen[-1] == 1.0
