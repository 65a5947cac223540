"""The document: the photo's metadata + an EditSession + a QUndoStack. It is the single source of truth.

Widgets never change steps directly: they push commands (``desktop.undo``)
whose redo/undo swap snapshots of ``session.steps``, so Ctrl+Z covers
instructions, strength changes and step removals alike. Every swap bumps
``revision``, which lets background jobs notice that the document moved on
while they were computing.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage, QUndoStack

from engine.edit.session import EditSession, SessionError, Step, StepKind
from engine.io.images import Picture

from .imaging import to_qimage

SESSION_SUFFIX = ".irsession"
STUDIO_ENTRY = "studio.json"
STUDIO_FORMAT = "instructir-studio-extras"
#: Results up to this many pixels are re-rendered on the UI thread (a few ms); larger ones in the background.
SYNC_RENDER_PIXELS = 1_500_000


# --- session files (engine session + what export needs: format, bit depth, ICC, EXIF, alpha) -------------


def save_session_file(path: str | os.PathLike, session: EditSession, picture: Picture | None) -> Path:
    """The engine's lossless session zip, plus entries with the photo's metadata; written atomically."""
    extras: dict[str, bytes] = {}
    if picture is not None:
        meta = {"format": STUDIO_FORMAT, "version": 2, "source": str(picture.source or ""),
                "image_format": picture.format, "bit_depth": picture.bit_depth, "grayscale": picture.grayscale,
                "has_icc": picture.icc_profile is not None, "has_exif": picture.exif is not None,
                "has_alpha": picture.alpha is not None}
        extras[STUDIO_ENTRY] = json.dumps(meta, indent=2).encode()
        if picture.icc_profile:
            extras["studio/icc.bin"] = picture.icc_profile
        if picture.exif:
            extras["studio/exif.bin"] = picture.exif
        if picture.alpha is not None:
            buf = io.BytesIO()
            np.save(buf, picture.alpha, allow_pickle=False)
            extras["studio/alpha.npy"] = buf.getvalue()
    return session.save(path, extras=extras)


def load_session_file(path: str | os.PathLike) -> tuple[EditSession, Picture]:
    """A session and a Picture to export it with (8-bit PNG-like defaults for plain engine sessions)."""
    session = EditSession.load(path)
    extras = EditSession.read_extras(path, "studio")
    try:
        meta = json.loads(extras[STUDIO_ENTRY]) if STUDIO_ENTRY in extras else {}
        alpha = np.load(io.BytesIO(extras["studio/alpha.npy"]), allow_pickle=False) \
            if "studio/alpha.npy" in extras else None
        for index, spire in (meta.get("spire_steps") or {}).items():  # files of the app before SPIRE steps
            i = int(index)                                             # were the engine's own kind
            session.steps[i].kind, session.steps[i].params = StepKind.SPIRE, dict(spire)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise SessionError(f"cannot read session {path}: {exc}") from exc
    source = meta.get("source") or None
    picture = Picture(rgb=session.original, alpha=alpha, bit_depth=int(meta.get("bit_depth", 8)),
                      grayscale=bool(meta.get("grayscale", False)), format=meta.get("image_format"),
                      icc_profile=extras.get("studio/icc.bin"), exif=extras.get("studio/exif.bin"),
                      source=Path(source) if source else None)
    return session, picture


# --- the document ---------------------------------------------------------------------------------------


class Document(QObject):
    """The open photo and its edits; emits ``changed`` whenever what should be shown changes."""

    changed = Signal()  # steps or strengths changed
    opened = Signal()  # a new photo or session replaced everything
    rendered = Signal()  # a preview rendered in the background is ready to be shown

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.stack = QUndoStack(self)
        self.stack.setUndoLimit(200)
        self.picture: Picture | None = None
        self.session: EditSession | None = None
        self.path: Path | None = None  # the photo (or session) file it came from
        self.export_path: Path | None = None
        self.session_path: Path | None = None  # where "Save" writes the session without asking
        self.recovered = False  # reopened from a crash's autosave (its name says so until saved)
        self.revision = 0
        self._before: QImage | None = None
        self._after: QImage | None = None
        self._shown: QImage | None = None  # what the view shows until a background render is ready
        self._rendering = False
        self._render_again = False

    # --- state ----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.session is not None

    @property
    def name(self) -> str:
        name = self.path.name if self.path else "Untitled"
        return f"{name} (recovered)" if self.recovered else name

    @property
    def steps(self) -> list[Step]:
        return list(self.session.steps) if self.session else []

    def open(self, picture: Picture, session: EditSession | None = None, *, path: Path | None = None,
             before: QImage | None = None, after: QImage | None = None, session_path: Path | None = None,
             recovered: bool = False) -> None:
        """Replace everything with a new photo (or a loaded session); the undo history starts empty."""
        self.stack.clear()
        self._shown = None
        self.picture = picture
        self.session = session if session is not None else EditSession(picture.rgb)
        self.path = Path(path) if path else picture.source
        self.export_path = None
        self.session_path = session_path
        self.recovered = recovered
        self._before = before
        self._after = after
        self.revision += 1
        self.stack.setClean()
        self.opened.emit()
        self.changed.emit()

    def close(self) -> None:
        self.stack.clear()
        self.picture = self.session = self.path = self.export_path = self.session_path = None
        self.recovered = False
        self._before = self._after = self._shown = None
        self.revision += 1
        self.opened.emit()
        self.changed.emit()

    # --- changes (through commands) ----------------------------------------------

    def set_steps(self, steps: list[Step], result: np.ndarray | None = None, display: QImage | None = None) -> None:
        """Called by undo commands only: make ``steps`` current and re-render."""
        if self.session is None:
            return
        self.session.set_steps(steps, result)
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
        self.session.set_steps(steps)
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

    def size(self) -> tuple[int, int] | None:
        """(width, height) of the result now (an up-sampling step changes it)."""
        if self.session is None:
            return None
        h, w = self.session.size_after()
        return w, h

    def before_image(self) -> QImage | None:
        if self._before is None and self.session is not None:
            self._before = to_qimage(self.session.original)
        return self._before

    def after_image(self) -> QImage | None:
        """The result as shown. A large photo's new result (a slider, undo) is rendered on a pool thread
        and the previous one is shown meanwhile: the UI never waits for a full-size re-blend."""
        if self._after is None and self.session is not None:
            if not self.session.steps:
                self._after = self.before_image()
            elif self._shown is None or self._result_pixels() <= SYNC_RENDER_PIXELS:
                self._after = to_qimage(self.session.result())
            else:
                self._render_in_background()
                return self._shown
        self._shown = self._after
        return self._after

    def _result_pixels(self) -> int:
        h, w = self.session.size_after()  # an up-sampled result has more pixels than the original
        return h * w

    def _render_in_background(self) -> None:
        from .workers import run_in_pool

        if self._rendering:
            self._render_again = True
            return
        self._rendering, self._render_again = True, False
        revision, session = self.revision, self.session
        clone = session.clone()
        clone._cache.update(session._cache)  # noqa: SLF001 - renders of unchanged earlier steps are reused

        def work(progress, cancel):
            return clone._cache, to_qimage(clone.result())  # noqa: SLF001

        def done(result) -> None:
            self._rendering = False
            cache, image = result
            if revision == self.revision and session is self.session:
                session._cache.update(cache)  # noqa: SLF001 - same steps: the renders are the session's own
                self._after = image
                self.rendered.emit()
            elif self.session is not None and self._after is None:
                self._render_in_background()  # the document moved on meanwhile: render what it is now
                return
            if self._render_again and self._after is None:
                self._render_in_background()

        def failed(_message: str) -> None:
            self._rendering = False

        run_in_pool(work, on_finished=done, on_failed=failed, receiver=self, background=True)

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
