"""What a wider network costs on this CPU: the shipped width against the accelerator config's, one run.

    python bench/width.py                     # shipped studio-small vs configs/studio_wide_accel.json
    python bench/width.py --threads 2 --size 768

Issue 19 asks to measure width 24 and decide by quality per CPU hour. Quality per hour needs the
cost per hour first: this prints, for both networks, parameters, fp16 size, convolution GFLOP per
pixel, the seconds of one inference pass and of one training step (batch 8 of 96 px patches,
forward, backward and AdamW), and the wide network's ratios. Passes alternate between the two
networks so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.speed import flops_per_pixel  # noqa: E402
from engine.model.network import build_network, count_parameters  # noqa: E402

SHIPPED = ROOT / "resources" / "models" / "studio-small" / "model_card.json"
WIDE = ROOT / "engine" / "training" / "configs" / "studio_wide_accel.json"


def _inference(net: torch.nn.Module, size: int) -> float:
    net.eval()
    x, t = torch.rand(1, 3, size, size), torch.randn(1, 256)
    start = time.perf_counter()
    with torch.inference_mode():
        net(x, t)
    return time.perf_counter() - start


def _train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, batch: int, patch: int) -> float:
    net.train()
    x, y, t = torch.rand(batch, 3, patch, patch), torch.rand(batch, 3, patch, patch), torch.randn(batch, 256)
    start = time.perf_counter()
    loss = (net(x, t) - y).abs().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=512, help="side of the inference image")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = {"shipped": json.loads(SHIPPED.read_text())["config"], "wide": json.loads(WIDE.read_text())["network"]}
    nets = {k: build_network(c) for k, c in configs.items()}  # timing only: the steps' updates do no harm
    opts = {k: torch.optim.AdamW(n.parameters(), lr=1e-4) for k, n in nets.items()}
    infer: dict[str, list[float]] = {k: [] for k in nets}
    step: dict[str, list[float]] = {k: [] for k in nets}
    for k in nets:  # warm-up
        _inference(nets[k], 128)
        _train_step(nets[k], opts[k], 2, 64)
    for _ in range(args.repeat):
        for k in nets:
            infer[k].append(_inference(nets[k], args.size))
            step[k].append(_train_step(nets[k], opts[k], 8, 96))
    rows = {}
    for k, c in configs.items():
        params = count_parameters(nets[k])
        rows[k] = {"width": c["width"], "enc_blks": c["enc_blks"], "parameters": params,
                   "fp16_mb": round(params * 2 / 1e6, 2), "gflop_per_pixel": round(flops_per_pixel(c) / 1e9, 5),
                   "inference_s": round(min(infer[k]), 3), "train_step_s": round(min(step[k]), 3)}
    ratios = {key: round(rows["wide"][key] / rows["shipped"][key], 2)
              for key in ("parameters", "gflop_per_pixel", "inference_s", "train_step_s")}
    print(f"{args.size}x{args.size} inference and batch-8 96 px training steps, {args.threads} thread(s), "
          f"best of {args.repeat}\n")
    print("| network | parameters | fp16 MB | GFLOP / px | inference s | train step s |")
    print("|---|---|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} (width {r['width']}, enc {r['enc_blks']}) | {r['parameters']:,} | {r['fp16_mb']} | "
              f"{r['gflop_per_pixel']} | {r['inference_s']} | {r['train_step_s']} |")
    print(f"\nwide / shipped: parameters x{ratios['parameters']}, FLOPs x{ratios['gflop_per_pixel']}, "
          f"inference x{ratios['inference_s']}, training step x{ratios['train_step_s']}")
    return {"rows": rows, "ratios": ratios}


if __name__ == "__main__":
    main()
