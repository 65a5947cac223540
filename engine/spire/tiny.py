"""Tiny random Stable-Diffusion-shaped base models, built locally from configs.

No SPIRE weights exist and the tests never reach a model hub, so the tests and
the training script's ``--tiny`` smoke run use these: a UNet with block
channels (32, 64), a two-level VAE (downsamples by 2), a two-layer CLIP text
encoder and a byte-level CLIP tokenizer with no merges (one token per
character). They are saved in the usual ``unet/ vae/ text_encoder/
tokenizer/ scheduler/`` layout so they load exactly like a real base model.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

MAX_TOKENS = 32


def _byte_chars() -> list[str]:
    """The printable stand-ins byte-level BPE uses for the 256 byte values (GPT-2's table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tokenizer_files(folder: str | os.PathLike) -> Path:
    """``vocab.json`` + ``merges.txt`` of a character-level CLIP BPE (514 tokens)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab |= {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def tiny_tokenizer(max_length: int = MAX_TOKENS):
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return CLIPTokenizer.from_pretrained(write_tokenizer_files(tmp), model_max_length=max_length)


def tiny_components(seed: int = 0) -> dict:
    """Random ``unet``, ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler`` (DDIM) small enough for CPU tests."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32, sample_size=32,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=32,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "scheduler": scheduler}


def save_tiny_base(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny random base model in the Stable Diffusion folder layout."""
    folder = Path(folder)
    for name, component in tiny_components(seed).items():
        component.save_pretrained(folder / name)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                         "_note": "tiny random test model"}), encoding="utf-8")
    return folder
