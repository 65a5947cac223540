"""An engine server whose restorer is the tests' FakeRestorer: ``python tests/fake_server.py STATE_FILE``.

The memory test and ``tests/gimp/measure_server.py --fake`` run it in a process of its own, to measure what
the server itself holds (the fake allocates its output as the network does, and costs no time).
"""

from __future__ import annotations

import sys
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


def main(state_file: str) -> None:
    from conftest import FakeRestorer

    from engine.serve.server import EngineServer

    server = EngineServer(state_file=state_file, restorer_factory=lambda model, device: FakeRestorer(),
                          preload=False)
    server.start()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
