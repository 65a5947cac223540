"""Sentence encoder for instructions (frozen; sentence-transformers).

InstructIR embeds the instruction with a small sentence encoder: token
embeddings mean-pooled over the attention mask, then L2-normalised. We build
that pipeline explicitly (Transformer -> mean Pooling -> Normalize) instead of
trusting each model folder's pooling config, so all-MiniLM-L6-v2 and
bge-micro-v2 are embedded exactly as the original code did.

Misspelled words are corrected toward the restoration vocabulary before
embedding (``engine.model.spelling``; ``spelling=False`` turns it off), so inference,
training embeddings and benchmarks all embed the same text.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import torch

from engine.model.encoders import (  # noqa: F401 - re-exported: where encoders are found
    DEFAULT_ENCODER,
    OFFICIAL_ENCODER,
    TextEncoderError,
    packaged_minilm_path,
    resolve_encoder_path,
)
from engine.model.spelling import correct_spelling


class TextEncoder:
    """Embeds instructions to 384-d unit vectors; results are cached per instruction."""

    def __init__(self, name_or_path: str | os.PathLike = DEFAULT_ENCODER, device: str = "cpu",
                 cache_size: int = 512, spelling: bool = True) -> None:
        self.path = resolve_encoder_path(name_or_path)
        self.device = device
        self.spelling = spelling
        self._model = None
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _load(self):
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
        from sentence_transformers import SentenceTransformer, models
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        bars_were_off = are_progress_bars_disabled()
        tf_bars_were_on = hf_logging.is_progress_bar_enabled()
        # transformers' "Loading weights" bar is noise on every start; download bars elsewhere must stay.
        disable_progress_bars()
        hf_logging.disable_progress_bar()
        try:
            transformer = models.Transformer(str(self.path))
            dim_of = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
            pooling = models.Pooling(dim_of(), pooling_mode="mean")
            return SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device=self.device)
        except Exception as exc:  # noqa: BLE001 - any loader failure means the same to the user
            raise TextEncoderError(f"Could not load the text encoder from {self.path}: {exc}") from exc
        finally:
            if not bars_were_off:
                enable_progress_bars()
            if tf_bars_were_on:
                hf_logging.enable_progress_bar()

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def prepare(self, text: str) -> str:
        """The text that is actually embedded: ``text`` with misspellings corrected when ``spelling`` is on."""
        if not self.spelling:
            return text
        return correct_spelling(text, self.path)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embed a batch (N x dim, float32, CPU), using the cache (keyed by the text as given) where it can."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vectors = self.model.encode([self.prepare(t) for t in missing], convert_to_tensor=True, batch_size=64,
                                        show_progress_bar=False).float().cpu()
            with self._lock:
                for t, v in zip(missing, vectors):
                    self._cache[t] = v
                    self._cache.move_to_end(t)
                while len(self._cache) > max(self._cache_size, len(texts)):
                    self._cache.popitem(last=False)
        return torch.stack([self._cache[t] for t in texts])

    def __call__(self, text: str) -> torch.Tensor:
        """Embed one instruction (1 x dim)."""
        return self.encode([text])
