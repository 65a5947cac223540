"""SPIRE restoration: load a base model and an adapter, then DDIM-sample a restored image.

``SpirePipeline.restore(rgb, "Denoise with sigma 0.06", "a cat on a sofa")``
pads the photo to the UNet's multiple, encodes both prompts with the base
model's CLIP text encoder, runs DDIM with classifier-free guidance on the
semantic prompt (the adapter's modulation is computed once per step and shared
by both guidance branches), decodes with the VAE and crops back. Progress is
reported per step and cancellation is checked between steps.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.edit.prompts import DEFAULT_SPIRE_GUIDANCE, DEFAULT_SPIRE_STEPS, RestorationPrompt, from_instruction
from engine.jobs import CancelToken, ProgressCallback, check, report
from engine.model.devices import DeviceChoice, choose_device
from engine.spire.model import AdapterError, SpireAdapter, SpireDenoiser

#: Above this many pixels (after upsampling) a single pass would need more memory than a 24 GB GPU has.
MAX_PIXELS = 2048 * 2048


def load_base(base: str | os.PathLike, dtype: torch.dtype = torch.float32, local_files_only: bool = False) -> dict:
    """UNet, VAE, CLIP text encoder, tokenizer and DDIM scheduler of a Stable Diffusion folder or hub id."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"local_files_only": local_files_only}
    source = str(base)
    try:
        return {
            "unet": UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype, **kw),
            "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kw),
            "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kw).to(dtype),
            "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw),
            "scheduler": DDIMScheduler.from_pretrained(source, subfolder="scheduler", **kw),
        }
    except (OSError, ValueError) as exc:
        raise AdapterError(f"could not load the base model {source!r} (a Stable Diffusion 1.x/2.x folder or hub id "
                           f"with unet/, vae/, text_encoder/, tokenizer/, scheduler/): {exc}") from exc


def encode_prompts(tokenizer, text_encoder, texts: list[str]) -> torch.Tensor:
    """CLIP last hidden states, padded to the tokenizer's full length as Stable Diffusion was trained."""
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def to_numpy(image: np.ndarray | Image.Image) -> np.ndarray:
    """HxWx3 float32 in [0, 1] from a float or uint8 array or a PIL image."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of an HxWx3 float image, channel by channel in float (no 8-bit rounding)."""
    if img.shape[:2] == (height, width):
        return img
    chans = [Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32)) for c in range(3)]
    chans = [np.asarray(c.resize((width, height), Image.Resampling.BICUBIC)) for c in chans]
    return np.clip(np.stack(chans, axis=-1), 0.0, 1.0).astype(np.float32)


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Frozen, in eval mode, on ``device``; cast only when the dtype differs (diffusers warns on every cast)."""
    current = next(module.parameters()).dtype
    module = module.to(device) if current == dtype else module.to(device, dtype)
    return module.eval().requires_grad_(False)


class SpirePipeline:
    """A base Stable Diffusion model plus a SPIRE adapter, on one device."""

    def __init__(self, components: dict, adapter: SpireAdapter, device: str | DeviceChoice = "auto") -> None:
        self.choice = device if isinstance(device, DeviceChoice) else choose_device(device)
        dev, dtype = self.choice.device, self.choice.dtype
        self.unet = _place(components["unet"], dev, dtype)
        self.vae = _place(components["vae"], dev, dtype)
        self.text_encoder = _place(components["text_encoder"], dev, dtype)
        self.tokenizer = components["tokenizer"]
        self.scheduler_config = components["scheduler"].config
        self.adapter = _place(adapter, dev, dtype)
        self.denoiser = SpireDenoiser(self.unet, self.adapter)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if adapter.config.get("vae_scale_factor", self.vae_scale_factor) != self.vae_scale_factor:
            raise AdapterError("the adapter was trained for a VAE with another downsampling factor")
        #: Height and width are padded to a multiple of this (the VAE's factor times the UNet's).
        self.multiple = self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        self.max_pixels = MAX_PIXELS
        self._lock = threading.Lock()  # the skip hooks hold per-call state: one restoration at a time

    @classmethod
    def from_pretrained(cls, adapter: str | os.PathLike | None = None, base: str | os.PathLike | None = None, *,
                        device: str | DeviceChoice = "auto", local_files_only: bool = True) -> SpirePipeline:
        """Load an adapter folder (default: the installed one) and its base model (default: the one it names).

        A hub-id base must already be in the local cache unless ``local_files_only=False`` (never download silently).
        """
        from engine.spire.adapters import find_adapter

        folder = Path(adapter) if adapter is not None else find_adapter()
        if folder is None:
            raise AdapterError("no SPIRE adapter is installed (SPIRE weights are not public: train one, "
                               "see docs/spire.md)")
        config = SpireAdapter.read_config(folder)
        base = base or config.get("base_model")
        if not base:
            raise AdapterError(f"{folder} does not name its base model; pass base=")
        choice = device if isinstance(device, DeviceChoice) else choose_device(device)
        components = load_base(base, choice.dtype, local_files_only=local_files_only)
        return cls(components, SpireAdapter.from_pretrained(folder, dtype=choice.dtype), choice)

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        return encode_prompts(self.tokenizer, self.text_encoder, texts)

    def output_size(self, height: int, width: int, prompt: RestorationPrompt, upscale: bool = True) -> tuple[int, int]:
        factor = prompt.upsample if upscale and prompt.upsample else 1.0
        return max(1, round(height * factor)), max(1, round(width * factor))

    def restore(self, image: np.ndarray | Image.Image, restoration_prompt: str | RestorationPrompt,
                semantic_prompt: str = "", *, negative_prompt: str = "", steps: int = DEFAULT_SPIRE_STEPS,
                guidance: float = DEFAULT_SPIRE_GUIDANCE, strength: float = 1.0, upscale: bool = True, seed: int = 0,
                progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> np.ndarray:
        """The restored image, HxWx3 float32 in [0, 1].

        ``restoration_prompt`` is the grammar ("Denoise with sigma 0.06") or an
        everyday instruction ("remove the noise, strongly"); ``PromptError``
        says what is wrong with it. An empty ``semantic_prompt`` is
        semantic-agnostic restoration. With "Upsample to Nx" and ``upscale`` the
        photo is enlarged N times first (SPIRE restores at the target size).
        ``strength`` < 1 starts from the noised degraded image instead of pure
        noise (fewer steps, closer to the input). Raises ``Cancelled``. Calls
        from several threads run one after another.
        """
        prompt = restoration_prompt if isinstance(restoration_prompt, RestorationPrompt) \
            else from_instruction(restoration_prompt)
        if steps < 1:
            raise ValueError("steps must be at least 1")
        if not 0.0 < strength <= 1.0:
            raise ValueError("strength must be in (0, 1]")
        with self._lock, torch.no_grad():
            return self._restore(to_numpy(image), prompt, semantic_prompt, negative_prompt, steps, guidance,
                                 strength, upscale, seed, progress, cancel)

    def _restore(self, rgb: np.ndarray, prompt: RestorationPrompt, semantic_prompt: str, negative_prompt: str,
                 steps: int, guidance: float, strength: float, upscale: bool, seed: int,
                 progress: ProgressCallback | None, cancel: CancelToken | None) -> np.ndarray:
        h, w = self.output_size(*rgb.shape[:2], prompt, upscale)
        if h * w > self.max_pixels:
            raise ValueError(f"{w}x{h} is too large for one SPIRE pass (at most {self.max_pixels / 1e6:.1f} MP); "
                             "downscale or crop the photo first")
        rgb = resize(rgb, h, w)
        check(cancel)
        dev, dtype = self.choice.device, self.choice.dtype

        m = self.multiple
        ph, pw = -h % m, -w % m
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None] * 2 - 1
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
        x = x.to(dev, dtype)

        restoration = self.embed([str(prompt)])
        cfg = guidance != 1.0 and semantic_prompt.strip() != negative_prompt.strip()
        semantic = self.embed([negative_prompt, semantic_prompt] if cfg else [semantic_prompt])

        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(steps, device=dev)
        first = steps - max(1, min(steps, round(steps * strength)))
        timesteps = scheduler.timesteps[first:]
        total = len(timesteps) + 1  # + decoding

        gen = torch.Generator().manual_seed(seed)
        f = self.vae_scale_factor
        shape = (1, self.unet.config.in_channels, x.shape[2] // f, x.shape[3] // f)
        noise = torch.randn(shape, generator=gen).to(dev, dtype)
        if first == 0:
            latents = noise * scheduler.init_noise_sigma
        else:
            init = self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor
            latents = scheduler.add_noise(init, noise, timesteps[:1])

        for i, t in enumerate(timesteps):
            check(cancel)
            model_in = scheduler.scale_model_input(latents, t)
            pred = self.denoiser(model_in, t, semantic, restoration, x)
            if cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance * (cond - uncond)
            latents = scheduler.step(pred, t, latents).prev_sample
            report(progress, i + 1, total)

        check(cancel)
        out = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        out = ((out[0, :, :h, :w].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()
        report(progress, total, total)
        return np.ascontiguousarray(out, dtype=np.float32)
