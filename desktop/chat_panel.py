"""The conversation: type an instruction, press Enter, read what the app understood and did.

Every reply says, step by step, what was understood (intent and confidence),
at what strength, how long it took, and shows a thumbnail; instructions that
will not be acted on get a plain explanation. Clicking a reply jumps the
document to the state it produced; clicking your own message jumps to the
state just before it.
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

from .controller import Reply, intent_name
from .icons import icon
from .spire_mode import DEFAULT_STEPS, understood
from .theme import ERROR, MUTED, OK, WARNING

INSTRUCTIR, SPIRE = "instructir", "spire"

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


class Bubble(QFrame):
    """One message. Clickable when it stands for a document state (``token``)."""

    clicked = Signal(object, bool)  # token, before

    def __init__(self, role: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role = role  # user | assistant | error | notice
        self.token: int | None = None
        self.before = role == "user"
        self.reply: Reply | None = None
        self.setObjectName({"user": "bubbleUser", "assistant": "bubbleAssistant", "error": "bubbleError",
                            "notice": "bubbleNotice"}[role])
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

    def set_token(self, token: int | None) -> None:
        self.token = token
        clickable = token is not None
        self.setCursor(Qt.CursorShape.PointingHandCursor if clickable else Qt.CursorShape.ArrowCursor)
        if clickable:
            self.setToolTip("Click to go back to the photo just before this instruction" if self.before
                            else "Click to show the photo as it was after this step")

    def text(self) -> str:
        return "\n".join(w.text() for w in self.findChildren(QLabel) if w.text())

    def set_current(self, on: bool) -> None:
        if self.role != "assistant":
            return
        name = "bubbleCurrent" if on else "bubbleAssistant"
        if self.objectName() != name:
            self.setObjectName(name)
            self.style().unpolish(self)
            self.style().polish(self)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.button() == Qt.MouseButton.LeftButton and self.token is not None:
            self.clicked.emit(self.token, self.before)
            event.accept()
            return
        super().mousePressEvent(event)


def _reply_html(reply: Reply) -> tuple[str, str]:
    """(headline, body) in rich text for a reply."""
    esc = html.escape
    applied = [p for p in reply.plan if p.actionable]
    skipped = [p for p in reply.plan if not p.actionable]
    if reply.kind == "applied":
        head = f"<b style='color:{OK}'>✓</b> <b>Done</b>"
        if len(applied) > 1:
            head += f" — {len(applied)} steps"
    elif reply.kind == "nothing":
        head = f"<b style='color:{WARNING}'>!</b> <b>Nothing changed</b>"
    elif reply.kind == "cancelled":
        head = f"<b style='color:{MUTED}'>■</b> <b>Cancelled</b>"
    else:
        head = f"<b style='color:{ERROR}'>✗</b> <b>Could not do that</b>"
    lines = []
    for n, p in enumerate(reply.plan, 1):
        prefix = f"{n}. " if len(reply.plan) > 1 else ""
        if p.actionable:
            lines.append(f"{prefix}“{esc(p.text)}” → <b>{esc(intent_name(p.intent))}</b> "
                         f"<span style='color:{MUTED}'>· {p.confidence:.0%} sure · strength {p.strength:.0%}</span>")
        else:
            lines.append(f"{prefix}<span style='color:{WARNING}'>{esc(p.message)}</span>")
    if reply.spire is not None:
        step = reply.spire
        lines.append(f"<b>{esc(step.summary())}</b>")
        if step.semantic:
            lines.append(f"<span style='color:{MUTED}'>Photo of “{esc(step.semantic)}”</span>")
        if "Upsample" in step.prompt:
            lines.append(f"<span style='color:{MUTED}'>The photo keeps its size: SPIRE restored the detail of "
                         "an upsampling instead of enlarging it.</span>")
    if reply.kind in ("error", "cancelled") and reply.message:
        lines.append(esc(reply.message))
    elif reply.kind == "nothing" and not skipped and reply.message:
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

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._by_request: dict[int, Bubble] = {}
        self._status: dict[int, QLabel] = {}

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

        chips = QWidget()
        grid = QGridLayout(chips)
        grid.setContentsMargins(10, 0, 10, 0)
        grid.setSpacing(6)
        self.chips: list[QPushButton] = []
        self.spire_chips: list[QPushButton] = []
        for suggestions, into, row0 in ((SUGGESTIONS, self.chips, 0), (SPIRE_SUGGESTIONS, self.spire_chips, 2)):
            for n, (label, instruction) in enumerate(suggestions):
                chip = QPushButton(label)
                chip.setObjectName("chip")
                chip.setToolTip(f"Send “{instruction}”")
                chip.setCursor(Qt.CursorShape.PointingHandCursor)
                chip.clicked.connect(lambda _=False, text=instruction: self.send(text))
                grid.addWidget(chip, row0 + n // 3, n % 3)
                into.append(chip)
        for chip in self.spire_chips:
            chip.hide()

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
        self.set_spire_state(None, "Checking whether SPIRE can run on this computer…")

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
        tip = reason if ok is not False else f"Unavailable: {reason}"
        self.mode.setItemData(index, tip, Qt.ItemDataRole.ToolTipRole)
        if not ok and self.is_spire:
            self.mode.setCurrentIndex(self.mode.findData(INSTRUCTIR))
        self._update_mode_note()

    def _update_mode_note(self) -> None:
        ok, reason, error, loading = getattr(self, "_spire", (None, "", "", False))
        note = self.mode_note
        if ok is False:
            text, colour, tip = f"SPIRE (diffusion) is off: {short_reason(reason)} Hover here for how to set it up.", \
                MUTED, reason
        elif ok and self.is_spire:
            text, tip = (error or reason + (" Loading the SPIRE model…" if loading else "")), error or reason
            colour = ERROR if error else WARNING if "CPU" in reason else MUTED
        else:
            text, colour, tip = "", MUTED, ""
        note.setText(text)
        note.setToolTip(tip)
        note.setStyleSheet(f"color: {colour};")
        note.setVisible(bool(text))
        self.mode.setToolTip("How the photo is restored" + (f"\n\nSPIRE: {tip}" if tip else ""))

    def _mode_changed(self, _index: int) -> None:
        spire = self.is_spire
        self.spire_row.setVisible(spire)
        self.understood.setVisible(spire)
        for chip in self.chips:
            chip.setVisible(not spire)
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

    # --- messages -------------------------------------------------------------

    def _add(self, bubble: Bubble, *, indent_left: int = 0, indent_right: int = 0, after: QWidget | None = None
             ) -> Bubble:
        holder = QWidget()
        row = QHBoxLayout(holder)
        row.setContentsMargins(indent_left, 0, indent_right, 0)
        row.addWidget(bubble)
        index = self.messages_layout.indexOf(after) if after is not None else -1
        if index >= 0:  # a reply goes right under its own message, even when later ones were queued meanwhile
            self.messages_layout.insertWidget(index + 1, holder)
        else:
            self.messages_layout.addWidget(holder)
        bubble.clicked.connect(self.stateRequested)
        self._stick = True
        return bubble

    def bubbles(self) -> list[Bubble]:
        return [b for b in self.messages.findChildren(Bubble)]

    def add_user(self, request_id: int, text: str) -> Bubble:
        bubble = Bubble("user")
        bubble.add_label(text)
        status = bubble.add_label("", muted=True)
        status.hide()
        self._by_request[request_id] = bubble
        self._status[request_id] = status
        return self._add(bubble, indent_left=48)

    def mark_queued(self, request_id: int, ahead: int) -> None:
        if label := self._status.get(request_id):
            label.setText(f"Queued — runs after {ahead} other task{'s' if ahead > 1 else ''}")
            label.show()

    def mark_started(self, request_id: int) -> None:
        if label := self._status.get(request_id):
            label.hide()

    def add_reply(self, reply: Reply) -> Bubble:
        if label := self._status.pop(reply.request_id, None):
            label.hide()
        bubble = Bubble("error" if reply.kind == "error" else "assistant")
        bubble.reply = reply
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
        if reply.seconds >= 0.05 and reply.kind == "applied":
            took = QLabel(f"{reply.seconds:.1f} s")
            took.setObjectName("muted")
            took.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            footer.addWidget(took, 0, Qt.AlignmentFlag.AlignBottom)
        footer.addStretch(1)
        if footer.count() > 1:
            bubble.layout_.addLayout(footer)
        user = self._by_request.get(reply.request_id)
        if reply.token is not None:
            bubble.set_token(reply.token)
            if user is not None:
                user.set_token(reply.token)
        return self._add(bubble, indent_right=24, after=user.parentWidget() if user is not None else None)

    def add_notice(self, text: str, kind: str = "info", action: tuple[str, object] | None = None) -> Bubble:
        """An app message (not a reply); ``action`` = (button label, callback) offers the way out."""
        bubble = Bubble("error" if kind == "error" else "notice")
        colour = {"error": ERROR, "warning": WARNING}.get(kind, MUTED)
        label = bubble.add_label(html.escape(text), rich=True)
        label.setStyleSheet(f"color: {colour};")
        if action is not None:
            button = QPushButton(action[0])
            button.clicked.connect(action[1])
            row = QHBoxLayout()
            row.addWidget(button)
            row.addStretch(1)
            bubble.layout_.addLayout(row)
            bubble.action_button = button
        return self._add(bubble, indent_right=24 if kind == "error" else 0)

    def add_opened(self, text: str) -> Bubble:
        """The first message of a document: clicking it shows the original."""
        bubble = self.add_notice(text)
        bubble.set_token(0)
        bubble.before = False
        bubble.setToolTip("Click to show the original photo")
        return bubble

    def set_current_token(self, token: int | None) -> None:
        for bubble in self.bubbles():
            bubble.set_current(bubble.role == "assistant" and token is not None and bubble.token == token)

    def clear(self) -> None:
        while self.messages_layout.count() > 1:
            item = self.messages_layout.takeAt(1)
            if item.widget():
                item.widget().deleteLater()
        self._by_request.clear()
        self._status.clear()

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
