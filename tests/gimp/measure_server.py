"""Measure the engine server as the GIMP plug-in drives it: cold and warm job times, peak memory per size.

    python tests/gimp/measure_server.py --model studio-small --sizes 1024x768,1024x768
    python tests/gimp/measure_server.py --fake --sizes 6000x4000,8000x6000
    python tests/gimp/measure_server.py --fake --engine-root /tmp/old-checkout --sizes 6000x4000

Starts ``instructir serve`` (one thread: OMP_NUM_THREADS=1) in a subprocess, sends each size as an 8-bit
RGBA layer, as the plug-in does, and prints one JSON line per job: seconds from request to the last result
row, and the server's peak RSS during the job (``VmHWM``, reset before each job through
``/proc/PID/clear_refs``) next to its resident size before it. ``--fake`` uses the tests' FakeRestorer
(no network: what the server itself holds); ``--engine-root`` runs another checkout's server and client
(for before/after figures; a protocol-1 server gets the whole layer in one frame).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from fake_server import proc_status as _status  # noqa: E402
from fake_server import reset_peak as _reset_peak  # noqa: E402


def _band(y: int, n: int, w: int):
    """Rows of a noisy gradient, made band by band (the client never holds the whole layer either)."""
    import numpy as np

    rows = np.arange(y, y + n, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    rng = np.random.default_rng(y)
    base = (rows * 0.37 + cols * 0.11) % 255
    out = np.empty((n, w, 4), np.uint8)
    for c in range(3):
        out[..., c] = np.clip(base + rng.normal(0, 12, (n, w)), 0, 255)
    out[..., 3] = 255
    return out.tobytes()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="studio-small")
    ap.add_argument("--fake", action="store_true")
    ap.add_argument("--sizes", default="1024x768,1024x768")
    ap.add_argument("--engine-root", default=str(HERE.parent.parent))
    ap.add_argument("--instruction", default="remove the noise")
    args = ap.parse_args()
    root = Path(args.engine_root).resolve()
    sys.path.insert(0, str(root))
    from engine.serve import protocol

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(root))
    state = Path(tempfile.mkdtemp()) / "server.json"
    if args.fake:
        cmd = [sys.executable, str(HERE.parent / "fake_server.py"), str(state)]
    else:
        cmd = [sys.executable, "-m", "engine.cli", "serve", "--model", args.model, "--device", "cpu",
               "--no-preload", "--state-file", str(state)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stderr=subprocess.DEVNULL)
    try:
        client = None
        while client is None:
            if proc.poll() is not None:
                raise SystemExit("the server exited")
            time.sleep(0.2)
            client = protocol.connect(state)
        client.read_timeout = 3600
        print(json.dumps({"event": "up", "seconds": round(time.monotonic() - t0, 2),
                          "rss_mb": round(_status(proc.pid, "VmRSS") / 2**20)}), flush=True)
        for i, size in enumerate(args.sizes.split(",")):
            w, h = (int(v) for v in size.split("x"))
            before = _status(proc.pid, "VmRSS")
            _reset_peak(proc.pid)
            if protocol.PROTOCOL_VERSION >= 2:
                pixels = lambda y, n, w=w: _band(y, n, w)  # noqa: E731
            else:
                pixels = b"".join(_band(y, min(256, h - y), w) for y in range(0, h, 256))
            t = time.monotonic()
            kwargs = {"on_rows": lambda y, n, data: None} if protocol.PROTOCOL_VERSION >= 2 else {}
            reply, _ = client.restore(pixels, w, h, 4, "u8", args.instruction, **kwargs)
            seconds = time.monotonic() - t
            del pixels
            time.sleep(2.0)  # the server's connection thread lets go of the job after the last row
            print(json.dumps({"event": "job", "n": i, "size": size, "mp": round(w * h / 1e6, 1),
                              "seconds": round(seconds, 2), "server_seconds": reply.get("seconds"),
                              "rss_before_mb": round(before / 2**20),
                              "peak_mb": round(_status(proc.pid, "VmHWM") / 2**20),
                              "after_mb": round(_status(proc.pid, "VmRSS") / 2**20),
                              "protocol": protocol.PROTOCOL_VERSION, "fake": args.fake}), flush=True)
        t = time.monotonic()
        client.shutdown()
        proc.wait(30)
        print(json.dumps({"event": "stopped", "seconds": round(time.monotonic() - t, 3)}), flush=True)
    finally:
        if proc.poll() is None:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
