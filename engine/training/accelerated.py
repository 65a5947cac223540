"""One prepared training run for an accelerator: CUDA when there is one, bf16, a wider network, a fixed
time budget, and a checkpoint (plus an exported model folder) at the end. Works on CPU too (slowly).

    python -m engine.training.accelerated --minutes 50 --out runs/accel
    python -m engine.training.accelerated --minutes 2 --out runs/accel-smoke --steps 20   # a CPU smoke run

Defaults: ``configs/studio_wide_accel.json`` (width 24, blocks [1,1,2,2], 4.8 M parameters: ~9.7 MB
in fp16, inside the 10 MB bundle limit; batch 32 of 128 px, global tasks at 256 px, 12 data workers).
The cosine schedule is stretched to the steps the budget allows: after a short timing of the first
steps the run's total steps are set so the learning rate reaches its minimum as the time runs out.
Resumes from ``<out>/last.pt`` like ``engine.training.train`` (then the schedule is kept). Without an
accelerator it uses the CPU with the config's threads and fewer workers.

Prints, and writes to ``<out>/result.json``: the checkpoint, the exported folder, steps and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from engine.training import export, train
from engine.training.config import load_config

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "studio_wide_accel.json"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, required=True, help="training time budget")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--width", type=int, help="override the network width")
    ap.add_argument("--steps", type=int, help="fix the total steps instead of fitting them to the budget")
    ap.add_argument("--init", type=Path, help="start from a model folder of the same architecture")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    config = load_config(args.config)
    tc = config["train"]
    if args.width:
        config["network"]["width"] = args.width
    if not cuda:  # a CPU: the workers would only compete with the network for the cores
        tc["data_workers"] = min(int(tc.get("data_workers", 0)), max(0, (os.cpu_count() or 1) - 1), 2)
        tc["threads"] = min(int(tc.get("threads", 1)), os.cpu_count() or 1)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)
    budget = args.minutes * 60
    t0 = time.time()
    resuming = (args.out / "last.pt").exists()
    if args.steps:
        tc["steps"] = args.steps
    elif not resuming:  # time a few steps, then fit the schedule to the budget
        probe = args.out / "probe"
        probe_cfg = json.loads(json.dumps(config))
        probe_cfg["train"] |= {"steps": 12, "log_every": 12, "checkpoint_every": 10**9, "snapshot_every": 0}
        (args.out / "probe.json").write_text(json.dumps(probe_cfg))
        t = time.time()
        train.main(["--config", str(args.out / "probe.json"), "--out", str(probe), "--device", args.device])
        per_step = (time.time() - t) / 12  # includes start-up: an over-estimate, so the schedule ends early
        tc["steps"] = max(50, int((budget - (time.time() - t0)) / per_step))
        for f in probe.iterdir():
            f.unlink()
        probe.rmdir()
        print(f"~{per_step:.3f} s/step: schedule of {tc['steps']} steps", flush=True)
    cfg_path = args.out / "run_config.json"
    cfg_path.write_text(json.dumps(config, indent=2))
    left = budget - (time.time() - t0)
    run = ["--config", str(cfg_path), "--out", str(args.out), "--device", args.device,
           "--time-budget", str(max(1.0, left))]
    if args.init:
        run += ["--init", str(args.init)]
    train.main(run)
    folder = args.out / "model"
    export.main([str(args.out / "last.pt"), str(folder), "--half", "--config-file", str(args.config)])
    ckpt = torch.load(args.out / "last.pt", map_location="cpu", weights_only=False)
    result = {"checkpoint": str(args.out / "last.pt"), "model": str(folder), "steps": ckpt["step"],
              "train_seconds": round(ckpt["elapsed"]), "device": "cuda" if cuda else "cpu",
              "wall_seconds": round(time.time() - t0)}
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
