"""Which order to run two restoration steps in when the user gives none (docs/understanding.md).

    python bench/step_order.py                              # 4 Kodak24 photos, 256 px crops, bundled model
    python bench/step_order.py --images 6 --crop 256 --json order.json

For each common pair of problems (A, B): every photo is degraded with A then B
and with B then A (fixed, moderate parameters from engine.training.degradations),
and each degraded photo is restored both ways, fix-A-then-fix-B and
fix-B-then-fix-A, with a plain instruction per problem. Reported: mean PSNR of
each restoration order over photos and both degradation orders; the better one
is the planner's default (engine.edit.planning.DEFAULT_ORDER).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KODAK = ROOT.parent / "shared" / "datasets" / "eval" / "kodak24"

PAIRS = (("noise", "low-light"), ("haze", "blur"), ("jpeg", "upsampling"), ("noise", "upsampling"),
         ("rain", "low-light"))
INSTRUCTIONS = {
    "noise": "remove the noise", "low-light": "brighten the photo, it is too dark", "haze": "remove the haze",
    "blur": "sharpen the blurry photo", "jpeg": "remove the jpeg artifacts", "upsampling": "upscale the image",
    "rain": "remove the rain streaks",
}


def degraders():
    from engine.training import degradations as d

    return {
        "noise": lambda x, r: d.gaussian_noise(x, r, sigma=25).image,
        "low-light": lambda x, r: d.low_light(x, r, exposure=0.2, gamma=1.2, photons=1000).image,
        "haze": lambda x, r: d.haze(x, r, beta=1.2, airlight=0.85, extent=1.0).image,
        "blur": lambda x, r: d.gaussian_blur(x, r, sigma=1.5).image,
        "jpeg": lambda x, r: d.jpeg(x, r, quality=30).image,
        "upsampling": lambda x, r: d.downscale(x, r, factor=2).image,
        "rain": lambda x, r: d.rain(x, r, density=0.01, length=20, angle=95, intensity=0.7).image,
    }


def crops(n: int, side: int) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for path in sorted(KODAK.glob("*.png"))[:n]:
        img = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
        h, w = img.shape[:2]
        y, x = (h - side) // 2, (w - side) // 2
        out.append(np.ascontiguousarray(img[y:y + side, x:x + side]))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="studio-small")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    from engine.model.pipeline import Restorer
    from engine.training.metrics import psnr

    model = Restorer.from_pretrained(args.model, device="cpu")
    deg = degraders()
    photos = crops(args.images, args.crop)
    results = {}
    t0 = time.time()
    for a, b in PAIRS:
        scores = {f"{a} then {b}": [], f"{b} then {a}": [], "degraded": []}
        for i, clean in enumerate(photos):
            for first, second in ((a, b), (b, a)):
                rng = np.random.default_rng(1000 + i)
                bad = deg[second](deg[first](clean, rng), rng)
                scores["degraded"].append(psnr(bad, clean))
                for x, y in ((a, b), (b, a)):
                    out = model.restore(model.restore(bad, INSTRUCTIONS[x]), INSTRUCTIONS[y])
                    scores[f"{x} then {y}"].append(psnr(np.clip(out, 0, 1), clean))
        mean = {k: float(np.mean(v)) for k, v in scores.items()}
        best = max((k for k in mean if k != "degraded"), key=mean.get)
        results[f"{a} + {b}"] = {"psnr": mean, "better": best}
        print(f"{a} + {b}: degraded {mean['degraded']:.2f} dB; "
              + "; ".join(f"{k} {v:.2f} dB" for k, v in mean.items() if k != "degraded")
              + f" -> {best} ({time.time() - t0:.0f} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
