"""Exact low-memory inference: NAFNet blocks evaluated in horizontal strips.

Everything in a NAFBlock is per pixel except two things: the depthwise 3x3
convolution (one row of context above and below) and the simplified channel
attention (a mean over the whole image). So a block can run strip by strip
over an image held once in memory, in two passes:

1. per strip (plus a one-row halo): norm1, conv1, depthwise conv2, SimpleGate,
   written into one gate buffer, while the channel sums for the attention
   accumulate;
2. per strip: attention scale, conv3, first residual, norm2, conv4, gate,
   conv5, second residual, written back over the block's input in place.

The result equals the whole-image pass up to float summation order (the mean
is summed strip by strip), unlike tiling, which changes the attention's mean
and the borders. Peak memory falls from the dozen full-size temporaries of a
whole-image block to about three (input, gate buffer, the decoder's skip),
and the strips stay cache-sized. These functions take the modules of
``engine.model.network`` duck-typed and only run under ``torch.no_grad``.

Progress and cancellation: :func:`observe` installs, for the calling thread,
a callback that every strip reports its work to (``channels**2 * pixels``, so
equal numbers take about equal time), and :func:`work_units` says how much a
whole network pass is. The callback may raise (a cancelled job) between two
strips; a front end then learns of progress from the first strip on and
stops within a strip, not within a whole image or tile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

_observer = threading.local()

#: Pixels per strip: large enough for efficient matmuls, small enough to stay in cache (measured).
DEFAULT_STRIP_PIXELS = 16 * 1024


def strip_ranges(height: int, width: int, strip_pixels: int) -> Iterator[tuple[int, int]]:
    """Row ranges ``[r0, r1)`` of about ``strip_pixels`` pixels each, covering ``height`` rows."""
    rows = max(1, strip_pixels // max(1, width))
    for r0 in range(0, height, rows):
        yield r0, min(height, r0 + rows)


@contextmanager
def observe(callback: Callable[[int], None]) -> Iterator[None]:
    """Call ``callback(units)`` after every strip this thread runs inside the block (it may raise)."""
    previous = getattr(_observer, "callback", None)
    _observer.callback = callback
    try:
        yield
    finally:
        _observer.callback = previous


def _done(channels: int, rows: int, width: int) -> None:
    callback = getattr(_observer, "callback", None)
    if callback is not None:
        callback(channels * channels * rows * width)


def work_units(net: nn.Module, height: int, width: int) -> int:
    """The units the strips of one pass of ``net`` (an ``InstructIR``) over HxW report in all."""
    pad = getattr(net, "padder_size", 1)
    h, w = -(-height // pad) * pad, -(-width // pad) * pad
    total = 0

    def blocks(modules, level: int) -> None:
        nonlocal total
        for module in modules:
            c = module.conv1.in_channels
            total += 2 * c * c * (h >> level) * (w >> level)  # two passes per block

    for level, (encoder, cond) in enumerate(zip(net.encoders, net.enc_cond)):
        blocks([*encoder, cond.block], level)
    levels = len(net.encoders)
    blocks(net.middle_blks, levels)
    for k, (decoder, cond) in enumerate(zip(net.decoders, net.dec_cond)):
        blocks([*decoder, cond.block], levels - 1 - k)
    return total


def nafblock_(block: nn.Module, x: torch.Tensor, strip_pixels: int) -> torch.Tensor:
    """Run a NAFBlock over ``x`` strip by strip, overwriting ``x`` with the block's output."""
    _, c, h, w = x.shape
    gated: torch.Tensor | None = None
    sums: torch.Tensor | None = None
    half = block.conv2.out_channels // 2
    for r0, r1 in strip_ranges(h, w, strip_pixels):
        a, b = max(r0 - 1, 0), min(r1 + 1, h)
        # The depthwise conv zero-pads the slab; rows of the halo are computed and dropped,
        # so only the image's true top and bottom see zero padding, as in the whole pass.
        t = block.conv2(block.conv1(block.norm1(x[:, :, a:b])))[:, :, r0 - a : r0 - a + r1 - r0]
        if gated is None:
            gated = torch.empty((x.shape[0], half, h, w), dtype=t.dtype, device=x.device,
                                memory_format=torch.channels_last)
            sums = torch.zeros((x.shape[0], half), dtype=torch.float64, device=x.device)
        g = gated[:, :, r0:r1]
        torch.mul(t[:, :half], t[:, half:], out=g)
        sums += g.sum(dim=(2, 3), dtype=torch.float64)
        del t
        _done(c, r1 - r0, w)
    pooled = (sums / (h * w)).to(gated.dtype)[:, :, None, None]
    scale = block.sca[1](pooled)  # sca = (AdaptiveAvgPool2d, Conv2d 1x1): the pool is the mean above
    for r0, r1 in strip_ranges(h, w, strip_pixels):
        xs = x[:, :, r0:r1]
        u = block.conv3(gated[:, :, r0:r1] * scale)
        y = torch.addcmul(xs, u, block.beta)
        del u
        z = block.conv5(block.sg(block.conv4(block.norm2(y))))
        xs.copy_(y.addcmul_(z, block.gamma))
        _done(c, r1 - r0, w)
    return x


def up_add_(up: nn.Module, x: torch.Tensor, skip: torch.Tensor, strip_pixels: int) -> torch.Tensor:
    """``skip += up(x)`` for a 1x1-conv + PixelShuffle(2) up-sampler, a strip of ``x`` at a time."""
    _, _, h, w = x.shape
    for r0, r1 in strip_ranges(h, w, strip_pixels):
        skip[:, :, 2 * r0 : 2 * r1].add_(up(x[:, :, r0:r1]))
    return skip
