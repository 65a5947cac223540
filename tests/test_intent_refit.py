"""engine.training.intent: re-fits only fc2, and --write keeps everything else of the model folder."""

import json

import torch
from conftest import TINY_CONFIG
from safetensors import safe_open
from safetensors.torch import load_file

from engine.model.instructions import STUDIO_CLASSES, labelled
from engine.model.network import build_lm_head, build_network
from engine.model.registry import ModelBundle, load_folder, save_folder
from engine.training import intent


def _toy_data(n_per_class: int = 20, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(len(STUDIO_CLASSES), 384, generator=gen), dim=-1)
    y = torch.arange(len(STUDIO_CLASSES)).repeat_interleave(n_per_class)
    x = torch.nn.functional.normalize(centers[y] + 0.03 * torch.randn(len(y), 384, generator=gen), dim=-1)
    return centers, x, y


def _fp16_folder(tmp_path, **card):
    torch.manual_seed(0)
    head = build_lm_head(num_classes=len(STUDIO_CLASSES))
    bundle = ModelBundle("tiny-refit", TINY_CONFIG, STUDIO_CLASSES, "all-MiniLM-L6-v2",
                         build_network(TINY_CONFIG).state_dict(), head.state_dict(),
                         card={"weights_dtype": "float16", "notes": "kept", **card})
    folder = tmp_path / "tiny-refit"
    save_folder(bundle, folder, half=True)
    return folder, bundle


def test_fit_fc2_trains_only_fc2():
    _, x, y = _toy_data()
    head = build_lm_head(num_classes=len(STUDIO_CLASSES)).eval()
    fc1 = {k: v.clone() for k, v in head.fc1.state_dict().items()}
    fc2 = head.fc2.weight.clone()
    intent.fit_fc2(head, x, y, intent.Recipe(epochs=150, lr=1e-2))
    assert all(torch.equal(v, head.fc1.state_dict()[k]) for k, v in fc1.items())
    assert not torch.equal(fc2, head.fc2.weight)
    with torch.no_grad():
        assert float((head(x)[1].argmax(-1) == y).float().mean()) > 0.95


def test_cross_validation_picks_from_the_grid(tmp_path):
    _, bundle = _fp16_folder(tmp_path)
    _, x, y = _toy_data(6)
    recipe, scores = intent.cross_validate(bundle, x, y, folds=2, grid=((1e-2, 1e-4),), checkpoints=(10, 40))
    assert set(scores) == {(1e-2, 1e-4, 10), (1e-2, 1e-4, 40)}
    assert (recipe.lr, recipe.weight_decay, recipe.epochs) in scores


def _fake_corpus(monkeypatch):
    """Replace the corpus embedding (the real one embeds ~6,400 sentences: too slow for a unit test)."""
    centers, _, _ = _toy_data()
    gen = torch.Generator().manual_seed(1)

    def fake_embed_corpus(encoder, cache):
        pairs = labelled("train") + labelled("val")
        noise = 0.03 * torch.randn(len(pairs), 384, generator=gen)
        return {t: torch.nn.functional.normalize(centers[c] + e, dim=-1) for (t, c), e in zip(pairs, noise)}

    monkeypatch.setattr(intent, "embed_corpus", fake_embed_corpus)


def test_main_write_keeps_fp16_fc1_image_weights_and_metadata(tmp_path, monkeypatch, capsys):
    folder, _ = _fp16_folder(tmp_path)
    _fake_corpus(monkeypatch)
    before_tensors = load_file(str(folder / "model.safetensors"))
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        before_meta = fh.metadata()

    result = intent.main([str(folder), "--epochs", "60", "--write"])
    out = capsys.readouterr().out
    assert "before: val accuracy" in out and "after : val accuracy" in out and "unrelated recall" in out
    assert result["after"]["accuracy"] > result["before"]["accuracy"]
    assert result["after"]["accuracy"] > 0.9 and result["after"]["unrelated_recall"] > 0.9

    after_tensors = load_file(str(folder / "model.safetensors"))
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        assert fh.metadata() == before_meta
    assert set(after_tensors) == set(before_tensors)
    assert all(v.dtype == torch.float16 for v in after_tensors.values())
    changed = {k for k in before_tensors if not torch.equal(before_tensors[k], after_tensors[k])}
    assert changed == {"lm_head.fc2.weight", "lm_head.fc2.bias"}
    card = json.loads((folder / "model_card.json").read_text())
    assert card["notes"] == "kept" and card["weights_dtype"] == "float16"
    assert card["intent_refit"]["val_accuracy_after"] == result["after"]["accuracy"]
    assert load_folder(folder).head_state["fc2.weight"].shape == (len(STUDIO_CLASSES), 256)


def test_write_records_the_refit_in_the_last_stage_and_the_cards_commands(tmp_path, monkeypatch):
    stages = [{"steps": 100, "config_file": "a.json"}, {"steps": 50, "config_file": "b.json"}]
    folder, _ = _fp16_folder(tmp_path, training={"stages": stages})
    _fake_corpus(monkeypatch)
    intent.main([str(folder), "--epochs", "20", "--write"])
    card = json.loads((folder / "model_card.json").read_text())
    assert card["training"]["stages"][-1]["intent_refit"] == card["intent_refit"]["date"]
    assert "intent_refit" not in card["training"]["stages"][0]
    readme = (folder / "README.md").read_text()
    assert "--init <stage-1 export>`, then `python -m engine.training.intent <stage-2 export> --write" in readme
