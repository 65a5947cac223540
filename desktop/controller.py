"""Glue between the document, the model provider and the job queue: what the app *does*, with no widgets.

Every request (an instruction, opening, exporting, saving a session,
recomputing) becomes a queued task. Its factory snapshots the document when
its turn comes, the work runs on a pool thread, and the outcome is committed
on the UI thread as an undoable command. The window only connects signals.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from engine.edit.planning import PlannedStep
from engine.edit.session import NothingToDoError

from .document import SESSION_SUFFIX, Document, StudioSession, load_session_file, save_session_file
from .imaging import thumbnail, to_qimage
from .model_provider import FAILED, LOADING, READY, ModelProvider
from .spire_mode import DEFAULT_STEPS, SPIRE_INTENT, SPIRE_MODEL, SpireProvider, SpireStep, run_spire, understood
from .workers import JobQueue, NotReady, UserFacingError

INTENT_NAMES = {
    "noise": "Denoise", "blur": "Deblur", "rain": "Remove rain", "haze": "Dehaze", "low-light": "Brighten",
    "enhancement": "Enhance", "upsampling": "Upscale", "jpeg": "Remove JPEG artefacts",
    "unrelated": "Not a restoration request", SPIRE_INTENT: "SPIRE",
}


def intent_name(label: str) -> str:
    return INTENT_NAMES.get(label, label.replace("-", " ").capitalize())


@dataclass
class Reply:
    """The app's answer to one instruction, as the chat shows it."""

    request_id: int
    instruction: str
    kind: str  # applied | nothing | error | cancelled
    plan: list[PlannedStep] = field(default_factory=list)
    seconds: float = 0.0
    message: str = ""
    thumbnail: QImage | None = None
    token: int | None = None  # the undo command this reply created (click to jump there)
    stale_merge: bool = False  # the document changed while computing: new steps were added as previews
    spire: SpireStep | None = None  # a SPIRE reply: the step it made (prompt, semantic prompt, steps, time)


@dataclass
class ApplyOutcome:
    plan: list[PlannedStep]
    steps: list
    added: int
    result: np.ndarray | None
    display: QImage | None
    thumb: QImage | None
    seconds: float


_request_ids = itertools.count(1)


class StudioController(QObject):
    """Runs the app's requests in order on worker threads and reports back with signals."""

    opened = Signal(str)  # a message describing what was opened
    notice = Signal(str, str)  # text, kind (info | error | warning)
    requested = Signal(int, str)  # request id, instruction (emitted first, before any reply)
    requestQueued = Signal(int, int)  # request id, how many tasks are ahead
    requestStarted = Signal(int)
    replied = Signal(object)  # Reply
    exported = Signal(str)
    busyChanged = Signal(bool)
    progress = Signal(int, int)
    activity = Signal(str)  # what is running now ("Restoring…", "Waiting for the model…")

    def __init__(self, document: Document, provider: ModelProvider, queue: JobQueue | None = None,
                 parent: QObject | None = None, spire: SpireProvider | None = None) -> None:
        super().__init__(parent)
        self.document = document
        self.provider = provider
        self.spire = spire
        self.queue = queue or JobQueue(parent=self)
        self.queue.busyChanged.connect(self.busyChanged)
        self.queue.progress.connect(self.progress)
        self.queue.started.connect(lambda task: self.activity.emit(task.label))
        self.queue.waiting.connect(self.activity)
        self.provider.stateChanged.connect(self.queue.poke)
        if spire is not None:
            spire.stateChanged.connect(self.queue.poke)

    @property
    def busy(self) -> bool:
        return self.queue.busy

    def _restorer(self):
        """The model for a task starting now, or NotReady while it loads (the task keeps its place)."""
        if self.provider.state == READY:
            return self.provider.restorer
        if self.provider.state == LOADING:
            raise NotReady("Waiting for the model to load…")
        if self.provider.state == FAILED:
            raise UserFacingError(self.provider.error)
        raise UserFacingError("No model is loaded. Open Settings → Model to choose one.")

    def _spire(self):
        """The SPIRE pipeline for a task starting now, or NotReady while it loads."""
        if self.spire is None:
            raise UserFacingError("SPIRE mode is not available in this window.")
        return self.spire.require()

    def _prepare(self, clone: StudioSession, *, restorer: bool) -> object | None:
        """What refreshing ``clone``'s stale steps needs: the restorer (returned) and/or SPIRE (set on the clone)."""
        needs_restorer, needs_spire = clone.needs()
        if needs_spire:
            try:
                clone.spire = self._spire()
            except UserFacingError as exc:
                why = str(exc) or "SPIRE is not available."
                raise UserFacingError(f"A SPIRE step of this photo is a preview that must be recomputed first, but "
                                      f"{why[0].lower()}{why[1:]} (Undo the change that made it a preview to go "
                                      "on without it.)") from exc
        return self._restorer() if restorer or needs_restorer else None

    # --- opening --------------------------------------------------------------

    def open_path(self, path: str | Path, *, recovered: bool = False) -> None:
        """Open a photo or a session file (in the background); running and queued work is cancelled.

        ``recovered``: an autosave after a crash; it opens as unsaved work on its original photo.
        """
        path = Path(path)
        self.cancel(quiet=True)

        def factory():
            def work(progress, cancel):
                if path.suffix.lower() == SESSION_SUFFIX:
                    session, picture = load_session_file(path)
                else:
                    from engine.io.images import load_image

                    picture = load_image(path)
                    session = StudioSession(picture.rgb)
                before = to_qimage(session.original)
                after = to_qimage(session.result()) if session.steps else None
                return session, picture, before, after

            return work

        def done(result) -> None:
            session, picture, before, after = result
            shown = (picture.source or path) if recovered else path
            self.document.open(picture, session, path=shown, before=before, after=after)
            if recovered:
                self.document.stack.resetClean()
            self.opened.emit(("Recovered unsaved work. " if recovered else "")
                             + describe_picture(shown, picture, session))

        self.queue.submit(f"Opening {path.name}…", factory, on_finished=done,
                          on_failed=lambda message: self.notice.emit(message, "error"))

    # --- instructions ---------------------------------------------------------

    def send(self, instruction: str) -> int:
        """Queue an instruction; returns a request id that later signals (and the Reply) carry."""
        request_id = next(_request_ids)
        text = instruction.strip()
        ahead = len(self.queue.pending) + (1 if self.queue.current else 0)
        self.requested.emit(request_id, text)
        if not self.document.is_open:
            self.replied.emit(Reply(request_id, text, "error",
                                    message="Open a photo first (File → Open, or drop it on the window)."))
            return request_id
        state = {}

        def factory():
            clone = self.document.session.clone()
            restorer = self._prepare(clone, restorer=True)
            state.update(revision=self.document.revision, before=len(clone.steps))
            self.requestStarted.emit(request_id)

            def work(progress, cancel):
                start = time.perf_counter()
                try:
                    plan = clone.apply(text, restorer, progress=progress, cancel=cancel)
                except NothingToDoError as exc:
                    plan = exc.plan
                added = len(clone.steps) - state["before"]
                result = display = thumb = None
                if added:
                    result = clone.result()
                    display, thumb = to_qimage(result), thumbnail(result, 96)
                return ApplyOutcome(plan, clone.steps, added, result, display, thumb, time.perf_counter() - start)

            return work

        def done(outcome: ApplyOutcome) -> None:
            task_token = task.token
            if task_token.cancelled:
                self.replied.emit(Reply(request_id, text, "cancelled", message="Cancelled; nothing was changed."))
                return
            if not outcome.added:
                messages = [p.message for p in outcome.plan if p.message] or ["Nothing to change."]
                self.replied.emit(Reply(request_id, text, "nothing", outcome.plan, outcome.seconds,
                                        " ".join(messages)))
                return
            stale = self.document.revision != state["revision"]
            if stale:  # the user moved a slider or undid meanwhile: keep their state, add ours as previews
                new = [replace(s, stale=True) for s in outcome.steps[-outcome.added:]]
                command = self.document.apply_steps(self.document.steps + new, text)
            else:
                command = self.document.apply_steps(outcome.steps, text, result=outcome.result,
                                                    display=outcome.display)
            self.replied.emit(Reply(request_id, text, "applied", outcome.plan, outcome.seconds,
                                    thumbnail=outcome.thumb, token=command.token, stale_merge=stale))

        task = self._submit(request_id, text, "Restoring…", factory, done, ahead)
        return request_id

    def send_spire(self, instruction: str, semantic: str = "", steps: int = DEFAULT_STEPS) -> int:
        """Queue a SPIRE restoration (one new step); like :meth:`send`, returns the request id.

        ``instruction`` is read by ``engine.edit.prompts.from_instruction`` (grammar or
        everyday words), ``semantic`` says what the photo shows (may be empty).
        """
        request_id = next(_request_ids)
        text, semantic = instruction.strip(), " ".join(semantic.split())
        ahead = len(self.queue.pending) + (1 if self.queue.current else 0)
        self.requested.emit(request_id, text + "\nSPIRE" + (f" · “{semantic}”" if semantic else ""))
        if not self.document.is_open:
            self.replied.emit(Reply(request_id, text, "error",
                                    message="Open a photo first (File → Open, or drop it on the window)."))
            return request_id
        prompt, why = understood(text)
        if prompt is None:
            self.replied.emit(Reply(request_id, text, "error", message=why or "Say what SPIRE should fix."))
            return request_id
        step = SpireStep(text, SPIRE_INTENT, 1.0, 1.0, SPIRE_MODEL, prompt=prompt, semantic=semantic,
                         sampling_steps=max(1, int(steps)))
        state = {}

        def factory():
            clone = self.document.session.clone()
            pipeline = self._spire()
            restorer = self._prepare(clone, restorer=False)
            state.update(revision=self.document.revision)
            self.requestStarted.emit(request_id)

            def work(progress, cancel):
                start = time.perf_counter()
                stale = clone.stale
                if stale:  # earlier previews first, in the first tenth of the bar
                    clone.refresh(restorer, progress=lambda d, n: progress(100 * d // max(n, 1), 1000),
                                  cancel=cancel)
                delta, seconds = run_spire(pipeline, clone.result(), step, progress=(
                    (lambda d, n: progress(100 + 900 * d // max(n, 1), 1000)) if stale else progress), cancel=cancel)
                clone.add_step(replace(step, delta=delta, seconds=seconds))
                result = clone.result()
                return ApplyOutcome([], clone.steps, 1, result, to_qimage(result), thumbnail(result, 96),
                                    time.perf_counter() - start)

            return work

        def done(outcome: ApplyOutcome) -> None:
            if task.token.cancelled:
                self.replied.emit(Reply(request_id, text, "cancelled", message="Cancelled; nothing was changed."))
                return
            made = outcome.steps[-1]
            stale = self.document.revision != state["revision"]
            if stale:  # as in send(): keep the user's newer state, add the SPIRE step as a preview on top
                command = self.document.apply_steps(self.document.steps + [replace(made, stale=True)], text)
            else:
                command = self.document.apply_steps(outcome.steps, text, result=outcome.result,
                                                    display=outcome.display)
            self.replied.emit(Reply(request_id, text, "applied", [], outcome.seconds, thumbnail=outcome.thumb,
                                    token=command.token, stale_merge=stale, spire=made))

        task = self._submit(request_id, text, "Restoring with SPIRE…", factory, done, ahead)
        return request_id

    def _submit(self, request_id: int, text: str, label: str, factory, done, ahead: int):
        """Queue a restoration task; its failure or cancellation becomes a reply, a wait a 'queued' notice."""
        task = self.queue.submit(
            label, factory, on_finished=done,
            on_failed=lambda message: self.replied.emit(Reply(request_id, text, "error", message=message)),
            on_cancelled=lambda: self.replied.emit(
                Reply(request_id, text, "cancelled", message="Cancelled; nothing was changed.")))
        if ahead and task in self.queue.pending:
            self.requestQueued.emit(request_id, ahead)
        return task

    def cancel(self, quiet: bool = False) -> int:
        """Stop the running task and drop queued ones (each queued instruction gets a 'cancelled' reply)."""
        dropped = self.queue.cancel_all()
        if not quiet and (dropped or self.queue.current):
            self.activity.emit("Cancelling…")
        return len(dropped)

    def recompute(self) -> None:
        """Recompute stale (previewed) steps exactly with the network; no undo entry."""
        if not self.document.is_open or not self.document.session.stale:
            return
        state = {}

        def factory():
            clone = self.document.session.clone()
            restorer = self._prepare(clone, restorer=False)
            state["revision"] = self.document.revision

            def work(progress, cancel):
                clone.refresh(restorer, progress=progress, cancel=cancel)
                return clone.steps

            return work

        def done(steps) -> None:
            if self.document.revision == state["revision"]:
                self.document.replace_silently(steps)
                self.notice.emit("Recomputed the later steps exactly.", "info")

        self.queue.submit("Recomputing…", factory, on_finished=done,
                          on_failed=lambda message: self.notice.emit(message, "error"))

    # --- saving ---------------------------------------------------------------

    def export(self, path: str | Path, *, quality: int = 95) -> None:
        """Write the result next to (never over) the original, keeping format, bit depth, ICC and EXIF."""
        from engine.io.images import save_image

        path = Path(path)
        if not self.document.is_open:
            self.notice.emit("Nothing to export: open a photo first.", "error")
            return
        state = {}

        def factory():
            clone = self.document.session.clone()
            stale = clone.stale
            restorer = self._prepare(clone, restorer=False) if stale else None
            picture = self.document.picture
            state["revision"] = self.document.revision
            source = picture.source
            overwrite = path.exists() and not (source is not None and _same_file(path, source))

            def work(progress, cancel):
                if stale:
                    clone.refresh(restorer, progress=progress, cancel=cancel)
                written = save_image(picture.with_rgb(clone.result()), path, overwrite=overwrite, quality=quality)
                return written, clone.steps, stale

            return work

        def done(result) -> None:
            written, steps, refreshed = result
            if refreshed and self.document.revision == state["revision"]:
                self.document.replace_silently(steps)
            if self.document.revision == state["revision"]:
                self.document.stack.setClean()
            self.document.export_path = Path(written)
            self.exported.emit(str(written))
            self.notice.emit(f"Exported {Path(written).name} to {Path(written).parent}.", "info")

        self.queue.submit(f"Exporting {path.name}…", factory, on_finished=done,
                          on_failed=lambda message: self.notice.emit(message, "error"))

    def save_session(self, path: str | Path) -> None:
        path = Path(path)
        if not self.document.is_open:
            return

        def factory():
            clone, picture = self.document.session.clone(), self.document.picture
            return lambda progress, cancel: save_session_file(path, clone, picture)

        def done(written) -> None:
            self.document.stack.setClean()
            self.notice.emit(f"Session saved to {Path(written).name}.", "info")

        self.queue.submit("Saving session…", factory, on_finished=done,
                          on_failed=lambda message: self.notice.emit(message, "error"))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def describe_picture(path: Path, picture, session) -> str:
    w, h = picture.size
    bits = f"{picture.bit_depth}-bit"
    kind = picture.format or path.suffix.lstrip(".").upper() or "image"
    extras = [x for x, on in (("ICC profile", picture.icc_profile), ("EXIF", picture.exif),
                              ("alpha", picture.alpha is not None)) if on]
    text = f"Opened {path.name}: {w} × {h}, {bits} {kind}"
    if extras:
        text += " with " + ", ".join(extras)
    if session.steps:
        text += f"; {len(session.steps)} step(s) restored from the session"
    return text + "."
