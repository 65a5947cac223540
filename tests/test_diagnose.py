"""Diagnosis: the classical measures, the bundled classifier on a photo it was not trained on, the wording,
and ``auto``."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from engine.diagnose import (
    WORTH_FIXING,
    Diagnosis,
    Kind,
    Problem,
    default_model,
    diagnose,
    features,
    is_auto_instruction,
    measures,
    plan_auto,
    resolve_instruction,
)
from engine.diagnose.core import jpeg_quality
from engine.diagnose.model import DiagnoseModel
from engine.edit.planning import parse_strength, split_instruction
from engine.io.images import load_image
from engine.training import degradations as D


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """scikit-image's coffee: kept out of the classifier's training photos (engine.diagnose.train)."""
    from skimage import data

    return data.coffee().astype(np.float32) / 255.0


def test_noise_sigma_reads_white_noise_and_ignores_edges():
    rng = np.random.default_rng(0)
    flat = np.full((192, 192), 0.5, np.float32) + rng.normal(0, 10 / 255, (192, 192)).astype(np.float32)
    mad, low = measures.noise_sigma(flat)
    assert mad == pytest.approx(10, rel=0.1) and low == pytest.approx(10, rel=0.15)
    steps = np.kron((rng.random((12, 12)) > 0.5).astype(np.float32), np.ones((16, 16), np.float32))
    assert max(measures.noise_sigma(steps)) < 1.0  # sharp edges without noise read as no noise


def test_jpeg_quality_is_read_from_the_file(tmp_path, photo):
    im = Image.fromarray((photo * 255).astype(np.uint8))
    for q in (20, 50, 90):
        im.save(tmp_path / f"q{q}.jpg", quality=q)
        assert jpeg_quality(tmp_path / f"q{q}.jpg") == pytest.approx(q, abs=2)
    im.save(tmp_path / "lossless.png")
    assert jpeg_quality(tmp_path / "lossless.png") is None
    assert jpeg_quality(None) is None


def test_blockiness_grows_with_compression(photo):
    g = measures.luma(photo)
    q10 = measures.luma(D.jpeg(photo, np.random.default_rng(0), quality=10).image)
    assert measures.blockiness(g)[0] < 1.1 < measures.blockiness(q10)[0]


def test_mirror_coherence_tells_an_enlargement_from_a_blur(photo):
    """An enlargement mirrors the spectrum about 0.5 / factor with one phase; a blur of any shape does not."""
    rng = np.random.default_rng(0)

    def coherence(img):
        return measures.mirror_coherence(measures.windowed_spectrum(measures.luma(img)[100:292, 150:342]))

    x2, x4 = coherence(D.downscale(photo, rng, factor=2).image), coherence(D.downscale(photo, rng, factor=4).image)
    assert x2[0] > 0.5 and x4[1] > 0.5
    for soft in (photo, D.gaussian_blur(photo, rng, sigma=1.5).image, D.defocus_blur(photo, rng, radius=2).image):
        assert max(coherence(soft)) < 0.25


def test_severity_floors_are_fitted_per_kind():
    """Clean crops often read as rain keep rain's floor low without holding the other kinds down."""
    from engine.diagnose.model import CLASSES
    from engine.diagnose.train import calibrate_severity

    rows, labels = [], []
    for c in range(len(CLASSES)):
        for i in range(40):
            p = np.full(len(CLASSES), 0.4 / (len(CLASSES) - 1))
            k = CLASSES.index("rain") if CLASSES[c] == "clean" and i % 3 == 0 else c
            p[k] = 0.6
            rows.append(p / p.sum())
            labels.append(c)
    proba, y = np.array(rows), np.array(labels)
    temperature, floors = calibrate_severity(proba, np.full(len(y), 0.1), y, fitted_t=1.0)
    # a sure, faint case (P 0.6, strength 0.1) reaches 0.3 from a floor of 0.45
    assert temperature == 1.0 and floors["rain"] < 0.45
    assert all(f >= 0.45 for kind, f in floors.items() if kind != "rain")
    assert set(floors) == set(CLASSES) - {"clean"}


def test_faintness_is_judged_per_degradation():
    """Light rain does a fraction of heavy rain's damage: only the faintest of each variant is labelled clean."""
    from engine.diagnose.model import CLASSES
    from engine.diagnose.train import faint_samples, variant

    light = variant("rain", {"kind": "layers", "heavy": False})
    heavy = variant("rain", {"kind": "layers", "heavy": True})
    assert light != heavy and variant("blur", {"kind": "gaussian", "mixed": "blur+noise"}) != variant(
        "blur", {"kind": "gaussian"})
    damage = np.concatenate([np.linspace(0.001, 0.05, 50), np.linspace(0.01, 0.5, 50)])
    variants = np.array([light] * 50 + [heavy] * 50)
    y = np.full(100, CLASSES.index("rain"))
    faint = faint_samples(y, damage, variants)
    assert 0 < faint[:50].sum() <= 10 and 0 < faint[50:].sum() <= 10  # the faintest tenth of each, not half of light
    assert not faint_samples(np.full(100, CLASSES.index("clean")), damage, variants).any()


def test_crops_are_full_resolution_and_aligned_and_the_copy_small():
    boxes = features.crop_boxes(3000, 4000)
    assert len(boxes) == 6
    assert all(t % 8 == 0 and x % 8 == 0 and t + s <= 3000 and x + s <= 4000 for t, x, s in boxes)
    big = np.zeros((3000, 4000, 3), np.float32)
    assert max(features.analysis_copy(big).shape[:2]) <= features.ANALYSIS_SIDE
    assert all(t + s <= 40 and x + s <= 50 for t, x, s in features.crop_boxes(40, 50))
    assert features.crop_boxes(20, 30) == [(0, 0, 20)]  # too small for a grid: one crop


def test_bundled_model_matches_the_features():
    model = DiagnoseModel.load()
    assert model.features == features.FEATURE_NAMES
    assert model.card["training"]["held_out_accuracy"] > 0.8
    assert set(model.severity_floors) == {k for k in Kind if k is not Kind.CLEAN}  # a floor fitted per kind


CASES = {
    Kind.NOISE: lambda x, r: D.gaussian_noise(x, r, sigma=35),
    Kind.BLUR: lambda x, r: D.gaussian_blur(x, r, sigma=3.0),
    Kind.RAIN: lambda x, r: D.rain_layers(x, r, heavy=True),
    Kind.HAZE: lambda x, r: D.haze(x, r, beta=2.0, airlight=0.9, extent=1.0),
    Kind.LOW_LIGHT: lambda x, r: D.low_light(x, r, exposure=0.1, gamma=1.3, photons=800),
    Kind.ENHANCEMENT: lambda x, r: D.enhancement(x, r, cast=[1.15, 1.0, 0.85], contrast=0.6, saturation=0.4),
    Kind.UPSAMPLING: lambda x, r: D.downscale(x, r, factor=4),
    Kind.JPEG: lambda x, r: D.jpeg(x, r, quality=10),
}


@pytest.mark.parametrize("kind", list(CASES), ids=lambda k: k.value)
def test_known_degradations_are_named(photo, kind):
    d = diagnose(CASES[kind](photo, np.random.default_rng(3)).image)
    assert d.main is not None and d.main.intent is kind, d.problems
    assert d.main.severity >= WORTH_FIXING and d.main.reason
    assert d.instruction and kind.value in [p.intent.value for p in d.steps]


def test_a_clean_photo_is_left_alone(photo):
    d = diagnose(photo)
    assert all(p.severity < WORTH_FIXING for p in d.problems), d.problems
    assert d.clean and d.instruction == "" and "nothing worth fixing" in d.suggestion


def test_wording_of_suggestion_and_instruction():
    d = Diagnosis((Problem(Kind.NOISE, 0.82, "grain", "remove the noise", 1.0),
                   Problem(Kind.LOW_LIGHT, 0.4, "dark", "brighten it a little", 0.5),
                   Problem(Kind.BLUR, 0.2, "soft", "remove the blur a little", 0.5)), 100, 100)
    assert d.suggestion == "This photo looks noisy (strong) and a little dark."
    assert d.instruction == "Remove the noise and brighten it a little"
    parts = split_instruction(d.instruction)
    assert parts == ["Remove the noise", "brighten it a little"]  # the planner reads it as two steps
    assert [parse_strength(p) for p in parts] == [1.0, 0.5]
    assert [p.intent for p in d.steps] == [Kind.NOISE, Kind.LOW_LIGHT]
    assert Diagnosis((), 10, 10).instruction == ""


def test_a_small_photo_is_enlarged_without_a_degree():
    small = np.random.default_rng(0).random((200, 300, 3)).astype(np.float32) * 0.2 + 0.4
    up = [p for p in diagnose(small).problems if p.intent is Kind.UPSAMPLING]
    assert up and up[0].severity >= WORTH_FIXING and "200" in up[0].reason
    assert up[0].instruction == "increase the resolution" and up[0].strength == 1.0


def test_diagnosis_as_json_names_the_file(tmp_path, photo):
    path = tmp_path / "dark.jpg"
    Image.fromarray((photo * 0.15 * 255).astype(np.uint8)).save(path, quality=25)
    d = diagnose(load_image(path))
    data = json.loads(json.dumps(d.to_dict()))
    assert data["path"] == str(path) and data["suggestion"] == d.suggestion
    assert {"intent", "severity", "reason"} <= set(data["problems"][0])
    intents = {p["intent"] for p in data["problems"] if p["severity"] >= WORTH_FIXING}
    assert {"low-light", "jpeg"} <= intents  # the quantisation tables say quality 25
    assert diagnose(path).problems == d.problems  # a path is loaded the same way


def test_diagnose_is_thread_safe(photo):
    noisy = D.gaussian_noise(photo, np.random.default_rng(1), sigma=25).image
    default_model()
    expected = diagnose(noisy)
    results = []
    threads = [threading.Thread(target=lambda: results.append(diagnose(noisy))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.problems == expected.problems for r in results) and len(results) == 4


@pytest.mark.parametrize("text", ["auto", "Auto", "fix it", "make it better", "fix this photo", "Fix this photo!",
                                  "please fix it", "improve it", "can you fix this picture for me", "autofix",
                                  "make this photo look better", "fix whatever is wrong"])
def test_instructions_naming_no_problem_are_auto(text):
    assert is_auto_instruction(text)


@pytest.mark.parametrize("text", ["remove the noise", "fix the noise", "make it brighter", "fix the blur",
                                  "sharpen it", "", "   ", "enhance the colours", "fix it and remove the noise"])
def test_instructions_naming_a_problem_are_not_auto(text):
    assert not is_auto_instruction(text)


def test_auto_on_a_clean_photo_does_nothing_and_says_why(photo):
    text, auto = resolve_instruction("fix it", photo)
    assert text == "" and auto is not None and "Nothing was changed" in auto.message
    assert resolve_instruction("remove the noise", photo) == ("remove the noise", None)


def test_auto_on_a_noisy_photo_plans_the_fix(photo):
    auto = plan_auto(D.gaussian_noise(photo, np.random.default_rng(2), sigma=30).image)
    assert auto.instruction.lower().startswith("remove the noise")
    assert "noisy" in auto.message and auto.instruction in auto.message


def test_jpeg_bytes_from_memory_are_not_needed(photo):
    """An array without a file still gets a JPEG diagnosis from its block grid."""
    buf = io.BytesIO()
    Image.fromarray((photo * 255).astype(np.uint8)).save(buf, format="JPEG", quality=8)
    arr = np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255.0
    assert diagnose(arr).main.intent is Kind.JPEG
