"""An edit session: the original photo plus ordered, re-weightable restoration steps.

Each step keeps the network's correction ``delta = network(input) - input``.
Its result is ``input + strength * delta``, so a strength can change after the
fact without re-running the network. Changing an earlier step changes the input
of later ones: those are marked stale and previewed by re-applying their old
correction until ``refresh`` recomputes them exactly. Undo/redo restore
snapshots of the step list (corrections are shared, never copied).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.edit.planning import PlannedStep, plan_instruction
from engine.jobs import CancelToken, ProgressCallback, check

SESSION_FORMAT = "instructir-session"
RECIPE_FORMAT = "instructir-recipe"


class SessionError(ValueError):
    """A session or recipe file is unreadable or of the wrong kind."""


@dataclass
class Step:
    """One applied instruction."""

    instruction: str
    intent: str
    confidence: float
    strength: float
    model: str
    delta: np.ndarray | None = field(default=None, repr=False)
    stale: bool = False
    seconds: float = 0.0

    def meta(self) -> dict:
        d = asdict(self)
        d.pop("delta")
        return d


@dataclass
class Recipe:
    """Instructions and strengths that can be replayed on other photos."""

    steps: list[tuple[str, float]]
    model: str | None = None

    def to_dict(self) -> dict:
        return {"format": RECIPE_FORMAT, "version": 1, "model": self.model,
                "steps": [{"instruction": i, "strength": s} for i, s in self.steps]}

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        if data.get("format") != RECIPE_FORMAT:
            raise SessionError("not an InstructIR recipe (missing format: instructir-recipe)")
        try:
            steps = [(str(s["instruction"]), float(s.get("strength", 1.0))) for s in data["steps"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SessionError(f"malformed recipe step: {exc}") from exc
        if not steps:
            raise SessionError("the recipe has no steps")
        return cls(steps, data.get("model"))

    def save(self, path: str | os.PathLike) -> Path:
        return _write_atomic(Path(path), json.dumps(self.to_dict(), indent=2).encode())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise SessionError(f"cannot read recipe {path}: {exc}") from exc


def _write_atomic(path: Path, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class EditSession:
    """The document: original pixels + steps. Front ends render ``result()``."""

    def __init__(self, original: np.ndarray) -> None:
        if original.ndim != 3 or original.shape[2] != 3:
            raise ValueError("an edit session needs an HxWx3 image")
        self.original = np.ascontiguousarray(original, dtype=np.float32)
        self.steps: list[Step] = []
        self._undo: list[list[Step]] = []
        self._redo: list[list[Step]] = []
        self._cache: dict[int, np.ndarray] = {}

    # --- state --------------------------------------------------------------

    def _snapshot(self) -> list[Step]:
        return [replace(s) for s in self.steps]

    def _push_undo(self) -> None:
        self._undo.append(self._snapshot())
        self._redo.clear()

    def _changed(self, from_index: int = 0) -> None:
        for k in [k for k in self._cache if k >= from_index]:
            del self._cache[k]

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> None:
        if self._undo:
            self._redo.append(self._snapshot())
            self.steps = self._undo.pop()
            self._changed()

    def redo(self) -> None:
        if self._redo:
            self._undo.append(self._snapshot())
            self.steps = self._redo.pop()
            self._changed()

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
            step = self.steps[index]
            base = self.input_of(index)
            self._cache[index] = np.clip(base + step.strength * step.delta, 0, 1, dtype=np.float32)
        return self._cache[index]

    @property
    def stale(self) -> bool:
        return any(s.stale for s in self.steps)

    # --- editing ------------------------------------------------------------

    def _run(self, restorer, index_input: np.ndarray, instruction: str, progress, cancel) -> np.ndarray:
        import time

        t = time.perf_counter()
        out = restorer.restore(index_input, instruction, progress=progress, cancel=cancel)
        return out - index_input, time.perf_counter() - t

    def apply(self, instruction: str, restorer, *, progress: ProgressCallback | None = None,
              cancel: CancelToken | None = None) -> list[PlannedStep]:
        """Plan ``instruction`` and run each actionable part as a new step (one undo entry).

        Returns the plan, no-op parts included, so a front end can explain it.
        A cancelled run adds nothing.
        """
        plan = plan_instruction(instruction, restorer, no_op_classes=restorer.bundle.no_op_classes)
        todo = [p for p in plan if p.actionable]
        if not todo:
            return plan
        self.refresh(restorer, progress=progress, cancel=cancel)
        new_steps: list[Step] = []
        current = self.result()
        for n, part in enumerate(todo):
            check(cancel)
            sub = _sub_progress(progress, n, len(todo))
            delta, secs = self._run(restorer, current, part.text, sub, cancel)
            step = Step(part.text, part.intent, part.confidence, part.strength, restorer.name, delta, seconds=secs)
            new_steps.append(step)
            current = np.clip(current + step.strength * delta, 0, 1)
        self._push_undo()
        self.steps.extend(new_steps)
        return plan

    def add_step(self, step: Step) -> None:
        """Append a computed step (used by replay and by front ends that run the network themselves)."""
        self._push_undo()
        self.steps.append(step)

    def set_strength(self, index: int, strength: float, *, merge: bool = False) -> None:
        """Re-weight a step; later steps become stale (previewed until ``refresh``).

        ``merge`` folds consecutive changes of the same step into one undo entry
        (a slider being dragged).
        """
        strength = float(min(1.0, max(0.0, strength)))
        if not merge or not self._undo:
            self._push_undo()
        self.steps[index] = replace(self.steps[index], strength=strength)
        for j in range(index + 1, len(self.steps)):
            self.steps[j] = replace(self.steps[j], stale=True)
        self._changed(index)

    def remove_step(self, index: int) -> None:
        self._push_undo()
        del self.steps[index]
        for j in range(index, len(self.steps)):
            self.steps[j] = replace(self.steps[j], stale=True)
        self._changed(index)

    def refresh(self, restorer, *, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> None:
        """Recompute stale steps exactly with the network (no undo entry)."""
        stale = [i for i, s in enumerate(self.steps) if s.stale]
        for n, i in enumerate(stale):
            check(cancel)
            delta, secs = self._run(restorer, self.input_of(i), self.steps[i].instruction,
                                    _sub_progress(progress, n, len(stale)), cancel)
            self.steps[i] = replace(self.steps[i], delta=delta, stale=False, seconds=secs)
            self._changed(i)

    # --- recipes ------------------------------------------------------------

    def to_recipe(self) -> Recipe:
        model = self.steps[0].model if self.steps else None
        return Recipe([(s.instruction, s.strength) for s in self.steps], model)

    @classmethod
    def replay(cls, recipe: Recipe, image: np.ndarray, restorer, *, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None) -> EditSession:
        """Apply a recipe's steps, in order and at their strengths, to a new image."""
        session = cls(image)
        for n, (instruction, strength) in enumerate(recipe.steps):
            check(cancel)
            intent = restorer.understand(instruction)
            delta, secs = session._run(restorer, session.result(), instruction,
                                       _sub_progress(progress, n, len(recipe.steps)), cancel)
            session.steps.append(Step(instruction, intent.label, intent.confidence, strength, restorer.name,
                                      delta, seconds=secs))
        return session

    # --- files --------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Lossless session file: a zip of JSON metadata and float32 arrays."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            meta = {"format": SESSION_FORMAT, "version": 1, "steps": [s.meta() for s in self.steps]}
            zf.writestr("session.json", json.dumps(meta, indent=2))
            _write_array(zf, "original.npy", self.original)
            for i, s in enumerate(self.steps):
                _write_array(zf, f"delta_{i}.npy", s.delta)
        return _write_atomic(Path(path), buf.getvalue())

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


def _write_array(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=False)
    zf.writestr(name, b.getvalue())


def _read_array(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    return np.load(io.BytesIO(zf.read(name)), allow_pickle=False)


def _sub_progress(progress: ProgressCallback | None, n: int, total: int) -> ProgressCallback | None:
    """Map a sub-job's progress into its slice of the whole (in thousandths)."""
    if progress is None:
        return None

    def sub(done: int, of: int) -> None:
        progress(int(1000 * (n + done / max(of, 1)) / total), 1000)

    return sub
