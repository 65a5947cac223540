"""What runs one step of each kind: InstructIR, the resizing up-sampling step, SPIRE.

A runner turns a step's input into the step's *correction*: the full-strength
result minus the step's base (its input for same-size steps, the plain
resample for the up-sampling step), so the session can re-blend strength
without running anything again. ``EditSession`` is the only caller; front ends
hand it a :class:`Runners` with what they have loaded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.edit.steps import Step, StepKind, base_of
from engine.errors import StudioError
from engine.jobs import CancelToken, ProgressCallback, check

#: A step's correction is kept in half precision: relative error 2**-11, so under 1/8 of an 8-bit level
#: where the correction is largest and finer where it is small (a few 16-bit levels; a denoiser's own
#: error is thousands), and a 48 MP up-scaled photo's correction costs 288 MB, not 576. The network's rows
#: are folded into it as they are finished, so no full float result is held beside the base.
CORRECTION_DTYPE = np.float16


class RunnerUnavailableError(StudioError):
    """A step needs a model that is not loaded (e.g. a SPIRE step without the SPIRE pipeline)."""

    code = "runner-unavailable"


class StepRunner(Protocol):
    """Runs one kind of step."""

    name: str

    def correction(self, image: np.ndarray, step: Step, *, progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(base, correction): the step's base on ``image`` and its full-strength result minus that base."""


class InstructIRRunner:
    """The network, run on the step's base: the image itself at its own size."""

    def __init__(self, restorer) -> None:
        self.restorer = restorer
        self.name = restorer.name

    def base(self, image: np.ndarray, step: Step) -> np.ndarray:
        return image

    def correction(self, image, step, *, progress=None, cancel=None) -> tuple[np.ndarray, np.ndarray]:
        base = self.base(image, step)
        check(cancel)
        delta = np.empty(base.shape, CORRECTION_DTYPE)

        def rows_into(y0: int, y1: int, rows: np.ndarray) -> None:
            np.subtract(rows, base[y0:y1], out=delta[y0:y1], casting="same_kind")

        self.restorer.restore(base, step.instruction, progress=progress, cancel=cancel, sink=rows_into)
        return base, delta


class UpsampleRunner(InstructIRRunner):
    """Enlarge with the plain resample, then refine the enlarged image with the network's up-sampling task."""

    def base(self, image: np.ndarray, step: Step) -> np.ndarray:
        return base_of(step, image)


class SpireRunner:
    """SPIRE diffusion: the restoration prompt and sampling settings live in the step's params."""

    name = "SPIRE"

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    def correction(self, image, step, *, progress=None, cancel=None) -> np.ndarray:
        p = step.params
        out = self.pipeline.restore(image, p["prompt"], p.get("semantic", ""), steps=int(p["sampling_steps"]),
                                    guidance=float(p["guidance"]), upscale=False, seed=int(p.get("seed", 0)),
                                    progress=progress, cancel=cancel)
        out = np.asarray(out, dtype=np.float32)
        if out.shape != image.shape:
            raise StudioError(f"SPIRE returned a {out.shape[1]}x{out.shape[0]} image for a "
                              f"{image.shape[1]}x{image.shape[0]} photo.")
        return image, np.subtract(out, image, out=np.empty(image.shape, CORRECTION_DTYPE), casting="same_kind")


@dataclass
class Runners:
    """What this front end has loaded: the InstructIR restorer and, optionally, the SPIRE pipeline."""

    restorer: object | None = None
    spire: object | None = None

    @classmethod
    def of(cls, runners_or_restorer) -> Runners:
        """Accept a ``Runners`` or a bare restorer (the common case)."""
        return runners_or_restorer if isinstance(runners_or_restorer, Runners) else cls(runners_or_restorer)

    def for_kind(self, kind: StepKind) -> StepRunner:
        if kind is StepKind.SPIRE:
            if self.spire is None:
                raise RunnerUnavailableError("This step was made with SPIRE, which is not loaded: switch to SPIRE "
                                             "mode to recompute it.")
            return SpireRunner(self.spire)
        if self.restorer is None:
            raise RunnerUnavailableError("No InstructIR model is loaded yet.")
        return UpsampleRunner(self.restorer) if kind is StepKind.UPSAMPLE else InstructIRRunner(self.restorer)

    def run(self, image: np.ndarray, step: Step, *, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """(base, correction, seconds) of ``step`` on ``image``; ``base`` may be ``image`` itself."""
        runner = self.for_kind(step.kind)
        check(cancel)
        t = time.perf_counter()
        base, delta = runner.correction(image, step, progress=progress, cancel=cancel)
        return base, delta, time.perf_counter() - t
