import torch

from engine.model.text import TextEncoder, TextEncoderError, packaged_minilm_path, resolve_encoder_path


def test_packaged_encoder_is_local():
    path = packaged_minilm_path()
    assert (path / "config.json").is_file()
    assert resolve_encoder_path("all-MiniLM-L6-v2") == path


def test_unknown_encoder_is_a_clear_error(tmp_path):
    try:
        resolve_encoder_path("TaylorAI/bge-micro-v2-not-downloaded")
    except TextEncoderError as exc:
        assert "not a local folder" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected TextEncoderError")


def test_embeddings_are_mean_pooled_unit_vectors_and_cached():
    from transformers import AutoModel, AutoTokenizer

    enc = TextEncoder()
    a = enc("remove the noise")
    assert a.shape == (1, 384)
    assert abs(float(a.norm()) - 1) < 1e-5
    tok = AutoTokenizer.from_pretrained(str(enc.path))
    model = AutoModel.from_pretrained(str(enc.path)).eval()
    batch = tok(["remove the noise"], return_tensors="pt")
    with torch.no_grad():
        tokens = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    manual = torch.nn.functional.normalize((tokens * mask).sum(1) / mask.sum(1), dim=-1)
    assert torch.allclose(a, manual, atol=1e-5)
    before = len(enc._cache)
    enc.encode(["remove the noise", "remove the noise"])
    assert len(enc._cache) == before
    sims = enc.encode(["remove the noise", "denoise this photo", "write me a poem"])
    assert float(sims[0] @ sims[1]) > float(sims[0] @ sims[2])
