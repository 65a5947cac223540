"""The one base class for errors a user should read.

Every front end (CLI, desktop app, engine server, GIMP plug-in) catches
``StudioError`` once and shows ``str(exc)`` as it is: the message says what
happened and what to do. ``code`` is a short, stable name for the kind of
problem, so a client on the other side of a socket can tell kinds apart
without matching class names. Anything else that escapes is a bug.
"""

from __future__ import annotations

from typing import ClassVar


class StudioError(Exception):
    """An error whose message is written for the user."""

    code: ClassVar[str] = "error"

    def to_dict(self) -> dict[str, str]:
        """What crosses a process boundary: the code and the message."""
        return {"code": self.code, "message": str(self)}


class WriteError(StudioError, OSError):
    """A file could not be written (full disk, read-only folder); nothing was left half-written."""

    code = "write"
