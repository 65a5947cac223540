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
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

#: Pixels per strip: large enough for efficient matmuls, small enough to stay in cache (measured).
DEFAULT_STRIP_PIXELS = 16 * 1024


def strip_ranges(height: int, width: int, strip_pixels: int) -> Iterator[tuple[int, int]]:
    """Row ranges ``[r0, r1)`` of about ``strip_pixels`` pixels each, covering ``height`` rows."""
    rows = max(1, strip_pixels // max(1, width))
    for r0 in range(0, height, rows):
        yield r0, min(height, r0 + rows)


def nafblock_(block: nn.Module, x: torch.Tensor, strip_pixels: int) -> torch.Tensor:
    """Run a NAFBlock over ``x`` strip by strip, overwriting ``x`` with the block's output."""
    _, _, h, w = x.shape
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
    pooled = (sums / (h * w)).to(gated.dtype)[:, :, None, None]
    scale = block.sca[1](pooled)  # sca = (AdaptiveAvgPool2d, Conv2d 1x1): the pool is the mean above
    for r0, r1 in strip_ranges(h, w, strip_pixels):
        xs = x[:, :, r0:r1]
        u = block.conv3(gated[:, :, r0:r1] * scale)
        y = torch.addcmul(xs, u, block.beta)
        del u
        z = block.conv5(block.sg(block.conv4(block.norm2(y))))
        xs.copy_(y.addcmul_(z, block.gamma))
    return x


def up_add_(up: nn.Module, x: torch.Tensor, skip: torch.Tensor, strip_pixels: int) -> torch.Tensor:
    """``skip += up(x)`` for a 1x1-conv + PixelShuffle(2) up-sampler, a strip of ``x`` at a time."""
    _, _, h, w = x.shape
    for r0, r1 in strip_ranges(h, w, strip_pixels):
        skip[:, :, 2 * r0 : 2 * r1].add_(up(x[:, :, r0:r1]))
    return skip
