"""Up-sampling quality: plain bicubic / Lanczos vs the same plus the network's refinement, x2 and x4.

    python bench/upscale_quality.py            # every 4th Kodak24 photo; --all for all 24

Input: each Kodak24 photo downscaled by the factor with bicubic; everything is
compared with the original at full size (PSNR, dB). This is how
``engine.edit.upsampling.RESAMPLE`` was chosen.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.model.pipeline import Restorer
from engine.training.metrics import psnr

KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "eval" / "kodak24"
RESAMPLERS = (("bicubic", Image.Resampling.BICUBIC), ("lanczos", Image.Resampling.LANCZOS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--model", default="studio-small")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    r = Restorer.from_pretrained(args.model, device="cpu")
    files = sorted(KODAK.glob("*.png"))[:: 1 if args.all else 4]
    res: dict[tuple, list[float]] = {}
    for f in files:
        im = Image.open(f).convert("RGB")
        w, h = im.width - im.width % 4, im.height - im.height % 4
        im = im.crop((0, 0, w, h))
        gt = np.asarray(im, np.float32) / 255
        for k in (2, 4):
            small = im.resize((w // k, h // k), Image.Resampling.BICUBIC)
            for name, rs in RESAMPLERS:
                up = np.asarray(small.resize((w, h), rs), np.float32) / 255
                out = r.restore(up, f"upscale it {k}x")
                res.setdefault((k, name, "plain"), []).append(psnr(up, gt))
                res.setdefault((k, name, "refined"), []).append(psnr(np.clip(out, 0, 1), gt))
    print(f"{len(files)} Kodak24 photos, {args.model}")
    for k in (2, 4):
        base = float(np.mean(res[(k, "bicubic", "plain")]))
        for name, _ in RESAMPLERS:
            for how in ("plain", "refined"):
                v = float(np.mean(res[(k, name, how)]))
                print(f"x{k} {name:>8} {how:>8}: {v:6.2f} dB ({v - base:+.2f} vs bicubic)")


if __name__ == "__main__":
    main()
