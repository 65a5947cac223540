"""Train a SPIRE adapter on the parameterised degradation pipeline.

    python -m engine.spire.train --base stable-diffusion-v1-5/stable-diffusion-v1-5 --data DATA --out runs/spire
    python -m engine.spire.train --tiny --out /tmp/spire-smoke --steps 3      # tiny random base, CPU, seconds

``DATA`` is a folder of clean photos (recursively), captioned by
``captions.json`` / ``captions.jsonl`` or a ``NAME.txt`` beside each image
(missing captions are fine: they train the semantic-agnostic mode). The base
UNet, VAE and text encoder stay frozen; the ControlNet copy and the fusion
layers learn the usual diffusion loss (noise or v, as the base predicts) on the
clean image's latent, conditioned on the degraded image and its prompt.

Writes ``<out>/adapter/`` (the folder ``SpirePipeline`` loads), ``<out>/state.pt``
(optimizer and step, for resuming) and ``<out>/train.log`` (JSON lines), and
resumes from them when restarted. SIGTERM/SIGINT save before exiting. See
docs/spire.md for the real run (GPU, data, hours).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.io.atomic import atomic_path
from engine.model.devices import choose_device
from engine.spire.data import SpireDataset, collate
from engine.spire.model import SpireAdapter, SpireDenoiser
from engine.spire.pipeline import encode_prompts, load_base

ADAPTER_DIR = "adapter"
STATE_FILE = "state.pt"
LOG_FILE = "train.log"
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m engine.spire.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="Stable Diffusion 1.x/2.x folder or hub id (the frozen base model)")
    ap.add_argument("--data", type=Path, help="folder of clean training photos (+ captions)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="smoke run: a tiny random base and generated photos in --out")
    ap.add_argument("--size", type=int, default=512, help="training crop size (pixels)")
    ap.add_argument("--batch", type=int, default=4, help="images per micro-batch")
    ap.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    ap.add_argument("--steps", type=int, default=100_000, help="optimizer steps in all")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=500, help="linear learning-rate warm-up steps")
    ap.add_argument("--caption-dropout", type=float, default=0.3, help="fraction of empty semantic prompts")
    ap.add_argument("--blind-prob", type=float, default=0.2, help="fraction of 'Remove all degradation' pairs")
    ap.add_argument("--precision", choices=sorted(PRECISIONS), default=None,
                    help="frozen-model precision and autocast (default: fp16 on CUDA, fp32 elsewhere)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (less memory, ~25%% slower)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--save-every", type=int, default=1000)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.tiny and (args.base is None or args.data is None):
        ap.error("--base and --data are required (or --tiny for a smoke run)")
    return args


def make_tiny_run(out: Path, size: int, count: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """A tiny random base model and ``count`` generated captioned photos under ``out``."""
    from engine.spire.tiny import save_tiny_base

    base, data = out / "tiny-base", out / "tiny-data"
    if not (base / "unet").is_dir():
        save_tiny_base(base, seed)
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(count):
        if (data / f"{i}.png").exists():
            continue
        a, b, c = rng.uniform(0.5, 6, 3)
        img = np.stack([x, y, 0.5 + 0.5 * np.sin(a * x * 6 + b * y * 6 + c)], -1)
        img[int(size * 0.3):int(size * 0.6), int(size * 0.2):int(size * 0.7)] = rng.random(3)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(f"a test pattern number {i}", encoding="utf-8")
    return base, data


def save_adapter(adapter: SpireAdapter, out: Path, card: dict) -> Path:
    """Write the adapter beside the old one, then swap, so a crash never leaves a half-written adapter."""
    final, new, old = out / ADAPTER_DIR, out / (ADAPTER_DIR + ".new"), out / (ADAPTER_DIR + ".old")
    shutil.rmtree(new, ignore_errors=True)
    adapter.save_pretrained(new, card=card)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> dict:
    """Train; returns the last log record (used by the tests)."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        args.base, args.data = (str(p) for p in make_tiny_run(args.out, args.size, seed=args.seed))
    torch.manual_seed(args.seed)
    choice = choose_device(args.device)
    dev = choice.device
    wdtype = PRECISIONS[args.precision] if args.precision else choice.dtype
    autocast = wdtype != torch.float32

    base = load_base(args.base, wdtype)
    unet, vae, text_encoder, tokenizer = base["unet"], base["vae"], base["text_encoder"], base["tokenizer"]
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(base["scheduler"].config)
    for m in (unet, vae, text_encoder):
        m.to(dev).eval().requires_grad_(False)
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    multiple = vae_factor * 2 ** (len(unet.config.block_out_channels) - 1)
    if args.size % multiple:
        raise SystemExit(f"--size must be a multiple of {multiple} for this base model")

    state_path, adapter_path = args.out / STATE_FILE, args.out / ADAPTER_DIR
    resume = state_path.is_file() and adapter_path.is_dir()
    if resume:
        adapter = SpireAdapter.from_pretrained(adapter_path)
    else:
        adapter = SpireAdapter.from_unet(unet, vae_scale_factor=vae_factor, base_model=str(args.base))
    adapter.to(dev, torch.float32).train()
    if args.checkpointing:
        unet.enable_gradient_checkpointing()
        adapter.controlnet.enable_gradient_checkpointing()
    denoiser = SpireDenoiser(unet, adapter)
    params = adapter.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    scaler = torch.amp.GradScaler(dev.type, enabled=wdtype == torch.float16)
    step, epoch = 0, 0
    if resume:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, epoch = state["step"], state["epoch"]
    (args.out / "config.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))

    data = SpireDataset(args.data, args.size, caption_dropout=args.caption_dropout, blind_prob=args.blind_prob,
                        seed=args.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=len(data) >= args.batch,
                                         num_workers=args.workers, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(args.seed + epoch))

    log = open(args.out / LOG_FILE, "a", encoding="utf-8")
    stop = {"now": False}
    previous = {}

    def request_stop(*_):
        stop["now"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread: no signal handling
            pass

    def card() -> dict:
        return {"step": step, "base_model": str(args.base), "size": args.size, "lr": args.lr,
                "batch": args.batch * args.grad_accum, "data": str(args.data)}

    def checkpoint() -> None:
        with atomic_path(state_path) as tmp:  # the optimizer state lands only after the adapter it belongs to
            torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
                        "epoch": epoch}, tmp)
            save_adapter(adapter, args.out, card())

    record: dict = {}
    losses: list[float] = []
    started, micro = time.time(), 0
    try:
        while step < args.steps and not stop["now"]:
            data.epoch = epoch
            for batch in loader:
                clean = batch["clean"].to(dev, wdtype)
                degraded = batch["degraded"].to(dev, torch.float32)
                with torch.no_grad():
                    latents = vae.encode(clean).latent_dist.sample() * vae.config.scaling_factor
                    semantic = encode_prompts(tokenizer, text_encoder, batch["caption"])
                    restoration = encode_prompts(tokenizer, text_encoder, batch["prompt"])
                noise = torch.randn_like(latents)
                t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=dev)
                noisy = noise_scheduler.add_noise(latents, noise, t)
                if noise_scheduler.config.prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(latents, noise, t)
                else:
                    target = noise
                with torch.autocast(dev.type, dtype=wdtype, enabled=autocast):
                    pred = denoiser(noisy, t, semantic, restoration, degraded)
                loss = F.mse_loss(pred.float(), target.float()) / args.grad_accum
                scaler.scale(loss).backward()
                losses.append(loss.item() * args.grad_accum)
                micro += 1
                if micro % args.grad_accum:
                    continue
                for group in optimizer.param_groups:
                    group["lr"] = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step % args.log_every == 0 or step == args.steps:
                    record = {"step": step, "epoch": epoch, "loss": float(np.mean(losses)),
                              "grad_norm": float(grad_norm), "lr": optimizer.param_groups[0]["lr"],
                              "seconds": round(time.time() - started, 1)}
                    losses.clear()
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    print(json.dumps(record), flush=True)
                if step % args.save_every == 0:
                    checkpoint()
                if step >= args.steps or stop["now"]:
                    break
            else:
                epoch += 1
        checkpoint()
    finally:
        log.close()
        denoiser.modulator.remove()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return record | {"step": step, "adapter": str(adapter_path)}


if __name__ == "__main__":
    main()
