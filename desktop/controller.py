"""Glue between the document, the models and the job queue: what the app *does*, with no widgets.

Every request (an instruction, opening, exporting, saving a session,
recomputing) is a small :class:`~desktop.workers.Request` object, queued. Its
``prepare`` snapshots the document when its turn comes, the work runs on a
pool thread, and the outcome is committed on the UI thread as an undoable
command. Running an instruction is the engine's ``EditSession.apply``: the
controller plans, blends and refreshes nothing of its own, it only hands the
engine the runners it has loaded (``engine.edit.runners.Runners``) and shows
what came back. The conversation (``desktop.conversation``) is written here;
the chat panel only shows it.
"""

from __future__ import annotations

import enum
import importlib.util
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from engine.edit.planning import PlannedStep
from engine.edit.runners import Runners
from engine.edit.session import EditSession, NothingToDoError, SpireOptions, Step, StepKind
from engine.edit.steps import UPSAMPLING_INTENT

from .conversation import Conversation, NoticeKind
from .diagnosis import engine_diagnose
from .document import SESSION_SUFFIX, Document, load_session_file, save_session_file
from .imaging import thumbnail, to_qimage
from .model_provider import ModelProvider, ProviderState
from .spire_mode import DEFAULT_STEPS, SpireProvider, understood
from .workers import JobQueue, NotReady, Request, UserFacingError

SPIRE_INTENT = "spire"
INTENT_NAMES = {
    "noise": "Denoise", "blur": "Deblur", "rain": "Remove rain", "haze": "Dehaze", "low-light": "Brighten",
    "enhancement": "Enhance", UPSAMPLING_INTENT: "Upscale", "jpeg": "Remove JPEG artefacts",
    "unrelated": "Not a restoration request", SPIRE_INTENT: "SPIRE",
}
OPEN_FIRST = "Open a photo first (File → Open, or drop it on the window)."
CANCELLED = "Cancelled; nothing was changed."


def intent_name(label: str) -> str:
    return INTENT_NAMES.get(label, label.replace("-", " ").capitalize())


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class ReplyKind(str, enum.Enum):
    """How an instruction ended."""

    APPLIED = "applied"
    NOTHING = "nothing"  # understood, but nothing in it is a restoration request
    ERROR = "error"
    CANCELLED = "cancelled"


@dataclass
class Reply:
    """The app's answer to one instruction, as the chat shows it."""

    request_id: int
    instruction: str
    kind: ReplyKind
    plan: list[PlannedStep] = field(default_factory=list)
    seconds: float = 0.0  # the whole request: understanding, recomputing previews, the steps, the display
    message: str = ""
    thumbnail: QImage | None = None
    token: int | None = None  # the undo command this reply created (click to jump there)
    stale_merge: bool = False  # the document changed while computing: new steps were added as previews
    steps: list[Step] = field(default_factory=list)  # the steps it added; their times are the History's
    size: tuple[int, int] | None = None  # (width, height) of the result when a step changed it

    @property
    def step_seconds(self) -> float:
        return sum(s.seconds for s in self.steps)


@dataclass
class Outcome:
    """What an instruction's work hands back to the UI thread."""

    plan: list[PlannedStep]
    steps: list[Step]
    added: int
    result: np.ndarray | None = None
    display: QImage | None = None
    thumb: QImage | None = None
    seconds: float = 0.0
    note: str = ""  # what "fix it" (auto) saw in the photo and will do


class Eta:
    """Percent done and a time-left estimate from (done, total) reports of one request."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def describe(self, done: int, total: int) -> str:
        fraction = done / max(total, 1)
        elapsed = time.perf_counter() - self.start
        text = f"{int(100 * fraction)}%"
        if fraction >= 0.03 and elapsed >= 1.0 and fraction < 1:
            text += f" · {_left(elapsed * (1 - fraction) / fraction)}"
        return text


def _left(seconds: float) -> str:
    if seconds < 5:
        return "a few seconds left"
    if seconds < 60:
        return f"about {int(round(seconds / 5) * 5)} s left"
    return f"about {max(1, round(seconds / 60))} min left"


_request_ids = itertools.count(1)


class StudioController(QObject):
    """Runs the app's requests in order on worker threads and reports back with signals."""

    opened = Signal(str)  # a message describing what was opened
    notice = Signal(str, str)  # text, kind (a NoticeKind value)
    replied = Signal(object)  # Reply
    exported = Signal(str)
    busyChanged = Signal(bool)
    progress = Signal(int, int)
    activity = Signal(str)  # what is running now, with percent and time left ("Restoring… 34% · about 10 s left")

    def __init__(self, document: Document, provider: ModelProvider, queue: JobQueue | None = None,
                 parent: QObject | None = None, spire: SpireProvider | None = None,
                 conversation: Conversation | None = None, diagnose=None) -> None:
        """``diagnose(rgb, path=..., cancel=...) -> Diagnosis`` plans instructions that name no problem
        ("fix it", "auto"); default: ``engine.diagnose.diagnose``."""
        super().__init__(parent)
        self.document = document
        self.provider = provider
        self.spire = spire
        self.diagnose = diagnose or engine_diagnose
        self.conversation = conversation if conversation is not None else Conversation(self)
        self.queue = queue or JobQueue(parent=self)
        self._eta: Eta | None = None
        self._label = ""
        self.queue.busyChanged.connect(self.busyChanged)
        self.queue.progress.connect(self._on_progress)
        self.queue.started.connect(self._on_started)
        self.queue.waiting.connect(self.activity)
        self.provider.stateChanged.connect(self.queue.poke)
        if spire is not None:
            spire.stateChanged.connect(self.queue.poke)

    @property
    def busy(self) -> bool:
        return self.queue.busy

    def _on_started(self, request: Request) -> None:
        self._eta, self._label = Eta(), request.label
        self.activity.emit(request.label)

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.emit(done, total)
        if self._eta is not None and done > 0:
            self.activity.emit(f"{self._label} {self._eta.describe(done, total)}")

    def say(self, text: str, kind: NoticeKind = NoticeKind.INFO) -> None:
        """A message of the app (not a reply): in the conversation, and for the status bar."""
        self.conversation.add_notice(text, kind)
        self.notice.emit(text, kind.value)

    def reply(self, reply: Reply) -> None:
        self.conversation.add_reply(reply)
        self.replied.emit(reply)

    # --- what a request needs --------------------------------------------------------------------------

    def _restorer(self):
        """The InstructIR model for a request starting now, or NotReady while it loads (it keeps its place)."""
        state = self.provider.state
        if state is ProviderState.READY:
            return self.provider.restorer
        if state is ProviderState.LOADING:
            raise NotReady("Waiting for the model to load…")
        if state is ProviderState.FAILED:
            raise UserFacingError(self.provider.error)
        raise UserFacingError("No model is loaded. Open Settings → Model to choose one.")

    def _spire_pipeline(self):
        if self.spire is None:
            raise UserFacingError("SPIRE mode is not available in this window.")
        return self.spire.require()

    def runners(self, session: EditSession, mode: StepKind | None = None) -> Runners:
        """What running ``mode`` on ``session`` needs, stale previews included (NotReady while loading)."""
        needs = session.stale_kinds() | ({mode} if mode is not None else set())
        restorer = spire = None
        if needs & {StepKind.INSTRUCTIR, StepKind.UPSAMPLE}:
            restorer = self._restorer()
        elif self.provider.state is ProviderState.READY:
            restorer = self.provider.restorer
        if StepKind.SPIRE in needs:
            try:
                spire = self._spire_pipeline()
            except UserFacingError as exc:
                if mode is StepKind.SPIRE:
                    raise
                why = str(exc) or "SPIRE is not available."
                raise UserFacingError(f"A SPIRE step of this photo is a preview that must be recomputed first, but "
                                      f"{why[0].lower()}{why[1:]} (Undo the change that made it a preview to go "
                                      "on without it.)") from exc
        return Runners(restorer=restorer, spire=spire)

    # --- requests -------------------------------------------------------------------------------------------

    def open_path(self, path: str | Path, *, recovered: bool = False) -> None:
        """Open a photo or a session file (in the background); running and queued edits are cancelled.

        ``recovered``: an autosave after a crash; it opens as unsaved work on its original photo.
        """
        self.cancel(quiet=True)
        self.queue.submit(OpenRequest(self, Path(path), recovered))

    def send(self, instruction: str) -> int:
        """Queue an instruction; returns a request id that later signals (and the Reply) carry."""
        return self._instruction(instruction.strip(), StepKind.INSTRUCTIR)

    def send_spire(self, instruction: str, semantic: str = "", steps: int = DEFAULT_STEPS) -> int:
        """Queue a SPIRE restoration (one new step); like :meth:`send`, returns the request id.

        ``instruction`` is read by ``engine.edit.prompts.from_instruction`` (grammar or
        everyday words), ``semantic`` says what the photo shows (may be empty).
        """
        options = SpireOptions(semantic=" ".join(semantic.split()), sampling_steps=max(1, int(steps)))
        return self._instruction(instruction.strip(), StepKind.SPIRE, options)

    def _instruction(self, text: str, mode: StepKind, spire: SpireOptions | None = None) -> int:
        request_id = next(_request_ids)
        shown = text + (f"\nSPIRE · “{spire.semantic}”" if spire and spire.semantic else
                        "\nSPIRE" if mode is StepKind.SPIRE else "")
        self.conversation.add_user(request_id, shown)
        if not self.document.is_open:
            self.reply(Reply(request_id, text, ReplyKind.ERROR, message=OPEN_FIRST))
            return request_id
        if mode is StepKind.SPIRE:
            prompt, why = understood(text)
            if prompt is None:
                self.reply(Reply(request_id, text, ReplyKind.ERROR, message=why or "Say what SPIRE should fix."))
                return request_id
        ahead = self.queue.ahead
        request = self.queue.submit(InstructionRequest(self, request_id, text, mode, spire))
        if ahead and request in self.queue.pending:
            self.conversation.mark_queued(request_id, ahead)
        return request_id

    def cancel(self, quiet: bool = False) -> int:
        """Stop the running request and drop queued edits (each queued instruction gets a 'cancelled' reply).

        Queued saves and exports are kept: they are what the user asked for before leaving.
        """
        dropped = self.queue.cancel_all(keep=lambda r: isinstance(r, (ExportRequest, SaveSessionRequest)))
        if not quiet and (dropped or self.queue.current):
            self.activity.emit("Cancelling…")
        return len(dropped)

    def recompute(self) -> None:
        """Recompute stale (previewed) steps exactly; no undo entry."""
        if self.document.is_open and self.document.session.stale:
            self.queue.submit(RecomputeRequest(self))

    def export(self, path: str | Path, *, quality: int = 95, then: Callable[[], None] | None = None) -> None:
        """Write the result next to (never over) the original, keeping format, bit depth, ICC and EXIF.

        ``then`` runs after a successful export (e.g. the close or open that asked for it).
        """
        if not self.document.is_open:
            self.say("Nothing to export: open a photo first.", NoticeKind.ERROR)
            return
        self.queue.submit(ExportRequest(self, Path(path), quality, then))

    def save_session(self, path: str | Path, *, then: Callable[[], None] | None = None) -> None:
        if self.document.is_open:
            self.queue.submit(SaveSessionRequest(self, Path(path), then))


# --- the requests ---------------------------------------------------------------------------------------------


class _ControllerRequest(Request):
    def __init__(self, controller: StudioController) -> None:
        super().__init__()
        self.controller = controller
        self.document = controller.document

    def failed(self, message: str) -> None:
        self.controller.say(message, NoticeKind.ERROR)


class OpenRequest(_ControllerRequest):
    """Read a photo or a session file."""

    def __init__(self, controller: StudioController, path: Path, recovered: bool = False) -> None:
        super().__init__(controller)
        self.path, self.recovered = path, recovered
        self.label = f"Opening {path.name}…"

    def prepare(self):
        path = self.path

        def work(progress, cancel):
            if path.suffix.lower() == SESSION_SUFFIX:
                session, picture = load_session_file(path)
            else:
                from engine.io.images import load_image

                picture = load_image(path)
                session = EditSession(picture.rgb)
            before = to_qimage(session.original)
            after = to_qimage(session.result()) if session.steps else None
            return session, picture, before, after

        return work

    def finished(self, result) -> None:
        session, picture, before, after = result
        path = self.path
        shown = (picture.source or path) if self.recovered else path
        session_path = path if path.suffix.lower() == SESSION_SUFFIX and not self.recovered else None
        self.document.open(picture, session, path=shown, before=before, after=after, session_path=session_path,
                           recovered=self.recovered)
        if self.recovered:
            self.document.stack.resetClean()
        text = describe_picture(shown, picture, session, recovered=self.recovered)
        self.controller.conversation.forget_states()  # the previous photo's states cannot be jumped to any more
        self.controller.conversation.add_opened(text)
        self.controller.opened.emit(text)


class InstructionRequest(_ControllerRequest):
    """One instruction through ``EditSession.apply``, on a snapshot of the document."""

    def __init__(self, controller: StudioController, request_id: int, text: str, mode: StepKind,
                 spire: SpireOptions | None = None) -> None:
        super().__init__(controller)
        self.request_id, self.text, self.mode, self.spire = request_id, text, mode, spire
        self.label = "Restoring with SPIRE…" if mode is StepKind.SPIRE else "Restoring…"
        self.revision = -1

    def prepare(self):
        clone = self.document.session.clone()
        runners = self.controller.runners(clone, self.mode)
        self.revision = self.document.revision
        before = len(clone.steps)
        text, mode, spire, diagnose = self.text, self.mode, self.spire, self.controller.diagnose
        source = self.document.picture.source if self.document.picture is not None else None

        def work(progress, cancel):
            start = time.perf_counter()
            run, note = text, ""
            if mode is StepKind.INSTRUCTIR and _auto is not None:
                AutoPlan, is_auto_instruction = _auto()  # noqa: N806 - a class

                if is_auto_instruction(text):  # "fix it", "make it better": what the diagnosis suggests
                    diagnosis = diagnose(clone.result(), path=None if clone.steps else source, cancel=cancel)
                    auto = AutoPlan(diagnosis, diagnosis.instruction)
                    run, note = auto.instruction, auto.message
                    if not run:
                        return Outcome([], clone.steps, 0, seconds=time.perf_counter() - start, note=note)
            try:
                plan = clone.apply(run, runners, mode=mode, spire=spire, progress=progress, cancel=cancel)
            except NothingToDoError as nothing:
                return Outcome(nothing.plan, clone.steps, 0, seconds=time.perf_counter() - start, note=note)
            result = clone.result()
            display, thumb = to_qimage(result), thumbnail(result, 72)
            return Outcome(plan, clone.steps, len(clone.steps) - before, result, display, thumb,
                           time.perf_counter() - start, note)

        return work

    def started(self) -> None:
        self.controller.conversation.mark_started(self.request_id)

    def finished(self, outcome: Outcome) -> None:
        rid, text = self.request_id, self.text
        if not outcome.added:
            messages = [p.message for p in outcome.plan if p.message] or \
                ([] if outcome.note else ["Nothing to change."])
            self.controller.reply(Reply(rid, text, ReplyKind.NOTHING, outcome.plan, outcome.seconds,
                                        " ".join([outcome.note, *messages]).strip()))
            return
        new = outcome.steps[-outcome.added:]
        stale = self.document.revision != self.revision
        if stale:  # the user moved a slider or undid meanwhile: keep their state, add ours as previews
            new = [replace(s, stale=True) for s in new]
            command = self.document.apply_steps(self.document.steps + new, text)
        else:
            command = self.document.apply_steps(outcome.steps, text, result=outcome.result,
                                                display=outcome.display)
        size = None
        if outcome.result is not None and outcome.result.shape[:2] != self.document.session.original.shape[:2]:
            size = (outcome.result.shape[1], outcome.result.shape[0])
        self.controller.reply(Reply(rid, text, ReplyKind.APPLIED, outcome.plan, outcome.seconds, outcome.note,
                                    thumbnail=outcome.thumb, token=command.token, stale_merge=stale, steps=new,
                                    size=size))

    def failed(self, message: str) -> None:
        self.controller.reply(Reply(self.request_id, self.text, ReplyKind.ERROR, message=message))

    def cancelled(self) -> None:
        self.controller.reply(Reply(self.request_id, self.text, ReplyKind.CANCELLED, message=CANCELLED))


def _auto_names():
    """``engine.diagnose.auto``'s AutoPlan and is_auto_instruction (imported on a worker thread)."""
    from engine.diagnose.auto import AutoPlan, is_auto_instruction

    return AutoPlan, is_auto_instruction


#: "fix it" and "auto" are planned from the diagnosis where the engine has one (otherwise the planner reads them).
_auto = _auto_names if importlib.util.find_spec("engine.diagnose") is not None else None


class RecomputeRequest(_ControllerRequest):
    """Stale previews recomputed exactly by the engine's ``refresh`` (every kind through its runner)."""

    label = "Recomputing…"

    def prepare(self):
        clone = self.document.session.clone()
        runners = self.controller.runners(clone)
        self.revision = self.document.revision

        def work(progress, cancel):
            clone.refresh(runners, progress=progress, cancel=cancel)
            return clone.steps

        return work

    def finished(self, steps) -> None:
        if self.document.revision == self.revision:
            self.document.replace_silently(steps)
            self.controller.say("Recomputed the previewed steps exactly.")


class ExportRequest(_ControllerRequest):
    """The result as a photo file (stale previews recomputed first, as the engine's export does)."""

    def __init__(self, controller: StudioController, path: Path, quality: int = 95,
                 then: Callable[[], None] | None = None) -> None:
        super().__init__(controller)
        self.path, self.quality, self.then = path, quality, then
        self.label = f"Exporting {path.name}…"

    def prepare(self):
        from engine.io.images import save_image

        clone = self.document.session.clone()
        stale = clone.stale
        runners = self.controller.runners(clone) if stale else None
        picture, path, quality = self.document.picture, self.path, self.quality
        self.revision = self.document.revision
        source = picture.source
        overwrite = path.exists() and not (source is not None and _same_file(path, source))

        def work(progress, cancel):
            if stale:
                clone.refresh(runners, progress=progress, cancel=cancel)
            written = save_image(picture.with_rgb(clone.result()), path, overwrite=overwrite, quality=quality)
            return written, clone.steps, stale

        return work

    def finished(self, result) -> None:
        written, steps, refreshed = result
        doc = self.document
        if doc.revision == self.revision:
            if refreshed:
                doc.replace_silently(steps)
            doc.stack.setClean()
        doc.export_path = Path(written)
        self.controller.exported.emit(str(written))
        self.controller.say(f"Exported {Path(written).name} to {Path(written).parent}.")
        if self.then is not None:
            self.then()


class SaveSessionRequest(_ControllerRequest):
    """The photo with every step and strength, losslessly."""

    def __init__(self, controller: StudioController, path: Path, then: Callable[[], None] | None = None) -> None:
        super().__init__(controller)
        self.path, self.then = path, then
        self.label = "Saving session…"

    def prepare(self):
        clone, picture, path = self.document.session.clone(), self.document.picture, self.path
        self.revision = self.document.revision
        return lambda progress, cancel: save_session_file(path, clone, picture)

    def finished(self, written) -> None:
        doc = self.document
        if doc.revision == self.revision:
            doc.stack.setClean()
        doc.session_path = Path(written)
        self.controller.say(f"Session saved to {Path(written).name}.")
        if self.then is not None:
            self.then()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def describe_picture(path: Path, picture, session, *, recovered: bool = False) -> str:
    w, h = picture.size
    bits = f"{picture.bit_depth}-bit"
    kind = picture.format or path.suffix.lstrip(".").upper() or "image"
    extras = [x for x, on in (("ICC profile", picture.icc_profile), ("EXIF", picture.exif),
                              ("alpha", picture.alpha is not None)) if on]
    head = f"Recovered unsaved work on {path.name}" if recovered else f"Opened {path.name}"
    text = f"{head}: {w} × {h}, {bits} {kind}"
    if extras:
        text += " with " + ", ".join(extras)
    if session.steps:
        text += f"; {plural(len(session.steps), 'step')} " + ("recovered" if recovered else "restored from the session")
        h, w = session.size_after()
        if (w, h) != picture.size:
            text += f", now {w} × {h}"  # an up-sampling step among them
    return text + "."
