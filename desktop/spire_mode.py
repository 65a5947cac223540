"""SPIRE (diffusion) mode in the app: its steps, running them, and loading the optional pipeline.

SPIRE is optional: ``engine.spire.available()`` says, cheaply and without
loading anything, whether it can run here and why not. :class:`SpireProvider`
asks that once in the background (and again after Settings), and loads the
pipeline, once, the first time the mode is used. Nothing here imports
``diffusers``; the pipeline is only touched through its ``restore`` method,
so tests inject a tiny or fake one (``SpireProvider.fixed``).

A SPIRE result enters the document like any step: a :class:`SpireStep` keeps
the correction ``result - input`` plus what is needed to run it again exactly
(restoration prompt, semantic prompt, steps, guidance, seed), so strength
sliders, undo/redo, stale previews, Recompute and session files all work.
The document keeps the photo's size: "Upsample to Nx" is run with
``upscale=False``, i.e. SPIRE restores the detail lost to an N-times
down-sampling at the photo's own size instead of enlarging it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np
from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from engine.edit.session import Step
from engine.jobs import CancelToken, ProgressCallback

from .workers import NotReady, UserFacingError, run_in_pool

SPIRE_INTENT = "spire"
SPIRE_MODEL = "SPIRE"
DEFAULT_SEED = 0

CHECKING, UNAVAILABLE, AVAILABLE, LOADING, READY, FAILED = (
    "checking", "unavailable", "available", "loading", "ready", "failed")

Availability = Callable[[], tuple[bool, str]]
Loader = Callable[[str], object]

_BASE_FIELDS = tuple(f.name for f in fields(Step))


#: = engine.spire.pipeline.DEFAULT_STEPS / DEFAULT_GUIDANCE, without importing it (it imports diffusers);
#: a test checks they agree.
DEFAULT_STEPS, DEFAULT_GUIDANCE = 50, 5.0


@dataclass
class SpireStep(Step):
    """A step made by SPIRE; ``instruction`` is what the user typed, ``prompt`` what SPIRE read."""

    prompt: str = ""
    semantic: str = ""
    sampling_steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    seed: int = DEFAULT_SEED

    def meta(self) -> dict:
        """Only the engine's fields: engine session files stay readable by ``EditSession.load``."""
        return {k: v for k, v in asdict(self).items() if k in _BASE_FIELDS and k != "delta"}

    def spire_meta(self) -> dict:
        return {"prompt": self.prompt, "semantic": self.semantic, "sampling_steps": self.sampling_steps,
                "guidance": self.guidance, "seed": self.seed}

    @classmethod
    def upgrade(cls, step: Step, extra: dict) -> SpireStep:
        """A plain Step read from a session file, plus the SPIRE fields the app stored beside it."""
        base = {name: getattr(step, name) for name in _BASE_FIELDS}
        known = {k: extra[k] for k in ("prompt", "semantic", "sampling_steps", "guidance", "seed") if k in extra}
        return cls(**base, **known)

    def summary(self) -> str:
        """"SPIRE: Denoise with sigma 0.118, 50 steps, 12.3 s" (what the chat and the history say)."""
        text = f"SPIRE: {self.prompt}, {self.sampling_steps} step{'s' if self.sampling_steps != 1 else ''}"
        return text + (f", {self.seconds:.1f} s" if self.seconds else "")


def is_spire(step: Step) -> bool:
    return isinstance(step, SpireStep)


def understood(text: str) -> tuple[str | None, str]:
    """(canonical restoration prompt, "") or (None, why it cannot be read) for what the user typed."""
    from engine.edit.prompts import PromptError, from_instruction

    if not text.strip():
        return None, ""
    try:
        return str(from_instruction(text)), ""
    except PromptError as exc:
        return None, str(exc)


def run_spire(pipeline, rgb: np.ndarray, step: SpireStep, progress: ProgressCallback | None = None,
              cancel: CancelToken | None = None) -> tuple[np.ndarray, float]:
    """Run SPIRE for ``step`` on ``rgb``; returns (correction = result - input, seconds).

    Engine errors become messages for the user; the photo keeps its size (see the module doc).
    """
    from engine.edit.prompts import PromptError

    t = time.perf_counter()
    try:
        out = pipeline.restore(rgb, step.prompt, step.semantic, steps=step.sampling_steps, guidance=step.guidance,
                               upscale=False, seed=step.seed, progress=progress, cancel=cancel)
    except PromptError as exc:
        raise UserFacingError(str(exc)) from exc
    except ValueError as exc:  # too large for one pass, bad settings
        raise UserFacingError(f"SPIRE cannot process this photo: {exc}") from exc
    except RuntimeError as exc:  # AdapterError and friends; out-of-memory keeps its own message
        if "out of memory" in str(exc).lower():
            raise
        raise UserFacingError(f"SPIRE failed: {exc}") from exc
    out = np.asarray(out, dtype=np.float32)
    if out.shape != rgb.shape:
        raise UserFacingError(f"SPIRE returned a {out.shape[1]}x{out.shape[0]} image for a "
                              f"{rgb.shape[1]}x{rgb.shape[0]} photo; the document keeps the photo's size.")
    return out - rgb, time.perf_counter() - t


def _engine_available() -> tuple[bool, str]:
    from engine import spire

    return spire.available()  # looked up at call time (tests monkeypatch it)


def load_pipeline(device: str):
    """The real loader (pool thread): the installed adapter and its base model."""
    from engine.spire.pipeline import SpirePipeline

    return SpirePipeline.from_pretrained(device=device)


class SpireProvider(QObject):
    """Whether SPIRE can run here (``ok``, ``reason``) and the pipeline, loaded on first use."""

    stateChanged = Signal()

    def __init__(self, settings=None, *, availability: Availability | None = None, loader: Loader | None = None,
                 device: str | None = None, pool: QThreadPool | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.availability = availability or _engine_available
        self.loader = loader or load_pipeline
        self.device_override = device
        self.pool = pool
        self.state = CHECKING
        self.ok: bool | None = None
        self.reason = "Checking whether SPIRE can run on this computer…"
        self.error = ""
        self.pipeline = None
        self._generation = 0

    @classmethod
    def fixed(cls, pipeline, reason: str = "SPIRE is ready.", parent: QObject | None = None) -> SpireProvider:
        """A provider that already holds ``pipeline`` (tests)."""
        provider = cls(parent=parent, availability=lambda: (True, reason))
        provider.ok, provider.reason, provider.pipeline, provider.state = True, reason, pipeline, READY
        return provider

    @property
    def device(self) -> str:
        return self.device_override or (self.settings.device if self.settings is not None else "auto")

    @property
    def on_cpu(self) -> bool:
        """Whether the reason warns that SPIRE will run (slowly) on the CPU."""
        return bool(self.ok) and "CPU" in self.reason

    def _set(self, state: str) -> None:
        self.state = state
        self.stateChanged.emit()

    def check(self) -> None:
        """Ask ``available()`` on a pool thread (it may import torch); forgets a loaded pipeline."""
        self._generation += 1
        generation = self._generation
        self.pipeline, self.error, self.ok = None, "", None
        self.reason = "Checking whether SPIRE can run on this computer…"
        self._set(CHECKING)

        def done(result) -> None:
            if generation == self._generation:
                self.ok, self.reason = bool(result[0]), str(result[1])
                self._set(AVAILABLE if self.ok else UNAVAILABLE)

        def failed(message: str) -> None:
            if generation == self._generation:
                self.ok, self.reason = False, f"Could not check whether SPIRE can run: {message}"
                self._set(UNAVAILABLE)

        run_in_pool(lambda progress, cancel: self.availability(), on_finished=done, on_failed=failed,
                    pool=self.pool, receiver=self)

    def load(self) -> None:
        """Start loading the pipeline (once); a no-op unless SPIRE is available and not loaded."""
        if self.state != AVAILABLE:
            return
        self._generation += 1
        generation = self._generation
        device = self.device
        self._set(LOADING)

        def done(pipeline) -> None:
            if generation == self._generation:
                self.pipeline = pipeline
                self._set(READY)

        def failed(message: str) -> None:
            if generation == self._generation:
                self.error = f"SPIRE could not be loaded: {message}"
                self._set(FAILED)

        run_in_pool(lambda progress, cancel: self.loader(device), on_finished=done, on_failed=failed,
                    pool=self.pool, receiver=self)

    def require(self):
        """The pipeline for a task starting now; NotReady while it loads (loading starts if needed)."""
        if self.state == READY:
            return self.pipeline
        if self.state == AVAILABLE:
            QTimer.singleShot(0, self.load)  # not from inside the queue's factory: load() emits stateChanged
            raise NotReady("Loading the SPIRE model (first use only)…")
        if self.state == LOADING:
            raise NotReady("Loading the SPIRE model (first use only)…")
        if self.state == CHECKING:
            raise NotReady("Checking whether SPIRE can run…")
        if self.state == FAILED:
            raise UserFacingError(self.error)
        raise UserFacingError(f"SPIRE mode is not available: {self.reason}")
