"""The training loop runs, checkpoints, resumes and exports (tiny config, a few steps)."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from engine.training import export, train
from engine.training.config import ConfigError, load_config
from engine.training.data import PatchSampler

CONFIG = "engine/training/configs/tiny_test.json"


@pytest.fixture(autouse=True)
def shared_embeddings(tmp_path_factory, monkeypatch):
    """One sentence-embedding cache for every run in this module (the corpus has thousands of instructions;
    the cache is keyed by the prepared texts, so sharing it is exact)."""
    cache = tmp_path_factory.getbasetemp() / "embeddings.pt"
    real = train.embed_corpus
    monkeypatch.setattr(train, "embed_corpus", lambda name, _cache: real(name, cache))


@pytest.fixture(scope="module")
def bf16_config(tmp_path_factory):
    """The tiny config with the stage-2 options: task weights, bf16 autocast, channels-last."""
    config = {"extends": str(Path(CONFIG).resolve()), "data": {"task_weights": {"noise": 3.0, "blur": 2.0}},
              "train": {"autocast": "bf16", "channels_last": True}}
    path = tmp_path_factory.mktemp("cfg") / "tiny_bf16.json"
    path.write_text(json.dumps(config))
    return path


def test_a_config_extends_its_parent_key_by_key(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps(
        {"data": {"roots": ["a", "b"], "task_weights": {"noise": 1.0, "blur": 2.0}}, "train": {"lr": 0.1}}))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "stage.json").write_text(json.dumps(
        {"extends": "../base.json", "data": {"roots": ["c"], "task_weights": {"blur": 5.0}}, "train": {"seed": 3}}))
    config = load_config(tmp_path / "sub" / "stage.json")
    assert config == {"data": {"roots": ["c"], "task_weights": {"noise": 1.0, "blur": 5.0}},
                      "train": {"lr": 0.1, "seed": 3}}
    (tmp_path / "base.json").write_text(json.dumps({"extends": "sub/stage.json"}))
    with pytest.raises(ConfigError, match="itself"):
        load_config(tmp_path / "sub" / "stage.json")


@pytest.mark.parametrize("path", sorted(Path("engine/training/configs").glob("*.json")), ids=lambda p: p.stem)
def test_every_shipped_config_resolves_to_a_whole_config(path):
    config = load_config(path)
    assert "extends" not in config
    assert {"network", "data", "train"} <= set(config)
    assert {"steps", "lr", "batch_size", "seed"} <= set(config["train"])


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

    # A second stage started from that folder, exported to a new one: the card lists both stages and keeps
    # the prose about the model as a whole, not the earlier release's notes.
    card.update(summary="A tiny test model.", size_tradeoff="Small because it is a test.", notes="Release one.")
    (folder / "model_card.json").write_text(json.dumps(card))
    out2, folder2 = tmp_path / "run2", tmp_path / "model2"
    train.main(["--config", CONFIG, "--out", str(out2), "--init", str(folder), "--steps", "2"])
    export.main([str(out2 / "last.pt"), str(folder2), "--continues", str(folder)])
    card = json.loads((folder2 / "model_card.json").read_text())
    assert [s["steps"] for s in card["training"]["stages"]] == [6, 2]
    assert card["training"]["steps"] == 8
    readme = (folder2 / "README.md").read_text()
    assert "Stage 2: 2 steps" in readme
    assert "A tiny test model." in readme and "Small because it is a test." in readme
    assert "Release one." not in readme


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


@pytest.fixture(scope="module")
def stage4_like_config(tmp_path_factory):
    """The tiny config with the stage-4 options: margin, big-patch global batches, colour loss, snapshots,
    data workers."""
    config = {"extends": str(Path(CONFIG).resolve()),
              "data": {"margin": 8, "global_tasks": ["haze", "low-light"], "global_patch_size": 48,
                       "global_batch_size": 1, "global_every": 2},
              "train": {"colour_weight": 0.5, "snapshot_every": 2, "data_workers": 1}}
    path = tmp_path_factory.mktemp("cfg") / "tiny_stage4.json"
    path.write_text(json.dumps(config))
    return path


def test_accelerated_run_returns_a_checkpoint_and_a_model_on_cpu(tmp_path, stage4_like_config):
    from engine.training import accelerated

    out = tmp_path / "accel"
    result = accelerated.main(["--minutes", "5", "--out", str(out), "--config", str(stage4_like_config),
                               "--steps", "4", "--device", "cpu"])
    assert result["steps"] == 4 and result["device"] == "cpu"
    assert (out / "last.pt").exists() and (out / "step-2.pt").exists() and (out / "step-4.pt").exists()
    assert json.loads((out / "result.json").read_text())["model"] == str(out / "model")
    from engine.model.pipeline import Restorer

    y = Restorer.from_pretrained(out / "model", device="cpu").restore(np.full((24, 24, 3), 0.4, np.float32),
                                                                     "remove the haze")
    assert y.shape == (24, 24, 3) and np.isfinite(y).all()


def test_time_budget_stops_the_run_with_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    train.main(["--config", CONFIG, "--out", str(out), "--steps", "1000", "--time-budget", "0.001"])
    import torch

    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert 1 <= ckpt["step"] < 1000


def test_global_batches_are_bigger_patches_of_the_global_tasks():
    from engine.training.data import BatchStream

    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)]
    main = PatchSampler(photos, 16, seed=0, identity_fraction=0.0)
    glob = PatchSampler.for_tasks(photos, ["haze"], 64, seed=1, identity_fraction=0.0)
    stream = BatchStream(main, 4, glob, global_every=3, global_batch_size=2)
    shapes = [tuple(stream.batch_for(s).degraded.shape) for s in range(6)]
    assert shapes == [(4, 3, 16, 16), (4, 3, 16, 16), (2, 3, 64, 64)] * 2
    assert set(stream.batch_for(2).tasks) == {"haze"}


def test_training_never_reads_the_evaluation_set(tmp_path):
    from engine.training.data import load_photos

    evaluation = tmp_path / "datasets" / "eval" / "kodak24"
    evaluation.mkdir(parents=True)
    with pytest.raises(ValueError, match="evaluation set"):
        load_photos([evaluation], False, 256)


def test_load_photos_reads_the_fetched_cache(tmp_path):
    from PIL import Image

    from engine.training.data import load_photos

    (tmp_path / "pkg").mkdir()
    Image.new("RGB", (300, 200), (10, 200, 30)).save(tmp_path / "pkg" / "a.png")
    photos = load_photos([], False, 256, photo_cache=tmp_path)
    assert len(photos) == 1 and photos[0].shape == (171, 256, 3)


COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo

Files: *
Copyright: 2014 Someone
License: GPL-2+

Files: nature/Aqua.jpg
       nature/Leaf.jpg
Copyright: 2008, Charles Barbin
License: CC-BY-SA-3.0
Comment: x

License: GPL-2+
 This package is free software.
"""


def test_photo_licences_come_from_the_last_matching_copyright_stanza():
    from engine.training import photos

    stanzas = photos.parse_copyright(COPYRIGHT)
    assert [s[1] for s in stanzas] == ["GPL-2+", "CC-BY-SA-3.0"]
    assert photos.licence_of("usr/share/backgrounds/mate/nature/Aqua.jpg", stanzas) == \
        ("CC-BY-SA-3.0", "2008, Charles Barbin")
    assert photos.licence_of("usr/share/backgrounds/mate/desktop/Stripes.png", stanzas)[0] == "GPL-2+"
    assert photos.licence_of("x.png", [])[0] == "unknown"


def test_a_soup_lies_between_its_models_and_is_recorded_in_its_stage(tmp_path, bf16_config):
    """Weight averaging: base x (1 - w) + mean(stages) x w; the stage records it, a later stage keeps it."""
    import torch

    from engine.model.registry import load_folder, save_folder
    from engine.training import soup

    out = tmp_path / "run"
    train.main(["--config", str(bf16_config), "--out", str(out), "--steps", "2"])
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder in (a, b, c):
        export.main([str(out / "last.pt"), str(folder)])
    older = load_folder(a)
    for folder, shift in ((b, 1.0), (c, 3.0)):
        run = load_folder(folder)
        run.image_state = {k: v + shift for k, v in run.image_state.items()}
        save_folder(run, folder)
    mid = soup.soup(a, [b], tmp_path / "mid", 0.5)
    both = soup.soup(a, [b, c], tmp_path / "both", 0.5)  # the stages' mean is +2: half of it +1
    for folder, want in ((mid, 0.5), (both, 1.0)):
        got = load_folder(folder)
        for k, v in older.image_state.items():
            torch.testing.assert_close(got.image_state[k].float(), v.float() + want, atol=2e-3, rtol=1e-3)
    record = json.loads((both / "model_card.json").read_text())["training"]
    assert record["soup"]["weight"] == 0.5 and len(record["soup"]["parallel"]) == 1
    assert record["soup"]["parallel"][0]["steps"] == 2  # read from a one-stage record too
    assert "and a parallel run" in (both / "README.md").read_text()
    # a stage trained from the soup keeps the soup in the stage it concluded
    chained = export.chain_stages(record, {"steps": 3, "train_config": {}, "data": {}})
    assert chained["stages"][0]["soup"]["weight"] == 0.5 and "soup" not in chained["stages"][1]
    with pytest.raises(ValueError, match="within"):
        soup.soup(a, [b], tmp_path / "bad", 1.5)
