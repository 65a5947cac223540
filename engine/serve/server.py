"""``instructir serve``: a long-lived engine server on 127.0.0.1 for the GIMP plug-in.

The server keeps the model loaded between requests (the first request pays
the load, later ones do not), answers each connection on its own thread
(``socketserver``), and runs jobs on the model one at a time, first come first
served, telling a waiting client how many jobs are ahead of it. A ``diagnose``
request (what is wrong with a layer, ``engine.serve.diagnosis``) is answered on
its connection's thread at once, beside any job. Every job is
one call of the engine's ``EditSession.apply``: planning, strength and every
kind of step (InstructIR, up-sampling, SPIRE) are the engine's; the server only
moves pixels (``engine.serve.layers``) and reports progress.

Safety: it listens on the loopback interface only and requires the random
token it writes to its state file (user-only, 0600, in a 0700 folder). A
connection must deliver its first header within :data:`AUTH_TIMEOUT` seconds
or it is dropped; connections that have not authenticated never count as
clients, never queue a job and never keep the server alive. Before any pixel
is sent, a request is checked against the memory the machine has free. A
client that sends ``cancel`` or goes away cancels its job; the server never
goes down with it. Errors reach the client as ``StudioError.code`` and the
error's own message; anything else is logged with its traceback.

Lifecycle: the plug-in reads the state file, pings the server, and when none
answers starts ``<python recorded at install time> -m engine.cli serve
--idle-exit N`` detached. A lock next to the state file keeps a second server
off the same file. The server exits ``--idle-exit`` seconds after its last
client disconnected (the plug-in passes the value chosen at ``instructir
gimp-install``, 300 s by default), at once on ``instructir serve --stop``
or SIGTERM/SIGINT, and removes the state file when it stops.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import queue
import secrets
import select
import signal
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path

from engine.errors import StudioError
from engine.model.options import add_restorer_arguments
from engine.serve import protocol
from engine.serve.layers import WireLayer
from engine.serve.protocol import HOST, PROTOCOL_VERSION, Code, ConnectionClosed, ProtocolError, Stage
from engine.serve.state import AlreadyRunningError, JobQueue, Lifetime, StateLock, write_state

log = logging.getLogger("instructir.server")

APP_NAME = "instructir-studio"
#: Seconds a new connection has to deliver its first header (token included) before it is dropped.
AUTH_TIMEOUT = 2.0
PAYLOAD_TIMEOUT = 120.0
HEARTBEAT_SECONDS = 1.0
PROGRESS_INTERVAL = 0.1
#: Connections still authenticating at once; more are closed at once (each is dropped within AUTH_TIMEOUT).
MAX_PENDING = 256
#: The largest layer the server takes, as the engine's largest result (200 MP).
MAX_PIXELS = 200_000_000


def default_state_file() -> Path:
    """Where the server publishes port + token: ``$INSTRUCTIR_SERVER_STATE`` or the user's state folder."""
    env = os.environ.get(protocol.STATE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_state_dir(APP_NAME, appauthor=False)) / "server.json"


class SpireUnavailableError(StudioError):
    """SPIRE mode was asked for but cannot run here; the message says why (``engine.spire.available()``)."""

    code = "spire-unavailable"


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = os.name == "posix"
    request_queue_size = 64

    def __init__(self, engine: EngineServer, address) -> None:
        self.engine = engine
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        if not self.engine._pending.acquire(blocking=False):
            self.shutdown_request(request)  # a flood of unauthenticated connections: drop the newest
            return
        super().process_request(request, client_address)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.engine._serve_client(self.request)


class _LazySpire:
    """The SPIRE pipeline as the session's SPIRE runner sees it, loaded on the first step that needs it."""

    def __init__(self, server: EngineServer, device: str | None, on_loading) -> None:
        self.server, self.device, self.on_loading = server, device, on_loading

    def restore(self, *args, **kwargs):
        return self.server.spire(self.device, on_loading=self.on_loading).restore(*args, **kwargs)


class EngineServer:
    """The server. ``restorer_factory(model, device)`` builds a Restorer, ``spire_factory(device)`` the optional
    SPIRE pipeline, loaded on the first SPIRE request and kept (tests pass fakes). ``memory_available()``
    says how many bytes a job may use (default: what the system has free)."""

    def __init__(self, *, model: str = "default", device: str = "auto", fast: bool = False, tile: int = 0,
                 port: int = 0, state_file: str | os.PathLike | None = None, idle_exit: float = 0.0,
                 token: str | None = None, restorer_factory=None, preload: bool = True, spire_factory=None,
                 max_pixels: int = MAX_PIXELS, memory_available=None, diagnose_model=None) -> None:
        self.model, self.device, self.fast, self.tile = model, device, fast, tile
        self.port = port
        self.state_file = Path(state_file) if state_file else default_state_file()
        self.idle_exit = float(idle_exit)
        self.token = token or secrets.token_hex(32)
        self.preload = preload
        self.max_pixels = int(max_pixels)
        self._memory_available = memory_available or _available_memory
        self._factory = restorer_factory or self._load_restorer
        self._restorers: dict[tuple[str, str], object] = {}
        self._spire_factory = spire_factory or self._load_spire
        self._spire: tuple[str, object] | None = None  # (device, SpirePipeline)
        self._spire_lock = threading.Lock()
        self.spire_loads = 0
        self._load_lock = threading.Lock()
        self._jobs = JobQueue()
        self.lifetime = Lifetime()
        self._pending = threading.BoundedSemaphore(MAX_PENDING)
        self._cancels: set = set()
        self._stop = threading.Event()
        self._lock = StateLock(self.state_file)
        self._tcp: _TCPServer | None = None
        self._thread: threading.Thread | None = None
        self.jobs_done = 0
        self.loads = 0
        self.diagnoses = 0
        self._diagnose_factory = diagnose_model  # tests: a callable giving the diagnosis model

    # --- lifecycle ----------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self._tcp.server_address if self._tcp else (HOST, self.port)

    def start(self) -> EngineServer:
        """Take the state-file lock, bind 127.0.0.1, publish the state file, accept in the background."""
        self._lock.acquire()
        try:
            self._tcp = _TCPServer(self, (HOST, self.port))
        except BaseException:
            self._lock.release()
            raise
        self.port = self._tcp.server_address[1]
        write_state(self.state_file, {
            "port": self.port, "token": self.token, "pid": os.getpid(), "version": PROTOCOL_VERSION,
            "model": self.model, "device": self.device, "started": time.time()})
        log.info("engine server on %s:%d (state %s)", HOST, self.port, self.state_file)
        self._thread = threading.Thread(target=self._tcp.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="instructir-accept", daemon=True)
        self._thread.start()
        if self.preload:
            threading.Thread(target=self._preload, name="instructir-preload", daemon=True).start()
        return self

    def _preload(self) -> None:
        try:  # first, and it is quick: the dialog's diagnosis is the first request of a GIMP session
            self._diagnose_model()
        except Exception as exc:  # noqa: BLE001 - reported again on the first diagnosis
            log.warning("could not load the diagnosis model: %s", exc)
        try:
            self.restorer(self.model, self.device)
        except Exception as exc:  # noqa: BLE001 - reported again, readably, on the first request
            log.warning("could not load model %s: %s", self.model, exc)

    def serve_forever(self) -> None:
        """Block until shutdown (request, signal, or ``idle_exit`` seconds without clients), then clean up."""
        try:
            while not self._stop.wait(0.5):
                if self.idle_exit and self.lifetime.idle_seconds() > self.idle_exit:
                    log.info("no client for %.0f s: stopping", self.idle_exit)
                    self._stop.set()
        finally:
            self.close()

    def shutdown(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        for cancel in list(self._cancels):
            cancel.cancel()
        if self._tcp is not None:
            if self._thread is not None and self._thread.is_alive():
                self._tcp.shutdown()
            self._tcp.server_close()
        state = protocol.read_state(self.state_file)
        if state is not None and state.get("token") == self.token:
            self.state_file.unlink(missing_ok=True)
        self._lock.release()

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
        """The SPIRE pipeline, loaded on first use and kept; ``SpireUnavailableError`` (why) when it can't run.

        ``engine.spire.available()`` is asked before each load, never after: it is cheap, but a loaded
        pipeline needs no second opinion.
        """
        device = device or self.device
        if self._spire is not None and self._spire[0] == device:
            return self._spire[1]
        from engine import spire

        ok, reason = spire.available()
        if not ok:
            raise SpireUnavailableError(f"SPIRE mode is not available: {reason}")
        if on_loading is not None:
            on_loading()
        with self._spire_lock:
            if self._spire is None or self._spire[0] != device:
                self._spire = None  # one pipeline at a time: a diffusion model is large
                t = time.perf_counter()
                try:
                    pipeline = self._spire_factory(device)
                except (ImportError, OSError, RuntimeError) as exc:
                    raise SpireUnavailableError(f"SPIRE could not be loaded: {exc}") from exc
                self.spire_loads += 1
                log.info("loaded SPIRE on %s in %.1f s", device, time.perf_counter() - t)
                self._spire = (device, pipeline)
            return self._spire[1]

    # --- connections --------------------------------------------------------

    def _serve_client(self, conn: socket.socket) -> None:
        try:
            try:
                header, plen = self._first_header(conn)
            finally:
                self._pending.release()
            if header is None:
                return
            token = header.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.token.encode()):
                log.warning("refused a request without the right token")
                _try_send(conn, protocol.error_frame(Code.UNAUTHORIZED,
                                                     "refused: the request does not carry this server's token"))
                return
            with self.lifetime.client():
                conn.settimeout(PAYLOAD_TIMEOUT)
                self._handle(conn, header, plen)
        except (ConnectionClosed, OSError) as exc:
            log.info("client went away: %s", exc)
        except Exception:  # noqa: BLE001 - one client's failure never stops the server
            log.exception("unexpected error while serving a client")

    def _first_header(self, conn: socket.socket) -> tuple[dict | None, int]:
        """The first header, whole within AUTH_TIMEOUT; (None, 0) after answering or dropping the connection."""
        try:
            return protocol.recv_header(conn, deadline=time.monotonic() + AUTH_TIMEOUT)
        except TimeoutError:
            log.info("dropped a connection that sent no request within %.0f s", AUTH_TIMEOUT)
        except ConnectionClosed:
            pass
        except ProtocolError as exc:
            _try_send(conn, protocol.error_frame(Code.BAD_REQUEST, str(exc)))
        return None, 0

    def _handle(self, conn: socket.socket, header: dict, plen: int) -> None:
        kind = header.get("type")
        if plen:
            _try_send(conn, protocol.error_frame(Code.BAD_REQUEST, f"a {kind!r} request carries no payload"))
            return
        if kind == "ping":
            protocol.send_message(conn, {
                "type": "pong", "version": PROTOCOL_VERSION, "pid": os.getpid(), "model": self.model,
                "loaded": [k[0] for k in self._restorers], "spire_loaded": self._spire is not None,
                "modes": list(protocol.MODES), "jobs_done": self.jobs_done, "loads": self.loads,
                "running": self._jobs.running, "queued": self._jobs.waiting, "idle_exit": self.idle_exit,
                "diagnoses": self.diagnoses})
        elif kind == "shutdown":
            protocol.send_message(conn, {"type": "ok"})
            log.info("stop requested")
            self.shutdown()
        elif kind in ("restore", "diagnose"):
            if header.get("version") != PROTOCOL_VERSION:
                _try_send(conn, protocol.error_frame(
                    Code.VERSION, "the GIMP plug-in and the engine server are from different versions of "
                                  "InstructIR Studio: run 'instructir gimp-install' again and restart GIMP"))
                return
            if kind == "diagnose":
                self._diagnose(conn, header)
                return
            layer = self._receive(conn, header)
            if layer is not None:
                self._run_job(conn, header, layer)
        else:
            _try_send(conn, protocol.error_frame(Code.BAD_REQUEST, f"unknown request type {kind!r}"))

    def _accept(self, conn: socket.socket, header: dict, check) -> tuple | None:
        """A pixel request's layer ``(width, height, channels, dtype)`` once ``check`` (a protocol validator)
        passes it and the layer is within the pixel limit; else None, the refusal sent."""
        try:
            check(header)
        except ProtocolError as exc:
            _try_send(conn, protocol.error_frame(Code.BAD_REQUEST, str(exc)))
            return None
        w, h, c, dtype = int(header["width"]), int(header["height"]), int(header["channels"]), header["dtype"]
        if w * h > self.max_pixels:
            _try_send(conn, protocol.error_frame(
                Code.TOO_LARGE, f"the layer is {w} x {h} = {w * h / 1e6:.0f} MP, more than the engine's limit of "
                                f"{self.max_pixels / 1e6:.0f} MP; select a part of it, or scale it down first"))
            return None
        return w, h, c, dtype

    def _receive(self, conn: socket.socket, header: dict) -> WireLayer | None:
        """Check a restore request before any pixel moves, then take its rows band by band."""
        if (layer_size := self._accept(conn, header, protocol.check_restore_request)) is None:
            return None
        w, h, c, dtype = layer_size
        refusal = self._memory_refusal(w, h, c, dtype, header.get("mask_dtype"))
        if refusal:
            _try_send(conn, protocol.error_frame(Code.TOO_LARGE, refusal))
            return None
        layer = WireLayer(w, h, c, dtype, header.get("mask_dtype"))
        rows = protocol.band_rows(w, layer.row_bytes + layer.mask_row_bytes)
        protocol.send_message(conn, {"type": "continue", "band_rows": rows})
        band = bytearray(rows * (layer.row_bytes + layer.mask_row_bytes))
        for y, n in protocol.bands(h, rows):
            head, plen = protocol.recv_header(conn, max_payload=len(band))
            expected = n * (layer.row_bytes + layer.mask_row_bytes)
            if head.get("type") != "rows" or head.get("y") != y or head.get("rows") != n or plen != expected:
                _try_send(conn, protocol.error_frame(Code.BAD_REQUEST, f"expected rows {y}..{y + n} of the image"))
                return None
            view = memoryview(band)[:plen]
            protocol.recv_into(conn, view)
            layer.put_rows(y, n, view)
        return layer

    def _memory_refusal(self, w: int, h: int, c: int, dtype: str, mask_dtype: str | None) -> str:
        """Why the memory free now cannot hold this restore job; empty when it can."""
        need = WireLayer.estimate_bytes(w, h, c, dtype, mask_dtype)
        free = self._memory_available()
        if need > free:
            return (f"the layer is {w} x {h} ({w * h / 1e6:.0f} MP): restoring it needs about {need / 1e9:.1f} GB "
                    f"of memory and the engine's computer has {free / 1e9:.1f} GB free; close other programs, or "
                    "select a smaller part of the layer")
        return ""

    # --- diagnosis ----------------------------------------------------------

    def _diagnose(self, conn: socket.socket, header: dict) -> None:
        """Ask for the regions the diagnosis reads, take them band by band, answer the diagnosis.

        Runs on the connection's thread, beside any restore job (a diagnosis takes a fraction of a
        second and the dialog that asks for it should not wait minutes behind a job)."""
        from engine.serve import diagnosis

        if (layer_size := self._accept(conn, header, protocol.check_diagnose_request)) is None:
            return
        w, h, c, dtype = layer_size
        wanted = diagnosis.regions(w, h)
        pixel = c * protocol.DTYPE_SIZES[dtype]
        rows = [protocol.band_rows(r.width, r.width * pixel) for r in wanted]
        protocol.send_message(conn, {"type": "continue", "regions": [r.to_list() for r in wanted],
                                     "band_rows": rows})
        parts = []
        for index, (region, band) in enumerate(zip(wanted, rows)):
            data = bytearray(region.nbytes(c, dtype))
            row = region.width * pixel
            for y, n in protocol.bands(region.height, band):
                head, plen = protocol.recv_header(conn, max_payload=band * row)
                if (head.get("type") != "rows" or head.get("region") != index or head.get("y") != y
                        or head.get("rows") != n or plen != n * row):
                    _try_send(conn, protocol.error_frame(
                        Code.BAD_REQUEST, f"expected rows {y}..{y + n} of region {index} of the diagnosis"))
                    return
                protocol.recv_into(conn, memoryview(data)[y * row:(y + n) * row])
            parts.append(diagnosis.to_rgb(data, region, c, dtype))
        t = time.perf_counter()
        try:
            whole = header.get("photo_width"), header.get("photo_height")
            found = diagnosis.diagnose_regions(w, h, parts, self._diagnose_model(),
                                               tuple(int(v) for v in whole) if whole[0] else None)
        except StudioError as exc:
            log.info("diagnosis refused: %s", exc)
            _try_send(conn, dict(exc.to_dict(), type="error"))
            return
        except Exception as exc:  # noqa: BLE001 - reported to the client; the server carries on
            log.error("diagnosis failed", exc_info=exc)
            _try_send(conn, protocol.error_frame(Code.FAILED, f"the diagnosis failed: {type(exc).__name__}: {exc}. "
                                                              "The details are in the engine server's log."))
            return
        self.diagnoses += 1
        _try_send(conn, diagnosis.reply(found, time.perf_counter() - t, w, h))

    def _diagnose_model(self):
        if self._diagnose_factory is not None:
            return self._diagnose_factory()
        from engine.diagnose import default_model

        return default_model()

    # --- jobs ---------------------------------------------------------------

    def _run_job(self, conn: socket.socket, header: dict, layer: WireLayer) -> None:
        from engine.jobs import Cancelled, CancelToken

        cancel = CancelToken()
        self._cancels.add(cancel)
        events: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                events.put(("done", self.process(header, layer, events, cancel)))
            except BaseException as exc:  # noqa: BLE001 - handed to the connection thread
                events.put(("failed", exc))

        worker = threading.Thread(target=work, name="instructir-job", daemon=True)
        worker.start()
        try:
            kind, value, client_alive = self._relay(conn, events, cancel)
            worker.join()
        finally:
            self._cancels.discard(cancel)
        if kind == "done":
            self.jobs_done += 1
            if client_alive:
                self._send_result(conn, layer, *value)
            return
        exc = value
        if isinstance(exc, Cancelled):
            log.info("job cancelled")
            if client_alive:
                _try_send(conn, protocol.error_frame(Code.CANCELLED, "cancelled"))
            return
        if isinstance(exc, StudioError):
            log.info("job refused: %s", exc)
            if client_alive:
                _try_send(conn, dict(exc.to_dict(), type="error"))
            return
        log.error("job failed", exc_info=exc)
        if client_alive:
            _try_send(conn, protocol.error_frame(Code.FAILED, f"the engine failed: {type(exc).__name__}: {exc}. "
                                                              "The details are in the engine server's log."))

    def _relay(self, conn: socket.socket, events: queue.Queue, cancel) -> tuple:
        """Pass the job's progress to the client (the first measured step at once, then at most every
        PROGRESS_INTERVAL, a heartbeat when nothing moves) until it ends; returns (kind, value, client alive)."""
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
                first_measured = bool(value.get("done")) and not measured_sent
                measured_sent = measured_sent or first_measured
                urgent = pending is not None and pending.get("stage") != value.get("stage")
                if urgent and client_alive:  # a change of stage (queued -> restoring) is never coalesced away
                    client_alive = _try_send(conn, dict(pending, type="progress"))
                pending = value
            now = time.monotonic()
            flush = kind in (None, "done", "failed") or first_measured or now - last_sent >= PROGRESS_INTERVAL
            if client_alive and pending is not None and flush:
                client_alive = _try_send(conn, dict(pending, type="progress"))
                pending, last_sent = None, now
            elif client_alive and kind is None and now - last_sent >= HEARTBEAT_SECONDS:
                client_alive = _try_send(conn, {"type": "progress", "stage": Stage.WORKING.value})
                last_sent = now
            if not client_alive:
                cancel.cancel()
            if kind in ("done", "failed"):
                return kind, value, client_alive

    def _send_result(self, conn: socket.socket, layer: WireLayer, reply: dict, source, result) -> None:
        out_h, out_w = result.shape[:2]
        row = out_w * layer.channels * protocol.DTYPE_SIZES[layer.dtype]
        rows = protocol.band_rows(out_w, row)
        reply = dict(reply, type="result", width=out_w, height=out_h, channels=layer.channels, dtype=layer.dtype,
                     band_rows=rows, resized=(out_w, out_h) != (layer.width, layer.height))
        if not _try_send(conn, reply):
            return
        for y, n in protocol.bands(out_h, rows):
            if not _try_send(conn, {"type": "rows", "y": y, "rows": n}, layer.result_rows(result, source, y, n)):
                log.info("client went away while the result was sent")
                return

    def process(self, header: dict, layer: WireLayer, events: queue.Queue, cancel) -> tuple:
        """Run one restore request through ``EditSession.apply``; returns (reply fields, source, result)."""
        from engine.edit.runners import Runners
        from engine.edit.session import EditSession, SpireOptions, StepKind
        from engine.jobs import check

        def emit(stage: Stage, done: int = 0, total: int = 0, text: str = "", **extra) -> None:
            events.put(("progress", {"stage": stage.value, "done": done, "total": total, "text": text, **extra}))

        spire = header.get("mode") == "spire"
        strength = float(header.get("strength", 1.0))
        override = header.get("strength_mode", "scale") == "override"
        if spire:
            runners = Runners(spire=_LazySpire(self, header.get("device"),
                                               lambda: emit(Stage.LOADING, text="loading SPIRE")))
            steps = header.get("diffusion_steps")
            options = SpireOptions(semantic=str(header.get("semantic") or ""),
                                   **({"sampling_steps": int(steps)} if steps else {}))
        else:
            runners = Runners(restorer=self.restorer(header.get("model"), header.get("device"),
                                                     on_loading=lambda: emit(Stage.LOADING, text="loading the model")))
            options = None
        with self._jobs.turn(cancel, on_wait=lambda ahead: emit(
                Stage.QUEUED, text=f"queued behind {ahead} job{'s' if ahead != 1 else ''}", position=ahead)):
            check(cancel)
            t = time.perf_counter()
            session = EditSession(layer.take_rgb())
            emit(Stage.RESTORING, 0, 1000, "restoring")
            plan = session.apply(header["instruction"], runners, strength=strength if override else None,
                                 scale=1.0 if override else strength,
                                 mode=StepKind.SPIRE if spire else StepKind.INSTRUCTIR, spire=options,
                                 progress=lambda d, n: emit(Stage.RESTORING, d, n, "restoring"), cancel=cancel)
            check(cancel)  # a client that left during the last pass gets no result, and the job does not count
            result = session.result()
            seconds = time.perf_counter() - t
        steps = [{"instruction": s.instruction, "intent": s.intent, "strength": s.strength, "kind": s.kind.value}
                 for s in session.steps]
        reply = {"seconds": round(seconds, 3), "mode": "spire" if spire else "instructir",
                 "model": "SPIRE" if spire else runners.restorer.name, "plan": [p.to_dict() for p in plan],
                 "steps": steps}
        if spire:
            params = session.steps[-1].params
            reply.update(prompt=params["prompt"], semantic=params["semantic"],
                         diffusion_steps=params["sampling_steps"])
        return reply, session.original, result


def _available_memory() -> int:
    from engine.model.memory import available_memory

    return available_memory()


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
        return bool(readable)  # EOF, an error, or a cancel frame: all mean stop
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
                          state_file=state_file, idle_exit=args.idle_exit, preload=not args.no_preload)
    try:
        server.start()
    except AlreadyRunningError as exc:
        print(f"instructir serve: {exc}", file=sys.stderr)
        return protocol.EXIT_ALREADY_RUNNING
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.shutdown())
    print(f"instructir engine server listening on {HOST}:{server.port} (state file {state_file})",
          file=sys.stderr, flush=True)
    server.serve_forever()
    # The state file is gone and the lock released: end the process now. A normal interpreter exit with
    # the model loaded spends seconds tearing torch down (measured 7.7 s), and a stop should be a stop.
    log.info("stopped")
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)


def register_cli(subparsers) -> None:
    """Add ``serve`` to the ``instructir`` command (called from engine.cli.build_parser)."""
    p = subparsers.add_parser("serve", help="run the engine server for the GIMP plug-in (127.0.0.1 only)")
    add_restorer_arguments(p)
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: any free port)")
    p.add_argument("--state-file", help=f"where to publish port and token (default: ${protocol.STATE_ENV} "
                                        "or the user's state folder)")
    p.add_argument("--idle-exit", type=float, default=0,
                   help="stop this many seconds after the last client disconnected (0: never)")
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
