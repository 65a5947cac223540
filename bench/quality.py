"""Quality of a model on Kodak24, task by task, against the degraded input and a classical baseline.

    python bench/quality.py                                   # bundled model, all tasks, table on stdout
    python bench/quality.py --model instructir-7d --tasks noise25,noise50
    python bench/quality.py --update-card resources/models/studio-small   # also write the table into the model card

Every degradation uses a fixed seed per image, so two runs (and two models) see
the same inputs. Baselines are the cheap classical method for each task:
NL-means (noise), Wiener with the true kernel (blur), CLAHE after gamma (low
light), dark-channel prior (haze), bicubic (upsampling: the degraded input
already is the bicubic up-sampling), the input itself (JPEG, rain), and
grey-world + auto-contrast (enhancement).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.training import degradations as D  # noqa: E402
from engine.training.metrics import psnr, ssim  # noqa: E402

DEFAULT_EVAL = ROOT.parent / "shared" / "datasets" / "eval" / "kodak24"


# --- classical baselines -----------------------------------------------------------------------


def nlmeans(img: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    s = sigma / 255
    return denoise_nl_means(img, h=0.8 * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True,
                            channel_axis=2).astype(np.float32)


def wiener_known_kernel(img: np.ndarray, kernel: np.ndarray, balance: float = 0.01) -> np.ndarray:
    from skimage.restoration import wiener

    k = kernel / kernel.sum()
    return np.stack([wiener(img[..., c], k, balance, clip=True) for c in range(3)], -1).astype(np.float32)


def clahe_gamma(img: np.ndarray) -> np.ndarray:
    from skimage import exposure

    mean = max(float(img.mean()), 1e-3)
    gamma = np.log(0.45) / np.log(mean)  # bring the mean to mid-grey
    return exposure.equalize_adapthist(np.clip(img, 0, 1) ** gamma, clip_limit=0.01).astype(np.float32)


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int = 30, eps: float = 1e-3) -> np.ndarray:
    box = lambda x: ndimage.uniform_filter(x, 2 * r + 1, mode="reflect")  # noqa: E731
    mean_i, mean_p = box(guide), box(src)
    a = (box(guide * src) - mean_i * mean_p) / (box(guide * guide) - mean_i**2 + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def dark_channel_prior(img: np.ndarray, patch: int = 15, omega: float = 0.95, t0: float = 0.1) -> np.ndarray:
    """He et al. 2009, with a guided-filter refinement of the transmission."""
    dark = ndimage.minimum_filter(img.min(axis=2), size=patch)
    n = max(1, dark.size // 1000)
    idx = np.argsort(dark.ravel())[-n:]
    A = img.reshape(-1, 3)[idx].max(axis=0)
    t = 1 - omega * ndimage.minimum_filter((img / np.maximum(A, 1e-3)).min(axis=2), size=patch)
    t = np.clip(guided_filter(img.mean(axis=2), t), t0, 1)[..., None]
    return np.clip((img - A) / t + A, 0, 1).astype(np.float32)


def grey_world_autocontrast(img: np.ndarray) -> np.ndarray:
    balanced = img * (img.mean() / np.maximum(img.reshape(-1, 3).mean(0), 1e-3))
    lo, hi = np.percentile(balanced, [0.5, 99.5])
    return np.clip((balanced - lo) / max(hi - lo, 1e-3), 0, 1).astype(np.float32)


# --- tasks -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    intent: str
    instruction: str
    degrade: Callable[[np.ndarray, np.random.Generator], D.Degraded]
    baseline_name: str
    baseline: Callable[[np.ndarray, D.Degraded], np.ndarray]


def _noise(sigma):
    return Task(f"noise{sigma}", "noise", "please remove the noise",
                lambda x, r: D.gaussian_noise(x, r, sigma=sigma), "NL-means",
                lambda y, d: nlmeans(y, sigma))


TASKS: list[Task] = [
    _noise(15), _noise(25), _noise(50),
    Task("blur", "blur", "sharpen this blurry photo", lambda x, r: D.gaussian_blur(x, r, sigma=2.0),
         "Wiener (true kernel)", lambda y, d: wiener_known_kernel(y, D.gaussian_kernel(2.0))),
    Task("rain", "rain", "get rid of the rain streaks",
         lambda x, r: D.rain(x, r, density=0.01, length=20, angle=80, intensity=0.7), "input", lambda y, d: y),
    Task("haze", "haze", "remove the haze", lambda x, r: D.haze(x, r, beta=1.5, airlight=0.85, extent=1.0),
         "dark-channel prior", lambda y, d: dark_channel_prior(y)),
    Task("low-light", "low-light", "it's too dark, please brighten it",
         lambda x, r: D.low_light(x, r, exposure=0.2, gamma=1.2, photons=1000), "gamma + CLAHE",
         lambda y, d: clahe_gamma(y)),
    Task("enhancement", "enhancement", "fix the dull colours and the colour cast",
         lambda x, r: D.enhancement(x, r, cast=[1.12, 1.0, 0.85], contrast=0.7, saturation=0.6),
         "grey-world + auto-contrast", lambda y, d: grey_world_autocontrast(y)),
    Task("upsampling-x2", "upsampling", "increase the resolution, it looks pixelated",
         lambda x, r: D.downscale(x, r, factor=2), "bicubic", lambda y, d: y),
    Task("upsampling-x4", "upsampling", "increase the resolution, it looks pixelated",
         lambda x, r: D.downscale(x, r, factor=4), "bicubic", lambda y, d: y),
    Task("jpeg-q20", "jpeg", "remove the jpeg compression artifacts", lambda x, r: D.jpeg(x, r, quality=20),
         "input", lambda y, d: y),
]


def load_eval(folder: Path, limit: int | None) -> list[tuple[str, np.ndarray]]:
    files = sorted(folder.glob("*.png"))[:limit]
    if not files:
        raise SystemExit(f"no evaluation images in {folder}")
    return [(f.stem, np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255) for f in files]


def intent_accuracy(restorer) -> dict:
    from engine.edit.instructions import labelled

    classes = restorer.classes
    pairs = [(t, c) for t, c in labelled("val") if c < len(classes)]
    from engine.edit.instructions import STUDIO_CLASSES

    correct = 0
    unrelated_total = unrelated_noop = 0
    for text, idx in pairs:
        label = STUDIO_CLASSES[idx]
        got = restorer.understand(text)
        if label == "unrelated":
            unrelated_total += 1
            unrelated_noop += int(got.label in restorer.bundle.no_op_classes or got.confidence < 0.45)
        correct += int(got.label == label)
    return {"val_intent_accuracy": correct / len(pairs), "val_instructions": len(pairs),
            "unrelated_made_no_op": unrelated_noop / max(unrelated_total, 1)}


def run(model: str, tasks: list[Task], images, device: str) -> tuple[list[dict], dict]:
    from engine.model.pipeline import Restorer

    restorer = Restorer.from_pretrained(model, device=device)
    rows = []
    for task in tasks:
        acc = {"input": [], "model": [], "baseline": []}
        t_model = 0.0
        for n, (_name, clean) in enumerate(images):
            rng = np.random.default_rng([1234, n, len(task.name)])
            d = task.degrade(clean, rng)
            t = time.perf_counter()
            out = restorer.restore(d.image, task.instruction)
            t_model += time.perf_counter() - t
            base = task.baseline(d.image, d)
            for key, img in (("input", d.image), ("model", out), ("baseline", base)):
                acc[key].append((psnr(img, clean), ssim(img, clean)))
        row = {"task": task.name, "instruction": task.instruction, "baseline": task.baseline_name,
               "images": len(images), "model_seconds_per_image": round(t_model / len(images), 2)}
        for key, vals in acc.items():
            row[f"{key}_psnr"] = round(float(np.mean([v[0] for v in vals])), 2)
            row[f"{key}_ssim"] = round(float(np.mean([v[1] for v in vals])), 4)
        row["gain_over_baseline_db"] = round(row["model_psnr"] - row["baseline_psnr"], 2)
        rows.append(row)
        print(format_row(row), flush=True)
    return rows, intent_accuracy(restorer)


def format_row(r: dict) -> str:
    return (f"| {r['task']} | {r['input_psnr']:.2f} / {r['input_ssim']:.3f} | {r['baseline']}: "
            f"{r['baseline_psnr']:.2f} / {r['baseline_ssim']:.3f} | **{r['model_psnr']:.2f}** / "
            f"{r['model_ssim']:.3f} | {r['gain_over_baseline_db']:+.2f} |")


HEADER = ("| task | degraded input PSNR / SSIM | classical baseline PSNR / SSIM | model PSNR / SSIM | "
          "model - baseline (dB) |\n|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--eval", type=Path, default=DEFAULT_EVAL)
    ap.add_argument("--tasks", help="comma-separated task names (default: all)")
    ap.add_argument("--limit", type=int, help="only the first N images")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    ap.add_argument("--update-card", type=Path, help="model folder whose model_card.json and README.md get the table")
    args = ap.parse_args(argv)
    wanted = set(args.tasks.split(",")) if args.tasks else None
    tasks = [t for t in TASKS if wanted is None or t.name in wanted]
    images = load_eval(args.eval, args.limit)
    print(f"model {args.model}, {len(images)} images of {args.eval.name}\n")
    print(HEADER)
    rows, intents = run(args.model, tasks, images, args.device)
    print(f"\nintent accuracy on validation instructions: {intents['val_intent_accuracy']:.1%} "
          f"({intents['val_instructions']}); unrelated made no-op: {intents['unrelated_made_no_op']:.1%}")
    result = {"dataset": f"{args.eval.name} ({len(images)} images)", "rows": rows, **intents}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.update_card:
        card_path = args.update_card / "model_card.json"
        card = json.loads(card_path.read_text())
        card["quality"] = result
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        table = "\n".join([HEADER] + [format_row(r) for r in rows])
        (args.update_card / "quality.md").write_text(
            f"# Quality on {result['dataset']}\n\n{table}\n\nIntent accuracy on validation instructions: "
            f"{intents['val_intent_accuracy']:.1%}; unrelated instructions made no-ops: "
            f"{intents['unrelated_made_no_op']:.1%}.\n")
        from engine.training.export import render_card

        render_card(args.update_card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
