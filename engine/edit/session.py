"""An edit session: the original photo plus ordered, re-weightable steps. The one way to run an instruction.

``apply`` plans what the user typed (``engine.edit.planning``), sets each
step's strength (the planned degree, an override, or a scale) *before*
anything runs, checks the size an up-sampling step would make, then runs each
step once through its runner (``engine.edit.runners``). The CLI, batch, the
engine server and the desktop app all call it; none plans, blends or
refreshes on its own.

Each step keeps its correction (see ``engine.edit.steps``), so a strength can
change afterwards without re-running a network. Changing an earlier step
changes the input of later ones: those are marked stale and previewed with
their old correction until ``refresh`` recomputes them exactly. Undo lives in
the front end (the desktop app's QUndoStack swaps step lists with
``set_steps``).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engine.edit.planning import PlannedStep, plan_instruction
from engine.edit.prompts import DEFAULT_SPIRE_GUIDANCE, DEFAULT_SPIRE_STEPS
from engine.edit.recipes import Recipe, RecipeStep
from engine.edit.runners import Runners
from engine.edit.steps import UPSAMPLING_INTENT, SessionError, Step, StepKind, blend, render
from engine.edit.upsampling import DEFAULT_MAX_RESULT_PIXELS, check_result_size, parse_enlargement
from engine.errors import StudioError
from engine.io.atomic import atomic_path
from engine.jobs import CancelToken, ProgressCallback, check

__all__ = ["EditSession", "NothingToDoError", "Recipe", "SessionError", "SpireOptions", "Step", "StepKind"]

SESSION_FORMAT = "instructir-session"
SESSION_VERSION = 2


class NothingToDoError(StudioError):
    """No part of the instruction is a restoration request; ``plan`` says why for each part."""

    code = "nothing-to-do"

    def __init__(self, plan: list[PlannedStep]) -> None:
        reasons = "; ".join(p.message or f"'{p.text}' is not a restoration request" for p in plan)
        super().__init__(f"Nothing to do: {reasons}" if reasons else "Nothing to do.")
        self.plan = plan


@dataclass(frozen=True)
class SpireOptions:
    """How a SPIRE step samples (``mode=StepKind.SPIRE``); the restoration prompt comes from the instruction."""

    semantic: str = ""
    sampling_steps: int = DEFAULT_SPIRE_STEPS
    guidance: float = DEFAULT_SPIRE_GUIDANCE
    seed: int = 0


class EditSession:
    """The document: original pixels + steps. Front ends render ``result()``."""

    def __init__(self, original: np.ndarray, *, max_result_pixels: int = DEFAULT_MAX_RESULT_PIXELS) -> None:
        if original.ndim != 3 or original.shape[2] != 3:
            raise ValueError("an edit session needs an HxWx3 image")
        self.original = np.ascontiguousarray(original, dtype=np.float32)
        self.steps: list[Step] = []
        self.max_result_pixels = max_result_pixels
        self._cache: dict[int, np.ndarray] = {}

    # --- state --------------------------------------------------------------

    def clone(self) -> EditSession:
        """An independent session over the same arrays (corrections and original are shared, never copied)."""
        other = type(self)(self.original, max_result_pixels=self.max_result_pixels)
        other.steps = [replace(s) for s in self.steps]
        return other

    def set_steps(self, steps: list[Step], result: np.ndarray | None = None) -> None:
        """Make ``steps`` current (an undo/redo swap); ``result`` seeds the render cache when already known."""
        self.steps = [replace(s) for s in steps]
        self._changed(0)
        if result is not None and self.steps:
            self._cache[len(self.steps) - 1] = result

    def _changed(self, from_index: int = 0) -> None:
        for k in [k for k in self._cache if k >= from_index]:
            del self._cache[k]

    @property
    def stale(self) -> bool:
        return any(s.stale for s in self.steps)

    def stale_kinds(self) -> set[StepKind]:
        """Which runners a ``refresh`` needs."""
        return {s.kind for s in self.steps if s.stale}

    def size_after(self, index: int | None = None) -> tuple[int, int]:
        """(height, width) of the image after step ``index`` (default: the last), computed without rendering."""
        h, w = self.original.shape[:2]
        last = len(self.steps) - 1 if index is None else index
        for step in self.steps[: last + 1]:
            h, w = step.output_size(h, w)
        return h, w

    # --- rendering ----------------------------------------------------------

    def input_of(self, index: int) -> np.ndarray:
        return self.original if index == 0 else self.result(index - 1)

    def result(self, index: int | None = None) -> np.ndarray:
        """The image after step ``index`` (default: after the last step)."""
        if index is None:
            index = len(self.steps) - 1
        if index < 0:
            return self.original
        if index not in self._cache:
            self._cache[index] = render(self.steps[index], self.input_of(index))
        return self._cache[index]

    # --- editing ------------------------------------------------------------

    def plan_steps(self, instruction: str, runners, *, strength: float | None = None, scale: float = 1.0,
                   mode: StepKind = StepKind.INSTRUCTIR,
                   spire: SpireOptions | None = None) -> tuple[list[PlannedStep], list[Step]]:
        """The plan of ``instruction`` and the steps it would add, strengths final, nothing run yet."""
        runners = Runners.of(runners)
        if mode is StepKind.SPIRE:
            from engine.edit.prompts import from_instruction

            prompt = str(from_instruction(instruction))
            opts = spire or SpireOptions()
            weight = _weigh(1.0, strength, scale)
            plan = [PlannedStep(instruction.strip(), "spire", 1.0, weight, True)]
            params = {"prompt": prompt, "semantic": " ".join(opts.semantic.split()),
                      "sampling_steps": int(opts.sampling_steps), "guidance": float(opts.guidance),
                      "seed": int(opts.seed)}
            return plan, [Step(instruction.strip(), "spire", 1.0, weight, "SPIRE", kind=StepKind.SPIRE,
                               params=params)]
        restorer = runners.for_kind(StepKind.INSTRUCTIR).restorer
        plan = plan_instruction(instruction, restorer, no_op_classes=restorer.bundle.no_op_classes)
        steps = []
        for part in plan:
            if not part.actionable:
                continue
            if part.intent == UPSAMPLING_INTENT:
                kind, params = StepKind.UPSAMPLE, parse_enlargement(part.text).to_params()
            else:
                kind, params = StepKind.INSTRUCTIR, {}
            steps.append(Step(part.text, part.intent, part.confidence, _weigh(part.strength, strength, scale),
                              restorer.name, kind=kind, params=params))
        return plan, steps

    def apply(self, instruction: str, runners, *, strength: float | None = None, scale: float = 1.0,
              mode: StepKind = StepKind.INSTRUCTIR, spire: SpireOptions | None = None,
              progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> list[PlannedStep]:
        """Plan ``instruction``, weigh, and run each actionable part once as a new step.

        ``runners``: a :class:`~engine.edit.runners.Runners` or a bare restorer.
        ``strength`` overrides every step's strength, ``scale`` multiplies the
        planned ones. Returns the plan (no-op parts included) so a front end can
        explain it; raises ``NothingToDoError`` when nothing is actionable. A
        cancelled or failed run adds nothing.
        """
        runners = Runners.of(runners)
        plan, new = self.plan_steps(instruction, runners, strength=strength, scale=scale, mode=mode, spire=spire)
        if not new:
            raise NothingToDoError(plan)
        self.extend(new, runners, progress=progress, cancel=cancel)
        return plan

    def extend(self, new: list[Step], runners, *, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None) -> None:
        """Run ``new`` (steps without corrections) after the current ones and append them, all or nothing."""
        runners = Runners.of(runners)
        h, w = self.size_after()
        sizes = []
        for step in new:
            h, w = step.output_size(h, w)
            check_result_size(h, w, self.max_result_pixels)
            sizes.append(h * w)
        stale = [i for i, s in enumerate(self.steps) if s.stale]
        weights = [self._pixels_of(i) for i in stale] + sizes
        slices = _slices(progress, weights)
        self._refresh(runners, stale, slices[: len(stale)], cancel)
        current = self.result()
        done: list[Step] = []
        for step, sub in zip(new, slices[len(stale):]):
            check(cancel)
            base, delta, secs = runners.run(current, step, progress=sub, cancel=cancel)
            step = replace(step, delta=delta, seconds=secs)
            current = blend(base.copy() if base is current else base, delta, step.strength)
            del base
            done.append(step)
        check(cancel)
        start = len(self.steps)
        self.steps.extend(done)
        self._cache[start + len(done) - 1] = current

    def add_step(self, step: Step) -> None:
        """Append a computed step (a front end that made the correction itself, e.g. a loaded session)."""
        self.steps.append(step)

    def set_strength(self, index: int, strength: float) -> None:
        """Re-weight a step; later steps become stale (previewed until ``refresh``)."""
        strength = float(min(1.0, max(0.0, strength)))
        self.steps[index] = replace(self.steps[index], strength=strength)
        self._mark_stale_after(index)

    def remove_step(self, index: int) -> None:
        del self.steps[index]
        self._mark_stale_after(index - 1)

    def _mark_stale_after(self, index: int) -> None:
        for j in range(index + 1, len(self.steps)):
            self.steps[j] = replace(self.steps[j], stale=True)
        self._changed(max(index, 0))

    def _pixels_of(self, index: int) -> int:
        h, w = self.size_after(index)
        return h * w

    def refresh(self, runners, *, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> None:
        """Recompute stale steps exactly, each with the runner of its kind."""
        stale = [i for i, s in enumerate(self.steps) if s.stale]
        self._refresh(Runners.of(runners), stale, _slices(progress, [self._pixels_of(i) for i in stale]), cancel)

    def _refresh(self, runners: Runners, stale: list[int], slices: list, cancel: CancelToken | None) -> None:
        for i, sub in zip(stale, slices):
            check(cancel)
            _, delta, secs = runners.run(self.input_of(i), self.steps[i], progress=sub, cancel=cancel)
            self.steps[i] = replace(self.steps[i], delta=delta, stale=False, seconds=secs)
            self._changed(i)

    # --- recipes ------------------------------------------------------------

    def to_recipe(self) -> Recipe:
        return Recipe.from_steps(self.steps)

    @classmethod
    def replay(cls, recipe: Recipe, image: np.ndarray, runners, *, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None, max_result_pixels: int = DEFAULT_MAX_RESULT_PIXELS) -> EditSession:
        """Apply a recipe's steps, in order, at their strengths and sizes, to a new image."""
        runners = Runners.of(runners)
        session = cls(image, max_result_pixels=max_result_pixels)
        restorer = runners.for_kind(StepKind.INSTRUCTIR).restorer
        new = []
        for rs in recipe.steps:
            intent = restorer.understand(rs.instruction)
            new.append(_step_from_recipe(rs, intent, restorer.name))
        session.extend(new, runners, progress=progress, cancel=cancel)
        return session

    # --- files --------------------------------------------------------------

    def save(self, path: str | os.PathLike, extras: dict[str, bytes] | None = None) -> Path:
        """Lossless session file: a zip of JSON metadata and float32 arrays, written atomically.

        ``extras``: more zip entries a front end keeps beside the engine's (read back with ``read_extras``).
        """
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            meta = {"format": SESSION_FORMAT, "version": SESSION_VERSION, "steps": [s.meta() for s in self.steps]}
            zf.writestr("session.json", json.dumps(meta, indent=2))
            _write_array(zf, "original.npy", self.original)
            for i, s in enumerate(self.steps):
                _write_array(zf, f"delta_{i}.npy", s.delta)
            for name, data in (extras or {}).items():
                zf.writestr(name, data)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EditSession:
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("session.json"))
                if meta.get("format") != SESSION_FORMAT:
                    raise SessionError(f"{path} is not an InstructIR session file")
                session = cls(_read_array(zf, "original.npy"))
                session.steps = [Step(**m, delta=_read_array(zf, f"delta_{i}.npy"))
                                 for i, m in enumerate(meta["steps"])]
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
            if isinstance(exc, SessionError):
                raise
            raise SessionError(f"cannot read session {path}: {exc}") from exc
        return session

    @staticmethod
    def read_extras(path: str | os.PathLike, prefix: str) -> dict[str, bytes]:
        """The zip entries under ``prefix`` that a front end stored with ``save(extras=...)``."""
        try:
            with zipfile.ZipFile(path) as zf:
                return {n: zf.read(n) for n in zf.namelist() if n.startswith(prefix)}
        except (OSError, zipfile.BadZipFile) as exc:
            raise SessionError(f"cannot read session {path}: {exc}") from exc


def _weigh(planned: float, strength: float | None, scale: float) -> float:
    value = planned if strength is None else strength
    return float(min(1.0, max(0.0, value * scale)))


def _step_from_recipe(rs: RecipeStep, intent, model: str) -> Step:
    params = dict(rs.params)
    if rs.kind is StepKind.UPSAMPLE and not params:
        params = parse_enlargement(rs.instruction).to_params()
    return Step(rs.instruction, intent.label, intent.confidence, rs.strength, model, kind=rs.kind, params=params)


def _write_array(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=False)
    zf.writestr(name, b.getvalue())


def _read_array(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    return np.load(io.BytesIO(zf.read(name)), allow_pickle=False)


def _slices(progress: ProgressCallback | None, weights: list[int]) -> list[ProgressCallback | None]:
    """One progress callback per sub-job, each mapped onto its share (by weight) of 0..1000."""
    if progress is None:
        return [None] * len(weights)
    total = float(sum(weights)) or 1.0
    out, start = [], 0.0
    for w in weights:
        out.append(_Slice(progress, start / total, w / total))
        start += w
    return out


class _Slice:
    def __init__(self, progress: ProgressCallback, start: float, share: float) -> None:
        self.progress, self.start, self.share = progress, start, share

    def __call__(self, done: int, total: int) -> None:
        self.progress(int(1000 * (self.start + self.share * done / max(total, 1))), 1000)
