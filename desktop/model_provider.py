"""The model layer: loads the restorer in the background and tells the UI what state it is in.

The rest of the app asks the provider for ``restorer`` and never imports the
pipeline itself, so tests inject a fake restorer (``ModelProvider.fixed``) and
the app still starts, with a clear message, when the bundled model is missing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from PySide6.QtCore import QObject, QThreadPool, Signal

from .settings import MODEL_BUNDLED, MODEL_FOLDER, MODEL_OFFICIAL, Settings
from .workers import engine_pool, run_in_pool


class ProviderState(str, enum.Enum):
    IDLE = "idle"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


Loader = Callable[[str, str, bool, int | None], object]


def load_restorer(spec: str, device: str, fast: bool, tile: int | None):
    """The real loader (pool thread): a Restorer from a registry name or folder."""
    from engine.model.pipeline import Restorer

    return Restorer.from_pretrained(spec, device=device, fast=fast, tile=tile)


def missing_model_message(spec: str, source: str, detail: str) -> str:
    if source == MODEL_BUNDLED:
        return (f"The bundled model “{spec}” is not installed. Open Settings → Model to download the official "
                "InstructIR-7D weights or to choose a model folder.")
    if source == MODEL_OFFICIAL:
        return ("The official InstructIR-7D weights are not downloaded yet. Open Settings → Model and press "
                "Download (about 60 MB), or choose a model folder.")
    if source == MODEL_FOLDER:
        return f"No usable model in the folder “{spec}”: {detail} Open Settings → Model to pick another."
    return detail


class ModelProvider(QObject):
    """Owns the current restorer; ``stateChanged`` fires on loading / ready / failed."""

    stateChanged = Signal()

    def __init__(self, settings: Settings | None = None, loader: Loader | None = None,
                 pool: QThreadPool | None = None, parent: QObject | None = None, *, model: str | None = None,
                 device: str | None = None) -> None:
        """``model`` / ``device`` override Settings for this run only (command line), never persisted."""
        super().__init__(parent)
        self.settings = settings
        self.model_override = model
        self.device_override = device
        self.loader = loader or load_restorer
        self.pool = pool or engine_pool()  # the thread the queue's jobs run on (see engine_pool)
        self.state = ProviderState.IDLE
        self.restorer = None
        self.error = ""
        self._generation = 0

    @classmethod
    def fixed(cls, restorer, parent: QObject | None = None) -> ModelProvider:
        """A provider that already holds ``restorer`` (tests, plug-ins, the self-test)."""
        provider = cls(None, parent=parent)
        provider.set_restorer(restorer)
        return provider

    # --- state ----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.state is ProviderState.READY

    def set_restorer(self, restorer) -> None:
        self._generation += 1
        self.restorer, self.error, self.state = restorer, "", ProviderState.READY
        self.stateChanged.emit()

    def describe(self) -> str:
        """Status-bar text: model and device."""
        if self.state is ProviderState.READY:
            choice = getattr(self.restorer, "choice", None)
            device = getattr(choice, "label", None) or "CPU"
            return f"Model: {getattr(self.restorer, 'name', 'model')}  ·  {device}"
        if self.state is ProviderState.LOADING:
            return "Loading model…"
        if self.state is ProviderState.FAILED:
            return "Model missing" if "not installed" in self.error or "not downloaded" in self.error \
                else "Model failed to load"
        return "No model"

    # --- loading --------------------------------------------------------------

    def load(self) -> None:
        """(Re)load the model chosen in Settings on a pool thread."""
        if self.settings is None:
            return
        self._generation += 1
        generation = self._generation
        spec, source = self.settings.model_spec(), self.settings.model_source
        if self.model_override:
            spec, source = self.model_override, MODEL_FOLDER if "/" in self.model_override or "\\" in \
                self.model_override else ""
        device = self.device_override or self.settings.device
        fast, tile = self.settings.fast, self.settings.tile or None
        self.state, self.error = ProviderState.LOADING, ""
        self.stateChanged.emit()

        def done(restorer) -> None:
            if generation == self._generation:
                self.restorer, self.state = restorer, ProviderState.READY
                self.stateChanged.emit()

        def failed(message: str) -> None:
            if generation == self._generation:
                from engine.model.registry import DEFAULT_MODEL

                if "not installed" in message or "Unknown model" in message or "not downloaded" in message \
                        or "is not a model folder" in message or "missing" in message:
                    message = missing_model_message(spec if source != MODEL_BUNDLED else DEFAULT_MODEL, source,
                                                    message)
                self.restorer, self.state, self.error = None, ProviderState.FAILED, message
                self.stateChanged.emit()

        run_in_pool(lambda progress, cancel: self.loader(spec, device, fast, tile), on_finished=done,
                    on_failed=failed, pool=self.pool, receiver=self)
