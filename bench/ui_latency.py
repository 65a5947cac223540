"""How responsive the desktop app is while it restores, and how much slower than the engine.

    python bench/ui_latency.py                        # 768x512 and 3000x2000, bundled model, 1 torch thread
    python bench/ui_latency.py --json                 # one JSON object (the keys below), nothing else on stdout
    python bench/ui_latency.py --diagnose             # also: where the UI thread was when it stalled

One process, one run, offscreen Qt (``--platform xcb`` under Xvfb for a real window). The same
``Restorer`` serves the engine and the app, with the same torch thread count. For a small and a large
photo (a Kodak24 photo enlarged, or a generated one when the data set is absent, with noise added) it

1. times ``EditSession.apply`` directly (the engine),
2. opens the photo in the real ``MainWindow`` and types the instruction through the app's own classes
   (controller, job queue, document, chat, history, view, autosave), timing request to reply,
3. starts the instruction again on the large photo and presses Cancel once a tenth is done,

while a 10 ms QTimer probes the UI thread. Printed: the worst and 99th-percentile interval between
two probe ticks (``worst_gap_ms``, ``p99_gap_ms``; 10 ms is a perfectly free event loop), app time /
engine time on the large photo (``app_engine_ratio``), seconds from the request to its first progress
report (``first_progress_s``, the worse of the two photos) and from Cancel to the "cancelled" reply
(``cancel_s``). Targets (issue 17): ratio <= 1.15, worst gap <= 50 ms, first progress <= 2 s,
cancel <= 1 s. On Linux each gap also says how long the UI thread was runnable but waiting for a
CPU the kernel gave to other threads or processes (``worst_gap_cpu_wait_ms``, from its schedstat):
on a loaded machine that, not the app, can be most of a long gap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KODAK = ROOT.parent / "shared" / "datasets" / "eval" / "kodak24" / "kodim05.png"
PROBE_MS = 10
TARGETS = {"app_engine_ratio": 1.15, "worst_gap_ms": 50.0, "first_progress_s": 2.0, "cancel_s": 1.0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model name or folder (default: the bundled model)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both the engine and the app")
    p.add_argument("--small", default="768x512")
    p.add_argument("--large", default="3000x2000")
    p.add_argument("--photo", default=str(KODAK), help="photo to enlarge (a generated one when absent)")
    p.add_argument("--instruction", default="remove the noise")
    p.add_argument("--platform", default="offscreen", help="Qt platform (offscreen; xcb under Xvfb)")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    p.add_argument("--diagnose", action="store_true", help="print where the UI thread was during stalls")
    return p.parse_args(argv)


def size_of(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def make_photo(source: Path, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``source`` resized to ``size`` (W, H), or a generated scene, plus Gaussian noise (sigma 25/255)."""
    from PIL import Image

    w, h = size
    if source.is_file():
        img = Image.open(source).convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
        rgb = np.asarray(img, dtype=np.float32) / 255.0
    else:
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        rgb = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 37) * np.cos(y / 23)], axis=-1)
    rng = np.random.default_rng(seed)
    return np.clip(rgb + rng.normal(0, 25 / 255, rgb.shape), 0, 1).astype(np.float32)


class Probe:
    """A 10 ms timer on the UI thread; a watchdog thread samples the UI thread's stack while it is late."""

    def __init__(self, diagnose: bool) -> None:
        from PySide6.QtCore import QTimer

        self.gaps: list[float] = []
        self.waits: list[float] = []  # ms the UI thread waited for a CPU within each gap (Linux)
        self.last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(PROBE_MS)
        self.timer.timeout.connect(self._tick)
        self.main = threading.get_ident()
        self.native = threading.get_native_id()
        self._wait = _run_delay(self.native)
        self.stalls: dict = {}
        self.diagnose = diagnose
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watchdog, daemon=True) if diagnose else None

    def start(self) -> None:
        self.last = time.perf_counter()
        self._wait = _run_delay(self.native)
        self.timer.start()
        if self._watch is not None:
            self._watch.start()

    def stop(self) -> None:
        self.timer.stop()
        self._stop.set()

    def _tick(self) -> None:
        now = time.perf_counter()
        wait = _run_delay(self.native)
        self.gaps.append(1000 * (now - self.last))
        self.waits.append(1000 * (wait - self._wait))
        self.last, self._wait = now, wait

    def _watchdog(self) -> None:
        """While the UI thread is late, sample its stack and the workers' (one report per stall)."""
        stall, cpu0 = None, 0.0
        while not self._stop.wait(0.005):
            late = time.perf_counter() - self.last
            if late > 0.040:
                frames = sys._current_frames()
                if stall is None:
                    stall, cpu0 = Counter(), _thread_cpu(self.native)
                frame = frames.get(self.main)
                ui = "".join(traceback.format_stack(frame, limit=8)[-4:]) if frame else "?"
                others = ["".join(traceback.format_stack(f, limit=2)[-1:]) for ident, f in frames.items()
                          if ident not in (self.main, threading.get_ident())]
                stall["UI:\n" + ui + "workers:\n" + "".join(others)] += 1
            elif stall is not None:
                cpu = 1000 * (_thread_cpu(self.native) - cpu0)
                self.stalls[(round(1000 * late + 5 * sum(stall.values())), round(cpu))] = stall
                stall = None

    def summary(self) -> tuple[float, float, float]:
        """Worst gap, 99th percentile, and how much of the worst gap the UI thread waited for a CPU."""
        if not self.gaps:
            return 0.0, 0.0, 0.0
        gaps = np.asarray(self.gaps)
        worst = int(gaps.argmax())
        return float(gaps[worst]), float(np.percentile(gaps, 99)), float(self.waits[worst])


def on_engine_thread(fn):
    """``fn()`` on the app's one engine thread, waited for; its result (or its exception, raised here)."""
    from desktop.workers import engine_pool

    out: dict = {}

    def job() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the caller
            out["error"] = exc

    engine_pool().start(job)
    engine_pool().waitForDone()
    if "error" in out:
        raise out["error"]
    return out["value"]


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["QT_QPA_PLATFORM"] = args.platform
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))

    from PySide6.QtCore import QElapsedTimer  # noqa: F401 - Qt before the app's modules

    from desktop.app import _application
    from desktop.main_window import MainWindow
    from desktop.model_provider import ModelProvider
    from desktop.settings import Settings
    from engine.edit.session import EditSession
    from engine.io.images import picture_from_array, save_image
    from engine.model.pipeline import Restorer
    from engine.model.registry import DEFAULT_MODEL

    app = _application()
    restorer = on_engine_thread(lambda: Restorer.from_pretrained(args.model or DEFAULT_MODEL, device="cpu"))
    sizes = {"small": size_of(args.small), "large": size_of(args.large)}
    photos = {name: make_photo(Path(args.photo), size) for name, size in sizes.items()}
    say(f"model {restorer.name}, {torch.get_num_threads()} torch thread(s), photos "
        + ", ".join(f"{n} {w}x{h}" for n, (w, h) in sizes.items()))

    # 1. The engine alone (a warm-up run first: the text encoder, the allocator).
    #    On the app's engine thread, where the app runs it too (see desktop.workers.engine_pool).
    on_engine_thread(lambda: EditSession(photos["small"][:256, :256]).apply(args.instruction, restorer))
    engine_s = {}
    for name, rgb in photos.items():
        start = time.perf_counter()
        on_engine_thread(lambda rgb=rgb: EditSession(rgb).apply(args.instruction, restorer))
        engine_s[name] = time.perf_counter() - start
        say(f"engine  {name:5s}: {engine_s[name]:.2f} s")

    # 2./3. The app, with the probe running the whole time.
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="ui-latency-") as tmp:
        files = {}
        for name, rgb in photos.items():
            files[name] = Path(tmp) / f"{name}.png"
            save_image(picture_from_array((rgb * 255).round().astype(np.uint8)), files[name])
        settings = Settings.at(Path(tmp) / "settings")
        window = MainWindow(settings, ModelProvider.fixed(restorer), prompts=_Prompts(), autosave=True)
        window.resize(1360, 860)
        window.show()
        ctl = window.controller
        probe = Probe(args.diagnose)
        probe.start()
        app_s, first_progress = {}, {}
        try:
            for name in ("small", "large"):
                _wait(app, lambda: not ctl.busy, 60)
                window.open_path(files[name])
                _wait(app, lambda n=name: window.document.is_open and window.document.path == files[n]
                      and not ctl.busy, 120)
                app_s[name], first_progress[name] = _run_instruction(app, window, args.instruction)
                say(f"app     {name:5s}: {app_s[name]:.2f} s (first progress after "
                    f"{first_progress[name]:.2f} s)")
                _pump(app, 3.0)  # what follows a reply (autosave, thumbnails) is part of the app too
            cancel_s = _cancel_latency(app, window, args.instruction)
            say(f"cancel       : {cancel_s:.2f} s after pressing Cancel")
        finally:
            probe.stop()
            window.shutdown()
            window.close()
        worst, p99, cpu_wait = probe.summary()
        result = {
            "worst_gap_ms": round(worst, 1),
            "p99_gap_ms": round(p99, 1),
            "worst_gap_cpu_wait_ms": round(cpu_wait, 1),
            "app_engine_ratio": round(app_s["large"] / engine_s["large"], 3),
            "first_progress_s": round(max(first_progress.values()), 3),
            "cancel_s": round(cancel_s, 3),
            "engine_s": {k: round(v, 3) for k, v in engine_s.items()},
            "app_s": {k: round(v, 3) for k, v in app_s.items()},
            "threads": torch.get_num_threads(),
            "sizes": {k: f"{w}x{h}" for k, (w, h) in sizes.items()},
        }
        if args.diagnose:
            long = sorted(range(len(probe.gaps)), key=lambda i: -probe.gaps[i])[:8]
            say("longest gaps (ms) and the UI thread's wait for a CPU within each: " + ", ".join(
                f"{probe.gaps[i]:.0f} ({probe.waits[i]:.0f})" for i in long))
            for (ms, cpu), where in sorted(probe.stalls.items(), reverse=True)[:8]:
                say(f"--- a stall of about {ms} ms; the UI thread used {cpu} ms of CPU meanwhile ---")
                for stack, n in where.most_common(2):
                    say(f"[{n} samples]\n{stack}")
    del app
    met = {k: result[k] <= v for k, v in TARGETS.items()}
    result["targets_met"] = all(met.values())
    if args.json:
        print(json.dumps(result))
    else:
        print(f"event loop : worst gap {result['worst_gap_ms']:.0f} ms, p99 {result['p99_gap_ms']:.0f} ms "
              f"(probe every {PROBE_MS} ms; target worst <= {TARGETS['worst_gap_ms']:.0f}); in the worst gap the "
              f"UI thread waited {result['worst_gap_cpu_wait_ms']:.0f} ms for a CPU")
        print(f"app/engine : {result['app_engine_ratio']:.2f} on the large photo (target <= "
              f"{TARGETS['app_engine_ratio']})")
        print(f"progress   : first after {result['first_progress_s']:.2f} s (target <= "
              f"{TARGETS['first_progress_s']:.0f})")
        print(f"cancel     : {result['cancel_s']:.2f} s (target <= {TARGETS['cancel_s']:.0f})")
        print("targets    : " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in met.items()))
    return 0


class _Prompts:
    """No dialogs: never asked in this benchmark except 'discard?' when a photo replaces another."""

    def unsaved_changes(self, name):
        return "discard"

    def confirm_discard(self, name):  # older window API
        return True

    def __getattr__(self, name):
        return lambda *a, **k: None


def _thread_cpu(native_id: int) -> float:
    """CPU seconds a thread of this process has used (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _run_delay(native_id: int) -> float:
    """Seconds a thread of this process has been runnable but waiting for a CPU (Linux schedstat; 0 elsewhere)."""
    try:
        return int(Path(f"/proc/self/task/{native_id}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _pump(app, seconds: float) -> None:
    _wait(app, lambda deadline=time.perf_counter() + seconds: time.perf_counter() >= deadline, seconds + 60)


def _wait(app, condition, timeout: float) -> None:
    """Run the event loop, as the app does, until ``condition()`` holds."""
    from PySide6.QtCore import QEventLoop, QTimer

    deadline = time.perf_counter() + timeout
    loop, check = QEventLoop(), QTimer()
    check.setInterval(20)
    check.timeout.connect(lambda: (condition() or time.perf_counter() > deadline) and loop.quit())
    check.start()
    if not condition():
        loop.exec()
    check.stop()
    if not condition():
        raise TimeoutError("the app did not get there in time")


def _run_instruction(app, window, instruction: str) -> tuple[float, float]:
    """Seconds from sending to the reply, and to the first progress report above zero."""
    ctl = window.controller
    replies, first = [], []
    start = time.perf_counter()

    def on_progress(done, total):
        if done > 0 and not first:
            first.append(time.perf_counter() - start)

    ctl.progress.connect(on_progress)
    ctl.replied.connect(replies.append)
    try:
        window.chat.send(instruction)
        _wait(app, lambda: replies, 600)
        seconds = time.perf_counter() - start
    finally:
        ctl.progress.disconnect(on_progress)
        ctl.replied.disconnect(replies.append)
    if replies[0].kind != "applied":
        raise RuntimeError(f"the instruction was not applied: {replies[0].message}")
    return seconds, first[0] if first else seconds


def _cancel_latency(app, window, instruction: str) -> float:
    """Start the instruction again, press Cancel a tenth of the way in; seconds until the reply."""
    ctl = window.controller
    replies, fraction = [], [0.0]
    ctl.replied.connect(replies.append)
    ctl.progress.connect(lambda done, total: fraction.__setitem__(0, done / max(total, 1)))
    window.chat.send(instruction)
    _wait(app, lambda: fraction[0] >= 0.1 or replies, 600)
    start = time.perf_counter()
    window.chat.cancel_button.click()
    _wait(app, lambda: replies, 600)
    seconds = time.perf_counter() - start
    ctl.replied.disconnect(replies.append)
    if replies[0].kind != "cancelled":
        raise RuntimeError(f"expected a cancelled reply, got {replies[0].kind}")
    return seconds


if __name__ == "__main__":
    sys.exit(main())
