"""The conversation with the assistant, as data: the chat panel only shows it.

The controller writes here (what the user asked, each reply, the app's
notices); :class:`~desktop.chat_panel.ChatPanel` draws one bubble per
message and redraws a bubble when its message changes. A message that stands
for a document state carries that state's undo token, so clicking it jumps
there.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal


class Role(str, enum.Enum):
    USER = "user"
    ASSISTANT = "assistant"
    ERROR = "error"
    NOTICE = "notice"


class NoticeKind(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    ADVICE = "advice"  # what the diagnosis sees in the photo: shown in the text colour, not muted


@dataclass(eq=False)
class Message:
    """One bubble's worth: who speaks, what is said, and the document state it stands for."""

    role: Role
    text: str = ""
    request_id: int | None = None
    reply: object | None = None  # a controller.Reply
    kind: NoticeKind = NoticeKind.INFO
    token: int | None = None  # the state it stands for (0: the original)
    before: bool = False  # clicking shows the state just before ``token`` (the user's own messages)
    status: str = ""  # "Queued — runs after 1 other task" under a user's message
    current: bool = False  # the reply whose state is shown now
    action: tuple[str, Callable[[], object]] | None = None  # a button: (label, callback)
    tip: str = ""


class Conversation(QObject):
    """An ordered list of messages with signals for the view."""

    added = Signal(int)  # index of a new message (it may be inserted, not only appended)
    changed = Signal(int)  # index of a message whose token, status or highlight changed
    cleared = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.messages: list[Message] = []

    def __len__(self) -> int:
        return len(self.messages)

    def _insert(self, message: Message, index: int | None = None) -> Message:
        index = len(self.messages) if index is None else index
        self.messages.insert(index, message)
        self.added.emit(index)
        return message

    def _changed(self, message: Message) -> None:
        self.changed.emit(self.messages.index(message))

    def user_message(self, request_id: int) -> Message | None:
        return next((m for m in self.messages if m.role is Role.USER and m.request_id == request_id), None)

    # --- what the controller writes ------------------------------------------------------------------

    def add_user(self, request_id: int, text: str) -> Message:
        return self._insert(Message(Role.USER, text, request_id, before=True))

    def mark_queued(self, request_id: int, ahead: int) -> None:
        if message := self.user_message(request_id):
            message.status = f"Queued — runs after {ahead} other task{'s' if ahead > 1 else ''}"
            self._changed(message)

    def mark_started(self, request_id: int) -> None:
        if (message := self.user_message(request_id)) and message.status:
            message.status = ""
            self._changed(message)

    def add_reply(self, reply) -> Message:
        """A reply goes right under its own message, even when later ones were queued meanwhile."""
        user = self.user_message(reply.request_id)
        index = None
        if user is not None:
            if user.status:
                user.status = ""
                self._changed(user)
            if reply.token is not None:
                user.token = reply.token
                self._changed(user)
            index = self.messages.index(user) + 1
        role = Role.ERROR if reply.kind == "error" else Role.ASSISTANT
        return self._insert(Message(role, reply.message, reply.request_id, reply, token=reply.token), index)

    def add_notice(self, text: str, kind: NoticeKind = NoticeKind.INFO,
                   action: tuple[str, Callable[[], object]] | None = None) -> Message:
        kind = NoticeKind(kind)
        role = Role.ERROR if kind is NoticeKind.ERROR else Role.NOTICE
        return self._insert(Message(role, text, kind=kind, action=action))

    def add_about_photo(self, text: str, kind: NoticeKind = NoticeKind.ADVICE,
                        action: tuple[str, Callable[[], object]] | None = None) -> Message:
        """A notice about the photo as it was opened (its diagnosis): right under the "Opened …" message,
        above instructions sent meanwhile, so the conversation still reads in order."""
        opened = next((i for i in range(len(self.messages) - 1, -1, -1)
                       if self.messages[i].role is Role.NOTICE and self.messages[i].token == 0), None)
        index = None if opened is None else opened + 1
        role = Role.ERROR if kind is NoticeKind.ERROR else Role.NOTICE
        return self._insert(Message(role, text, kind=NoticeKind(kind), action=action), index)

    def add_opened(self, text: str) -> Message:
        """The first message of a document: clicking it shows the original."""
        return self._insert(Message(Role.NOTICE, text, token=0, tip="Click to show the original photo"))

    def forget_states(self) -> None:
        """Another photo was opened: no earlier message can be jumped to any more."""
        for message in self.messages:
            if message.token is not None or message.current:
                message.token, message.current = None, False
                self._changed(message)

    def set_current(self, token: int | None) -> None:
        """Highlight the reply whose state is the document's now."""
        for message in self.messages:
            on = message.role is Role.ASSISTANT and token is not None and message.token == token
            if on != message.current:
                message.current = on
                self._changed(message)

    def clear(self) -> None:
        self.messages.clear()
        self.cleared.emit()
