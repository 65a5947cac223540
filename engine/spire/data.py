"""SPIRE training pairs: a clean crop, its caption, a degraded copy and the prompt that names the degradation.

The parameterised pipeline follows Real-ESRGAN's order (blur, down-sample,
noise, JPEG, then back up to the original size) and applies each step with
probability 0.5, writing every value it used into the restoration prompt.
Values are drawn in the trained ranges of ``engine.edit.prompts`` and quantised to
the prompt's printed precision *before* they are applied, so the picture and
the text always agree. A fraction of pairs instead get a random second-order
chain of the same steps and the prompt "Remove all degradation" (blind mode).
The steps themselves are ``engine.training.degradations``, shared with InstructIR.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.edit.prompts import (
    BLUR_RANGE,
    JPEG_RANGE,
    NOISE_RANGE,
    UPSAMPLE_RANGE,
    RestorationPrompt,
    format_prompt,
)
from engine.spire.pipeline import resize
from engine.training import degradations as D

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def sample_prompt(rng: np.random.Generator, p: float = 0.5) -> RestorationPrompt:
    """Each operation with probability ``p`` (at least one), its value uniform in its range."""
    while True:
        values = {}
        if rng.random() < p:
            values["deblur"] = rng.uniform(*BLUR_RANGE)
        if rng.random() < p:
            values["upsample"] = rng.uniform(*UPSAMPLE_RANGE)
        if rng.random() < p:
            values["denoise"] = rng.uniform(*NOISE_RANGE)
        if rng.random() < p:
            values["dejpeg"] = int(rng.integers(JPEG_RANGE[0], JPEG_RANGE[1] + 1))
        if values:
            return RestorationPrompt(**values)


def apply_prompt(img: np.ndarray, prompt: RestorationPrompt, rng: np.random.Generator) -> np.ndarray:
    """Degrade ``img`` (HxWx3 float in [0, 1]) exactly as ``prompt`` says; the result has the input's size."""
    h, w = img.shape[:2]
    out = img
    if prompt.deblur is not None:
        out = D.gaussian_blur(out, rng, sigma=prompt.deblur).image
    if prompt.upsample is not None and prompt.upsample > 1:
        out = resize(out, max(1, round(h / prompt.upsample)), max(1, round(w / prompt.upsample)))
    if prompt.denoise is not None:
        out = D.gaussian_noise(out, rng, sigma=prompt.denoise * 255).image
    if prompt.dejpeg is not None:
        out = D.jpeg(out, rng, quality=prompt.dejpeg).image
    return resize(out, h, w)


def blind_degrade(img: np.ndarray, rng: np.random.Generator, rounds: int = 2) -> np.ndarray:
    """A Real-ESRGAN-like second-order degradation: the parameterised chain, twice, with random values."""
    h, w = img.shape[:2]
    out = img
    for _ in range(rounds):
        out = apply_prompt(out, sample_prompt(rng), rng)
    return resize(out, h, w)


def make_pair(img: np.ndarray, rng: np.random.Generator, blind_prob: float = 0.2) -> tuple[np.ndarray, str]:
    """(degraded image, restoration prompt text) for one clean image."""
    if rng.random() < blind_prob:
        return blind_degrade(img, rng), format_prompt(RestorationPrompt(blind=True))
    prompt = sample_prompt(rng)
    return apply_prompt(img, prompt, rng), format_prompt(prompt)


def load_captions(root: Path) -> dict[str, str]:
    """Captions from ``captions.json`` / ``captions.jsonl`` ({"file", "text"}) or ``NAME.txt`` beside each image."""
    captions: dict[str, str] = {}
    if (path := root / "captions.json").is_file():
        captions.update({str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()})
    if (path := root / "captions.jsonl").is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                captions[str(row["file"])] = str(row["text"])
    return captions


@dataclass
class Sample:
    clean: torch.Tensor  # 3xHxW in [-1, 1]
    degraded: torch.Tensor  # 3xHxW in [-1, 1]
    prompt: str
    caption: str


class SpireDataset(torch.utils.data.Dataset):
    """Random crops of the images under ``root`` (recursively), degraded on the fly.

    Images smaller than ``size`` are up-scaled to fit first. The caption is
    dropped with probability ``caption_dropout`` so the adapter also learns
    semantic-agnostic restoration (the empty semantic prompt).
    """

    def __init__(self, root: str | os.PathLike, size: int = 512, *, caption_dropout: float = 0.3,
                 blind_prob: float = 0.2, seed: int = 0) -> None:
        self.root = Path(root)
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")
        self.captions = load_captions(self.root)
        self.size = size
        self.caption_dropout = caption_dropout
        self.blind_prob = blind_prob
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.files)

    def caption(self, path: Path) -> str:
        rel = path.relative_to(self.root).as_posix()
        if rel in self.captions:
            return self.captions[rel]
        side = path.with_suffix(".txt")
        return side.read_text(encoding="utf-8").strip() if side.is_file() else ""

    def __getitem__(self, index: int) -> Sample:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        path = self.files[index]
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        h, w = img.shape[:2]
        if min(h, w) < self.size:
            scale = self.size / min(h, w)
            img = resize(img, max(self.size, round(h * scale)), max(self.size, round(w * scale)))
            h, w = img.shape[:2]
        y, x = int(rng.integers(0, h - self.size + 1)), int(rng.integers(0, w - self.size + 1))
        img = np.ascontiguousarray(img[y : y + self.size, x : x + self.size])
        if rng.random() < 0.5:
            img = np.ascontiguousarray(img[:, ::-1])
        degraded, prompt = make_pair(img, rng, self.blind_prob)
        caption = "" if rng.random() < self.caption_dropout else self.caption(path)

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1) * 2 - 1

        return Sample(tensor(img), tensor(degraded), prompt, caption)


def collate(samples: list[Sample]) -> dict:
    return {
        "clean": torch.stack([s.clean for s in samples]),
        "degraded": torch.stack([s.degraded for s in samples]),
        "prompt": [s.prompt for s in samples],
        "caption": [s.caption for s in samples],
    }
