"""Diagnosis: is the main problem named right, is a clean photo left alone, and how long does it take?

    python bench/diagnose.py                                  # Kodak24 + 12 MP timing
    python bench/diagnose.py --update-card resources/models/diagnose
    python bench/diagnose.py --speed-only

Every Kodak24 photo (evaluation only: the classifier never saw it) is given
one synthetic degradation per kind and level, with parameters fixed here and a
seed per photo; the diagnosis' most severe problem at severity >= 0.3 must
name that kind. Clean photos must have no problem at >= 0.3. Levels:
"moderate" is plainly visible damage, "strong" is heavy damage. Camera-shake
kernels use the held-out seeds of ``engine.training.degradations``.

Speed: a 12 MP photo (4000 x 3000, Kodak photos enlarged, plus noise) in
memory, diagnosed after the model is loaded; best of 5 and median.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.diagnose import WORTH_FIXING, default_model, diagnose  # noqa: E402
from engine.diagnose.core import from_analysis  # noqa: E402
from engine.diagnose.features import FEATURE_NAMES, Analysis, analyse  # noqa: E402
from engine.training import degradations as D  # noqa: E402

EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "eval" / "kodak24"
CARD_START, CARD_END = "<!-- diagnose-eval:start -->", "<!-- diagnose-eval:end -->"


def _shake(size: int, noise: float):
    def f(img, rng, i):
        return D.camera_shake(img, rng, size=size, seed=D.HELD_OUT_SEED_BASE + i, anxiety=0.05,
                              centripetal=0.4, noise=noise)
    return f


def _fixed(fn, **params):
    return lambda img, rng, i: fn(img, rng, **params)


#: task -> level -> named variants (img, rng, photo index) -> Degraded.
CASES = {
    "noise": {
        "moderate": {"gaussian s15": _fixed(D.gaussian_noise, sigma=15),
                     "camera s8": _fixed(D.camera_noise, sigma=8, photons=150, demosaic=6, chroma=4, quality=90)},
        "strong": {"gaussian s40": _fixed(D.gaussian_noise, sigma=40),
                   "camera s16": _fixed(D.camera_noise, sigma=16, photons=40, demosaic=12, chroma=8, quality=85)},
    },
    "blur": {
        "moderate": {"gaussian s1.5": _fixed(D.gaussian_blur, sigma=1.5),
                     "defocus r2": _fixed(D.defocus_blur, radius=2), "shake 15px": _shake(15, 1.0)},
        "strong": {"gaussian s3": _fixed(D.gaussian_blur, sigma=3.0),
                   "defocus r4": _fixed(D.defocus_blur, radius=4), "shake 31px": _shake(31, 1.0)},
    },
    "rain": {
        "moderate": {"streaks d0.006": _fixed(D.rain, density=0.006, length=18, angle=95, intensity=0.6),
                     "layers light": _fixed(D.rain_layers, heavy=False)},
        "strong": {"streaks d0.015": _fixed(D.rain, density=0.015, length=25, angle=85, intensity=0.8),
                   "layers heavy": _fixed(D.rain_layers, heavy=True)},
    },
    "haze": {
        "moderate": {"beta 1.0": _fixed(D.haze, beta=1.0, airlight=0.85, extent=1.0)},
        "strong": {"beta 2.0": _fixed(D.haze, beta=2.0, airlight=0.9, extent=1.0)},
    },
    "low-light": {
        "moderate": {"exposure 0.3": _fixed(D.low_light, exposure=0.3, gamma=1.2, photons=1500),
                     "camera e0.25": _fixed(D.low_light_camera, exposure=0.25, photons=800, quality=90)},
        "strong": {"exposure 0.1": _fixed(D.low_light, exposure=0.1, gamma=1.4, photons=800),
                   "camera e0.08": _fixed(D.low_light_camera, exposure=0.08, photons=300, quality=90)},
    },
    "enhancement": {
        "moderate": {"c0.75 s0.6": _fixed(D.enhancement, cast=[1.08, 1.0, 0.92], contrast=0.75, saturation=0.6)},
        "strong": {"c0.6 s0.4": _fixed(D.enhancement, cast=[1.15, 1.0, 0.85], contrast=0.6, saturation=0.4)},
    },
    "upsampling": {
        "moderate": {"x2": _fixed(D.downscale, factor=2)},
        "strong": {"x4": _fixed(D.downscale, factor=4)},
    },
    "jpeg": {
        "moderate": {"q30": _fixed(D.jpeg, quality=30)},
        "strong": {"q12": _fixed(D.jpeg, quality=12)},
    },
}


def load_eval(folder: Path) -> list[tuple[str, np.ndarray]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise SystemExit(f"no evaluation photos in {folder}")
    return [(p.stem, np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0) for p in files]


def _measured(cache: dict, key: str, make) -> Analysis:
    """The features of one case, measured once (``--cache`` keeps them across runs of other models)."""
    if key not in cache:
        cache[key] = analyse(make())
    return cache[key]


def measure_all(photos: list[tuple[str, np.ndarray]], cache: dict) -> None:
    """Measure every case into ``cache`` (no model needed)."""
    for level in ("moderate", "strong"):
        for task, levels in CASES.items():
            for variant, make in levels[level].items():
                for i, (name, img) in enumerate(photos):
                    _measured(cache, f"{level}/{task}/{variant}/{name}",
                              lambda make=make, img=img, i=i: make(img, np.random.default_rng(1000 + i), i).image)
    for name, img in photos:
        _measured(cache, f"clean/{name}", lambda img=img: img)


def evaluate(photos: list[tuple[str, np.ndarray]], cache: dict | None = None) -> dict:
    model = default_model()
    cache = {} if cache is None else cache
    results: dict = {"levels": {}, "tasks": {}, "confusions": []}
    for level in ("moderate", "strong"):
        right = total = 0
        for task, levels in CASES.items():
            for variant, make in levels[level].items():
                ok = 0
                for i, (name, img) in enumerate(photos):
                    a = _measured(cache, f"{level}/{task}/{variant}/{name}",
                                  lambda make=make, img=img, i=i: make(img, np.random.default_rng(1000 + i), i).image)
                    d = from_analysis(a, model)
                    got = d.main.intent.value if d.main else "nothing"
                    ok += got == task
                    if got != task:
                        results["confusions"].append(f"{level} {task} {variant} {name}: {got}")
                right += ok
                total += len(photos)
                results["tasks"][f"{task} {variant} ({level})"] = ok / len(photos)
        results["levels"][level] = right / total
    clean_ok = 0
    worst = []
    for name, img in photos:
        d = from_analysis(_measured(cache, f"clean/{name}", lambda img=img: img), model)
        top = max((p.severity for p in d.problems), default=0.0)
        clean_ok += top < WORTH_FIXING
        worst.append((top, name, d.problems[0].intent.value if d.problems else "-"))
    results["clean"] = clean_ok / len(photos)
    results["clean_worst"] = [f"{n}: {k} {s:.2f}" for s, n, k in sorted(worst, reverse=True)[:3]]
    return results


def speed(photos: list[tuple[str, np.ndarray]], repeat: int = 5) -> dict:
    land = [img if img.shape[1] >= img.shape[0] else np.rot90(img) for _, img in photos]
    land = [im for im in land if im.shape[:2] == land[0].shape[:2]]
    rows = [np.concatenate([land[(r * 4 + c) % len(land)] for c in range(4)], axis=1) for r in range(4)]
    tile = np.concatenate(rows, axis=0)  # 4 x 4 photos, enlarged to 12 MP
    big = np.asarray(Image.fromarray((tile * 255).astype(np.uint8)).resize((4000, 3000)), np.float32) / 255.0
    big = np.clip(big + np.random.default_rng(0).normal(0, 0.03, big.shape).astype(np.float32), 0, 1)
    model = default_model()
    diagnose(big, model=model)
    times, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        diagnose(big, model=model)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    t = time.perf_counter()
    model_load = type(model).load()
    return {"megapixels": big.shape[0] * big.shape[1] / 1e6, "best_s": min(times),
            "median_s": statistics.median(times), "cpu_s": min(cpu), "model_load_s": time.perf_counter() - t,
            "load_average": os.getloadavg()[0],
            "threads": os.environ.get("OMP_NUM_THREADS", "default"), "cpus": os.cpu_count(),
            "loaded": model_load is not None}


def _load_cache(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if tuple(data.get("features", ())) != FEATURE_NAMES:
        return {}  # measured with other features
    return {k: Analysis(v["values"], np.array([v["values"][n] for n in FEATURE_NAMES], np.float32), v["w"], v["h"])
            for k, v in data["cases"].items()}


def _save_cache(path: Path, cache: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cases = {k: {"values": a.values, "w": a.width, "h": a.height} for k, a in cache.items()}
    path.write_text(json.dumps({"features": list(FEATURE_NAMES), "cases": cases}))


def card_section(results: dict, timing: dict | None) -> str:
    lines = [CARD_START, "", "| task (variant, level) | main problem named right |", "|---|---|"]
    lines += [f"| {k} | {v:.0%} |" for k, v in results["tasks"].items()]
    lv = results["levels"]
    lines += ["", f"- Main problem named right: **{lv['strong']:.1%}** at strong levels (target >= 95%), "
              f"**{lv['moderate']:.1%}** at moderate ones (target >= 85%).",
              f"- Clean photos with no problem at severity >= 0.3: **{results['clean']:.1%}** (target >= 90%); "
              f"highest: {', '.join(results['clean_worst'])}."]
    if timing:
        lines.append(f"- Speed: {timing['megapixels']:.0f} MP photo in memory, after the model is loaded: "
                     f"best {timing['best_s']:.3f} s, median {timing['median_s']:.3f} s, "
                     f"{timing['cpu_s']:.3f} s of CPU time ({timing['cpus']} CPUs shared, load average "
                     f"{timing['load_average']:.1f}, OMP_NUM_THREADS={timing['threads']}); model load "
                     f"{timing['model_load_s']:.3f} s.")
    lines += ["", CARD_END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", default=str(EVAL), help="folder of clean evaluation photos (PNG)")
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--update-card", metavar="FOLDER", help="write the figures into FOLDER/README.md")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--cache", metavar="FILE", help="keep the measured features of every case in FILE (a re-trained "
                                                     "classifier is then evaluated without degrading again)")
    ap.add_argument("--measure-only", action="store_true", help="only fill --cache (before a model is trained)")
    args = ap.parse_args(argv)
    if args.measure_only and not args.cache:
        ap.error("--measure-only needs --cache")
    photos = load_eval(Path(args.eval))
    cache = _load_cache(Path(args.cache)) if args.cache else {}
    if args.measure_only:
        measure_all(photos, cache)
        _save_cache(Path(args.cache), cache)
        return 0
    results = None if args.speed_only else evaluate(photos, cache)
    if args.cache and not args.speed_only:
        _save_cache(Path(args.cache), cache)
    if results:
        for k, v in results["tasks"].items():
            print(f"{k:40s} {v:6.1%}")
        print(f"strong {results['levels']['strong']:.1%}  moderate {results['levels']['moderate']:.1%}  "
              f"clean {results['clean']:.1%}  (worst clean: {', '.join(results['clean_worst'])})")
        for line in results["confusions"]:
            print("  miss:", line)
    timing = speed(photos)
    print(f"12 MP diagnosis: best {timing['best_s']:.3f} s, median {timing['median_s']:.3f} s, "
          f"CPU {timing['cpu_s']:.3f} s (load average {timing['load_average']:.1f}; "
          f"model load {timing['model_load_s']:.3f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "speed": timing}, indent=2))
    if args.update_card and results:
        card = Path(args.update_card) / "README.md"
        text = card.read_text(encoding="utf-8")
        section = card_section(results, timing)
        if CARD_START in text:
            text = re.sub(re.escape(CARD_START) + ".*?" + re.escape(CARD_END), lambda _: section, text, flags=re.S)
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
        from engine.io.atomic import write_text

        write_text(card, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
