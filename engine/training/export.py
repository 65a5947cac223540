"""Export a training checkpoint as a model folder (safetensors + model card).

    python -m engine.training.export runs/studio-small/last.pt resources/models/studio-small --half

With ``--half`` the tensors are stored in fp16, which halves the file; the
export checks that the fp16 weights change outputs by less than 0.05 dB on a
test image and falls back to fp32 otherwise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from engine.registry import ModelBundle, load_folder, save_folder


def bundle_from_checkpoint(path: Path) -> tuple[ModelBundle, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    config = ckpt["config"]
    bundle = ModelBundle(
        name=config["name"],
        config=config["network"],
        classes=tuple(ckpt["classes"]),
        encoder=config["text_encoder"],
        image_state=ckpt["image_model"],
        head_state=ckpt["lm_head"],
        head_config=config["lm_head"],
    )
    return bundle, {"steps": ckpt["step"], "train_seconds": round(ckpt["elapsed"]), "train_config": config["train"],
                    "data": config["data"]}


def fp16_loss_db(full: ModelBundle, half_folder: Path) -> float:
    """PSNR of fp16-weight outputs against fp32-weight outputs, as a dB 'loss' proxy (inf = identical)."""
    from engine.degradations import gaussian_noise
    from engine.pipeline import Restorer
    from engine.training.data import package_photos

    img = package_photos(512)[0][:256, :256].astype(np.float32) / 255
    noisy = gaussian_noise(img, np.random.default_rng(0), sigma=25).image
    a = Restorer(full, device="cpu").restore(noisy, "remove the noise")
    b = Restorer(load_folder(half_folder), device="cpu").restore(noisy, "remove the noise")
    psnr_a = 10 * np.log10(1 / np.mean((a - img) ** 2))
    psnr_b = 10 * np.log10(1 / np.mean((b - img) ** 2))
    return float(psnr_a - psnr_b)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--half", action="store_true", help="store fp16 weights if that loses < 0.05 dB")
    args = ap.parse_args(argv)

    bundle, training = bundle_from_checkpoint(args.checkpoint)
    card_path = args.folder / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    card.update({"training": training, "exported": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    bundle.card = card
    save_folder(bundle, args.folder, half=False)
    if args.half:
        tmp = args.folder.with_name(args.folder.name + ".fp16")
        save_folder(bundle, tmp, half=True)
        loss = fp16_loss_db(bundle, tmp)
        if abs(loss) < 0.05:
            (tmp / "model.safetensors").replace(args.folder / "model.safetensors")
            card["weights_dtype"] = "float16"
        else:
            card["weights_dtype"] = "float32"
        card["fp16_psnr_change_db"] = round(loss, 4)
        bundle.card = card
        save_folder(bundle, args.folder, half=card["weights_dtype"] == "float16")
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    print(f"exported {args.checkpoint} -> {args.folder}")


if __name__ == "__main__":
    main()
