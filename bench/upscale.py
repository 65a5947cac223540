"""Up-scaling a big photo end to end: time and peak memory of ``instructir restore ... "upscale it 2x"``.

    python bench/upscale.py                 # a 12 MP photo, 2x -> 48 MP, on the CPU
    python bench/upscale.py --mp 3 --factor 4 --threads 2 --json

Both commands run as separate processes, so each peak resident size is the
whole process (torch, the model, the text encoder, every image copy): the
target is the CLI's 2 GB budget. The baseline is a plain Pillow bicubic resize
of the same file in its own process, so the ratio says what the refinement
costs on top of reading, resizing and writing the photo.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
KODAK = ROOT.parent / "shared" / "datasets" / "eval" / "kodak24"
BUDGET_BYTES = 2 * 2**30

_BASELINE = """
import sys
from PIL import Image
im = Image.open(sys.argv[1]); im.load()
f = float(sys.argv[3])
im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.BICUBIC).save(sys.argv[2])
"""


def make_photo(path: Path, megapixels: float) -> tuple[int, int]:
    """A real photo (Kodak24) enlarged to about ``megapixels``, with a little noise so it is not smooth."""
    src = sorted(KODAK.glob("*.png"))
    im = Image.open(src[0]).convert("RGB") if src else Image.new("RGB", (768, 512), (120, 140, 160))
    scale = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
    arr = np.asarray(im, dtype=np.float32)
    arr += np.random.default_rng(0).normal(0, 3, arr.shape).astype(np.float32)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return im.width, im.height


def run(cmd: list[str], env: dict) -> tuple[float, int]:
    """(seconds, peak RSS bytes) of one child process; fails loudly if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{cmd[:4]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest of all children so far: run the bigger one last.
    return seconds, max(peak, before) * 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mp", type=float, default=12.0, help="megapixels of the input photo")
    ap.add_argument("--factor", type=int, default=2, choices=[2, 3, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "photo.png"
        w, h = make_photo(src, args.mp)
        base_s, base_rss = run([sys.executable, "-c", _BASELINE, str(src), str(Path(tmp) / "plain.png"),
                                str(args.factor)], env)
        ours_s, ours_rss = run([sys.executable, "-m", "engine.cli", "restore", str(src),
                                f"upscale it {args.factor}x", "-o", str(Path(tmp) / "ours.png"), "--device", "cpu"],
                               env)
        out = Image.open(Path(tmp) / "ours.png")
        result = {
            "input": f"{w}x{h}", "output": f"{out.width}x{out.height}", "threads": args.threads,
            "ours_s": round(ours_s, 1), "bicubic_s": round(base_s, 1), "time_ratio": round(ours_s / base_s, 1),
            "ours_peak_gb": round(ours_rss / 2**30, 2), "bicubic_peak_gb": round(base_rss / 2**30, 2),
            "within_2gb_budget": ours_rss <= BUDGET_BYTES,
        }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>18}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
