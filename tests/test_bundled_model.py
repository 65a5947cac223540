"""The model every new user meets first: it ships, it is documented, and it visibly repairs photos."""

import json

import numpy as np
import pytest

from engine.model.registry import DEFAULT_MODEL, bundled_models_dir
from engine.training import degradations as D
from engine.training.metrics import psnr

FOLDER = bundled_models_dir() / DEFAULT_MODEL


@pytest.fixture(scope="module")
def bundled():
    from engine.model.pipeline import Restorer

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


@pytest.fixture(scope="module")
def clean_photo() -> np.ndarray:
    """A photo that is neither a training nor an evaluation photo (the cameraman, as a black-and-white RGB)."""
    from skimage import data

    grey = data.camera()[40:200, 170:330].astype(np.float32) / 255
    return np.repeat(grey[..., None], 3, axis=-1)


REPAIRS = [  # (degradation, instruction, least PSNR gain in dB)
    (lambda x, r: D.gaussian_noise(x, r, sigma=25), "please remove the noise", 6.0),
    (lambda x, r: D.haze(x, r, beta=1.5, airlight=0.85, extent=1.0), "remove the haze", 6.0),
    (lambda x, r: D.low_light(x, r, exposure=0.2, gamma=1.2, photons=1000), "it's too dark, please brighten it", 10.0),
]


@pytest.mark.parametrize("degrade, instruction, least_gain", REPAIRS, ids=["noise", "haze", "low-light"])
def test_bundled_model_visibly_repairs(bundled, clean_photo, degrade, instruction, least_gain):
    degraded = degrade(clean_photo, np.random.default_rng(3)).image
    out = bundled.restore(degraded, instruction)
    assert psnr(out, clean_photo) - psnr(degraded, clean_photo) > least_gain


def test_bundled_model_understands_and_refuses(bundled):
    from engine.edit.planning import plan_instruction

    assert bundled.understand("please remove the noise").label == "noise"
    assert bundled.understand("it's way too dark").label == "low-light"
    steps = plan_instruction("hello, how are you?", bundled, no_op_classes=bundled.bundle.no_op_classes)
    assert not any(s.actionable for s in steps)


def test_brightening_a_photo_that_is_not_dark_changes_it_only_a_little(bundled, clean_photo):
    from engine.model.exposure import darkness

    bright = np.clip(clean_photo * 0.8 + 0.15, 0, 1)  # a well-exposed grey photo
    assert darkness(bright) == 0
    out = bundled.restore(bright, "brighten it")
    assert psnr(out, bright) >= 20  # the untempered network leaves such photos near 11 dB of themselves
    dark = D.low_light(clean_photo, np.random.default_rng(3), exposure=0.2, gamma=1.2, photons=1000).image
    assert darkness(dark) == 1
    assert psnr(bundled.restore(dark, "brighten it"), clean_photo) >= psnr(dark, clean_photo) + 10
