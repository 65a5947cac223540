"""The InstructIR network: a NAFNet U-Net with Instruction Condition Blocks.

Module and parameter names follow the published code exactly, so the official
checkpoints (``im_instructir-7d.pt`` / ``lm_instructir-7d.pt``) load with
``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.model import streaming

INTENT_CLASSES: tuple[str, ...] = (
    "noise",
    "blur",
    "rain",
    "haze",
    "low-light",
    "enhancement",
    "upsampling",
)

OFFICIAL_7D_CONFIG: dict = {
    "width": 32,
    "enc_blks": [2, 2, 4, 8],
    "middle_blk_num": 4,
    "dec_blks": [2, 2, 2, 2],
    "txtdim": 256,
}


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor, per pixel (eps 1e-6).

    Computed with ``F.layer_norm`` on a channels-last view: one fused kernel,
    exact up to float rounding against the per-pixel mean/variance formula.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    """NAFNet's activation: split channels in two halves and multiply them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """Nonlinear-activation-free block: norm, 1x1, depthwise 3x3, gate, SCA, FFN."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw = c * dw_expand
        ffn = c * ffn_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = SimpleGate()
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros((1, c, 1, 1)))
        self.gamma = nn.Parameter(torch.zeros((1, c, 1, 1)))

    def forward(self, inp: torch.Tensor, strip_pixels: int | None = None) -> torch.Tensor:
        """``strip_pixels`` (inference only): run in strips of that many pixels, in place over
        ``inp``, with a fraction of the memory (see ``engine.model.streaming``)."""
        if torch.is_grad_enabled():
            x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
            x = self.conv3(x * self.sca(x))
            y = inp + x * self.beta
            x = self.conv5(self.sg(self.conv4(self.norm2(y))))
            return y + x * self.gamma
        if strip_pixels:
            return streaming.nafblock_(self, inp, strip_pixels)
        # Inference: same maths, fused multiply-adds and in-place updates, so fewer
        # full-resolution temporaries are alive at once (peak memory and allocator traffic).
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x.mul_(self.sca(x)))
        y = torch.addcmul(inp, x, self.beta)
        del x
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y.addcmul_(x, self.gamma)


class ICB(nn.Module):
    """Instruction Condition Block: text-gated feature modulation plus a NAFBlock."""

    def __init__(self, feature_dim: int, text_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(text_dim, feature_dim)
        self.block = NAFBlock(feature_dim)
        self.beta = nn.Parameter(torch.zeros((1, feature_dim, 1, 1)))
        self.gamma = nn.Parameter(torch.zeros((1, feature_dim, 1, 1)))

    def forward(self, x: torch.Tensor, text_embedding: torch.Tensor,
                strip_pixels: int | None = None) -> torch.Tensor:
        gate = torch.sigmoid(self.fc(text_embedding))[:, :, None, None].to(x.dtype)
        if torch.is_grad_enabled():
            return self.block((x * self.gamma + self.beta) * gate) + x
        # (x*gamma + beta)*gate == x*(gamma*gate) + beta*gate: one fused pass over the features.
        f = torch.addcmul(self.beta * gate, x, self.gamma * gate)
        return self.block(f, strip_pixels).add_(x)


def _run_blocks(blocks: nn.Sequential, x: torch.Tensor, strip_pixels: int | None) -> torch.Tensor:
    for block in blocks:
        x = block(x, strip_pixels)
    return x


class InstructIR(nn.Module):
    """4-level NAFNet U-Net with an ICB after every encoder and decoder stage."""

    def __init__(
        self,
        width: int = 32,
        enc_blks: Sequence[int] = (2, 2, 4, 8),
        middle_blk_num: int = 4,
        dec_blks: Sequence[int] = (2, 2, 2, 2),
        txtdim: int = 256,
        img_channel: int = 3,
    ) -> None:
        super().__init__()
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.enc_cond = nn.ModuleList()
        self.dec_cond = nn.ModuleList()
        chan = width
        for num in enc_blks:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(num)]))
            self.enc_cond.append(ICB(chan, txtdim))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan) for _ in range(middle_blk_num)])
        for num in dec_blks:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(num)]))
            self.dec_cond.append(ICB(chan, txtdim))
        self.padder_size = 2 ** len(self.encoders)

    def forward(self, image: torch.Tensor, text_embedding: torch.Tensor,
                strip_pixels: int | None = None) -> torch.Tensor:
        """Restore ``image`` (Nx3xHxW). ``strip_pixels`` (inference only) selects the exact
        low-memory path: every block runs in strips, in place (``engine.model.streaming``)."""
        if torch.is_grad_enabled():
            strip_pixels = None
        _, _, h, w = image.shape
        inp = self.pad_to_multiple(image)
        x = self.intro(inp)
        skips = []
        for encoder, cond, down in zip(self.encoders, self.enc_cond, self.downs):
            x = cond(_run_blocks(encoder, x, strip_pixels), text_embedding, strip_pixels)
            skips.append(x)
            x = down(x)
        x = _run_blocks(self.middle_blks, x, strip_pixels)
        for decoder, up, cond in zip(self.decoders, self.ups, self.dec_cond):
            skip = skips.pop()  # drop each skip as soon as it is used
            if torch.is_grad_enabled():
                x = up(x) + skip
            elif strip_pixels:
                x = streaming.up_add_(up, x, skip, strip_pixels)  # the skip is not needed again
            else:
                x = up(x).add_(skip)
            del skip
            x = cond(_run_blocks(decoder, x, strip_pixels), text_embedding, strip_pixels)
        x = self.ending(x) + inp
        return x[:, :, :h, :w]

    def pad_to_multiple(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad bottom/right so every down-sampling halves an even size."""
        _, _, h, w = x.shape
        ph = (self.padder_size - h % self.padder_size) % self.padder_size
        pw = (self.padder_size - w % self.padder_size) % self.padder_size
        return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


class LMHead(nn.Module):
    """Projects a sentence embedding to the network's text space and classifies intent."""

    def __init__(self, embedding_dim: int = 384, hidden_dim: int = 256, num_classes: int = 7) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embedding_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, num_classes)

    def forward(self, sentence_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        text_embedding = F.normalize(self.fc1(sentence_embedding), dim=-1)
        return text_embedding, self.fc2(text_embedding)


def build_network(config: dict) -> InstructIR:
    """Build the image network from a config dict (``width``, ``enc_blks``, ...)."""
    return InstructIR(
        width=int(config["width"]),
        enc_blks=list(config["enc_blks"]),
        middle_blk_num=int(config["middle_blk_num"]),
        dec_blks=list(config["dec_blks"]),
        txtdim=int(config.get("txtdim", 256)),
    )


def build_lm_head(embedding_dim: int = 384, hidden_dim: int = 256, num_classes: int = 7) -> LMHead:
    """Build the projection + intent head."""
    return LMHead(embedding_dim, hidden_dim, num_classes)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
