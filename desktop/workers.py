"""Background work: every engine call runs on a QThreadPool thread, never on the UI thread.

A :class:`Job` wraps one function ``work(progress, cancel) -> result`` and
reports back through signals (progress, finished, failed, cancelled) that Qt
delivers on the UI thread. :class:`JobQueue` runs :class:`Request` s one at a
time in the order they were asked for, so an instruction typed while another
is running waits its turn instead of being lost; a request whose ``prepare``
raises :class:`NotReady` (the model is still loading) keeps its place until
:meth:`JobQueue.poke`.
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

from PySide6.QtCore import QEventLoop, QObject, QRunnable, QThreadPool, QTimer, Signal, Slot

from engine.errors import StudioError
from engine.jobs import Cancelled, CancelToken

log = logging.getLogger(__name__)

Work = Callable[[Callable[[int, int], None], CancelToken], object]

OUT_OF_MEMORY = ("Out of memory. Try a smaller tile size in Settings (e.g. 512), close other programs, "
                 "or work on a smaller copy of the photo. The photo was not changed.")


class NotReady(Exception):
    """The request cannot start yet (e.g. the model is loading); it keeps its place in the queue."""


class UserFacingError(StudioError):
    """An error of the app itself whose message is written for the photographer (shown as is)."""

    code = "app"


def describe_error(exc: BaseException) -> str:
    """A message a photographer can act on, for any exception a job may raise."""
    text = str(exc)
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or any(
            s in text.lower() for s in ("out of memory", "can't allocate memory", "cannot allocate memory")):
        return OUT_OF_MEMORY
    if isinstance(exc, StudioError):
        return text
    if isinstance(exc, FileNotFoundError):
        return f"File not found: {exc.filename or text}"
    if isinstance(exc, PermissionError):
        return f"No permission to use {exc.filename or 'the file'}."
    if isinstance(exc, OSError):
        return f"Could not read or write {exc.filename or 'a file'}: {exc.strerror or text}"
    log.error("unexpected error in a job", exc_info=exc)
    return f"Something went wrong ({type(exc).__name__}: {text}). Nothing was changed."


class Niceness(enum.IntEnum):
    """How far below the UI thread a pool thread runs (steps of Linux nice above the main thread's).

    The UI thread must get a CPU as soon as it wakes: at the same priority, a worker busy on the CPU
    makes it wait its turn (tens of ms on a loaded machine), however little the UI has to do.
    """

    SAME = 0  # model loading, downloads: nothing else runs meanwhile
    WORK = 2  # what the user waits for (restoring, opening, exporting): yields to the UI, not to the rest
    BACKGROUND = 7  # what nobody waits for (autosave, diagnosis, background previews): yields to both


def set_niceness(level: Niceness) -> None:
    """Run the calling thread ``level`` steps below the main (UI) thread (Linux; elsewhere nothing).

    A thread's nice can only go up without privileges, so a pool's threads keep the lowest priority a
    job of theirs asked for: each level has pools of its own (:func:`background_pool`, the queue's).
    """
    if level and sys.platform.startswith("linux"):
        try:
            base = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main thread's nice
            tid = threading.get_native_id()
            if os.getpriority(os.PRIO_PROCESS, tid) < min(19, base + level):
                os.setpriority(os.PRIO_PROCESS, tid, min(19, base + level))  # a thread id: this thread only
        except (OSError, AttributeError):
            pass


_engine: QThreadPool | None = None


def engine_pool() -> QThreadPool:
    """The one thread every engine call runs on: loading the model and each queued job.

    OpenMP keeps a team of threads for each thread that calls it. With a second team alive (a model
    loaded on one pool thread, restores run on another) libgomp counts more threads than CPUs and makes
    its workers sleep between parallel regions instead of spinning: on 2 cores with 2 torch threads a
    restore took 1.5x as long on a second thread as on the first (measured). One thread that never
    expires keeps one team.
    """
    global _engine
    if _engine is None:
        _engine = QThreadPool()
        _engine.setMaxThreadCount(1)
        _engine.setExpiryTimeout(-1)
    return _engine


_background: QThreadPool | None = None


def background_pool() -> QThreadPool:
    """The pool of work nobody waits for (autosave, previews rendered in the background), at
    :attr:`Niceness.BACKGROUND`; windows wait for it when they close."""
    global _background
    if _background is None:
        _background = QThreadPool()
        _background.setMaxThreadCount(2)
    return _background


class JobSignals(QObject):
    """Signals of one job; the job id lets receivers ignore a job they no longer wait for."""

    progress = Signal(int, int, int)  # job id, done, total
    finished = Signal(int, object)
    failed = Signal(int, str)
    cancelled = Signal(int)


_ids = itertools.count(1)


class Job(QRunnable):
    """Runs ``work(progress, cancel)`` on a pool thread and reports the outcome through :attr:`signals`."""

    def __init__(self, work: Work, token: CancelToken | None = None, niceness: Niceness = Niceness.SAME) -> None:
        super().__init__()
        self.niceness = niceness
        self.setAutoDelete(False)  # Python owns it (the queue keeps it until its signals arrive)
        self.id = next(_ids)
        self.work = work
        self.token = token or CancelToken()
        self.signals = JobSignals()
        self.done = threading.Event()
        self._last = (-1, -1)

    def _progress(self, done: int, total: int) -> None:
        # Coalesce to whole percents (on the 0..1000 scale the queue reports): a large photo's hundreds of
        # strips would otherwise wake the UI thread, and take the interpreter lock, for each one. The first
        # strip is still reported at once (1 permille), so the bar moves as soon as the work does.
        permille = 10 * int(100 * done / max(total, 1)) or (1 if done > 0 else 0)
        key = (permille, 1000)
        if key != self._last:
            self._last = key
            self.signals.progress.emit(self.id, *key)

    def run(self) -> None:  # pool thread
        set_niceness(self.niceness)
        try:
            result = self.work(self._progress, self.token)
        except Cancelled:
            self.signals.cancelled.emit(self.id)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a readable message, never a crash
            self.signals.failed.emit(self.id, describe_error(exc))
        else:
            self.signals.finished.emit(self.id, result)
        finally:
            self.done.set()


class Request:
    """One thing the user asked for, queued: ``prepare`` on the UI thread, ``work`` on a pool thread.

    ``prepare`` runs when the request's turn comes: it snapshots what the work
    needs (raising :class:`NotReady` to keep its place) and returns the work.
    Exactly one of ``finished``, ``failed`` and ``cancelled`` is then called on
    the UI thread.
    """

    label = "Working…"

    def __init__(self) -> None:
        self.token = CancelToken()
        self.job: Job | None = None

    def prepare(self) -> Work:
        raise NotImplementedError

    def started(self) -> None:
        """Its work was handed to a pool thread."""

    def finished(self, result: object) -> None:
        """The work returned ``result``."""

    def failed(self, message: str) -> None:
        """The work (or ``prepare``) raised; ``message`` is for the user."""

    def cancelled(self) -> None:
        """Cancelled while running or waiting."""


class JobQueue(QObject):
    """One task at a time, in order; the UI only ever waits on signals."""

    busyChanged = Signal(bool)
    progress = Signal(int, int)
    started = Signal(object)  # Request
    waiting = Signal(str)  # why the next task cannot start yet
    pendingChanged = Signal(int)

    def __init__(self, pool: QThreadPool | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = pool or engine_pool()
        self._pending: deque[Request] = deque()
        self._current: Request | None = None
        self._busy = False

    # --- state ----------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._pending)

    @property
    def current(self) -> Request | None:
        return self._current

    @property
    def pending(self) -> list[Request]:
        return list(self._pending)

    def _update_busy(self) -> None:
        if self.busy != self._busy:
            self._busy = self.busy
            self.busyChanged.emit(self._busy)

    # --- requests -------------------------------------------------------------

    @property
    def ahead(self) -> int:
        """How many requests a request submitted now would wait for."""
        return len(self._pending) + (1 if self._current else 0)

    def submit(self, request: Request) -> Request:
        """Queue ``request``; its ``prepare`` runs on the UI thread when its turn comes."""
        self._pending.append(request)
        self.pendingChanged.emit(len(self._pending))
        self._update_busy()
        self._start_next()
        return request

    def cancel_all(self, keep: Callable[[Request], bool] | None = None) -> list[Request]:
        """Cancel the running request and drop the waiting ones (but those ``keep`` says); returns the dropped."""
        dropped = [r for r in self._pending if keep is None or not keep(r)]
        self._pending = deque(r for r in self._pending if r not in dropped)
        if self._current is not None and (keep is None or not keep(self._current)):
            self._current.token.cancel()
        for request in dropped:
            request.token.cancel()
            request.cancelled()
        self.pendingChanged.emit(len(self._pending))
        self._update_busy()
        return dropped

    def poke(self) -> None:
        """Try again to start the next task (call when whatever it waited for is ready)."""
        self._start_next()

    def wait_idle(self, timeout_ms: int = 60_000) -> bool:
        """Run the event loop until the queue is idle (self-test and shutdown only; the UI never calls this)."""
        deadline = time.monotonic() + timeout_ms / 1000
        loop = QEventLoop()
        tick = QTimer()
        tick.timeout.connect(loop.quit)
        tick.start(50)
        self.busyChanged.connect(loop.quit)
        try:
            while self.busy and time.monotonic() < deadline:
                loop.exec()
        finally:
            tick.stop()
            self.busyChanged.disconnect(loop.quit)
        return not self.busy

    # --- running --------------------------------------------------------------

    def _start_next(self) -> None:
        while self._current is None and self._pending:
            request = self._pending[0]
            try:
                work = request.prepare()
            except NotReady as why:
                self.waiting.emit(str(why))
                return
            except Exception as exc:  # noqa: BLE001 - a request that cannot start fails readably
                self._pending.popleft()
                self.pendingChanged.emit(len(self._pending))
                request.failed(describe_error(exc))
                continue
            self._pending.popleft()
            self.pendingChanged.emit(len(self._pending))
            job = Job(work, request.token, Niceness.WORK)
            request.job = job
            job.signals.progress.connect(self._on_progress)
            job.signals.finished.connect(self._on_finished)
            job.signals.failed.connect(self._on_failed)
            job.signals.cancelled.connect(self._on_cancelled)
            self._current = request
            self.started.emit(request)
            request.started()
            self.progress.emit(0, 1000)
            self.pool.start(job)
        self._update_busy()

    def _take(self, job_id: int) -> Request | None:
        request = self._current
        if request is None or request.job is None or request.job.id != job_id:
            return None
        self._current = None
        return request

    def _after(self) -> None:
        self._start_next()
        self._update_busy()

    @Slot(int, int, int)
    def _on_progress(self, job_id: int, done: int, total: int) -> None:
        if self._current is not None and self._current.job is not None and self._current.job.id == job_id:
            self.progress.emit(done, total)

    @Slot(int, object)
    def _on_finished(self, job_id: int, result: object) -> None:
        if request := self._take(job_id):
            try:
                if request.token.cancelled:  # cancelled after its last check: nothing of it is kept
                    request.cancelled()
                else:
                    request.finished(result)
            finally:
                self._after()

    @Slot(int, str)
    def _on_failed(self, job_id: int, message: str) -> None:
        if request := self._take(job_id):
            try:
                request.failed(message)
            finally:
                self._after()

    @Slot(int)
    def _on_cancelled(self, job_id: int) -> None:
        if request := self._take(job_id):
            try:
                request.cancelled()
            finally:
                self._after()


def run_in_pool(work: Work, *, on_finished=None, on_failed=None, on_cancelled=None, on_progress=None,
                pool: QThreadPool | None = None, receiver: QObject, background: bool = False) -> Job:
    """Start a one-off job outside the queue (model loading, downloads, autosave).

    ``receiver`` is a QObject living on the UI thread that owns the callbacks'
    connection: the callbacks then run on the UI thread, and not after the
    receiver is gone. ``background``: work nobody waits for, on :func:`background_pool`
    (unless ``pool`` is given) at :attr:`Niceness.BACKGROUND`.
    """
    job = Job(work, niceness=Niceness.BACKGROUND if background else Niceness.SAME)
    if background and pool is None:
        pool = background_pool()
    relay = _Relay(job, on_finished, on_failed, on_cancelled, on_progress, receiver)
    job._relay = relay  # keep the relay alive as long as the job
    (pool or QThreadPool.globalInstance()).start(job)
    return job


class _Relay(QObject):
    """Receives one job's signals on the UI thread and calls plain Python callbacks."""

    def __init__(self, job: Job, on_finished, on_failed, on_cancelled, on_progress, parent: QObject) -> None:
        super().__init__(parent)
        self._callbacks = (on_finished, on_failed, on_cancelled, on_progress)
        job.signals.finished.connect(self._finished)
        job.signals.failed.connect(self._failed)
        job.signals.cancelled.connect(self._cancelled)
        job.signals.progress.connect(self._progress)

    @Slot(int, object)
    def _finished(self, _id: int, result: object) -> None:
        self.deleteLater()
        if self._callbacks[0]:
            self._callbacks[0](result)

    @Slot(int, str)
    def _failed(self, _id: int, message: str) -> None:
        self.deleteLater()
        if self._callbacks[1]:
            self._callbacks[1](message)

    @Slot(int)
    def _cancelled(self, _id: int) -> None:
        self.deleteLater()
        if self._callbacks[2]:
            self._callbacks[2]()

    @Slot(int, int, int)
    def _progress(self, _id: int, done: int, total: int) -> None:
        if self._callbacks[3]:
            self._callbacks[3](done, total)
