"""The document: the photo's metadata + an EditSession + a QUndoStack. It is the single source of truth.

Widgets never change steps directly: they push commands (``desktop.undo``)
whose redo/undo swap snapshots of ``session.steps``, so Ctrl+Z covers
instructions, strength changes and step removals alike. Every swap bumps
``revision``, which lets background jobs notice that the document moved on
while they were computing.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage, QUndoStack

from engine.edit.runners import Runners
from engine.edit.session import EditSession, Recipe, SessionError, Step
from engine.io.images import Picture
from engine.jobs import CancelToken, ProgressCallback, check

from .imaging import to_qimage
from .spire_mode import SpireStep, run_spire
from .workers import UserFacingError

SESSION_SUFFIX = ".irsession"
STUDIO_ENTRY = "studio.json"
STUDIO_FORMAT = "instructir-studio-extras"


class StudioSession(EditSession):
    """EditSession plus what a Qt front end needs: swap the step list wholesale, clone cheaply, SPIRE steps.

    ``spire`` is the SPIRE pipeline that recomputes stale :class:`SpireStep` s
    (set by the controller on a working clone when there are any); InstructIR
    steps are recomputed with the restorer as in the engine.
    """

    spire = None

    def restore_steps(self, steps: list[Step], result: np.ndarray | None = None) -> None:
        """Make ``steps`` current (an undo/redo); ``result`` seeds the render cache when already known."""
        self.steps = [replace(s) for s in steps]
        self._changed(0)
        if result is not None and self.steps:
            self._cache[len(self.steps) - 1] = result

    def clone(self) -> StudioSession:
        """An independent session over the same arrays (deltas and original are shared, never copied)."""
        other = StudioSession(self.original)
        other.steps = [replace(s) for s in self.steps]
        return other

    def needs(self) -> tuple[bool, bool]:
        """Whether refreshing needs (the InstructIR restorer, the SPIRE pipeline)."""
        stale = [s for s in self.steps if s.stale]
        return any(not isinstance(s, SpireStep) for s in stale), any(isinstance(s, SpireStep) for s in stale)

    def refresh(self, restorer, *, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> None:
        """Recompute stale steps exactly (no undo entry): SPIRE steps with SPIRE, the others with ``restorer``."""
        stale = [i for i, s in enumerate(self.steps) if s.stale]
        for n, i in enumerate(stale):
            check(cancel)
            step = self.steps[i]
            sub = None if progress is None else (
                lambda d, t, n=n: progress(int(1000 * (n + d / max(t, 1)) / len(stale)), 1000))
            if isinstance(step, SpireStep):
                if self.spire is None:
                    raise UserFacingError("Recomputing a SPIRE step needs SPIRE mode, which is not loaded.")
                delta, secs = run_spire(self.spire, self.input_of(i), step, sub, cancel)
            else:
                delta, secs = Runners(restorer).run(self.input_of(i), step, progress=sub, cancel=cancel)
            self.steps[i] = replace(step, delta=delta, stale=False, seconds=secs)
            self._changed(i)

    def to_recipe(self) -> Recipe:
        """InstructIR steps only: a recipe replays instructions with InstructIR, which cannot redo a SPIRE step."""
        steps = [s for s in self.steps if not isinstance(s, SpireStep)]
        model = steps[0].model if steps else None
        return Recipe([(s.instruction, s.strength) for s in steps], model)


# --- session files (engine session + what export needs: format, bit depth, ICC, EXIF, alpha) -------------


def save_session_file(path: str | os.PathLike, session: EditSession, picture: Picture | None) -> Path:
    """The engine's lossless session zip, plus an extra entry with the photo's metadata; written atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        session.save(tmp)
        meta: dict = {"format": STUDIO_FORMAT, "version": 1}
        if picture is not None:
            meta.update(source=str(picture.source or ""), image_format=picture.format, bit_depth=picture.bit_depth,
                        grayscale=picture.grayscale, has_icc=picture.icc_profile is not None,
                        has_exif=picture.exif is not None, has_alpha=picture.alpha is not None)
        spire = {str(i): s.spire_meta() for i, s in enumerate(session.steps) if isinstance(s, SpireStep)}
        if spire:  # what re-running a SPIRE step needs; the engine's own file keeps only the plain Step fields
            meta["spire_steps"] = spire
        if picture is not None or spire:
            with zipfile.ZipFile(tmp, "a", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(STUDIO_ENTRY, json.dumps(meta, indent=2))
                if picture is not None and picture.icc_profile:
                    zf.writestr("studio/icc.bin", picture.icc_profile)
                if picture is not None and picture.exif:
                    zf.writestr("studio/exif.bin", picture.exif)
                if picture is not None and picture.alpha is not None:
                    import io

                    buf = io.BytesIO()
                    np.save(buf, picture.alpha, allow_pickle=False)
                    zf.writestr("studio/alpha.npy", buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_session_file(path: str | os.PathLike) -> tuple[StudioSession, Picture]:
    """A session and a Picture to export it with (8-bit PNG-like defaults for plain engine sessions)."""
    session = StudioSession.load(path)
    meta: dict = {}
    icc = exif = alpha = None
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if STUDIO_ENTRY in names:
                meta = json.loads(zf.read(STUDIO_ENTRY))
                if "studio/icc.bin" in names:
                    icc = zf.read("studio/icc.bin")
                if "studio/exif.bin" in names:
                    exif = zf.read("studio/exif.bin")
                if "studio/alpha.npy" in names:
                    import io

                    alpha = np.load(io.BytesIO(zf.read("studio/alpha.npy")), allow_pickle=False)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise SessionError(f"cannot read session {path}: {exc}") from exc
    for index, extra in (meta.get("spire_steps") or {}).items():
        try:
            i = int(index)
            session.steps[i] = SpireStep.upgrade(session.steps[i], extra)
        except (ValueError, IndexError, TypeError) as exc:
            raise SessionError(f"cannot read session {path}: bad SPIRE step {index!r}: {exc}") from exc
    source = meta.get("source") or None
    picture = Picture(rgb=session.original, alpha=alpha, bit_depth=int(meta.get("bit_depth", 8)),
                      grayscale=bool(meta.get("grayscale", False)), format=meta.get("image_format"),
                      icc_profile=icc, exif=exif, source=Path(source) if source else None)
    return session, picture


# --- the document ---------------------------------------------------------------------------------------


class Document(QObject):
    """The open photo and its edits; emits ``changed`` whenever what should be shown changes."""

    changed = Signal()  # steps or strengths changed
    opened = Signal()  # a new photo or session replaced everything

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.stack = QUndoStack(self)
        self.stack.setUndoLimit(200)
        self.picture: Picture | None = None
        self.session: StudioSession | None = None
        self.path: Path | None = None  # the photo (or session) file it came from
        self.export_path: Path | None = None
        self.revision = 0
        self._before: QImage | None = None
        self._after: QImage | None = None

    # --- state ----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.session is not None

    @property
    def name(self) -> str:
        return self.path.name if self.path else "Untitled"

    @property
    def steps(self) -> list[Step]:
        return list(self.session.steps) if self.session else []

    def open(self, picture: Picture, session: StudioSession | None = None, *, path: Path | None = None,
             before: QImage | None = None, after: QImage | None = None) -> None:
        """Replace everything with a new photo (or a loaded session); the undo history starts empty."""
        self.stack.clear()
        self.picture = picture
        self.session = session if session is not None else StudioSession(picture.rgb)
        self.path = Path(path) if path else picture.source
        self.export_path = None
        self._before = before
        self._after = after
        self.revision += 1
        self.stack.setClean()
        self.opened.emit()
        self.changed.emit()

    def close(self) -> None:
        self.stack.clear()
        self.picture = self.session = self.path = self.export_path = None
        self._before = self._after = None
        self.revision += 1
        self.opened.emit()
        self.changed.emit()

    # --- changes (through commands) ----------------------------------------------

    def set_steps(self, steps: list[Step], result: np.ndarray | None = None, display: QImage | None = None) -> None:
        """Called by undo commands only: make ``steps`` current and re-render."""
        if self.session is None:
            return
        self.session.restore_steps(steps, result)
        self.revision += 1
        self._after = display
        self.changed.emit()

    def apply_steps(self, after: list[Step], text: str, *, result: np.ndarray | None = None,
                    display: QImage | None = None):
        """Push the outcome of an instruction as one undoable command; returns it (its token marks the state)."""
        from .undo import ApplyCommand

        command = ApplyCommand(self, self.steps, after, text, result=result, display=display)
        self.stack.push(command)
        return command

    def set_strength(self, index: int, strength: float, drag_id: int = 0) -> None:
        """Re-blend step ``index`` (no network); consecutive changes in one slider drag merge into one undo."""
        from .undo import StrengthCommand

        if self.session is None or not 0 <= index < len(self.session.steps):
            return
        if abs(self.session.steps[index].strength - strength) < 1e-6:
            return
        trial = self.session.clone()
        trial.set_strength(index, strength)  # the engine's rule: later steps become stale previews
        self.stack.push(StrengthCommand(self, self.steps, trial.steps, index, drag_id))

    def remove_step(self, index: int) -> None:
        from .undo import StepsCommand

        if self.session is None or not 0 <= index < len(self.session.steps):
            return
        trial = self.session.clone()
        name = trial.steps[index].instruction
        trial.remove_step(index)
        self.stack.push(StepsCommand(self, self.steps, trial.steps, f"Remove “{name}”"))

    def replace_silently(self, steps: list[Step]) -> None:
        """Exact recomputation of stale steps: same edit, better pixels, so no undo entry (like the engine)."""
        if self.session is None:
            return
        self.session.restore_steps(steps)
        for i in range(self.stack.count()):  # keep snapshots in the history exact too
            command = self.stack.command(i)
            if hasattr(command, "refreshed"):
                command.refreshed(steps)
        self.revision += 1
        self._after = None
        self.changed.emit()

    # --- rendering ------------------------------------------------------------

    def result(self) -> np.ndarray | None:
        return self.session.result() if self.session else None

    def before_image(self) -> QImage | None:
        if self._before is None and self.session is not None:
            self._before = to_qimage(self.session.original)
        return self._before

    def after_image(self) -> QImage | None:
        if self._after is None and self.session is not None:
            self._after = to_qimage(self.session.result()) if self.session.steps else self.before_image()
        return self._after

    def export_picture(self, session: EditSession | None = None) -> Picture:
        session = session or self.session
        return self.picture.with_rgb(session.result())

    # --- jumping to a state -----------------------------------------------------

    def index_of(self, token: int) -> int | None:
        """Undo-stack index just after the command with ``token`` (None if that state was discarded)."""
        for i in range(self.stack.count()):
            if getattr(self.stack.command(i), "token", None) == token:
                return i + 1
        return None

    def jump_to(self, token: int | None, before: bool = False) -> bool:
        """Undo/redo to the state after (or just before) the command ``token``; 0 means the original."""
        if token == 0:
            self.stack.setIndex(0)
            return True
        index = self.index_of(token) if token is not None else None
        if index is None:
            return False
        self.stack.setIndex(index - 1 if before else index)
        return True
