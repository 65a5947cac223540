"""SPIRE on tiny random configs: the fusion, the adapter format, the sampling loop, the data and training."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import engine.spire as spire  # noqa: E402
from engine.edit.prompts import (  # noqa: E402
    BLUR_RANGE,
    JPEG_RANGE,
    NOISE_RANGE,
    UPSAMPLE_RANGE,
    PromptError,
    RestorationPrompt,
    parse_prompt,
)
from engine.jobs import Cancelled, CancelToken  # noqa: E402
from engine.spire.data import apply_prompt, make_pair, sample_prompt  # noqa: E402
from engine.spire.model import AdapterError, SkipModulator, SpireAdapter, SpireDenoiser, modulate  # noqa: E402
from engine.spire.pipeline import SpirePipeline, encode_prompts, load_base  # noqa: E402
from engine.spire.tiny import save_tiny_base  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models are all per-op overhead: one thread avoids OpenMP stalls on busy cores (200x faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_tiny_base(tmp_path_factory.mktemp("spire") / "tiny-base")


@pytest.fixture(scope="module")
def base(base_dir):
    return load_base(base_dir)


@pytest.fixture(scope="module")
def inputs(base):
    torch.manual_seed(1)
    embed = lambda texts: encode_prompts(base["tokenizer"], base["text_encoder"], texts)  # noqa: E731
    with torch.no_grad():
        return {
            "latents": torch.randn(1, 4, 16, 16),
            "t": torch.tensor(500),
            "semantic": embed(["a panda sitting by the bamboo"]),
            "semantic2": embed(["", "a panda sitting by the bamboo"]),
            "restoration": embed(["Denoise with sigma 0.06"]),
            "degraded": torch.rand(1, 3, 32, 32) * 2 - 1,
        }


def fresh_adapter(base, base_dir):
    return SpireAdapter.from_unet(base["unet"], vae_scale_factor=2, base_model=str(base_dir))


def randomise(adapter, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return adapter


@torch.no_grad()
def run(denoiser, inputs, semantic="semantic"):
    x = inputs
    return denoiser(x["latents"], x["t"], x[semantic], x["restoration"], x["degraded"])


# --- the fusion ------------------------------------------------------------------


@torch.no_grad()
def test_zero_initialised_fusion_reproduces_the_plain_unet_exactly(base, base_dir, inputs):
    unet = base["unet"]
    den = SpireDenoiser(unet, fresh_adapter(base, base_dir))
    try:
        for key in ("semantic", "semantic2"):  # one prompt, and the two of classifier-free guidance
            latents = inputs["latents"].repeat(inputs[key].shape[0], 1, 1, 1)
            plain = unet(latents, inputs["t"], encoder_hidden_states=inputs[key]).sample
            assert torch.equal(run(den, inputs, key), plain)
    finally:
        den.modulator.remove()


@torch.no_grad()
def test_fusion_modulates_the_right_skips(base, base_dir, inputs):
    """beta alone (gamma = 0) is an additive skip residual: it must equal diffusers' own ControlNet path."""
    unet, adapter = base["unet"], fresh_adapter(base, base_dir)
    g = torch.Generator().manual_seed(3)
    for fuse in adapter.fusion:
        fuse.conv.bias[fuse.channels:] = torch.randn(fuse.channels, generator=g)
    den = SpireDenoiser(unet, adapter)
    try:
        x = inputs
        mods = adapter(x["latents"], x["t"], x["restoration"], x["degraded"])
        assert all(torch.equal(gamma, torch.zeros_like(gamma)) for gamma, _ in mods)
        residuals = [beta for _, beta in mods]
        mid = torch.zeros(1, 64, 8, 8)  # the mid-block output of a 16x16 latent
        additive = unet(x["latents"], x["t"], encoder_hidden_states=x["semantic"],
                        down_block_additional_residuals=residuals, mid_block_additional_residual=mid).sample
        torch.testing.assert_close(run(den, inputs), additive, rtol=0, atol=1e-6)
        # and only inside the denoiser: the UNet itself is untouched afterwards
        plain = unet(x["latents"], x["t"], encoder_hidden_states=x["semantic"]).sample
        assert not torch.allclose(plain, additive)
        assert torch.equal(unet(x["latents"], x["t"], encoder_hidden_states=x["semantic"]).sample, plain)
    finally:
        den.modulator.remove()


def test_modulate_is_scale_and_bias_shared_across_guidance_branches():
    skip = torch.randn(4, 3, 2, 2)
    gamma, beta = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    out = modulate(skip, gamma, beta)
    torch.testing.assert_close(out, skip * (1 + gamma.repeat(2, 1, 1, 1)) + beta.repeat(2, 1, 1, 1))
    with pytest.raises(ValueError):
        modulate(torch.randn(3, 3, 2, 2), gamma, beta)


def test_modulator_counts_the_unet_skips(base):
    mod = SkipModulator(base["unet"])
    try:
        assert mod.num_skips == 4  # conv_in + (resnet + downsampler) + resnet
        with pytest.raises(AdapterError, match="skips"):
            with mod.active([]):
                pass
    finally:
        mod.remove()


# --- the adapter format ------------------------------------------------------------


@torch.no_grad()
def test_adapter_round_trips_through_save_and_load(base, base_dir, inputs, tmp_path):
    adapter = randomise(fresh_adapter(base, base_dir), seed=7)
    adapter.save_pretrained(tmp_path / "adapter", card={"note": "test"})
    loaded = SpireAdapter.from_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "spire_adapter.json").read_text())
    assert config["base_model"] == str(base_dir) and config["card"] == {"note": "test"}
    dens = [SpireDenoiser(base["unet"], a) for a in (adapter, loaded)]
    try:
        out = run(dens[0], inputs)
        assert torch.equal(out, run(dens[1], inputs))
        plain = base["unet"](inputs["latents"], inputs["t"], encoder_hidden_states=inputs["semantic"]).sample
        assert (out - plain).abs().max() > 1e-3  # a trained (here: random) fusion does change the UNet
    finally:
        for d in dens:
            d.modulator.remove()
    assert {k for k, p in loaded.named_parameters() if p.requires_grad} == \
        {k for k, p in adapter.named_parameters() if p.requires_grad}


def test_broken_adapter_folders_are_reported(base, base_dir, tmp_path):
    with pytest.raises(AdapterError, match="not a SPIRE adapter"):
        SpireAdapter.from_pretrained(tmp_path)
    fresh_adapter(base, base_dir).save_pretrained(tmp_path / "a")
    (tmp_path / "a" / "fusion.safetensors").unlink()
    with pytest.raises(AdapterError, match="incomplete"):
        SpireAdapter.from_pretrained(tmp_path / "a")


# --- the sampling loop ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(base_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapter") / "spire"
    comps = load_base(base_dir)
    randomise(SpireAdapter.from_unet(comps["unet"], vae_scale_factor=2, base_model=str(base_dir))).save_pretrained(
        folder)
    return SpirePipeline.from_pretrained(folder, device="cpu")


def photo(h=64, w=64):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 5)], -1).astype(np.float32)


def test_full_restoration_loop_with_guidance_and_progress(pipe):
    calls = []
    out = pipe.restore(photo(), "Deblur with sigma 1.5; Denoise with sigma 0.06", "a colourful gradient",
                       steps=2, guidance=4.0, progress=lambda d, t: calls.append((d, t)))
    assert out.shape == (64, 64, 3) and out.dtype == np.float32
    assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_same_seed_and_same_normalised_prompt_give_the_same_result(pipe):
    a = pipe.restore(photo(16, 16), "Deblur with sigma 1.5; Denoise with sigma 0.06", "a gradient", steps=1)
    b = pipe.restore(photo(16, 16), "deblur sigma 1.5, denoise 0.06", "a gradient", steps=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, pipe.restore(photo(16, 16), "Denoise with sigma 0.06", "a gradient", steps=1))


def test_img2img_odd_sizes_uint8_and_upsampling(pipe):
    img = (photo(30, 45) * 255).astype(np.uint8)
    calls = []
    out = pipe.restore(img, "remove the noise a bit", steps=4, strength=0.5, progress=lambda d, t: calls.append(t))
    assert out.shape == (30, 45, 3) and calls and set(calls) == {3}  # 2 of 4 steps + decoding
    assert pipe.restore(photo(16, 20), "Upsample to 2x", steps=1).shape == (32, 40, 3)
    assert pipe.restore(photo(16, 20), "Upsample to 2x", steps=1, upscale=False).shape == (16, 20, 3)


def test_cancellation_stops_between_steps(pipe):
    token = CancelToken()
    seen = []

    def progress(done, total):
        seen.append(done)
        token.cancel()

    with pytest.raises(Cancelled):
        pipe.restore(photo(32, 32), "Remove all degradation", steps=5, progress=progress, cancel=token)
    assert seen == [1]
    with pytest.raises(Cancelled):
        pipe.restore(photo(32, 32), "Remove all degradation", steps=5, cancel=token)


def test_bad_requests_raise_clear_errors(pipe):
    with pytest.raises(PromptError, match="InstructIR mode"):
        pipe.restore(photo(32, 32), "remove the haze", steps=1)
    limit, pipe.max_pixels = pipe.max_pixels, 100 * 100
    try:
        with pytest.raises(ValueError, match="too large"):
            pipe.restore(photo(32, 32), "Upsample to 4x", steps=1)
    finally:
        pipe.max_pixels = limit


# --- availability ----------------------------------------------------------------------


def test_available_explains_what_is_missing(pipe, base_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTIR_STUDIO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("INSTRUCTIR_RESOURCES", str(tmp_path / "resources"))
    monkeypatch.delenv(spire.ADAPTER_ENV, raising=False)
    ok, reason = spire.available()
    assert not ok and "not public" in reason and str(tmp_path / "data" / "spire") in reason
    assert spire.find_adapter() is None

    adapter = SpireAdapter.from_unet(pipe.unet, vae_scale_factor=2, base_model=str(base_dir))
    adapter.save_pretrained(spire.install_dir())
    assert spire.find_adapter() == tmp_path / "data" / "spire"
    ok, reason = spire.available()
    assert ok and reason

    adapter.config["base_model"] = str(tmp_path / "no-such-base")
    adapter.save_pretrained(tmp_path / "elsewhere")
    monkeypatch.setenv(spire.ADAPTER_ENV, str(tmp_path / "elsewhere"))
    ok, reason = spire.available()
    assert not ok and "not on this computer" in reason

    monkeypatch.setattr(spire.adapters, "_missing_packages", lambda: ["diffusers"])
    ok, reason = spire.available()
    assert not ok and "pip install 'instructir-studio[spire]'" in reason


# --- training data ----------------------------------------------------------------------


def test_sampled_prompts_are_canonical_and_in_range():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = sample_prompt(rng)
        assert p.operations and parse_prompt(str(p)) == p
        assert p.deblur is None or BLUR_RANGE[0] <= p.deblur <= BLUR_RANGE[1]
        assert p.denoise is None or NOISE_RANGE[0] <= p.denoise <= NOISE_RANGE[1]
        assert p.upsample is None or UPSAMPLE_RANGE[0] <= p.upsample <= UPSAMPLE_RANGE[1]
        assert p.dejpeg is None or JPEG_RANGE[0] <= p.dejpeg <= JPEG_RANGE[1]


def test_degradation_matches_its_prompt():
    rng = np.random.default_rng(0)
    clean = np.full((64, 64, 3), 0.5, np.float32)
    noisy = apply_prompt(clean, RestorationPrompt(denoise=0.1), rng)
    assert noisy.shape == clean.shape and abs(float((noisy - clean).std()) - 0.1) < 0.01
    img = photo()
    blurred = apply_prompt(img, RestorationPrompt(deblur=3.0), rng)
    assert np.abs(np.diff(blurred, axis=1)).mean() < np.abs(np.diff(img, axis=1)).mean()
    small = apply_prompt(img, RestorationPrompt(upsample=4.0, dejpeg=30), rng)
    assert small.shape == img.shape and not np.array_equal(small, img)
    degraded, text = make_pair(img, rng, blind_prob=1.0)
    assert text == "Remove all degradation" and degraded.shape == img.shape


# --- training end to end ------------------------------------------------------------------


def test_training_runs_resumes_and_produces_a_loadable_adapter(tmp_path):
    from engine.spire import train

    args = ["--tiny", "--out", str(tmp_path), "--size", "32", "--batch", "2", "--workers", "0", "--log-every", "1",
            "--lr", "1e-3", "--warmup", "1"]
    first = train.main([*args, "--steps", "1"])
    assert first["step"] == 1 and np.isfinite(first["loss"])
    adapter = SpireAdapter.from_pretrained(tmp_path / "adapter")
    assert any(f.conv.weight.abs().sum() > 0 for f in adapter.fusion)  # the fusion left zero: it learned

    second = train.main([*args, "--steps", "2"])
    assert second["step"] == 2
    log = [json.loads(line) for line in (tmp_path / "train.log").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert torch.load(tmp_path / "state.pt", weights_only=False)["step"] == 2
    assert json.loads((tmp_path / "adapter" / "spire_adapter.json").read_text())["card"]["step"] == 2

    pipe = SpirePipeline.from_pretrained(tmp_path / "adapter", device="cpu")
    out = pipe.restore(photo(16, 16), "Denoise with sigma 0.05", steps=1)
    assert out.shape == (16, 16, 3) and np.isfinite(out).all()


# --- command line ------------------------------------------------------------------------


def test_command_line(pipe, base_dir, tmp_path, capsys):
    from PIL import Image

    from engine.spire.__main__ import main

    assert main(["prompt", "get rid of the grain and upscale 2x"]) == 0
    assert capsys.readouterr().out.strip() == "Denoise with sigma 0.072; Upsample to 2x"
    assert main(["prompt", "remove the haze"]) == 2
    assert "InstructIR mode" in capsys.readouterr().err

    adapter = tmp_path / "adapter"
    SpireAdapter.from_unet(pipe.unet, vae_scale_factor=2, base_model=str(base_dir)).save_pretrained(adapter)
    Image.fromarray((photo(16, 20) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    args = ["restore", str(tmp_path / "in.png"), "Upsample to 2x", "--adapter", str(adapter), "--steps", "1",
            "--device", "cpu", "-o", str(tmp_path / "out.png")]
    assert main(args) == 0
    with Image.open(tmp_path / "out.png") as im:
        assert im.size == (40, 32)
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
