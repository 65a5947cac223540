import json

import pytest
import torch
from conftest import SHARED
from safetensors import safe_open
from safetensors.torch import load_file

from engine.model.network import OFFICIAL_7D_CONFIG, build_lm_head, build_network, count_parameters

GOLDEN = SHARED / "reference" / "instructir_golden_small.safetensors"
KEYS_TSV = SHARED / "reference" / "instructir_7d_state_dict_keys.tsv"
needs_reference = pytest.mark.skipif(not GOLDEN.exists(), reason=f"reference vectors not found at {GOLDEN}")


@needs_reference
def test_golden_vectors_reproduced():
    tensors = load_file(str(GOLDEN))
    with safe_open(str(GOLDEN), "pt") as fh:
        meta = fh.metadata()
    net = build_network(json.loads(meta["config"])).eval()
    net.load_state_dict({k[12:]: v for k, v in tensors.items() if k.startswith("image_model.")}, strict=True)
    head = build_lm_head(**json.loads(meta["lm_head"])).eval()
    head.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("lm_head.")}, strict=True)
    with torch.no_grad():
        text_embedding, logits = head(tensors["sentence_embedding"])
        out = net(tensors["input"], tensors["text_embedding"])
    assert (text_embedding - tensors["text_embedding"]).abs().max() < 1e-4
    assert (logits - tensors["intent_logits"]).abs().max() < 1e-4
    assert out.shape == tensors["output"].shape  # odd size: padded and cropped back
    assert (out - tensors["output"]).abs().max() < 1e-4


@needs_reference
def test_official_7d_layout_matches_published_keys():
    expected = {}
    for line in KEYS_TSV.read_text().splitlines():
        if "\t" in line:
            key, shape = line.split("\t")
            expected[key] = tuple(json.loads(shape.replace("(", "[").replace(")", "]").replace(",]", "]")))
    net = build_network(OFFICIAL_7D_CONFIG)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == expected
    assert count_parameters(net) == 15_843_363


def test_head_outputs_unit_text_embedding():
    head = build_lm_head(384, 256, 9)
    emb, logits = head(torch.randn(3, 384))
    assert emb.shape == (3, 256) and logits.shape == (3, 9)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_network_keeps_size_and_is_residual():
    net = build_network({"width": 8, "enc_blks": [1, 1], "middle_blk_num": 1, "dec_blks": [1, 1], "txtdim": 16})
    x = torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        for p in net.ending.parameters():
            p.zero_()
        y = net(x, torch.randn(1, 16))
    assert y.shape == x.shape
    assert torch.allclose(y, x)  # zero ending conv => output is exactly the input (global residual)
