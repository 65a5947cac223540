"""The SPIRE network: a ControlNet adapter whose features rescale a frozen UNet's skip connections.

Qi et al., "SPIRE: Semantic Prompt-Driven Image Restoration" (ECCV 2024):

- the frozen Stable Diffusion UNet reads the *semantic* prompt through its
  own cross-attention;
- a trainable copy of its encoder (``diffusers.ControlNetModel.from_unet``)
  reads the noisy latent, the degraded image (a few stride-2 convs on the
  pixels, added after ``conv_in``: the same as concatenating them with the
  latent before it) and the *restoration* prompt;
- instead of adding the copy's features to the skips, a zero-initialised
  1x1 conv per skip predicts a per-channel scale and bias:
  ``skip' = skip * (1 + gamma) + beta``. Only the skips are modulated.

The modulation is applied by forward pre-hooks on the UNet's up blocks,
which replace the ``res_hidden_states_tuple`` they are handed, so no diffusers
code is copied and the UNet stays a plain ``UNet2DConditionModel``. With the
fusion convs at zero the result is bit-for-bit the plain UNet's.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn

from engine.errors import StudioError
from engine.io.atomic import atomic_path, write_text

ADAPTER_FORMAT = "instructir-studio/spire-adapter"
ADAPTER_VERSION = 1
CONFIG_FILE = "spire_adapter.json"
FUSION_FILE = "fusion.safetensors"
CONTROLNET_DIR = "controlnet"
#: Channels of the pixel-space downsampling convs, by how much they downsample (the VAE's factor).
COND_CHANNELS = (16, 32, 96, 256)

Modulation = tuple[torch.Tensor, torch.Tensor]


class AdapterError(StudioError, RuntimeError):
    """The adapter folder is missing, incomplete, or does not fit the base model."""

    code = "spire-adapter"


class ModulationFusion(nn.Module):
    """Per-channel scale and bias for one skip, predicted from the matching control feature.

    Zero-initialised (like ControlNet's zero convs) so training starts from the
    frozen UNet's own behaviour.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv2d(channels, 2 * channels, kernel_size=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, control: torch.Tensor) -> Modulation:
        gamma, beta = self.conv(control).chunk(2, dim=1)
        return gamma, beta


def modulate(skip: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``skip * (1 + gamma) + beta``; gamma/beta computed for B images also serve k*B (classifier-free guidance)."""
    if gamma.shape[0] != skip.shape[0]:
        reps = skip.shape[0] // gamma.shape[0]
        if reps * gamma.shape[0] != skip.shape[0]:
            raise ValueError(f"modulation batch {gamma.shape[0]} does not divide the UNet batch {skip.shape[0]}")
        gamma, beta = gamma.repeat(reps, 1, 1, 1), beta.repeat(reps, 1, 1, 1)
    return skip * (1 + gamma.to(skip.dtype)) + beta.to(skip.dtype)


class SkipModulator:
    """Hooks on a UNet's up blocks that modulate the skip features they receive.

    ``UNet2DConditionModel.forward`` hands each up block the last
    ``len(block.resnets)`` entries of its skip list as the keyword argument
    ``res_hidden_states_tuple``; the hooks know which entries those are and
    swap in modulated tensors while a ``with modulator.active(mods):`` block
    runs. Outside it the UNet is untouched.
    """

    def __init__(self, unet: UNet2DConditionModel) -> None:
        self.unet = unet
        counts = [len(block.resnets) for block in unet.up_blocks]
        self.num_skips = sum(counts)
        self._mods: Sequence[Modulation] | None = None
        self._handles = []
        end = self.num_skips
        for block, n in zip(unet.up_blocks, counts):
            self._handles.append(block.register_forward_pre_hook(self._hook(end - n, end), with_kwargs=True))
            end -= n

    def _hook(self, start: int, stop: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if self._mods is None:
                return None
            skips = kwargs.get("res_hidden_states_tuple")
            if skips is None or len(skips) != stop - start:
                raise RuntimeError(
                    f"{type(module).__name__} was not handed its {stop - start} skips as 'res_hidden_states_tuple'; "
                    "this diffusers version calls up blocks differently than SPIRE expects"
                )
            kwargs["res_hidden_states_tuple"] = tuple(
                modulate(skip, *self._mods[i]) for skip, i in zip(skips, range(start, stop))
            )
            return args, kwargs

        return hook

    @contextmanager
    def active(self, mods: Sequence[Modulation]) -> Iterator[None]:
        if len(mods) != self.num_skips:
            raise AdapterError(f"the adapter gives {len(mods)} modulations but the UNet has {self.num_skips} skips")
        self._mods = mods
        try:
            yield
        finally:
            self._mods = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _cond_channels(vae_scale_factor: int) -> tuple[int, ...]:
    n = round(math.log2(vae_scale_factor)) + 1
    if 2 ** (n - 1) != vae_scale_factor or not 1 <= n <= len(COND_CHANNELS):
        raise ValueError(f"the VAE must downsample by 1, 2, 4 or 8, not {vae_scale_factor}")
    return COND_CHANNELS[:n]


class SpireAdapter(nn.Module):
    """Everything SPIRE trains: the ControlNet copy and one modulation fusion per skip.

    The ControlNet's own 1x1 output convs are set to the identity and frozen,
    and its mid-block output is unused: the fusion layers take their place. It
    stays a standard diffusers ``ControlNetModel`` so it saves and loads with
    diffusers' own code.
    """

    def __init__(self, controlnet: ControlNetModel, config: dict | None = None) -> None:
        super().__init__()
        self.controlnet = controlnet
        channels = [block.in_channels for block in controlnet.controlnet_down_blocks]
        self.fusion = nn.ModuleList(ModulationFusion(c) for c in channels)
        self.config = {"format": ADAPTER_FORMAT, "version": ADAPTER_VERSION, "skip_channels": channels,
                       "conditioning": "RGB pixels scaled to [-1, 1], the size of the VAE input",
                       "prompt_grammar": "engine.edit.prompts v1"} | (config or {})
        for module in (controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block, controlnet.mid_block):
            if module is not None:
                module.requires_grad_(False)

    @classmethod
    def from_unet(cls, unet: UNet2DConditionModel, vae_scale_factor: int = 8, base_model: str = "") -> SpireAdapter:
        """A fresh adapter: the encoder copied from ``unet``, fusion at zero (so the UNet is unchanged)."""
        cond = _cond_channels(vae_scale_factor)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=cond)
        with torch.no_grad():
            for conv in controlnet.controlnet_down_blocks:
                conv.weight.copy_(torch.eye(conv.in_channels).view(conv.in_channels, conv.in_channels, 1, 1))
                conv.bias.zero_()
        adapter = cls(controlnet, {"base_model": base_model, "vae_scale_factor": vae_scale_factor})
        return adapter.to(device=unet.device, dtype=unet.dtype)

    def forward(self, noisy_latents: torch.Tensor, timestep: torch.Tensor | float, restoration_embeds: torch.Tensor,
                degraded: torch.Tensor) -> list[Modulation]:
        """(gamma, beta) for every UNet skip, from the noisy latent, the restoration prompt and the degraded pixels."""
        down, _mid = self.controlnet(noisy_latents, timestep, encoder_hidden_states=restoration_embeds,
                                     controlnet_cond=degraded, return_dict=False)
        return [fuse(feature) for fuse, feature in zip(self.fusion, down)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def save_pretrained(self, folder: str | os.PathLike, card: dict | None = None) -> Path:
        """Write ``controlnet/`` (diffusers format), ``fusion.safetensors`` and ``spire_adapter.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.controlnet.save_pretrained(folder / CONTROLNET_DIR, safe_serialization=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.fusion.state_dict().items()}
        with atomic_path(folder / FUSION_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": ADAPTER_FORMAT})
        config = self.config | ({"card": card} if card else {})
        write_text(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        return folder

    @classmethod
    def read_config(cls, folder: str | os.PathLike) -> dict:
        """The adapter's config; ``AdapterError`` when the folder is not an adapter."""
        folder = Path(folder)
        path = folder / CONFIG_FILE
        if not path.is_file():
            raise AdapterError(f"{folder} is not a SPIRE adapter (no {CONFIG_FILE})")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise AdapterError(f"{path} is unreadable: {exc}") from exc
        if config.get("format") != ADAPTER_FORMAT:
            raise AdapterError(f"{path} is not a SPIRE adapter config (format {config.get('format')!r})")
        if int(config.get("version", 0)) > ADAPTER_VERSION:
            raise AdapterError(f"{folder} was written by a newer version (format {config['version']}); update")
        for name in (CONTROLNET_DIR, FUSION_FILE):
            if not (folder / name).exists():
                raise AdapterError(f"{folder} is incomplete: {name} is missing")
        return config

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> SpireAdapter:
        folder = Path(folder)
        config = cls.read_config(folder)
        controlnet = ControlNetModel.from_pretrained(folder / CONTROLNET_DIR, torch_dtype=dtype)
        adapter = cls(controlnet, {k: v for k, v in config.items() if k != "card"})
        state = load_file(str(folder / FUSION_FILE))
        try:
            adapter.fusion.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise AdapterError(f"{folder / FUSION_FILE} does not fit its controlnet: {exc}") from exc
        # Own the memory instead of keeping safetensors' mapped (and oddly aligned) storage: the folder can then be
        # replaced while the adapter is in use (Windows), and BLAS results do not depend on file offsets.
        for tensor in [*adapter.parameters(), *adapter.buffers()]:
            tensor.data = tensor.data.clone()
        if dtype is not None:
            adapter.to(dtype=dtype)
        return adapter.eval()


class SpireDenoiser(nn.Module):
    """The frozen UNet driven by a SPIRE adapter: predicts the noise (or v) for a noisy latent.

    ``semantic_embeds`` may hold k prompt embeddings per image (k = 2 for
    classifier-free guidance: negative and positive); the adapter runs once per
    image and its modulation is shared by all k.
    """

    def __init__(self, unet: UNet2DConditionModel, adapter: SpireAdapter) -> None:
        super().__init__()
        self.unet = unet
        self.adapter = adapter
        self.modulator = SkipModulator(unet)
        if len(adapter.fusion) != self.modulator.num_skips:
            raise AdapterError(f"the adapter has {len(adapter.fusion)} fusion layers but the UNet has "
                               f"{self.modulator.num_skips} skips: it was trained for another base model")

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor | float, semantic_embeds: torch.Tensor,
                restoration_embeds: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
        mods = self.adapter(latents, timestep, restoration_embeds, degraded)
        reps = semantic_embeds.shape[0] // latents.shape[0]
        if reps * latents.shape[0] != semantic_embeds.shape[0]:
            raise ValueError(f"{semantic_embeds.shape[0]} semantic embeddings for {latents.shape[0]} latents")
        if reps > 1:
            latents = latents.repeat(reps, 1, 1, 1)
            if isinstance(timestep, torch.Tensor) and timestep.ndim == 1 and timestep.shape[0] > 1:
                timestep = timestep.repeat(reps)
        with self.modulator.active(mods):
            return self.unet(latents, timestep, encoder_hidden_states=semantic_embeds, return_dict=False)[0]
