"""One applied step: what was asked, how strongly, and its correction; how a step renders on its input.

A step keeps ``delta``, its full-strength correction relative to its *base*:
the input itself for same-size steps, the plain resample of the input for the
up-sampling step. Rendering is ``clip(base(input) + strength * delta)``, so a
strength change never re-runs a network, and a step whose input changed is
previewed with its old correction until it is recomputed.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field

import numpy as np

from engine.edit.upsampling import Enlargement, resample
from engine.errors import StudioError


class StepKind(str, enum.Enum):
    """What kind of runner makes a step."""

    INSTRUCTIR = "instructir"
    UPSAMPLE = "upsample"  # changes the pixel size
    SPIRE = "spire"


#: The planner's intent that becomes a resizing step.
UPSAMPLING_INTENT = "upsampling"


class SessionError(StudioError, ValueError):
    """A session or recipe file is unreadable or of the wrong kind."""

    code = "session"


@dataclass
class Step:
    """One applied instruction (or one part of a compound one)."""

    instruction: str
    intent: str
    confidence: float
    strength: float
    model: str
    delta: np.ndarray | None = field(default=None, repr=False)
    stale: bool = False
    seconds: float = 0.0
    kind: StepKind = StepKind.INSTRUCTIR
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kind = StepKind(self.kind)

    def meta(self) -> dict:
        """Everything but the pixels, as plain JSON types."""
        d = asdict(self)
        d.pop("delta")
        d["kind"] = self.kind.value
        return d

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) this step makes from an input of that size."""
        if self.kind is StepKind.UPSAMPLE:
            return Enlargement.from_params(self.params).target_size(height, width)
        return height, width

    def summary(self) -> str:
        """A short description for lists ("Up-sample 2x", "SPIRE: Denoise with sigma 0.06")."""
        if self.kind is StepKind.UPSAMPLE:
            return f"Up-sample {Enlargement.from_params(self.params).describe()}"
        if self.kind is StepKind.SPIRE:
            return f"SPIRE: {self.params.get('prompt', self.instruction)}"
        return self.instruction


def base_of(step: Step, image: np.ndarray) -> np.ndarray:
    """What strength 0 of ``step`` means on ``image``: the image, or its plain resample to the step's size."""
    size = step.output_size(*image.shape[:2])
    return resample(image, size) if size != image.shape[:2] else image


def render(step: Step, image: np.ndarray) -> np.ndarray:
    """``clip(base + strength * delta)``; a correction of another size (its input changed size) is resampled."""
    base = base_of(step, image)
    delta = step.delta
    if delta is None:
        return base
    if delta.shape != base.shape:
        delta = resample(np.clip(delta * 0.5 + 0.5, 0, 1), base.shape[:2]) * 2 - 1  # preview only (stale)
    return blend(base.copy() if base is image else base, delta, step.strength)


def blend(out: np.ndarray, delta: np.ndarray, strength: float, rows: int = 256) -> np.ndarray:
    """``clip(out + strength * delta)`` in place on ``out``, a band of rows at a time (no full-size temporary)."""
    s = np.float32(strength)
    for r in range(0, out.shape[0], rows):
        band = out[r:r + rows]
        if s == 1:
            band += delta[r:r + rows]
        else:
            band += s * delta[r:r + rows]
        np.clip(band, 0.0, 1.0, out=band)
    return out
