"""What the diagnosis sees in the photo, as suggestions the Assistant offers (no widgets here).

When a photo opens, :class:`PhotoDiagnosis` runs the engine's
``engine.diagnose.diagnose`` on a pool thread of its own, so opening never
waits for it (the photo shows first, the diagnosis follows a fraction of a
second later) and it never queues behind or ahead of a restoration. It says in
the conversation what it sees, and emits ``suggestionsChanged`` with quick
buttons for this photo (the chat panel shows them; a clean photo gets the
generic ones back). After each applied instruction it looks at the result and
says what still looks wrong that it has not said yet (a problem once per photo,
unless its degree changes or it comes back after the photo looked fine); after
undo, a strength change or a removed step it refreshes the buttons silently. A newer request cancels an older one, and a
diagnosis that arrives for a photo (or a state) no longer shown is dropped.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from engine.jobs import CancelToken

from .conversation import Conversation, NoticeKind
from .document import Document
from .workers import run_in_pool

log = logging.getLogger(__name__)

#: Quiet time after an undo or a slider before the buttons are brought up to date (ms).
SETTLE_MS = 700

#: Short button labels for what each intent fixes (the diagnosis' ``Kind`` values).
LABELS = {
    "noise": "Remove noise", "blur": "Sharpen", "rain": "Remove rain", "haze": "Remove haze",
    "low-light": "Brighten", "enhancement": "Enhance colours", "upsampling": "Upscale 2×", "jpeg": "Fix JPEG",
}
LOOKING = "Looking at the photo…"
#: The notice's button names the whole instruction when it fits the panel.
ACTION_CHARS = 44
EDIT_HINT = "Click to apply · Ctrl+click or Shift+click to edit the text first"


class Purpose(enum.Enum):
    """Why a diagnosis was asked for: it decides what is said in the conversation."""

    OPENED = "opened"  # a photo was opened: say what is seen
    AFTER_STEP = "after-step"  # an instruction was applied: say what still looks wrong
    REFRESH = "refresh"  # undo, a strength, a removed step: only the buttons follow


@dataclass(frozen=True)
class Suggestion:
    """One quick button: its label, the instruction it sends and a tooltip."""

    label: str
    instruction: str
    tip: str = ""

    def as_tuple(self) -> tuple[str, str, str]:
        return self.label, self.instruction, self.tip


def suggestions_for(diagnosis) -> list[Suggestion]:
    """Buttons for what is worth fixing: the whole fix first when there are several problems, then each one."""
    fix = list(diagnosis.to_fix)
    if not fix:
        return []
    out = []
    if len(fix) > 1:
        out.append(Suggestion("Fix both" if len(fix) == 2 else f"Fix all {len(fix)}", diagnosis.instruction,
                              f"“{diagnosis.instruction}”\n{EDIT_HINT}"))
    for p in sorted(fix, key=lambda p: [s.intent for s in diagnosis.steps].index(p.intent)):
        label = LABELS.get(p.intent.value, p.intent.value.capitalize())
        if p.instruction.endswith(" a little") and p.intent.value != "upsampling":  # not "Upscale 2× a little"
            label += " a little"
        out.append(Suggestion(label, p.instruction, f"The photo looks {p.describe()}: {p.reason}.\n"
                                                    f"“{p.instruction}”\n{EDIT_HINT}"))
    return out


def told_key(problem) -> tuple[str, str]:
    """What the Assistant tells about a problem: its kind and its degree ('a little noisy', 'noisy (strong)')."""
    return problem.intent.value, problem.describe()


def describe(diagnosis, purpose: Purpose, told: frozenset = frozenset()) -> str:
    """What the Assistant says about a diagnosis ('' when there is nothing to say).

    ``told``: the :func:`told_key` s it said already about this photo; after a step only the problems
    it has not said yet are named (the photo being too small does not change with each denoising)."""
    fix = diagnosis.to_fix
    if purpose is Purpose.OPENED:
        if not fix:
            return diagnosis.suggestion
        lines = [f"What I see: {diagnosis.suggestion[0].lower()}{diagnosis.suggestion[1:]}"]
        lines += [f"• {p.describe()}: {p.reason}" for p in fix]
        lines.append("Click a suggestion below to fix it, or Ctrl+click to edit it first.")
        return "\n".join(lines)
    if purpose is Purpose.AFTER_STEP:
        if not fix:
            return "It looks fine now: nothing more worth fixing."
        new = tuple(p for p in fix if told_key(p) not in told)
        if not new:
            return ""
        kinds = {kind for kind, _ in told}
        what = replace(diagnosis, problems=new).suggestion.replace("This photo looks ", "", 1).rstrip(".")
        still = "still" if all(p.intent.value in kinds for p in new) else "now"
        return f"It {still} looks {what} ({'; '.join(p.reason for p in new)})."
    return ""


def engine_diagnose(rgb, *, path=None, cancel: CancelToken | None = None):
    """The engine's diagnosis (imported on first use, on the worker thread; its model loads once)."""
    from engine.diagnose import diagnose

    return diagnose(rgb, path=path, cancel=cancel)


def _load_engine_model() -> None:
    from engine.diagnose import default_model

    default_model()


class PhotoDiagnosis(QObject):
    """Diagnoses the document's photo in the background and turns the diagnosis into suggestions."""

    suggestionsChanged = Signal(object, str)  # [(label, instruction, tooltip)], title
    diagnosed = Signal(object, object)  # Diagnosis, Purpose (after it was shown)

    def __init__(self, document: Document, conversation: Conversation, *,
                 diagnose: Callable | None = None, busy: Callable[[], bool] = lambda: False,
                 send: Callable[[str], object] | None = None, parent: QObject | None = None) -> None:
        """``diagnose(rgb, path=..., cancel=...) -> Diagnosis`` (default: the engine's); ``busy``: whether
        restorations are running or queued (the buttons wait for them); ``send``: applies an instruction
        (the button of the notice)."""
        super().__init__(parent)
        self.document = document
        self.conversation = conversation
        self.diagnose = diagnose or engine_diagnose
        self.busy = busy
        self.send = send
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)  # one at a time; a newer request cancels the older one
        self.last = None  # the Diagnosis shown now
        self._told: set[tuple[str, str]] = set()  # told_key s of what was said about this photo since it looked fine
        self._told_fine = False  # the last thing said about this photo: it looks fine
        self._generation = 0
        self._token: CancelToken | None = None
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self._refresh)

    def warm_up(self) -> None:
        """Import the diagnosis and load its model now, in the background, so the first photo does not wait
        for it (only for the engine's diagnosis; a failure shows when a photo is diagnosed)."""
        if self.diagnose is not engine_diagnose:
            return

        def work(progress, cancel):
            _load_engine_model()

        run_in_pool(work, on_failed=lambda message: log.warning("diagnosis model: %s", message), pool=self.pool,
                    receiver=self, background=True)

    # --- requests -----------------------------------------------------------------------------

    def photo_opened(self) -> None:
        """A photo (or session) was opened: forget the old diagnosis, look at this one."""
        self.last = None
        self._told, self._told_fine = set(), False
        self._settle.stop()
        self.suggestionsChanged.emit([], LOOKING)  # the generic buttons until this photo's diagnosis arrives
        self.request(Purpose.OPENED)

    def step_applied(self, reply) -> None:
        """An instruction was applied: say what still looks wrong, once nothing more is queued."""
        if self.busy():
            return  # the next queued instruction will ask again
        self._settle.stop()
        self.request(Purpose.AFTER_STEP)

    def document_changed(self) -> None:
        """Undo, redo, a strength, a removed step: the buttons follow once the user pauses."""
        if self.document.is_open and self.last is not None:
            self._settle.start()

    def _refresh(self) -> None:
        if self.busy():
            return
        self.request(Purpose.REFRESH)

    def request(self, purpose: Purpose) -> int:
        """Diagnose what the document shows now (on the pool thread); returns the request's generation."""
        self._generation += 1
        if self._token is not None:
            self._token.cancel()
        doc = self.document
        if not doc.is_open:
            self._token = None
            return self._generation
        token = self._token = CancelToken()
        generation, session, revision = self._generation, doc.session, doc.revision
        clone = session.clone()
        clone._cache.update(session._cache)  # noqa: SLF001 - the result just applied is rendered already
        path = doc.picture.source if doc.picture is not None else None
        diagnose = self.diagnose

        def work(progress, cancel):
            token.raise_if_cancelled()
            rgb = clone.result()
            # the JPEG tables of the file say something only about the photo as it was opened
            return diagnose(rgb, path=path if not clone.steps else None, cancel=token)

        def done(diagnosis) -> None:
            if generation != self._generation or doc.session is not session or doc.revision != revision:
                return  # another photo, or the photo changed meanwhile: a newer request says what is true now
            self._show(diagnosis, purpose)

        def failed(message: str) -> None:
            if generation == self._generation:
                log.warning("diagnosis failed: %s", message)
                if self.last is None:
                    self.suggestionsChanged.emit([], "")  # not "Looking at the photo…" forever: the generic ones

        run_in_pool(work, on_finished=done, on_failed=failed, pool=self.pool, receiver=self,
                    background=True)  # a restoration started meanwhile gets the CPU first
        return generation

    def cancel(self) -> None:
        self._generation += 1
        self._settle.stop()
        if self._token is not None:
            self._token.cancel()

    # --- showing ------------------------------------------------------------------------------------

    def _show(self, diagnosis, purpose: Purpose) -> None:
        self.last = diagnosis
        buttons = [s.as_tuple() for s in suggestions_for(diagnosis)]
        self.suggestionsChanged.emit(buttons, diagnosis.suggestion)
        text = self._what_to_say(diagnosis, purpose)
        if text:
            action = None
            if purpose is Purpose.OPENED and diagnosis.instruction and self.send is not None:
                label = f"Fix it: “{diagnosis.instruction}”"
                action = (label if len(label) <= ACTION_CHARS else "Fix it", self._sender(diagnosis.instruction))
            if purpose is Purpose.OPENED:
                self.conversation.add_about_photo(text, NoticeKind.ADVICE, action=action)
            else:
                self.conversation.add_notice(text, NoticeKind.ADVICE)
        self.diagnosed.emit(diagnosis, purpose)

    def _what_to_say(self, diagnosis, purpose: Purpose) -> str:
        """Each problem once per photo: after a step, what is new since it was last said (or since it looked
        fine), and that it looks fine only when something was wrong before."""
        if purpose is Purpose.REFRESH:
            return ""
        if diagnosis.clean:
            if purpose is Purpose.AFTER_STEP and self._told_fine:
                return ""
            self._told, self._told_fine = set(), True
            return describe(diagnosis, purpose)
        text = describe(diagnosis, purpose, frozenset(self._told))
        if text:
            self._told |= {told_key(p) for p in diagnosis.to_fix}
            self._told_fine = False
        return text

    def _sender(self, instruction: str) -> Callable[[], None]:
        session = self.document.session

        def send() -> None:
            if self.document.session is not session:
                self.conversation.add_notice("That suggestion was for the photo opened before; this one has "
                                             "its own below.")
                return
            self.send(instruction)

        return send
