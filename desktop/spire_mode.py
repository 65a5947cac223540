"""SPIRE (diffusion) mode in the app: whether it can run here, and loading the optional pipeline.

SPIRE is optional: ``engine.spire.available()`` says, cheaply and without
loading anything, whether it can run here and why not. :class:`SpireProvider`
asks that once in the background (and again after Settings), and loads the
pipeline, once, the first time the mode is used. Nothing here imports
``diffusers``; the pipeline is handed to the engine (``Runners(spire=...)``),
whose SPIRE runner makes the step, so tests inject a tiny or fake one
(``SpireProvider.fixed``).

A SPIRE result is an ordinary engine step (``StepKind.SPIRE``): its params
keep what is needed to run it again exactly, so strength sliders, undo/redo,
stale previews, Recompute and session files all work. The photo keeps its
size: "Upsample to Nx" restores the detail lost to an N-times down-sampling
at the photo's own size instead of enlarging it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from engine.edit.prompts import DEFAULT_SPIRE_STEPS

from .workers import NotReady, UserFacingError, run_in_pool


class SpireState(str, enum.Enum):
    CHECKING = "checking"
    UNAVAILABLE = "unavailable"
    AVAILABLE = "available"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


Availability = Callable[[], tuple[bool, str]]
Loader = Callable[[str], object]

#: What the diffusion-steps box starts at: the engine's default (the controller and the chat panel read it here).
DEFAULT_STEPS = DEFAULT_SPIRE_STEPS


def understood(text: str) -> tuple[str | None, str]:
    """(canonical restoration prompt, "") or (None, why it cannot be read) for what the user typed."""
    from engine.edit.prompts import PromptError, from_instruction

    if not text.strip():
        return None, ""
    try:
        return str(from_instruction(text)), ""
    except PromptError as exc:
        return None, str(exc)


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
        self.state = SpireState.CHECKING
        self.ok: bool | None = None
        self.reason = "Checking whether SPIRE can run on this computer…"
        self.error = ""
        self.pipeline = None
        self._generation = 0

    @classmethod
    def fixed(cls, pipeline, reason: str = "SPIRE is ready.", parent: QObject | None = None) -> SpireProvider:
        """A provider that already holds ``pipeline`` (tests)."""
        provider = cls(parent=parent, availability=lambda: (True, reason))
        provider.ok, provider.reason, provider.pipeline, provider.state = True, reason, pipeline, SpireState.READY
        return provider

    @property
    def device(self) -> str:
        return self.device_override or (self.settings.device if self.settings is not None else "auto")

    @property
    def on_cpu(self) -> bool:
        """Whether the reason warns that SPIRE will run (slowly) on the CPU."""
        return bool(self.ok) and "CPU" in self.reason

    def _set(self, state: SpireState) -> None:
        self.state = state
        self.stateChanged.emit()

    def check(self) -> None:
        """Ask ``available()`` on a pool thread (it may import torch); forgets a loaded pipeline."""
        self._generation += 1
        generation = self._generation
        self.pipeline, self.error, self.ok = None, "", None
        self.reason = "Checking whether SPIRE can run on this computer…"
        self._set(SpireState.CHECKING)

        def done(result) -> None:
            if generation == self._generation:
                self.ok, self.reason = bool(result[0]), str(result[1])
                self._set(SpireState.AVAILABLE if self.ok else SpireState.UNAVAILABLE)

        def failed(message: str) -> None:
            if generation == self._generation:
                self.ok, self.reason = False, f"Could not check whether SPIRE can run: {message}"
                self._set(SpireState.UNAVAILABLE)

        run_in_pool(lambda progress, cancel: self.availability(), on_finished=done, on_failed=failed,
                    pool=self.pool, receiver=self)

    def load(self) -> None:
        """Start loading the pipeline (once); a no-op unless SPIRE is available and not loaded."""
        if self.state is not SpireState.AVAILABLE:
            return
        self._generation += 1
        generation = self._generation
        device = self.device
        self._set(SpireState.LOADING)

        def done(pipeline) -> None:
            if generation == self._generation:
                self.pipeline = pipeline
                self._set(SpireState.READY)

        def failed(message: str) -> None:
            if generation == self._generation:
                self.error = f"SPIRE could not be loaded: {message}"
                self._set(SpireState.FAILED)

        run_in_pool(lambda progress, cancel: self.loader(device), on_finished=done, on_failed=failed,
                    pool=self.pool, receiver=self)

    def require(self):
        """The pipeline for a task starting now; NotReady while it loads (loading starts if needed)."""
        if self.state is SpireState.READY:
            return self.pipeline
        if self.state is SpireState.AVAILABLE:
            QTimer.singleShot(0, self.load)  # not from inside the queue's factory: load() emits stateChanged
            raise NotReady("Loading the SPIRE model (first use only)…")
        if self.state is SpireState.LOADING:
            raise NotReady("Loading the SPIRE model (first use only)…")
        if self.state is SpireState.CHECKING:
            raise NotReady("Checking whether SPIRE can run…")
        if self.state is SpireState.FAILED:
            raise UserFacingError(self.error)
        raise UserFacingError(f"SPIRE mode is not available: {self.reason}")
