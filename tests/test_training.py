"""The training loop runs, checkpoints, resumes and exports (tiny config, a few steps)."""

import json
from collections import Counter

import numpy as np
import pytest

from engine.training import export, train
from engine.training.data import PatchSampler

CONFIG = "engine/training/configs/tiny_test.json"


@pytest.fixture(scope="module")
def bf16_config(tmp_path_factory):
    """The tiny config with the stage-2 options: task weights, bf16 autocast, channels-last."""
    config = json.loads(open(CONFIG).read())
    config["data"]["task_weights"] = {"noise": 3.0, "blur": 2.0}
    config["train"] |= {"autocast": "bf16", "channels_last": True}
    path = tmp_path_factory.mktemp("cfg") / "tiny_bf16.json"
    path.write_text(json.dumps(config))
    return path


def _log(out):
    return [json.loads(line) for line in (out / "train.log").read_text().splitlines()]


def test_train_resume_and_export(tmp_path, bf16_config):
    out = tmp_path / "run"
    train.main(["--config", str(bf16_config), "--out", str(out)])
    assert (out / "last.pt").exists()
    assert [r["step"] for r in _log(out)] == [1, 2, 3, 4]
    assert all(np.isfinite(r["l1"]) for r in _log(out))
    train.main(["--config", str(bf16_config), "--out", str(out), "--steps", "6"])  # resumes at 4
    assert [r["step"] for r in _log(out)][-2:] == [5, 6]

    folder = tmp_path / "model"
    export.main([str(out / "last.pt"), str(folder)])
    card = json.loads((folder / "model_card.json").read_text())
    assert card["training"]["steps"] == 6
    from engine.model.pipeline import Restorer

    restored = Restorer.from_pretrained(folder, device="cpu").restore(np.full((20, 20, 3), 0.5, np.float32),
                                                                     "remove the noise")
    assert restored.shape == (20, 20, 3) and np.isfinite(restored).all()

    # A second stage started from that folder: the card lists both stages.
    out2 = tmp_path / "run2"
    train.main(["--config", CONFIG, "--out", str(out2), "--init", str(folder), "--steps", "2"])
    export.main([str(out2 / "last.pt"), str(folder), "--continues", str(folder)])
    card = json.loads((folder / "model_card.json").read_text())
    assert [s["steps"] for s in card["training"]["stages"]] == [6, 2]
    assert card["training"]["steps"] == 8
    assert "Stage 2: 2 steps" in (folder / "README.md").read_text()


def test_task_weights_steer_the_sampler():
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)]
    sampler = PatchSampler(photos, 16, seed=0, identity_fraction=0.0,
                           task_weights={"noise": 6.0, "rain": 0.0})
    counts = Counter(sampler.sample()[2] for _ in range(400))
    assert counts["rain"] == 0
    assert counts["noise"] > 3 * counts["blur"]
    with pytest.raises(ValueError, match="unknown tasks"):
        PatchSampler(photos, 16, seed=0, task_weights={"denoise": 1.0})
