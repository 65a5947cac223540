"""The instruction corpus for training and validating the intent head.

``data/instructions.json`` is made by ``python -m engine.training.corpus``: the
hand-written sentences (kept under ``"hand"``) plus template-generated ones.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

CORPUS_PATH = Path(__file__).parent / "data" / "instructions.json"

#: Intent classes of the bundled model: the paper's seven, JPEG, and a no-op class.
STUDIO_CLASSES: tuple[str, ...] = (
    "noise", "blur", "rain", "haze", "low-light", "enhancement", "upsampling", "jpeg", "unrelated",
)


@lru_cache(maxsize=1)
def load_corpus(path: Path = CORPUS_PATH) -> dict:
    """``{"version", "classes": [...], "train": {cls: [...]}, "val": {cls: [...]}, "hand": ..., "generator": ...}``."""
    with open(path, encoding="utf-8") as fh:
        corpus = json.load(fh)
    for split in ("train", "val"):
        missing = set(corpus["classes"]) - set(corpus[split])
        if missing:
            raise ValueError(f"instruction corpus split {split!r} lacks classes {sorted(missing)}")
    return corpus


def labelled(split: str, classes: tuple[str, ...] = STUDIO_CLASSES) -> list[tuple[str, int]]:
    """(instruction, class index) pairs of one split, in a stable order."""
    corpus = load_corpus()
    return [(text, classes.index(cls)) for cls in classes for text in corpus[split][cls]]
