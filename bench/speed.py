"""Speed and memory of the engine against the network computed exactly as published.

    python bench/speed.py                       # 512^2, 1080p (both), 24 MP (ours only)
    python bench/speed.py --sizes 512x512,1920x1080 --modes default,exact,plain,fast

One process, one run. The baseline is the original formulation: NCHW tensors,
LayerNorm2d as a per-pixel mean/variance over channels, eager fp32, the whole
image at once, glibc's default allocator behaviour. It runs first, before the
engine tunes the allocator. It must reproduce ``../shared/reference`` exactly
like the engine does (checked here too). Ours is ``engine.model.pipeline.Restorer``
with the same weights on the same inputs: exact fp32 and, where the CPU
supports it, the bf16 fast mode. Reported: time ratio, achieved GFLOP/s
against this CPU's measured matmul peak, peak RSS, and max-abs / PSNR
difference between the outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.model import memory  # noqa: E402
from engine.model.network import INTENT_CLASSES, OFFICIAL_7D_CONFIG, LayerNorm2d, build_network  # noqa: E402
from engine.training.metrics import psnr  # noqa: E402

GOLDEN = ROOT.parent / "shared" / "reference" / "instructir_golden_small.safetensors"


class PublishedLayerNorm2d(LayerNorm2d):
    """The original formulation: explicit per-pixel mean and variance over channels (NCHW)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


def published_network(config: dict, state: dict) -> nn.Module:
    """The network as published: our modules with the original LayerNorm, NCHW, eval."""
    net = build_network(config)
    net.load_state_dict(state, strict=True)
    for m in net.modules():
        if isinstance(m, LayerNorm2d):
            m.__class__ = PublishedLayerNorm2d
    for m in net.modules():  # the original block: no in-place or fused inference path
        if type(m).__name__ == "NAFBlock":
            m.forward = _published_nafblock_forward.__get__(m)
        if type(m).__name__ == "ICB":
            m.forward = _published_icb_forward.__get__(m)
    return net.eval()


def _published_nafblock_forward(self, inp):
    x = self.norm1(inp)
    x = self.conv1(x)
    x = self.conv2(x)
    x = self.sg(x)
    x = x * self.sca(x)
    x = self.conv3(x)
    y = inp + x * self.beta
    x = self.conv4(self.norm2(y))
    x = self.sg(x)
    x = self.conv5(x)
    return y + x * self.gamma


def _published_icb_forward(self, x, text_embedding):
    gate = torch.sigmoid(self.fc(text_embedding)).unsqueeze(-1).unsqueeze(-1)
    f = x * self.gamma + self.beta
    f = f * gate
    f = self.block(f)
    return f + x


def published_forward(net: nn.Module, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Original InstructIR forward: encoders, middle, decoders with skips kept in a list to the end."""
    _, _, h, w = image.shape
    inp = net.pad_to_multiple(image)
    x = net.intro(inp)
    encs = []
    for encoder, enc_mod, down in zip(net.encoders, net.enc_cond, net.downs):
        x = encoder(x)
        x = enc_mod(x, text)
        encs.append(x)
        x = down(x)
    x = net.middle_blks(x)
    for decoder, up, enc_skip, dec_mod in zip(net.decoders, net.ups, encs[::-1], net.dec_cond):
        x = up(x)
        x = x + enc_skip
        x = decoder(x)
        x = dec_mod(x, text)
    x = net.ending(x)
    x = x + inp
    return x[:, :, :h, :w]


def random_state(config: dict, seed: int = 0) -> dict:
    """Random weights with the zero-initialised scales randomised too, so every path matters."""
    torch.manual_seed(seed)
    net = build_network(config)
    for name, p in net.named_parameters():
        if name.endswith(("beta", "gamma")):
            p.data.normal_(0, 0.05)
    return net.state_dict()


def flops_per_pixel(config: dict) -> float:
    """Multiply-adds x2 of every convolution, per input pixel (measured with hooks on a 256^2 pass)."""
    net = build_network(config).eval()
    total = [0]

    def hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        total[0] += 2 * out.numel() * (m.in_channels // m.groups) * k

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.rand(1, 3, 256, 256), torch.randn(1, 256))
    return total[0] / (256 * 256)


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeat: int = 6) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    t = time.perf_counter()
    for _ in range(repeat):
        torch.mm(a, b)
    return 2 * n**3 * repeat / (time.perf_counter() - t) / 1e9


def check_golden() -> str:
    if not GOLDEN.exists():
        return "reference not found (skipped)"
    from safetensors import safe_open
    from safetensors.torch import load_file

    t = load_file(str(GOLDEN))
    with safe_open(str(GOLDEN), "pt") as fh:
        config = json.loads(fh.metadata()["config"])
    state = {k[12:]: v for k, v in t.items() if k.startswith("image_model.")}
    base = published_network(config, state)
    with torch.no_grad():
        diff = (published_forward(base, t["input"], t["text_embedding"]) - t["output"]).abs().max().item()
    from engine.model.network import build_network as ours_build

    ours = ours_build(config).eval()
    ours.load_state_dict(state)
    with torch.inference_mode():
        diff2 = (ours(t["input"], t["text_embedding"]) - t["output"]).abs().max().item()
    return f"baseline max|diff| {diff:.1e}, engine max|diff| {diff2:.1e} vs the published golden output"


def timed(fn, repeat: int = 1):
    """Output, best wall time of ``repeat`` runs (a busy machine only ever adds time), worst peak RSS."""
    best, worst_rss = float("inf"), 0
    for _ in range(repeat):
        memory.reset_peak_rss()
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
        worst_rss = max(worst_rss, memory.peak_rss())
    return out, best, worst_rss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512x512,1920x1080,6000x4000")
    ap.add_argument("--baseline-max-pixels", type=int, default=2_100_000, help="skip the baseline above this")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-budget", type=float, help="GiB the engine may plan for (default: its own choice)")
    ap.add_argument("--modes", default="exact,fast", help="which of ours: exact (the engine's default: strips), "
                    "fast (bf16), plain (whole tensors, no strips), default (exact with glibc's allocator defaults)")
    ap.add_argument("--repeat", type=int, default=1, help="time each case this many times, keep the best")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]

    config = dict(OFFICIAL_7D_CONFIG)
    state = random_state(config)
    fpp = flops_per_pixel(config)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"InstructIR-7D config, random weights, {args.threads} threads")
    print(f"network: {fpp / 1e6:.3f} MFLOP per pixel; matmul peak {peak32:.0f} GFLOP/s fp32, {peak16:.0f} bf16")
    print(f"golden check: {check_golden()}")
    text = torch.nn.functional.normalize(torch.randn(1, 256, generator=torch.Generator().manual_seed(1)), dim=-1)
    rng = np.random.default_rng(0)
    images = {wh: rng.random((wh[1], wh[0], 3), dtype=np.float32) for wh in sizes}

    # 1) the baseline, before the engine touches the allocator
    base_net = published_network(config, state)
    with torch.no_grad():
        published_forward(base_net, torch.rand(1, 3, 64, 64), text)
    baseline: dict = {}
    for (w, h), img in images.items():
        if w * h > args.baseline_max_pixels:
            continue
        x = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()
        with torch.no_grad():
            out, secs, rss = timed(lambda x=x, n=base_net: published_forward(n, x, text).clamp(0, 1), args.repeat)
        baseline[(w, h)] = (out[0].permute(1, 2, 0).numpy().copy(), secs, rss)
        print(f"baseline {w}x{h}: {secs:.2f} s, peak RSS {rss / 2**30:.2f} GiB", flush=True)
    del base_net

    # 2) the engine: same weights, same inputs
    from engine.model.devices import cpu_supports_bf16
    from engine.model.pipeline import Restorer
    from engine.model.registry import ModelBundle

    head = {"fc1.weight": torch.zeros(256, 384), "fc1.bias": torch.zeros(256),
            "fc2.weight": torch.zeros(7, 256), "fc2.bias": torch.zeros(7)}
    bundle = ModelBundle("bench-7d", config, INTENT_CLASSES, "all-MiniLM-L6-v2", state, head)
    budget = args.memory_budget * 2**30 if args.memory_budget else None
    wanted = set(args.modes.split(","))
    modes = [("exact fp32, glibc defaults", lambda: Restorer(bundle, device="cpu", reuse_buffers=False,
                                                              memory_budget=budget))] * ("default" in wanted)
    modes += [("exact fp32", lambda: Restorer(bundle, device="cpu", memory_budget=budget))] * ("exact" in wanted)
    modes += [("exact fp32, no strips", lambda: Restorer(bundle, device="cpu", memory_budget=budget,
                                                         strip_pixels=0))] * ("plain" in wanted)
    if cpu_supports_bf16() and "fast" in wanted:
        modes.append(("fast bf16", lambda: Restorer(bundle, device="cpu", fast=True, memory_budget=budget)))
    rows = []
    print()
    print("| size | mode | baseline s | ours s | speed-up | ours GFLOP/s (% of peak) | baseline peak RSS | "
          "ours peak RSS | tiles | max abs diff | PSNR vs baseline |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, make in modes:
        restorer = make()
        restorer.restore(np.zeros((64, 64, 3), np.float32), text)  # warm path: model resident, kernels loaded
        for (w, h), img in images.items():
            out, secs, rss = timed(lambda img=img, r=restorer: r.restore(img, text), args.repeat)
            gflops = fpp * w * h / secs / 1e9
            peak = peak16 if "bf16" in name else peak32
            tile = restorer.plan_tile(h, w)
            row = {"size": f"{w}x{h}", "mode": name, "ours_s": round(secs, 2),
                   "ours_peak_rss_gib": round(rss / 2**30, 2),
                   "gflops": round(gflops, 1), "pct_of_peak": round(100 * gflops / peak, 1),
                   "tiles": f"{tile}px" if tile else "whole"}
            if (w, h) in baseline:
                ref, bsecs, brss = baseline[(w, h)]
                row |= {"baseline_s": round(bsecs, 2), "speedup": round(bsecs / secs, 2),
                        "baseline_peak_rss_gib": round(brss / 2**30, 2),
                        "max_abs_diff": float(np.abs(out - ref).max()), "psnr_db": round(psnr(out, ref), 1)}
            rows.append(row)
            print(f"| {row['size']} | {name} | {row.get('baseline_s', '-')} | {secs:.2f} | "
                  f"{str(row.get('speedup', '-')) + 'x' if 'speedup' in row else '-'} | {gflops:.0f} "
                  f"({row['pct_of_peak']:.0f}%) | {row.get('baseline_peak_rss_gib', '-')} GiB | "
                  f"{rss / 2**30:.2f} GiB | {row['tiles']} | "
                  f"{format(row['max_abs_diff'], '.1e') if 'max_abs_diff' in row else '-'} | "
                  f"{row.get('psnr_db', '-')} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"flops_per_pixel": fpp, "peak_fp32": peak32, "peak_bf16": peak16,
                                         "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
