"""Shared fixtures: a tiny random model in our on-disk format, and fake restorers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("INSTRUCTIR_SHARED", ROOT.parent / "shared"))
TINY_CONFIG = {"width": 8, "enc_blks": [1, 1, 1, 1], "middle_blk_num": 1, "dec_blks": [1, 1, 1, 1], "txtdim": 256}


def make_tiny_bundle(seed: int = 0, name: str = "tiny-test"):
    from engine.model.instructions import STUDIO_CLASSES
    from engine.model.network import build_lm_head, build_network
    from engine.model.registry import ModelBundle

    torch.manual_seed(seed)
    net = build_network(TINY_CONFIG)
    for p in net.parameters():  # zero-initialised scales would make the net an identity: randomise them
        if p.dim() == 4 and p.shape[0] == 1:
            p.data.normal_(0, 0.1)
    head = fit_head(build_lm_head(num_classes=len(STUDIO_CLASSES)))
    return ModelBundle(name, TINY_CONFIG, STUDIO_CLASSES, "all-MiniLM-L6-v2", net.state_dict(), head.state_dict())


def fit_head(head, per_class: int = 24, steps: int = 150):
    """Train the projection head briefly on part of the corpus, so the test model understands instructions."""
    from engine.model.instructions import STUDIO_CLASSES, load_corpus
    from engine.model.text import TextEncoder

    corpus = load_corpus()["train"]
    texts, labels = [], []
    for i, cls in enumerate(STUDIO_CLASSES):
        texts += corpus[cls][:per_class]
        labels += [i] * len(corpus[cls][:per_class])
    x, y = TextEncoder().encode(texts), torch.tensor(labels)
    opt = torch.optim.Adam(head.parameters(), 1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head(x)[1], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from engine.model.registry import save_folder

    folder = tmp_path_factory.mktemp("models") / "tiny-test"
    save_folder(make_tiny_bundle(), folder)
    return folder


@pytest.fixture(scope="session")
def tiny_restorer(tiny_model_dir):
    from engine.model.pipeline import Restorer

    return Restorer.from_pretrained(tiny_model_dir, device="cpu")


@dataclass
class FakeIntent:
    label: str
    confidence: float
    probabilities: dict


class FakeBundle:
    no_op_classes = ("unrelated",)


class FakeRestorer:
    """Deterministic stand-in: 'noise' blurs-ish (x*0.5+0.25), 'low-light' brightens; counts network calls."""

    name = "fake"
    bundle = FakeBundle()

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    def understand(self, text: str) -> FakeIntent:
        t = text.lower()
        for key, label in (("noise", "noise"), ("bright", "low-light"), ("dark", "low-light"), ("blur", "blur"),
                           ("upscal", "upsampling"), ("bigger", "upsampling")):
            if key in t:
                return FakeIntent(label, 0.9, {})
        return FakeIntent("unrelated", 0.8, {})

    def restore(self, image, instruction, progress=None, cancel=None, sink=None):
        """As ``Restorer.restore``: the result, or with ``sink`` its rows handed over (here all at once)."""
        out = self._restore(image, instruction, progress, cancel)
        if sink is None:
            return out
        sink(0, out.shape[0], out)
        return None

    def _restore(self, image, instruction, progress, cancel):
        import time

        self.calls += 1
        steps = 5
        for i in range(steps):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if self.delay:
                time.sleep(self.delay / steps)
            if progress:
                progress(i + 1, steps)
        label = self.understand(instruction).label
        if label == "low-light":
            return np.clip(image * 1.5 + 0.05, 0, 1).astype(np.float32)
        if label == "upsampling":  # a sharpening-like refinement that keeps the size it is given
            return np.clip(image * 1.1 - 0.05, 0, 1).astype(np.float32)
        return (image * 0.5 + 0.25).astype(np.float32)


@pytest.fixture
def fake_restorer() -> FakeRestorer:
    return FakeRestorer()


@pytest.fixture
def photo() -> np.ndarray:
    """A small natural-looking image (smooth gradients + edges), HxWx3 float32."""
    h, w = 48, 64
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 5) * np.cos(y / 7)], axis=-1)
    img[10:30, 20:40] = [0.9, 0.2, 0.1]
    return np.clip(img, 0, 1).astype(np.float32)
