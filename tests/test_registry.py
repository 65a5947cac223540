import pytest
import torch

from engine.model.registry import ModelNotFoundError, load_folder, load_model, save_folder


def test_folder_round_trip_fp32_and_fp16(tmp_path, tiny_model_dir):
    bundle = load_folder(tiny_model_dir)
    assert bundle.classes[-1] == "unrelated" and bundle.no_op_classes == ("unrelated",)
    save_folder(bundle, tmp_path / "half", half=True)
    half = load_folder(tmp_path / "half")
    assert half.config == bundle.config and half.classes == bundle.classes
    for k, v in bundle.image_state.items():
        assert torch.allclose(half.image_state[k], v, atol=1e-3, rtol=1e-3)
    size = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert size < (tiny_model_dir / "model.safetensors").stat().st_size


def test_restorer_save_pretrained_round_trip(tmp_path, tiny_restorer, photo):
    from engine.model.pipeline import Restorer

    tiny_restorer.save_pretrained(tmp_path / "copy")
    again = Restorer.from_pretrained(tmp_path / "copy", device="cpu")
    a = tiny_restorer.restore(photo, "remove the noise")
    b = again.restore(photo, "remove the noise")
    assert abs(a - b).max() < 1e-6


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ModelNotFoundError, match="Known models"):
        load_model("no-such-model")


def test_official_model_not_downloaded_says_how_to_get_it(monkeypatch):
    from engine.model import hub

    monkeypatch.setattr(hub, "official_from_cache", lambda *a, **k: None)
    with pytest.raises(ModelNotFoundError) as exc:
        load_model("instructir-7d")
    msg = str(exc.value)
    assert "im_instructir-7d.pt" in msg and "lm_instructir-7d.pt" in msg and "bge-micro-v2" in msg


def test_official_checkpoints_from_a_local_folder(tmp_path):
    """The official layout (two .pt state dicts + encoder folder) loads with strict=True."""
    import shutil

    from engine.model.network import OFFICIAL_7D_CONFIG, build_lm_head, build_network
    from engine.model.pipeline import Restorer
    from engine.model.text import packaged_minilm_path

    torch.save(build_network(OFFICIAL_7D_CONFIG).state_dict(), tmp_path / "im_instructir-7d.pt")
    torch.save(build_lm_head(384, 256, 7).state_dict(), tmp_path / "lm_instructir-7d.pt")
    shutil.copytree(packaged_minilm_path(), tmp_path / "bge-micro-v2")  # stands in for the bge folder
    restorer = Restorer.from_pretrained(tmp_path, device="cpu")
    assert restorer.classes[0] == "noise" and len(restorer.classes) == 7
    assert restorer.understand("remove the noise").label in restorer.classes
