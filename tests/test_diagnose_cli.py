"""``instructir diagnose``, ``restore ... auto`` and ``batch --instruction auto``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.diagnose.auto import auto_recipe
from engine.edit.batch import BatchStatus, collect_inputs, plan_outputs, run_batch
from engine.training import degradations as D


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A clean photo outside the classifier's training (scikit-image's coffee) and a noisy copy, as PNG."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    clean = data.coffee().astype(np.float32) / 255.0
    noisy = D.gaussian_noise(clean, np.random.default_rng(0), sigma=35).image
    for name, img in (("clean.png", clean), ("noisy.png", noisy)):
        Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(folder / name)
    return folder


def test_diagnose_json_lines(photos, tmp_path, capsys):
    missing = tmp_path / "missing.jpg"
    assert main(["diagnose", str(photos / "noisy.png"), str(photos / "clean.png"), str(missing), "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    noisy, clean, gone = lines
    assert noisy["path"] == str(photos / "noisy.png") and noisy["problems"][0]["intent"] == "noise"
    assert {"intent", "severity", "reason"} <= set(noisy["problems"][0]) and "noisy" in noisy["suggestion"]
    assert all(p["severity"] < 0.3 for p in clean["problems"]) and clean["instruction"] == ""
    assert gone["path"] == str(missing) and gone["error"]


def test_diagnose_text_suggests_the_command(photos, capsys):
    assert main(["diagnose", str(photos)]) == 0  # a folder: every photo in it
    out = capsys.readouterr().out
    assert "clean.png: This photo looks fine" in out
    assert "noisy.png: This photo looks noisy" in out and "fix: instructir restore" in out


def test_restore_auto_on_a_clean_photo_changes_nothing_and_says_why(photos, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "out.png"
    assert main(["restore", str(photos / "clean.png"), "fix this photo", "-o", str(out),
                 "--model", str(tiny_model_dir)]) == 0
    assert not out.exists()
    assert "Nothing was changed" in capsys.readouterr().err


def test_restore_auto_plans_from_the_diagnosis(photos, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "out.png"
    assert main(["restore", str(photos / "noisy.png"), "auto", "-o", str(out), "--model", str(tiny_model_dir)]) == 0
    assert out.is_file()
    err = capsys.readouterr().err
    assert "Auto: This photo looks noisy" in err and "Remove the noise" in err


def test_batch_auto_diagnoses_each_photo(photos, tmp_path, fake_restorer):
    items = plan_outputs(collect_inputs([photos]), tmp_path / "out")
    report = run_batch(items, None, fake_restorer,
                       recipe_for=lambda picture: auto_recipe(picture, fake_restorer))
    by_name = {i.source.name: i for i in items}
    assert by_name["clean.png"].status is BatchStatus.UNCHANGED and not by_name["clean.png"].output.exists()
    assert "Nothing was changed" in by_name["clean.png"].note
    assert by_name["noisy.png"].status is BatchStatus.DONE and by_name["noisy.png"].output.is_file()
    assert "Applied: Remove the noise" in by_name["noisy.png"].note
    assert fake_restorer.calls == 1
    assert "1 left unchanged" in report.summary()


def test_batch_cli_auto_lists_what_was_done(photos, tmp_path, tiny_model_dir, capsys):
    assert main(["batch", str(photos), "--instruction", "auto", "-o", str(tmp_path / "out"),
                 "--model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "clean.png: unchanged: Auto: This photo looks fine" in out
    assert "noisy.png: done: Auto: This photo looks noisy" in out
