"""``instructir serve``: a long-lived engine server on 127.0.0.1 for the GIMP plug-in.

The server keeps the model loaded between requests (the first request pays
the load, later ones do not), answers one client per thread, and shares the
model between them one job at a time. It listens on the loopback interface
only, requires the random token it writes to its state file (user-only, 0600,
in a 0700 folder), refuses frames over its size limit before reading them,
streams progress, and cancels a job whose client sends ``cancel`` or goes
away, without ever going down with it. The wire format is in
``engine/serve/protocol.py``. A ``mode: "spire"`` request runs the optional SPIRE
diffusion pipeline instead, loaded on the first such request and kept the same
way; where SPIRE cannot run, the error says why (``engine.spire.available()``).

Lifecycle: the plug-in reads the state file, pings the server, and when none
answers starts ``<python recorded at install time> -m engine.cli serve`` detached
and waits for the state file. A lock next to the state file keeps a second
server off the same file; the server removes the file when it stops (on a
``shutdown`` request, SIGTERM/SIGINT, or after ``--idle-exit`` seconds unused).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import logging
import os
import queue
import secrets
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from engine.serve import protocol
from engine.serve.protocol import HOST, ConnectionClosed, ProtocolError, RequestTooLarge

log = logging.getLogger("instructir.server")

APP_NAME = "instructir-studio"
HEADER_TIMEOUT = 30.0
PAYLOAD_TIMEOUT = 120.0
HEARTBEAT_SECONDS = 1.0
PROGRESS_INTERVAL = 0.1
MAX_CLIENTS = 16


def default_state_file() -> Path:
    """Where the server publishes port + token: ``$INSTRUCTIR_SERVER_STATE`` or the user's state folder."""
    env = os.environ.get(protocol.STATE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_state_dir(APP_NAME, appauthor=False)) / "server.json"


class NothingToDo(Exception):
    """No part of the instruction asks for a restoration."""


class AlreadyRunning(Exception):
    """Another server holds the state file."""


class SpireUnavailable(Exception):
    """SPIRE mode was asked for but cannot run here; the message says why (``engine.spire.available()``)."""


class EngineServer:
    """The server. ``restorer_factory(model, device)`` builds a Restorer, ``spire_factory(device)`` the optional
    SPIRE pipeline, loaded on the first SPIRE request and kept (tests pass fakes)."""

    def __init__(self, *, model: str = "default", device: str = "auto", fast: bool = False, tile: int = 0,
                 port: int = 0, state_file: str | os.PathLike | None = None,
                 max_request_bytes: int = protocol.DEFAULT_MAX_PAYLOAD, idle_exit: float = 0.0,
                 token: str | None = None, restorer_factory=None, preload: bool = True, spire_factory=None) -> None:
        self.model, self.device, self.fast, self.tile = model, device, fast, tile
        self.port = port
        self.state_file = Path(state_file) if state_file else default_state_file()
        self.max_request_bytes = int(max_request_bytes)
        self.idle_exit = float(idle_exit)
        self.token = token or secrets.token_hex(32)
        self.preload = preload
        self._factory = restorer_factory or self._load_restorer
        self._restorers: dict[tuple[str, str], object] = {}
        self._spire_factory = spire_factory or self._load_spire
        self._spire: tuple[str, object] | None = None  # (device, SpirePipeline)
        self._spire_lock = threading.Lock()
        self.spire_loads = 0
        self._load_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._clients = threading.BoundedSemaphore(MAX_CLIENTS)
        self._stop = threading.Event()
        self._active = 0
        self._active_lock = threading.Lock()
        self._last_activity = time.monotonic()
        self._sock: socket.socket | None = None
        self._lock_fh = None
        self._thread: threading.Thread | None = None
        self.jobs_done = 0
        self.loads = 0

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> EngineServer:
        """Take the state-file lock, bind 127.0.0.1, publish the state file, accept in the background."""
        self._take_lock()
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, self.port))
            sock.listen(32)
            sock.settimeout(0.5)
        except BaseException:
            self._release_lock()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        protocol.write_state(self.state_file, {
            "port": self.port, "token": self.token, "pid": os.getpid(), "version": protocol.PROTOCOL_VERSION,
            "model": self.model, "device": self.device, "started": time.time()})
        log.info("engine server on %s:%d (state %s)", HOST, self.port, self.state_file)
        self._thread = threading.Thread(target=self._accept_loop, name="instructir-accept", daemon=True)
        self._thread.start()
        if self.preload:
            threading.Thread(target=self._preload, name="instructir-preload", daemon=True).start()
        return self

    def _take_lock(self) -> None:
        self.state_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.chmod(self.state_file.parent, 0o700)
        except OSError:
            pass
        lock_path = self.state_file.with_name(self.state_file.name + ".lock")
        fh = os.fdopen(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600), "r+")  # held for the server's lifetime
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows: no advisory lock; the state file's ping decides
            pass
        except OSError:
            fh.close()
            state = protocol.read_state(self.state_file) or {}
            raise AlreadyRunning(f"an engine server already runs for {self.state_file} "
                                 f"(pid {state.get('pid', '?')}, port {state.get('port', '?')})") from None
        self._lock_fh = fh

    def _release_lock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def _preload(self) -> None:
        try:
            self.restorer(self.model, self.device)
        except Exception as exc:  # noqa: BLE001 - reported again, readably, on the first request
            log.warning("could not load model %s: %s", self.model, exc)

    def serve_forever(self) -> None:
        """Block until shutdown (request, signal or idle timeout), then clean up."""
        try:
            while not self._stop.wait(0.5):
                if self.idle_exit and self._active == 0 and time.monotonic() - self._last_activity > self.idle_exit:
                    log.info("idle for %.0f s: stopping", self.idle_exit)
                    self._stop.set()
        finally:
            self.close()

    def shutdown(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept loop at once on Linux
            except OSError:
                pass
            self._sock.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        state = protocol.read_state(self.state_file)
        if state is not None and state.get("token") == self.token:
            self.state_file.unlink(missing_ok=True)
        self._release_lock()

    def __enter__(self) -> EngineServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- models -------------------------------------------------------------

    def _load_restorer(self, model: str, device: str):
        from engine.model.pipeline import Restorer

        return Restorer.from_pretrained(model, device=device, fast=self.fast, tile=self.tile or None)

    def restorer(self, model: str | None = None, device: str | None = None, on_loading=None):
        """The loaded restorer for (model, device), loading it once; the last two stay cached."""
        key = (model or self.model, device or self.device)
        if key not in self._restorers and on_loading is not None:
            on_loading()  # this request pays the load (or waits for the preload)
        with self._load_lock:
            if key not in self._restorers:
                t = time.perf_counter()
                restorer = self._factory(*key)
                restorer.understand("remove the noise")  # loads the text encoder too: the first job is warm
                self.loads += 1
                log.info("loaded %s on %s in %.1f s", key[0], key[1], time.perf_counter() - t)
                while len(self._restorers) >= 2:
                    self._restorers.pop(next(iter(self._restorers)))
                self._restorers[key] = restorer
            return self._restorers[key]

    @staticmethod
    def _load_spire(device: str):
        from engine.spire.pipeline import SpirePipeline

        return SpirePipeline.from_pretrained(device=device)

    def spire(self, device: str | None = None, on_loading=None):
        """The SPIRE pipeline, loaded on first use and kept; ``SpireUnavailable`` (with the reason) when it can't run.

        ``engine.spire.available()`` is asked before each load, never after: it is cheap, but a loaded
        pipeline needs no second opinion.
        """
        device = device or self.device
        if self._spire is not None and self._spire[0] == device:
            return self._spire[1]
        from engine import spire

        ok, reason = spire.available()
        if not ok:
            raise SpireUnavailable(f"SPIRE mode is not available: {reason}")
        if on_loading is not None:
            on_loading()
        with self._spire_lock:
            if self._spire is None or self._spire[0] != device:
                self._spire = None  # one pipeline at a time: a diffusion model is large
                t = time.perf_counter()
                try:
                    pipeline = self._spire_factory(device)
                except (ImportError, OSError, RuntimeError) as exc:
                    raise SpireUnavailable(f"SPIRE could not be loaded: {exc}") from exc
                self.spire_loads += 1
                log.info("loaded SPIRE on %s in %.1f s", device, time.perf_counter() - t)
                self._spire = (device, pipeline)
            return self._spire[1]

    # --- connections --------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if not self._clients.acquire(blocking=False):
                threading.Thread(target=self._refuse_busy, args=(conn,), daemon=True).start()
                continue
            threading.Thread(target=self._serve_client, args=(conn,), name=f"instructir-client-{addr[1]}",
                             daemon=True).start()

    def _refuse_busy(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            _try_send(conn, _error("busy", "the engine server is busy with too many clients; try again"))

    def _serve_client(self, conn: socket.socket) -> None:
        with self._active_lock:
            self._active += 1
        try:
            with conn:
                conn.settimeout(HEADER_TIMEOUT)
                self._handle(conn)
        except (ConnectionClosed, OSError) as exc:
            log.info("client went away: %s", exc)
        except Exception:  # noqa: BLE001 - one client's failure never stops the server
            log.exception("unexpected error while serving a client")
        finally:
            with self._active_lock:
                self._active -= 1
            self._last_activity = time.monotonic()
            self._clients.release()

    def _handle(self, conn: socket.socket) -> None:
        try:
            header, plen = protocol.recv_header(conn, max_payload=self.max_request_bytes)
        except RequestTooLarge as exc:
            _try_send(conn, _error("too-large", f"{exc} (select a smaller area, or restart the server with "
                                                "'instructir serve --max-request-mb N')"))
            return
        except ConnectionClosed:
            return
        except ProtocolError as exc:
            _try_send(conn, _error("bad-request", str(exc)))
            return
        token = header.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.token.encode()):
            log.warning("refused a request without the right token")
            _try_send(conn, _error("unauthorized", "refused: the request does not carry this server's token"))
            return
        self._last_activity = time.monotonic()
        kind = header.get("type")
        if kind != "restore" and plen:
            _try_send(conn, _error("bad-request", f"a {kind!r} request carries no payload"))
            return
        if kind == "ping":
            protocol.send_message(conn, {"type": "pong", "version": protocol.PROTOCOL_VERSION, "pid": os.getpid(),
                                         "model": self.model, "loaded": [k[0] for k in self._restorers],
                                         "spire_loaded": self._spire is not None, "modes": list(protocol.MODES),
                                         "jobs_done": self.jobs_done, "loads": self.loads})
        elif kind == "shutdown":
            protocol.send_message(conn, {"type": "ok"})
            self.shutdown()
        elif kind == "restore":
            try:
                nbytes, mask_bytes = protocol.check_restore_request(header, plen)
            except ProtocolError as exc:
                _try_send(conn, _error("bad-request", str(exc)))
                return
            protocol.send_message(conn, {"type": "continue"})
            conn.settimeout(PAYLOAD_TIMEOUT)
            payload = protocol.recv_exact(conn, plen)
            self._run_job(conn, header, payload, nbytes)
        else:
            _try_send(conn, _error("bad-request", f"unknown request type {kind!r}"))

    # --- jobs ---------------------------------------------------------------

    def _run_job(self, conn: socket.socket, header: dict, payload: bytearray, nbytes: int) -> None:
        from engine.jobs import CancelToken

        cancel = CancelToken()
        events: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                events.put(("done", self.process(header, payload, nbytes, events, cancel)))
            except BaseException as exc:  # noqa: BLE001 - handed to the connection thread
                events.put(("failed", exc))

        worker = threading.Thread(target=work, name="instructir-job", daemon=True)
        worker.start()
        client_alive = True
        last_sent = time.monotonic()
        measured_sent = False
        pending = None
        while True:
            try:
                kind, value = events.get(timeout=0.1)
            except queue.Empty:
                kind, value = None, None
            if client_alive and _client_left_or_cancelled(conn):
                log.info("client cancelled or disconnected: cancelling its job")
                client_alive = False
                cancel.cancel()
            first_measured = False
            if kind == "progress":
                pending = value
                # The first measurable step goes out at once, so the bar moves as soon as work starts.
                first_measured = bool(value.get("done")) and not measured_sent
                measured_sent = measured_sent or first_measured
            now = time.monotonic()
            flush = kind in (None, "done", "failed") or first_measured or now - last_sent >= PROGRESS_INTERVAL
            if client_alive and pending is not None and flush:
                client_alive = _try_send(conn, dict(pending, type="progress"))
                pending, last_sent = None, now
            elif client_alive and kind is None and now - last_sent >= HEARTBEAT_SECONDS:
                client_alive = _try_send(conn, {"type": "progress", "stage": "working"})
                last_sent = now
            if not client_alive:
                cancel.cancel()
            if kind in ("done", "failed"):
                break
        worker.join()
        if kind == "done":
            self.jobs_done += 1
            reply, data = value
            if client_alive:
                _try_send(conn, reply, data)
            return
        exc = value
        from engine.jobs import Cancelled

        if isinstance(exc, Cancelled):
            log.info("job cancelled")
            if client_alive:
                _try_send(conn, _error("cancelled", "cancelled"))
            return
        if not isinstance(exc, NothingToDo | SpireUnavailable | ValueError | FileNotFoundError) and \
                type(exc).__name__ not in ("ModelNotFoundError", "DeviceError", "EmptyInstructionError"):
            log.error("job failed", exc_info=exc)
        code = "nothing-to-do" if isinstance(exc, NothingToDo) else "spire-unavailable" if isinstance(
            exc, SpireUnavailable) else "failed"
        if client_alive:
            _try_send(conn, _error(code, str(exc) or type(exc).__name__))

    def process(self, header: dict, payload: bytearray, nbytes: int, events: queue.Queue, cancel) -> tuple:
        """Run one restore request; returns the result frame ``(header, pixels)``."""
        import numpy as np

        w, h, c, dtype = int(header["width"]), int(header["height"]), int(header["channels"]), header["dtype"]
        pixels = _to_float(np.frombuffer(payload, dtype=_NP[dtype], count=w * h * c).reshape(h, w, c), dtype)
        mask = None
        if header.get("mask_dtype"):
            md = header["mask_dtype"]
            mask = _to_float(np.frombuffer(payload, dtype=_NP[md], count=w * h, offset=nbytes).reshape(h, w, 1), md)

        def emit(stage: str, done: int = 0, total: int = 0, text: str = "") -> None:
            events.put(("progress", {"stage": stage, "done": done, "total": total, "text": text}))

        rgb = np.clip(pixels[..., :3] if c >= 3 else np.repeat(pixels[..., :1], 3, axis=2), 0.0, 1.0)
        run = self._run_spire if header.get("mode") == "spire" else self._run_instructir
        out, seconds, info = run(header, rgb, emit, cancel)
        result = pixels.copy()
        if c >= 3:
            result[..., :3] = out
        else:
            result[..., 0] = out @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
        if mask is not None:
            m = np.clip(mask, 0.0, 1.0)
            blended = pixels + m * (result - pixels)
            result = np.where(m > 0, blended, pixels)
        if c in (2, 4):
            result[..., -1] = pixels[..., -1]
        data = _from_float(result, dtype)
        reply = {"type": "result", "width": w, "height": h, "channels": c, "dtype": dtype,
                 "seconds": round(seconds, 3), **info}
        return reply, data

    @contextlib.contextmanager
    def _locked(self, emit, cancel):
        """Hold the model lock (one job at a time on the device), telling the client when it has to wait."""
        from engine.jobs import check

        check(cancel)
        if not self._model_lock.acquire(blocking=False):
            emit("queued", text="waiting for another image to finish")
            self._model_lock.acquire()
        try:
            yield
        finally:
            self._model_lock.release()

    def _run_instructir(self, header: dict, rgb, emit, cancel) -> tuple:
        """Plan and run the instruction with InstructIR; returns (output rgb, seconds, reply fields)."""
        from engine.edit.session import EditSession, NothingToDoError
        from engine.jobs import check

        restorer = self.restorer(header.get("model"), header.get("device"),
                                 on_loading=lambda: emit("loading", text="loading the model"))
        with self._locked(emit, cancel):
            check(cancel)
            t = time.perf_counter()
            session = EditSession(rgb)
            emit("restoring", 0, 1000, "restoring")
            strength = float(header.get("strength", 1.0))
            override = header.get("strength_mode", "scale") == "override"
            try:  # the strength is applied before anything runs: each step runs once
                plan = session.apply(header["instruction"], restorer, strength=strength if override else None,
                                     scale=1.0 if override else strength,
                                     progress=lambda d, n: emit("restoring", d, n, "restoring"), cancel=cancel)
            except NothingToDoError as exc:
                raise NothingToDo(str(exc)) from exc
            check(cancel)  # a client that left during the last pass gets no result, and the job does not count
            out = session.result()
            seconds = time.perf_counter() - t
        return out, seconds, {"model": restorer.name, "mode": "instructir", "plan": [p.to_dict() for p in plan],
                              "steps": [{"instruction": s.instruction, "intent": s.intent, "strength": s.strength}
                                        for s in session.steps]}

    def _run_spire(self, header: dict, rgb, emit, cancel) -> tuple:
        """Run SPIRE (``mode: spire``); returns (output rgb, seconds, reply fields).

        The instruction is read as a restoration prompt (``PromptError`` says how to fix it); the image keeps
        its size (``upscale=False``: "Upsample to Nx" restores the detail of an N-times upsampling in place).
        ``strength`` blends the result with the input.
        """
        from engine.edit.prompts import from_instruction
        from engine.jobs import check

        prompt = from_instruction(header["instruction"])
        semantic = " ".join(str(header.get("semantic") or "").split())
        pipeline = self.spire(header.get("device"), on_loading=lambda: emit("loading", text="loading SPIRE"))
        steps = int(header.get("diffusion_steps") or 0) or _spire_default_steps()
        with self._locked(emit, cancel):
            check(cancel)
            t = time.perf_counter()
            emit("restoring", 0, 1000, "restoring with SPIRE")
            restored = pipeline.restore(rgb, prompt, semantic, steps=steps, upscale=False, cancel=cancel,
                                        progress=lambda d, n: emit("restoring", d, n, "restoring with SPIRE"))
            check(cancel)
            if restored.shape != rgb.shape:
                raise RuntimeError(f"SPIRE returned {restored.shape} for a {rgb.shape} image")
            strength = float(header.get("strength", 1.0))
            out = restored if strength == 1.0 else rgb + strength * (restored - rgb)
            seconds = time.perf_counter() - t
        return out, seconds, {"model": "SPIRE", "mode": "spire", "prompt": str(prompt), "semantic": semantic,
                              "diffusion_steps": steps, "plan": [],
                              "steps": [{"instruction": str(prompt), "intent": "spire", "strength": strength}]}


def _spire_default_steps() -> int:
    from engine.spire.pipeline import DEFAULT_STEPS

    return DEFAULT_STEPS


_NP = {"u8": "u1", "u16": "<u2", "f32": "<f4"}
_SCALE = {"u8": 255.0, "u16": 65535.0}


def _to_float(a, dtype: str):
    import numpy as np

    if dtype == "f32":
        return a.astype(np.float32)
    return a.astype(np.float32) / np.float32(_SCALE[dtype])


def _from_float(a, dtype: str) -> bytes:
    import numpy as np

    if dtype == "f32":
        return np.ascontiguousarray(a, dtype="<f4").tobytes()
    q = np.rint(np.clip(a, 0.0, 1.0) * _SCALE[dtype])
    return np.ascontiguousarray(q, dtype=_NP[dtype]).tobytes()


def _error(code: str, message: str) -> dict:
    return {"type": "error", "code": code, "message": message}


def _try_send(conn: socket.socket, header: dict, *payload) -> bool:
    try:
        protocol.send_message(conn, header, *payload)
        return True
    except OSError:
        return False


def _client_left_or_cancelled(conn: socket.socket) -> bool:
    """True when the client closed its end or sent anything (only ``cancel`` may follow a request)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return True  # EOF, an error, or a cancel frame: all mean stop
    except (OSError, ValueError):
        return True


# --- command line -------------------------------------------------------------


def cmd_serve(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s instructir-serve %(levelname)s %(message)s",
                        stream=sys.stderr)
    state_file = Path(args.state_file) if args.state_file else default_state_file()
    if args.stop:
        client = protocol.connect(state_file)
        if client is None:
            print(f"no engine server is running for {state_file}", file=sys.stderr)
            return 1
        client.shutdown()
        print(f"stopped the engine server (pid {client.pid})", file=sys.stderr)
        return 0
    server = EngineServer(model=args.model, device=args.device, fast=args.fast, tile=args.tile, port=args.port,
                          state_file=state_file, max_request_bytes=int(args.max_request_mb * 1024 * 1024),
                          idle_exit=args.idle_exit, preload=not args.no_preload)
    try:
        server.start()
    except AlreadyRunning as exc:
        print(f"instructir serve: {exc}", file=sys.stderr)
        return 3
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.shutdown())
    print(f"instructir engine server listening on {HOST}:{server.port} (state file {state_file})",
          file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


def register_cli(subparsers) -> None:
    """Add ``serve`` to the ``instructir`` command (called from engine.cli.build_parser)."""
    p = subparsers.add_parser("serve", help="run the engine server for the GIMP plug-in (127.0.0.1 only)")
    p.add_argument("--model", default="default", help="bundled model name, instructir-7d, or a model folder")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cuda, mps or cpu")
    p.add_argument("--tile", type=int, default=0, help="tile side in pixels (default: whole image when it fits)")
    p.add_argument("--fast", action="store_true", help="bf16 on CPUs that support it")
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: any free port)")
    p.add_argument("--state-file", help=f"where to publish port and token (default: ${protocol.STATE_ENV} "
                                        "or the user's state folder)")
    p.add_argument("--max-request-mb", type=float, default=protocol.DEFAULT_MAX_PAYLOAD / 2**20,
                   help="refuse requests larger than this (MiB)")
    p.add_argument("--idle-exit", type=float, default=0, help="stop after this many seconds unused (0: never)")
    p.add_argument("--no-preload", action="store_true", help="load the model on the first request, not at start")
    p.add_argument("--stop", action="store_true", help="stop the running server and exit")
    p.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:  # ``python -m engine.serve.server``
    ap = argparse.ArgumentParser(prog="instructir")
    register_cli(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
