"""Progress reporting and cancellation shared by every long-running engine call."""

from __future__ import annotations

import threading
from collections.abc import Callable

#: ``progress(done, total)``; called from the worker thread.
ProgressCallback = Callable[[int, int], None]


class Cancelled(Exception):
    """The user cancelled the running job; nothing was written."""


class CancelToken:
    """A thread-safe cancel flag handed to engine calls (the UI sets it, workers poll it)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")


def check(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.raise_if_cancelled()


def report(progress: ProgressCallback | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
