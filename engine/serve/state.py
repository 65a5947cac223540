"""The engine server's state: its state file and lock, how long it has had no client, and the job queue.

* The state file (port, token, pid) is written with the one atomic writer,
  user-only (0600) in a user-only (0700) folder; a lock beside it, held for
  the server's life, keeps a second server off the same file.
* :class:`Lifetime` counts authenticated connections and jobs: the server
  exits ``idle_exit`` seconds after the last one ends. Connections that never
  authenticate do not count, so nobody without the token keeps it alive.
* :class:`JobQueue` runs one job at a time on the model, first come first
  served, and tells each waiting job how many are ahead of it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import StudioError
from engine.io import atomic
from engine.jobs import CancelToken, check
from engine.serve import protocol


class AlreadyRunningError(StudioError):
    """Another server holds the state file."""

    code = "already-running"


def write_state(path: str | os.PathLike, state: dict) -> Path:
    """Atomically write the state file, user-only (0600) in a user-only (0700) folder."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.chmod(path.parent, 0o700)
    except OSError:
        pass
    with atomic.atomic_path(path, mode=0o600) as tmp:
        tmp.write_text(json.dumps(state), encoding="utf-8")
    os.chmod(path, 0o600)  # the writer keeps a replaced file's mode: a stray wider one never survives
    return path


class StateLock:
    """The lock beside the state file, held while the server runs (POSIX advisory lock)."""

    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self._fh = None

    def acquire(self) -> None:
        self.state_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.chmod(self.state_file.parent, 0o700)
        except OSError:
            pass
        fh = os.fdopen(os.open(protocol.lock_path(self.state_file), os.O_RDWR | os.O_CREAT, 0o600), "r+")
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows: no advisory lock; the state file's ping decides
            pass
        except OSError:
            fh.close()
            state = protocol.read_state(self.state_file) or {}
            raise AlreadyRunningError(f"an engine server already runs for {self.state_file} "
                                      f"(pid {state.get('pid', '?')}, port {state.get('port', '?')})") from None
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class Lifetime:
    """How long the server has been without clients (authenticated connections or jobs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients = 0
        self._since = time.monotonic()

    @contextmanager
    def client(self) -> Iterator[None]:
        with self._lock:
            self._clients += 1
        try:
            yield
        finally:
            with self._lock:
                self._clients -= 1
                self._since = time.monotonic()

    @property
    def clients(self) -> int:
        return self._clients

    def idle_seconds(self) -> float:
        """Seconds since the last client left; 0 while one is connected."""
        with self._lock:
            return 0.0 if self._clients else time.monotonic() - self._since


class JobQueue:
    """One job at a time, in arrival order; waiting jobs learn their place in the queue."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[object] = []
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextmanager
    def turn(self, cancel: CancelToken | None = None,
             on_wait: Callable[[int], None] | None = None) -> Iterator[None]:
        """Hold the model for one job. ``on_wait(ahead)`` is told the number of jobs ahead whenever it changes."""
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            told = None
            try:
                while self._running or self._waiting[0] is not ticket:
                    ahead = self._waiting.index(ticket) + (1 if self._running else 0)
                    if ahead != told and on_wait is not None:
                        on_wait(ahead)
                        told = ahead
                    self._cond.wait(0.2)
                    check(cancel)
            except BaseException:
                self._waiting.remove(ticket)
                self._cond.notify_all()
                raise
            self._waiting.remove(ticket)
            self._running = True
        try:
            yield
        finally:
            with self._cond:
                self._running = False
                self._cond.notify_all()
