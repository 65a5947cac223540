"""The restorer: text encoder + projection head + image network on one device.

``Restorer.from_pretrained(name)`` loads a model from the registry; ``restore``
runs one instruction on one image, whole when it fits the memory budget and
tiled otherwise, with progress, cancellation and (on CUDA) an out-of-memory
retry with smaller tiles. On the strip path (the CPU default) progress comes
from every strip and cancellation is checked between strips, so a front end
sees progress within a second and a cancel takes effect within a strip.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.jobs import CancelToken, ProgressCallback, check, report
from engine.model import streaming
from engine.model.devices import DeviceChoice, choose_device
from engine.model.exposure import LOW_LIGHT_INTENT, brightening_share, temper
from engine.model.memory import available_memory, keep_freed_buffers
from engine.model.network import build_network
from engine.model.registry import DEFAULT_MODEL, ModelBundle, load_model, save_folder
from engine.model.streaming import DEFAULT_STRIP_PIXELS
from engine.model.text import TextEncoder
from engine.model.tiling import RowSink, run_tiled, tile_grid

#: Peak activation bytes per pixel, per unit of network width, of a whole-image pass: the plain
#: path (CUDA; measured 41-45 for the 7D config, 57 for studio-small) and the strip path the CPU
#: uses (engine.model.streaming; measured, see bench/README.md).
ACTIVATION_BYTES_PER_PIXEL_PER_WIDTH = 60
STRIP_ACTIVATION_BYTES_PER_PIXEL_PER_WIDTH = 18
MIN_TILE = 128
DEFAULT_OVERLAP = 48
#: What one restore may use on CPU in all: activations, the float input and the blended output. The
#: process itself (torch, the model, the text encoder) holds about 0.55 GB more: under 2 GB in all.
#: A 1080p photo still runs whole (exact) with the 7D network in strips (1.24 GB).
CPU_MEMORY_BUDGET = 1_300_000_000


@dataclass(frozen=True)
class Intent:
    """What the head understood: the class, its probability, and all class probabilities."""

    label: str
    confidence: float
    probabilities: dict[str, float]


class Restorer:
    """A loaded model ready to restore images; keep one per process and reuse it (warm path)."""

    def __init__(self, bundle: ModelBundle, device: str | DeviceChoice = "auto", fast: bool = False,
                 tile: int | None = None, overlap: int = DEFAULT_OVERLAP,
                 memory_budget: int | None = None, reuse_buffers: bool = True,
                 strip_pixels: int | None = None) -> None:
        """``strip_pixels``: pixels per strip of the exact low-memory pass (``engine.model.streaming``);
        0 turns it off. By default the CPU uses strips and CUDA the plain whole-tensor pass."""
        self.bundle = bundle
        self.choice = device if isinstance(device, DeviceChoice) else choose_device(device, fast)
        if strip_pixels is None:
            strip_pixels = DEFAULT_STRIP_PIXELS if self.choice.device.type == "cpu" else 0
        self.strip_pixels = strip_pixels
        self.tile = tile
        self.overlap = overlap
        self.memory_budget = memory_budget
        self.net = build_network(bundle.config).eval()
        self.net.load_state_dict(bundle.image_state, strict=True)
        self.head = bundle.build_head()
        self.net.to(self.choice.device, memory_format=torch.channels_last)
        if self.choice.device.type == "cpu" and reuse_buffers:
            keep_freed_buffers()
        if self.choice.device.type == "cuda":
            self.net.half()
        self.encoder = TextEncoder(bundle.encoder, device="cpu")
        self._embeddings: dict[str, tuple[torch.Tensor, Intent]] = {}

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_MODEL, *, allow_download: bool = False,
                        **kwargs) -> Restorer:
        return cls(load_model(name_or_path, allow_download=allow_download), **kwargs)

    def save_pretrained(self, folder: str | os.PathLike, half: bool = False) -> Path:
        return save_folder(self.bundle, Path(folder), half=half)

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def classes(self) -> tuple[str, ...]:
        return self.bundle.classes

    # --- text ---------------------------------------------------------------

    def embed(self, instruction: str) -> tuple[torch.Tensor, Intent]:
        """Text embedding for the network and the understood intent (cached per instruction)."""
        key = instruction.strip()
        if key not in self._embeddings:
            with torch.no_grad():
                text_embedding, logits = self.head(self.encoder(key))
            probs = torch.softmax(logits[0], -1)
            idx = int(probs.argmax())
            intent = Intent(self.classes[idx], float(probs[idx]),
                            {c: float(p) for c, p in zip(self.classes, probs)})
            self._embeddings[key] = (text_embedding, intent)
        return self._embeddings[key]

    def understand(self, instruction: str) -> Intent:
        return self.embed(instruction)[1]

    # --- images -------------------------------------------------------------

    def estimate_bytes(self, height: int, width: int) -> int:
        """Peak activation memory of one whole-image pass (halved for fp16 on CUDA)."""
        per_width = STRIP_ACTIVATION_BYTES_PER_PIXEL_PER_WIDTH if self.strip_pixels else \
            ACTIVATION_BYTES_PER_PIXEL_PER_WIDTH
        per_px = per_width * int(self.bundle.config["width"])
        if self.choice.device.type == "cuda" and self.choice.dtype == torch.float16:
            per_px //= 2  # CPU bf16 autocast keeps fp32 copies around: no saving there (measured)
        return height * width * per_px

    def _budget(self) -> int:
        if self.memory_budget is not None:
            return self.memory_budget
        if self.choice.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.choice.device)
            return int(free * 0.7)
        return min(CPU_MEMORY_BUDGET, available_memory() // 2)

    def plan_tile(self, height: int, width: int) -> int | None:
        """None for a whole-image pass, else the tile side that fits the memory budget.

        The budget pays first for the full-size float input and output (which a
        tiled run keeps too); the rest bounds the activations.
        """
        if self.tile:
            return None if max(height, width) <= self.tile else self.tile
        image_bytes = height * width * 3 * 4
        budget = self._budget() - 2 * image_bytes
        if self.estimate_bytes(height, width) <= budget:
            return None
        per_px = self.estimate_bytes(1, 1)
        side = int(math.sqrt(max(budget, 0) / per_px)) // 32 * 32
        return max(MIN_TILE, side)

    def _forward(self, x: torch.Tensor, text_embedding: torch.Tensor, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> torch.Tensor:
        dev, dtype = self.choice.device, self.choice.dtype
        x = x.to(dev).contiguous(memory_format=torch.channels_last)
        t = text_embedding.to(dev)
        with self._strip_progress(x.shape[2], x.shape[3], progress, cancel):
            if dev.type == "cpu" and dtype == torch.bfloat16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    y = self.net(x, t, self.strip_pixels)
            else:
                y = self.net(x.to(dtype), t.to(dtype), self.strip_pixels)
        return y.float().clamp_(0, 1).cpu()  # in place: no second full-size copy

    def _strip_progress(self, height: int, width: int, progress: ProgressCallback | None,
                        cancel: CancelToken | None):
        """Report ``progress`` (in thousandths) and check ``cancel`` after every strip of the pass."""
        if not self.strip_pixels or (progress is None and cancel is None):
            return contextlib.nullcontext()
        total, done, shown = streaming.work_units(self.net, height, width), 0, -1

        def strip(units: int) -> None:
            nonlocal done, shown
            check(cancel)
            done += units
            permille = min(999, 1000 * done // max(total, 1))  # 1000 only once the pass is over
            if permille != shown:
                shown = permille
                report(progress, permille, 1000)

        return streaming.observe(strip)

    def _tile_forward(self, text_embedding: torch.Tensor, tiles: int, progress: ProgressCallback | None,
                      cancel: CancelToken | None):
        """The network on one tile after another, each reporting its strips into its share of the whole."""
        order = itertools.count()

        def forward(tile: torch.Tensor) -> torch.Tensor:
            i = next(order)
            within = None if progress is None else (lambda d, n: progress(1000 * i + 1000 * d // max(n, 1),
                                                                          1000 * tiles))
            return self._forward(tile, text_embedding, within, cancel)

        return forward

    def restore_tensor(self, image: torch.Tensor, text_embedding: torch.Tensor, *,
                       progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                       sink: RowSink | None = None) -> torch.Tensor | None:
        """1x3xHxW float in [0,1] -> restored, same shape (or, with ``sink``, handed over by rows: None)."""
        with torch.inference_mode():
            return self._restore_tensor(image, text_embedding, progress, cancel, sink)

    def _restore_tensor(self, image, text_embedding, progress, cancel, sink) -> torch.Tensor | None:
        _, _, h, w = image.shape
        tile = self.plan_tile(h, w)
        while True:
            try:
                check(cancel)
                if tile is None:
                    out = self._forward(image, text_embedding, progress, cancel)
                    report(progress, 1, 1)
                    if sink is None:
                        return out
                    sink(0, h, out)
                    return None
                return run_tiled(self._tile_forward(text_embedding, len(tile_grid(h, w, tile, self.overlap)),
                                                    progress, cancel), image, tile, self.overlap, progress, cancel,
                                 sink)
            except torch.OutOfMemoryError:  # a retry re-sends every row: a sink only ever overwrites
                if self.choice.device.type == "cuda":
                    torch.cuda.empty_cache()
                smaller = (tile or max(h, w)) // 2 // 32 * 32
                if smaller < MIN_TILE:
                    raise
                tile = smaller

    def restore(self, image: np.ndarray, instruction: str | torch.Tensor, *,
                progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                sink: Callable[[int, int, np.ndarray], None] | None = None) -> np.ndarray | None:
        """Restore an HxWx3 float32 image in [0, 1] following ``instruction``.

        With ``sink``, ``sink(y0, y1, rows)`` receives rows ``[y0, y1)`` of the
        result (HxWx3 float32, valid during the call) as they are finished and
        nothing is returned: the caller keeps the result in the form it needs
        (the session keeps a half-precision correction) and no full float copy
        of a big result is ever held.
        """
        if isinstance(instruction, torch.Tensor):
            emb, intent = instruction, None
        else:
            emb, intent = self.embed(instruction)
        image = np.ascontiguousarray(image, dtype=np.float32)
        x = torch.from_numpy(image).permute(2, 0, 1)[None]
        # "brighten" on a photo that is not dark: gently (a share of the correction)
        share = brightening_share(image) if intent is not None and intent.label == LOW_LIGHT_INTENT else 1.0
        gentle = share < 1
        if sink is None:
            y = self.restore_tensor(x, emb, progress=progress, cancel=cancel)[0].permute(1, 2, 0).numpy()
            return temper(image, np.ascontiguousarray(y), share) if gentle else y

        def rows_out(y0: int, y1: int, rows: torch.Tensor) -> None:
            band = rows[0].permute(1, 2, 0).numpy()  # a view: no copy of a whole-image result
            sink(y0, y1, temper(image[y0:y1], band, share) if gentle else band)

        self.restore_tensor(x, emb, progress=progress, cancel=cancel, sink=rows_out)
        return None
