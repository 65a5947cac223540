"""The assistant panel: type an instruction, press Enter, read what the app understood and did.

It is a view of :class:`~desktop.conversation.Conversation` (one bubble per
message), plus the input, the quick suggestions and the progress row. Every
reply says, step by step, what was understood (intent and confidence), at
what strength, how long each step took (the same time as its History row),
and shows a thumbnail; instructions that will not be acted on get a plain
explanation. Clicking a reply jumps the document to the state it produced;
clicking your own message jumps to the state just before it.
"""

from __future__ import annotations

import html

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .controller import Reply, ReplyKind, intent_name, plural
from .conversation import Conversation, Message, NoticeKind, Role
from .icons import icon
from .spire_mode import DEFAULT_STEPS, understood
from .theme import ERROR, MUTED, OK, WARNING
from .widgets import no_wheel_unless_focused

INSTRUCTIR, SPIRE = "instructir", "spire"
#: Holding one of these while clicking a suggestion puts its text in the box instead of sending it.
EDIT_MODIFIERS = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier

#: (button label, instruction sent). A diagnosis of the photo may replace them (``ChatPanel.set_suggestions``).
SUGGESTIONS = (
    ("Remove noise", "remove the noise"),
    ("Brighten", "it's too dark, brighten it"),
    ("Sharpen", "remove the blur"),
    ("Remove haze", "remove the haze"),
    ("Remove rain", "remove the rain"),
    ("Fix JPEG", "remove the jpeg artifacts"),
)
#: SPIRE only knows blur, noise, low resolution and JPEG (no haze, rain or brightness).
SPIRE_SUGGESTIONS = (
    ("Remove noise", "remove the noise"),
    ("Sharpen", "remove the blur"),
    ("Fix JPEG", "remove the jpeg artifacts"),
    ("Noise + blur", "remove the noise and the blur"),
    ("Undo 2× upscaling", "Upsample to 2x"),
    ("Restore all", "Remove all degradation"),
)
INSTRUCTIR_PLACEHOLDER = "Say what to fix, e.g. “remove the noise and brighten it a bit”"
SPIRE_PLACEHOLDER = "What to fix, e.g. “remove the noise, strongly” or “Deblur with sigma 1.5”"


def short_reason(reason: str, limit: int = 90) -> str:
    """The first sentence of an ``available()`` reason (the tooltip keeps the whole of it)."""
    text = reason.split(". ")[0].rstrip(".")
    if len(text) > limit and ": " in text:
        text = text.split(": ")[0]
    return text + "."


class SuggestionButton(QPushButton):
    """A quick button: a click sends its instruction; Ctrl+click or Shift+click puts it in the box to edit."""

    chosen = Signal(str, bool)  # instruction, edit first

    def __init__(self, label: str, instruction: str, parent: QWidget | None = None) -> None:
        super().__init__(label, parent)
        self.instruction = instruction
        self._edit = False
        self.clicked.connect(lambda _=False: self.chosen.emit(self.instruction, self._edit))

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._edit = bool(event.modifiers() & EDIT_MODIFIERS)
        try:
            super().mouseReleaseEvent(event)  # emits clicked when released over the button
        finally:
            self._edit = False

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._edit = False  # Space or Enter on a focused button: the plain action
        super().keyPressEvent(event)


class Bubble(QFrame):
    """One message. Clickable when it stands for a document state (``token``)."""

    clicked = Signal(object, bool)  # token, before

    def __init__(self, message: Message, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message = message
        self.role = message.role.value  # user | assistant | error | notice
        self.reply: Reply | None = message.reply
        self.token: int | None = None
        self.before = message.before
        self.status: QLabel | None = None
        self.setObjectName({"user": "bubbleUser", "assistant": "bubbleAssistant", "error": "bubbleError",
                            "notice": "bubbleNotice"}[self.role])
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(12, 8, 12, 8)
        self.layout_.setSpacing(4)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

    def add_label(self, text: str, *, muted: bool = False, rich: bool = False) -> QLabel:
        label = QLabel(text)
        label.setWordWrap(True)
        label.setTextFormat(Qt.TextFormat.RichText if rich else Qt.TextFormat.PlainText)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)
        label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        if muted:
            label.setObjectName("muted")
        self.layout_.addWidget(label)
        return label

    def sync(self) -> None:
        """Show what the message says now (token, queued status, highlight)."""
        m = self.message
        self.token = m.token
        clickable = m.token is not None
        self.setCursor(Qt.CursorShape.PointingHandCursor if clickable else Qt.CursorShape.ArrowCursor)
        if m.tip and clickable:
            self.setToolTip(m.tip)
        elif clickable:
            self.setToolTip("Click to go back to the photo just before this instruction" if self.before
                            else "Click to show the photo as it was after this step")
        else:
            self.setToolTip("")
        if self.status is not None:
            self.status.setText(m.status)
            self.status.setVisible(bool(m.status))
        if self.role == "assistant":
            name = "bubbleCurrent" if m.current else "bubbleAssistant"
            if self.objectName() != name:
                self.setObjectName(name)
                self.style().unpolish(self)
                self.style().polish(self)

    def text(self) -> str:
        return "\n".join(w.text() for w in self.findChildren(QLabel) if w.text() and w.isVisibleTo(self))

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.button() == Qt.MouseButton.LeftButton and self.token is not None:
            self.clicked.emit(self.token, self.before)
            event.accept()
            return
        super().mousePressEvent(event)


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def _reply_html(reply: Reply) -> tuple[str, str]:
    """(headline, body) in rich text for a reply."""
    esc = html.escape
    skipped = [p for p in reply.plan if not p.actionable]
    if reply.kind is ReplyKind.APPLIED:
        head = f"<b style='color:{OK}'>✓</b> <b>Done</b>"
        if len(reply.steps) > 1:
            head += f" — {plural(len(reply.steps), 'step')}"
    elif reply.kind is ReplyKind.NOTHING:
        head = f"<b style='color:{WARNING}'>!</b> <b>Nothing changed</b>"
    elif reply.kind is ReplyKind.CANCELLED:
        head = f"<b style='color:{MUTED}'>■</b> <b>Cancelled</b>"
    else:
        head = f"<b style='color:{ERROR}'>✗</b> <b>Could not do that</b>"
    times = iter(reply.steps)
    lines = []
    if reply.kind is ReplyKind.APPLIED and reply.message:  # "fix it": what the diagnosis saw and will do
        lines.append(f"<span style='color:{MUTED}'>{esc(reply.message)}</span>")
    for n, p in enumerate(reply.plan, 1):
        prefix = f"{n}. " if len(reply.plan) > 1 else ""
        if p.actionable:
            step = next(times, None)
            if step is not None and step.kind.value == "spire":
                lines.append(f"{prefix}<b>{esc(step.summary())}</b>")
                params = step.params
                lines.append(f"<span style='color:{MUTED}'>{plural(int(params.get('sampling_steps', 0)), 'step')}"
                             f"{' · ' + _seconds(step.seconds) if step.seconds >= 0.05 else ''}</span>")
                if params.get("semantic"):
                    lines.append(f"<span style='color:{MUTED}'>Photo of “{esc(params['semantic'])}”</span>")
                if "Upsample" in params.get("prompt", ""):
                    lines.append(f"<span style='color:{MUTED}'>The photo keeps its size: SPIRE restored the "
                                 "detail of an upsampling instead of enlarging it.</span>")
                continue
            took = f" · {_seconds(step.seconds)}" if step is not None and step.seconds >= 0.05 else ""
            what = esc(step.summary()) if step is not None and step.kind.value == "upsample" else \
                esc(intent_name(p.intent))
            lines.append(f"{prefix}“{esc(p.text)}” → <b>{what}</b> "
                         f"<span style='color:{MUTED}'>· {p.confidence:.0%} sure · strength {p.strength:.0%}"
                         f"{took}</span>")
        else:
            lines.append(f"{prefix}<span style='color:{WARNING}'>{esc(p.message)}</span>")
    if reply.size is not None:
        lines.append(f"<span style='color:{MUTED}'>The photo is now {reply.size[0]} × {reply.size[1]}.</span>")
    if reply.kind in (ReplyKind.ERROR, ReplyKind.CANCELLED) and reply.message:
        lines.append(esc(reply.message))
    elif reply.kind is ReplyKind.NOTHING and not skipped and reply.message:
        lines.append(esc(reply.message))
    if reply.stale_merge:
        lines.append(f"<span style='color:{WARNING}'>You changed the history while this ran: the new step is "
                     "a preview until you press Recompute.</span>")
    return head, "<br>".join(lines)


class ChatPanel(QWidget):
    """Messages above, a progress row and the instruction box below."""

    sendRequested = Signal(str)
    spireRequested = Signal(str, str, int)  # instruction, semantic prompt, diffusion steps
    modeChanged = Signal(str)  # INSTRUCTIR | SPIRE
    cancelRequested = Signal()
    stateRequested = Signal(object, bool)  # token, before

    def __init__(self, parent: QWidget | None = None, conversation: Conversation | None = None) -> None:
        super().__init__(parent)
        self.conversation: Conversation | None = None
        self._bubbles: list[Bubble] = []
        self._photo_open = False

        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.messages = QWidget()
        self.messages_layout = QVBoxLayout(self.messages)
        self.messages_layout.setContentsMargins(10, 10, 10, 10)
        self.messages_layout.setSpacing(8)
        self.messages_layout.addStretch(1)
        self.scroll.setWidget(self.messages)
        self.scroll.verticalScrollBar().rangeChanged.connect(self._follow)
        self._stick = True
        self.scroll.verticalScrollBar().valueChanged.connect(self._remember_position)

        self.activity = QLabel("")
        self.activity.setObjectName("muted")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(8)
        self.cancel_button = QPushButton(icon("cancel"), "Cancel")
        self.cancel_button.setToolTip("Stop the running edit (Esc); queued instructions are dropped too")
        self.cancel_button.clicked.connect(self.cancelRequested)
        self.busy_row = QWidget()
        busy = QGridLayout(self.busy_row)
        busy.setContentsMargins(10, 4, 10, 4)
        busy.addWidget(self.activity, 0, 0)
        busy.addWidget(self.progress, 1, 0)
        busy.addWidget(self.cancel_button, 0, 1, 2, 1)
        self.busy_row.hide()

        # quick suggestions: the defaults, or what a diagnosis of the photo proposes (set_suggestions)
        chips = QWidget()
        chip_box = QVBoxLayout(chips)
        chip_box.setContentsMargins(10, 0, 10, 0)
        chip_box.setSpacing(4)
        self.suggestions_title = QLabel("")
        self.suggestions_title.setObjectName("muted")
        self.suggestions_title.setWordWrap(True)
        self.suggestions_title.hide()
        self.chip_grid = QGridLayout()
        self.chip_grid.setSpacing(6)
        spire_grid = QGridLayout()
        spire_grid.setSpacing(6)
        chip_box.addWidget(self.suggestions_title)
        chip_box.addLayout(self.chip_grid)
        chip_box.addLayout(spire_grid)
        self.chips: list[SuggestionButton] = []  # the quick buttons shown now (the first of _chip_pool)
        self._chip_pool: list[SuggestionButton] = []
        self.spire_chips = [self._chip(label, text) for label, text in SPIRE_SUGGESTIONS]
        for n, chip in enumerate(self.spire_chips):
            spire_grid.addWidget(chip, n // 3, n % 3)
            chip.hide()
            chip.setEnabled(False)

        # the mode: InstructIR, or SPIRE when an adapter is installed (greyed out, with the reason, otherwise)
        self.mode = QComboBox()
        self.mode.addItem("InstructIR", INSTRUCTIR)
        self.mode.addItem("SPIRE (diffusion)", SPIRE)
        self.mode.setItemData(0, "Fast restoration from a plain instruction (noise, blur, haze, rain, too dark, "
                                 "JPEG)", Qt.ItemDataRole.ToolTipRole)
        self.mode.setToolTip("How the photo is restored")
        self.mode.currentIndexChanged.connect(self._mode_changed)
        mode_label = QLabel("Mode")
        mode_label.setObjectName("muted")
        self.mode_note = QLabel("")
        self.mode_note.setWordWrap(True)
        self.mode_note.hide()
        mode_row = QGridLayout()
        mode_row.setContentsMargins(10, 6, 10, 0)
        mode_row.setHorizontalSpacing(6)
        mode_row.setVerticalSpacing(2)
        mode_row.addWidget(mode_label, 0, 0)
        mode_row.addWidget(self.mode, 0, 1)
        mode_row.setColumnStretch(2, 1)
        mode_row.addWidget(self.mode_note, 1, 0, 1, 3)

        self.semantic = QLineEdit()
        self.semantic.setPlaceholderText("What's in the photo? (optional)")
        self.semantic.setToolTip("What the photo shows, e.g. “a cat on a sofa”: SPIRE restores details that fit "
                                 "it. Leave empty for restoration that does not depend on the content.")
        self.semantic.setClearButtonEnabled(True)
        self.semantic.returnPressed.connect(lambda: self.send(self.input.text()))
        self.steps_box = QSpinBox()
        self.steps_box.setRange(1, 200)
        self.steps_box.setValue(DEFAULT_STEPS)
        self.steps_box.setSuffix(" steps")
        self.steps_box.setToolTip(f"Diffusion steps: fewer are faster, more are finer ({DEFAULT_STEPS} is "
                                  "SPIRE's default)")
        self.spire_row = QWidget()
        spire_row = QHBoxLayout(self.spire_row)
        spire_row.setContentsMargins(10, 4, 10, 0)
        spire_row.setSpacing(6)
        spire_row.addWidget(self.semantic, 1)
        spire_row.addWidget(self.steps_box)
        self.spire_row.hide()

        self.input = QLineEdit()
        self.input.setPlaceholderText(INSTRUCTIR_PLACEHOLDER)
        self.input.setClearButtonEnabled(True)
        self.input.returnPressed.connect(lambda: self.send(self.input.text()))
        self.input.textChanged.connect(self._update_understood)
        self.input.setMinimumHeight(34)
        self.send_button = QToolButton()
        self.send_button.setIcon(icon("send"))
        self.send_button.setIconSize(QSize(20, 20))
        self.send_button.setToolTip("Send (Enter)")
        self.send_button.setFixedSize(36, 34)
        self.send_button.clicked.connect(lambda: self.send(self.input.text()))
        row = QHBoxLayout()
        row.setContentsMargins(10, 6, 10, 10)
        row.setSpacing(6)
        row.addWidget(self.input, 1)
        row.addWidget(self.send_button)
        self.understood = QLabel("")
        self.understood.setWordWrap(True)
        self.understood.setTextFormat(Qt.TextFormat.RichText)
        self.understood.setContentsMargins(12, 0, 10, 8)
        self.understood.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.understood.hide()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.scroll, 1)
        layout.addWidget(self.busy_row)
        layout.addWidget(chips)
        layout.addLayout(mode_row)
        layout.addWidget(self.spire_row)
        layout.addLayout(row)
        layout.addWidget(self.understood)
        no_wheel_unless_focused(self.mode, self.steps_box)
        self.set_suggestions([])
        self.set_spire_state(None, "Checking whether SPIRE can run on this computer…")
        if conversation is not None:
            self.set_conversation(conversation)

    # --- input ----------------------------------------------------------------

    def send(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        if self.is_spire:
            prompt, why = understood(text)
            if prompt is None:  # not sent: the line under the box already says why, in the warning colour
                self._update_understood()
                self.input.setFocus()
                return
            self.input.clear()
            self.spireRequested.emit(text, self.semantic.text().strip(), self.steps_box.value())
            return
        self.input.clear()
        self.sendRequested.emit(text)

    # --- mode -----------------------------------------------------------------

    @property
    def is_spire(self) -> bool:
        return self.mode.currentData() == SPIRE

    def set_mode(self, mode: str) -> bool:
        """Switch to INSTRUCTIR or SPIRE; False when that mode is disabled."""
        index = self.mode.findData(mode)
        if index < 0 or not self.mode.model().item(index).isEnabled():
            return False
        self.mode.setCurrentIndex(index)
        return True

    def set_spire_state(self, ok: bool | None, reason: str, error: str = "", *, loading: bool = False) -> None:
        """Offer SPIRE or grey it out: ``ok`` None while checking, False with the reason, True (maybe on CPU)."""
        self._spire = (ok, reason, error, loading)
        index = self.mode.findData(SPIRE)
        self.mode.model().item(index).setEnabled(bool(ok))
        tip = reason if ok is not False else f"Not available on this computer: {short_reason(reason)}"
        self.mode.setItemData(index, tip, Qt.ItemDataRole.ToolTipRole)
        if not ok and self.is_spire:
            self.mode.setCurrentIndex(self.mode.findData(INSTRUCTIR))
        self._update_mode_note()

    def _update_mode_note(self) -> None:
        ok, reason, error, loading = getattr(self, "_spire", (None, "", "", False))
        note = self.mode_note
        if ok and self.is_spire:
            text, tip = (error or reason + (" Loading the SPIRE model…" if loading else "")), error or reason
            colour = ERROR if error else WARNING if "CPU" in reason else MUTED
        else:
            text, colour, tip = "", MUTED, ""
        note.setText(text)
        note.setToolTip(tip)
        note.setStyleSheet(f"color: {colour};")
        note.setVisible(bool(text))
        self.mode.setToolTip("How the photo is restored" + (f"\n\nSPIRE: {short_reason(tip)}" if tip else ""))

    def _mode_changed(self, _index: int) -> None:
        spire = self.is_spire
        self.spire_row.setVisible(spire)
        self.understood.setVisible(spire)
        for chip in self.chips:
            chip.setVisible(not spire)
        self.suggestions_title.setVisible(not spire and bool(self.suggestions_title.text()))
        for chip in self.spire_chips:
            chip.setVisible(spire)
        self.input.setPlaceholderText(SPIRE_PLACEHOLDER if spire else INSTRUCTIR_PLACEHOLDER)
        self._update_understood()
        self._update_mode_note()
        self.modeChanged.emit(SPIRE if spire else INSTRUCTIR)

    def _update_understood(self, *_args) -> None:
        """The live "Understood as: Denoise with sigma 0.118" line (or why it cannot be read) in SPIRE mode."""
        if not self.is_spire:
            return
        text = self.input.text()
        prompt, why = understood(text)
        if prompt is not None:
            self.understood.setText(f"Understood as: <b>{html.escape(prompt)}</b>")
            self.understood.setStyleSheet(f"color: {MUTED};")
        elif why:
            self.understood.setText(html.escape(why))
            self.understood.setStyleSheet(f"color: {WARNING};")
        else:
            self.understood.setText("Understood as: — (type what to fix; SPIRE reads it as a restoration prompt)")
            self.understood.setStyleSheet(f"color: {MUTED};")

    # --- messages (a view of the conversation) ----------------------------------------------------------

    def set_conversation(self, conversation: Conversation) -> None:
        """Show ``conversation`` (its messages so far, then every change)."""
        if self.conversation is not None:
            for signal in (self.conversation.added, self.conversation.changed, self.conversation.cleared):
                signal.disconnect()
        self.conversation = conversation
        self._clear_bubbles()
        for index in range(len(conversation)):
            self._on_added(index)
        conversation.added.connect(self._on_added)
        conversation.changed.connect(self._on_changed)
        conversation.cleared.connect(self._clear_bubbles)

    def _on_added(self, index: int) -> None:
        message = self.conversation.messages[index]
        bubble = self._bubble(message)
        holder = QWidget()
        row = QHBoxLayout(holder)
        indent = {Role.USER: (48, 0), Role.ASSISTANT: (0, 24), Role.ERROR: (0, 24)}.get(message.role, (0, 0))
        row.setContentsMargins(indent[0], 0, indent[1], 0)
        row.addWidget(bubble)
        self.messages_layout.insertWidget(index + 1, holder)  # after the stretch that keeps bubbles at the bottom
        self._bubbles.insert(index, bubble)
        bubble.clicked.connect(self.stateRequested)
        bubble.sync()
        self._stick = True

    def _on_changed(self, index: int) -> None:
        if 0 <= index < len(self._bubbles):
            self._bubbles[index].sync()

    def _bubble(self, message: Message) -> Bubble:
        bubble = Bubble(message)
        if message.role is Role.USER:
            bubble.add_label(message.text)
            bubble.status = bubble.add_label("", muted=True)
            bubble.status.hide()
        elif message.reply is not None:
            self._fill_reply(bubble, message.reply)
        else:
            colour = {NoticeKind.ERROR: ERROR, NoticeKind.WARNING: WARNING}.get(message.kind, MUTED)
            label = bubble.add_label(html.escape(message.text).replace("\n", "<br>"), rich=True)
            if message.kind is not NoticeKind.ADVICE:
                label.setStyleSheet(f"color: {colour};")
            if message.action is not None:
                button = QPushButton(message.action[0])
                button.clicked.connect(message.action[1])
                row = QHBoxLayout()
                row.addWidget(button)
                row.addStretch(1)
                bubble.layout_.addLayout(row)
                bubble.action_button = button
        return bubble

    @staticmethod
    def _fill_reply(bubble: Bubble, reply: Reply) -> None:
        head, body = _reply_html(reply)
        bubble.add_label(head, rich=True)
        if body:
            bubble.add_label(body, rich=True)
        footer = QHBoxLayout()
        footer.setSpacing(10)
        if reply.thumbnail is not None and not reply.thumbnail.isNull():
            thumb = QLabel()
            thumb.setPixmap(QPixmap.fromImage(reply.thumbnail))
            thumb.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            thumb.setStyleSheet("border: 1px solid #4a4a4a; border-radius: 3px;")
            footer.addWidget(thumb)
        if reply.kind is ReplyKind.APPLIED and reply.seconds >= 0.05:
            took = QLabel(f"{_seconds(reply.seconds)} in all")
            took.setObjectName("muted")
            took.setToolTip(f"The model ran {_seconds(reply.step_seconds)} (the times in History); the rest "
                            "went to understanding the instruction, recomputing previews and preparing the "
                            "display.")
            footer.addWidget(took, 0, Qt.AlignmentFlag.AlignBottom)
        footer.addStretch(1)
        if footer.count() > 1:
            bubble.layout_.addLayout(footer)

    def bubbles(self) -> list[Bubble]:
        return list(self._bubbles)

    def _clear_bubbles(self) -> None:
        while self.messages_layout.count() > 1:
            item = self.messages_layout.takeAt(1)
            if item.widget():
                item.widget().deleteLater()
        self._bubbles = []

    # --- quick suggestions ------------------------------------------------------------------------------

    def set_suggestions(self, suggestions, title: str = "") -> None:
        """Replace the InstructIR quick buttons with ``suggestions`` = [(label, instruction, tooltip), ...]
        (e.g. what a diagnosis of the photo proposes); an empty list brings the defaults back."""
        suggestions = [tuple(s) + ("",) * (3 - len(s)) for s in suggestions] or \
            [(label, text, "") for label, text in SUGGESTIONS]
        # The buttons are kept and re-labelled: building styled widgets anew costs the UI thread several ms
        # each, every time a photo opens or a step is applied.
        while len(self._chip_pool) < len(suggestions):
            n = len(self._chip_pool)
            self._chip_pool.append(self._chip("", ""))
            self.chip_grid.addWidget(self._chip_pool[-1], n // 3, n % 3)
        self.chips = self._chip_pool[:len(suggestions)]
        for chip, (label, text, tip) in zip(self.chips, suggestions):
            self._label_chip(chip, label, text, tip)
        for n, chip in enumerate(self._chip_pool):
            chip.setVisible(n < len(suggestions) and not self.is_spire)
            chip.setEnabled(self._photo_open)
        self.suggestions_title.setText(title)
        self.suggestions_title.setVisible(bool(title) and not self.is_spire)

    def _chip(self, label: str, instruction: str, tip: str = "") -> SuggestionButton:
        chip = SuggestionButton(label, instruction)
        chip.setObjectName("chip")
        self._label_chip(chip, label, instruction, tip)
        chip.setCursor(Qt.CursorShape.PointingHandCursor)
        chip.chosen.connect(self._chip_chosen)
        return chip

    @staticmethod
    def _label_chip(chip: SuggestionButton, label: str, instruction: str, tip: str = "") -> None:
        chip.setText(label)
        chip.instruction = instruction
        chip.setToolTip(tip or f"Send “{instruction}” · Ctrl+click or Shift+click to edit it first")

    def _chip_chosen(self, instruction: str, edit: bool) -> None:
        if edit:
            self.edit(instruction)
        else:
            self.send(instruction)

    def edit(self, text: str) -> None:
        """Put ``text`` in the box to be edited before it is sent (a suggestion clicked with Ctrl or Shift)."""
        self.input.setText(text)
        self.input.setFocus()
        self.input.end(False)

    def set_photo_open(self, is_open: bool) -> None:
        """Quick buttons act on the photo: they are off until one is open."""
        self._photo_open = is_open
        for chip in (*self.chips, *self.spire_chips):
            chip.setEnabled(is_open)

    # --- busy -----------------------------------------------------------------

    def set_busy(self, busy: bool) -> None:
        self.busy_row.setVisible(busy)
        if not busy:
            self.progress.setValue(0)
            self.activity.setText("")

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def set_activity(self, text: str) -> None:
        self.activity.setText(text)

    # --- scrolling --------------------------------------------------------------

    def _remember_position(self, value: int) -> None:
        bar = self.scroll.verticalScrollBar()
        self._stick = value >= bar.maximum() - 4

    def _follow(self, _min: int, maximum: int) -> None:
        if self._stick:  # the scroll bar as context: the call is dropped if the panel is deleted first
            bar = self.scroll.verticalScrollBar()
            QTimer.singleShot(0, bar, lambda: bar.setValue(bar.maximum()))
