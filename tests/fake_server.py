"""Engine servers for the tests, with the tests' FakeRestorer.

In this process: :func:`make_server` (the fake model on the CPU, nothing preloaded), :func:`client_of` for one,
and :func:`an_older_server` for a plug-in meeting a server of the last protocol version. In a process of its
own: ``python tests/fake_server.py STATE_FILE``; the memory test and ``tests/gimp/measure_server.py --fake``
run that, to measure what the server itself holds (the fake allocates its output as the network does, and
costs no time).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def proc_status(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` size field (``VmRSS``, ``VmHWM``) in bytes; 0 where absent."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak(pid: int) -> None:
    """Reset the kernel's peak-RSS counter of ``pid`` (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")


class Factory:
    """A ``restorer_factory`` of FakeRestorers that records what it made and whether a restore saw its cancel."""

    def __init__(self, delay: float = 0.0):
        from conftest import FakeRestorer

        self.made = []
        self.delay = delay
        self.cls = FakeRestorer

    def __call__(self, model, device):
        r = self.cls(delay=self.delay)
        r.cancelled = threading.Event()
        original = r.restore

        def restore(image, instruction, progress=None, cancel=None, sink=None):
            try:
                return original(image, instruction, progress=progress, cancel=cancel, sink=sink)
            except Exception:
                if cancel is not None and cancel.cancelled:
                    r.cancelled.set()
                raise

        r.restore = restore
        self.made.append((model, device, r))
        return r


def make_server(tmp_path: Path, **settings):
    """An EngineServer (not started) for the fake model on the CPU, its state file under ``tmp_path/run``.

    ``settings`` are EngineServer's; the restorers come from a :class:`Factory` unless they say otherwise.
    """
    from engine.serve.server import EngineServer

    settings = {"model": "fake", "device": "cpu", "state_file": Path(tmp_path) / "run" / "server.json",
                "preload": False, **settings}
    settings.setdefault("restorer_factory", Factory())
    return EngineServer(**settings)


def client_of(srv):
    """A protocol client of a started server, from the state file it published."""
    from engine.serve import protocol

    return protocol.Client(protocol.read_state(srv.state_file))


@contextmanager
def an_older_server(path: Path, monkeypatch, make: Callable) -> Iterator[tuple]:
    """A running server on state file ``path`` and a plug-in one protocol version newer, as after an upgrade.

    ``make(state_file)`` builds a server; ``protocol.spawn_server`` is patched to start one so in this
    process. Yields ``(old, runner, started)``: the old server, the thread serving it, and the servers spawned
    since; all are closed on the way out.
    """
    from engine.serve import protocol

    old = make(path).start()
    runner = threading.Thread(target=old.serve_forever)
    runner.start()
    started = []

    class Spawned:  # what spawn_server returns: a process that has not exited
        def poll(self):
            return None

    def spawn(python, state_file, **kwargs):
        started.append(make(state_file).start())
        return Spawned()

    monkeypatch.setattr(protocol, "spawn_server", spawn)
    monkeypatch.setattr(protocol, "PROTOCOL_VERSION", protocol.PROTOCOL_VERSION + 1)
    try:
        yield old, runner, started
    finally:
        for srv in started:
            srv.close()
        old.close()


def main(state_file: str) -> None:
    from conftest import FakeRestorer

    from engine.serve.server import EngineServer

    server = EngineServer(state_file=state_file, restorer_factory=lambda model, device: FakeRestorer(),
                          preload=False)
    server.start()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
