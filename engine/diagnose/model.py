"""The learned part of the diagnosis: two small MLPs stored as JSON and run with numpy.

``classifier`` names the kind of damage (clean or one of the restoration
intents); ``strength`` says how bad it is, 0..1 relative to the range the
training degradations span. Both read the standardised feature vector of
``engine.diagnose.features``. Loading is cheap (a ~100 KB JSON file); a
loaded model is immutable, so one instance serves any number of threads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from engine.errors import StudioError

MODEL_FILE = "diagnose.json"
FORMAT = "instructir-diagnose"


class Kind(str, Enum):
    """What the diagnosis can name: the restoration intents of the bundled model, or nothing wrong."""

    CLEAN = "clean"
    NOISE = "noise"
    BLUR = "blur"
    RAIN = "rain"
    HAZE = "haze"
    LOW_LIGHT = "low-light"
    ENHANCEMENT = "enhancement"
    UPSAMPLING = "upsampling"
    JPEG = "jpeg"

    def __str__(self) -> str:
        return self.value


CLEAN = Kind.CLEAN.value
#: Class order of the stored classifier.
CLASSES: tuple[str, ...] = tuple(k.value for k in Kind)
#: The restoration intents (every kind but clean).
INTENTS: tuple[Kind, ...] = tuple(k for k in Kind if k is not Kind.CLEAN)


class DiagnoseModelError(StudioError):
    """The diagnosis model file is missing or unreadable."""

    code = "diagnose-model"


def default_model_dir() -> Path:
    from engine.model.registry import resources_dir

    return resources_dir() / "models" / "diagnose"


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


@dataclass(frozen=True)
class _MLP:
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]

    @classmethod
    def from_json(cls, layers: list[dict]) -> _MLP:
        return cls(tuple((np.asarray(layer["weight"], np.float32), np.asarray(layer["bias"], np.float32))
                         for layer in layers))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                x = _relu(x)
        return x


@dataclass(frozen=True)
class DiagnoseModel:
    """Classifier + strength regressor with their feature standardisation."""

    features: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    classifier: _MLP
    strength: _MLP
    card: dict
    #: Softmax temperature fitted on held-out photos (probabilities that mean what they say).
    temperature: float = 1.0
    #: Learned severity = P(kind) x (floor + (1 - floor) x strength); fitted on held-out photos.
    severity_floor: float = 0.35
    #: The floor of each kind where it has its own (fitted per kind on held-out photos), else ``severity_floor``.
    severity_floors: dict[Kind, float] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path | None = None) -> DiagnoseModel:
        path = Path(folder) if folder is not None else default_model_dir()
        path = path / MODEL_FILE if path.is_dir() else path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DiagnoseModelError(f"cannot read the diagnosis model {path}: {exc}") from exc
        if data.get("format") != FORMAT or tuple(data.get("classes", ())) != CLASSES:
            raise DiagnoseModelError(f"{path} is not a diagnosis model of this version")
        return cls(tuple(data["features"]), np.asarray(data["mean"], np.float32),
                   np.asarray(data["std"], np.float32), _MLP.from_json(data["classifier"]),
                   _MLP.from_json(data["strength"]), {k: v for k, v in data.items()
                                                        if k in ("training", "damage_scale", "version")},
                   float(data.get("temperature", 1.0)), float(data.get("severity_floor", 0.35)),
                   {Kind(k): float(v) for k, v in data.get("severity_floors", {}).items()})

    def floor(self, kind: Kind) -> float:
        """The severity floor of ``kind``: how much a sure, faint case of it counts."""
        return self.severity_floors.get(kind, self.severity_floor)

    def predict(self, vector: np.ndarray) -> tuple[dict[Kind, float], float]:
        """Class probabilities and the predicted strength (0..1) of whatever damage there is."""
        x = ((np.asarray(vector, np.float32) - self.mean) / self.std)[None]
        logits = self.classifier(x.copy())[0] / self.temperature
        p = np.exp(logits - logits.max())
        p /= p.sum()
        strength = float(np.clip(self.strength(x.copy())[0, 0], 0.0, 1.0))
        return {Kind(c): float(v) for c, v in zip(CLASSES, p)}, strength
