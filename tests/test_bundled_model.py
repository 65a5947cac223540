"""The model every new user meets first: it ships, it is documented, and it visibly repairs photos."""

import json

import numpy as np
import pytest

from engine.metrics import psnr
from engine.registry import DEFAULT_MODEL, bundled_models_dir

FOLDER = bundled_models_dir() / DEFAULT_MODEL


@pytest.fixture(scope="module")
def bundled():
    from engine.pipeline import Restorer

    return Restorer.from_pretrained(DEFAULT_MODEL, device="cpu")


def test_weights_and_model_card_ship():
    assert (FOLDER / "model.safetensors").is_file()
    assert (FOLDER / "model.safetensors").stat().st_size < 20 * 2**20
    card = json.loads((FOLDER / "model_card.json").read_text())
    for key in ("config", "text_encoder", "classes", "training", "quality"):
        assert key in card, key
    assert card["text_encoder"] == "all-MiniLM-L6-v2"
    assert {r["task"] for r in card["quality"]["rows"]} >= {"noise25", "blur", "low-light", "haze"}
    assert (FOLDER / "README.md").is_file()


def test_bundled_model_removes_synthetic_noise(bundled):
    from skimage import data

    from engine.degradations import gaussian_noise

    clean = data.chelsea()[100:228, 150:310].astype(np.float32) / 255  # not a training or evaluation photo
    noisy = gaussian_noise(clean, np.random.default_rng(3), sigma=25).image
    out = bundled.restore(noisy, "please remove the noise")
    assert psnr(out, clean) - psnr(noisy, clean) > 4.0


def test_bundled_model_understands_and_refuses(bundled):
    from engine.planning import plan_instruction

    assert bundled.understand("please remove the noise").label == "noise"
    assert bundled.understand("it's way too dark").label == "low-light"
    steps = plan_instruction("hello, how are you?", bundled, no_op_classes=bundled.bundle.no_op_classes)
    assert not any(s.actionable for s in steps)
