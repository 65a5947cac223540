"""The engine server's wire protocol, and the client that the GIMP plug-in uses.

Standard library only, Python 3.8+: ``instructir gimp-install`` copies this
file next to the plug-in (as ``instructir_protocol.py``), because GIMP's own
Python has neither torch nor, necessarily, numpy.

Wire format (TCP on 127.0.0.1). Every message, either way, is one frame::

    b"IIR1" | header length (uint32, big-endian) | payload length (uint64, big-endian)
    header: UTF-8 JSON object | payload: raw bytes

A request's header carries ``token`` (the secret from the state file) and
``type``: ``ping``, ``restore`` or ``shutdown``. A ``restore`` request carries
``instruction``, ``strength`` (0..1, scales the strengths read from the
instruction; ``strength_mode: "override"`` replaces them, like the CLI's
``--strength``), ``width``, ``height``, ``channels`` (1 gray, 2 gray+alpha,
3 RGB, 4 RGBA), ``dtype`` (``u8``, ``u16`` or ``f32``, interleaved rows, values
non-linear sRGB in [0, 1] for f32) and optionally ``mask_dtype``: then a
one-channel selection mask of the same size follows the pixels and the result
is blended with it. Optional ``model`` and ``device`` pick the model.
Optional ``mode``: ``"instructir"`` (the default) or ``"spire"``, the
optional diffusion mode: the instruction is then read as a SPIRE restoration
prompt, ``semantic`` (text, may be empty) says what the image shows and
``diffusion_steps`` (1-1000) how many sampling steps to take; the result has
the request's size, and says ``"mode": "spire"`` and the ``prompt`` it ran.

The server answers with any number of ``progress`` frames (``stage``,
``done``, ``total``, ``text``), then exactly one ``result`` frame (same
width/height/channels/dtype as the request, payload = the pixels) or one
``error`` frame (``code``, ``message``). A request with a payload is sent in
two halves: prefix and header first; the server checks the token and the sizes
and answers ``continue`` (then the payload follows) or an ``error`` frame, so a
refused request never transfers its pixels. A client cancels by sending a
``cancel`` frame or simply by closing the connection.

The server publishes where it listens in a state file (JSON: ``port``,
``token``, ``pid``), readable by the user only; ``INSTRUCTIR_SERVER_STATE``
overrides its location.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

PROTOCOL_VERSION = 1
MAGIC = b"IIR1"
_FRAME = struct.Struct(">4sIQ")
HOST = "127.0.0.1"
MAX_HEADER_BYTES = 1 << 20
DEFAULT_MAX_PAYLOAD = 1 << 30
MAX_INSTRUCTION_CHARS = 2000
MODES = ("instructir", "spire")
MAX_DIFFUSION_STEPS = 1000
DTYPE_SIZES = {"u8": 1, "u16": 2, "f32": 4}
STATE_ENV = "INSTRUCTIR_SERVER_STATE"


class ProtocolError(Exception):
    """A malformed frame or request."""


class RequestTooLarge(ProtocolError):
    """A frame above the receiver's size limits."""


class ConnectionClosed(ProtocolError):
    """The peer closed the connection before a whole frame arrived."""


class ServerError(Exception):
    """The server answered with an error frame; ``str()`` is its readable message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ServerUnavailable(Exception):
    """No engine server could be reached or started."""


# --- frames -------------------------------------------------------------------


def _parts(payload) -> list:
    return [memoryview(p).cast("B") for p in payload if p is not None]


def send_head(sock: socket.socket, header: dict, size: int) -> None:
    """Send a frame's prefix and header; ``size`` payload bytes must follow."""
    body = json.dumps(header, separators=(",", ":")).encode("utf-8")
    sock.sendall(_FRAME.pack(MAGIC, len(body), size) + body)


def send_message(sock: socket.socket, header: dict, *payload) -> None:
    """Send one frame; ``payload`` is any number of bytes-like parts sent back to back."""
    parts = _parts(payload)
    send_head(sock, header, sum(p.nbytes for p in parts))
    for p in parts:
        sock.sendall(p)


def recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], min(n - got, 1 << 22))
        if k == 0:
            raise ConnectionClosed("connection closed mid-frame" if got or n else "connection closed")
        got += k
    return buf


def recv_header(sock: socket.socket, max_header: int = MAX_HEADER_BYTES,
                max_payload: int = DEFAULT_MAX_PAYLOAD) -> tuple:
    """Read a frame's header; returns ``(header dict, payload length)`` with the payload still unread."""
    try:
        head = recv_exact(sock, _FRAME.size)
    except ConnectionClosed:
        raise ConnectionClosed("connection closed") from None
    magic, hlen, plen = _FRAME.unpack(head)
    if magic != MAGIC:
        raise ProtocolError("not an InstructIR engine frame")
    if hlen > max_header:
        raise RequestTooLarge(f"header of {hlen} bytes is over the limit of {max_header}")
    if plen > max_payload:
        raise RequestTooLarge(f"request of {plen / 1e6:.0f} MB is over the server's limit of "
                              f"{max_payload / 1e6:.0f} MB")
    try:
        header = json.loads(bytes(recv_exact(sock, hlen)).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    return header, plen


def recv_message(sock: socket.socket, max_header: int = MAX_HEADER_BYTES,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> tuple:
    header, plen = recv_header(sock, max_header, max_payload)
    return header, recv_exact(sock, plen)


def image_nbytes(width: int, height: int, channels: int, dtype: str) -> int:
    return int(width) * int(height) * int(channels) * DTYPE_SIZES[dtype]


def check_restore_request(header: dict, payload_len: int) -> tuple:
    """Validate a ``restore`` header against its payload length; returns (image bytes, mask bytes)."""
    try:
        w, h, c = int(header["width"]), int(header["height"]), int(header["channels"])
        dtype = header["dtype"]
        instruction = header["instruction"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"restore request without a valid {exc}") from None
    if dtype not in DTYPE_SIZES:
        raise ProtocolError(f"unknown dtype {dtype!r} (u8, u16 or f32)")
    if c not in (1, 2, 3, 4) or w < 1 or h < 1:
        raise ProtocolError(f"bad image size {w}x{h}x{c}")
    if not isinstance(instruction, str) or len(instruction) > MAX_INSTRUCTION_CHARS:
        raise ProtocolError(f"the instruction must be text of at most {MAX_INSTRUCTION_CHARS} characters")
    strength = header.get("strength", 1.0)
    if not isinstance(strength, (int, float)) or not 0.0 <= float(strength) <= 1.0:
        raise ProtocolError("strength must be a number from 0 to 1")
    if header.get("strength_mode", "scale") not in ("scale", "override"):
        raise ProtocolError("strength_mode must be 'scale' or 'override'")
    if header.get("mode", "instructir") not in MODES:
        raise ProtocolError(f"mode must be one of {', '.join(MODES)}")
    semantic = header.get("semantic", "")
    if not isinstance(semantic, str) or len(semantic) > MAX_INSTRUCTION_CHARS:
        raise ProtocolError(f"semantic must be text of at most {MAX_INSTRUCTION_CHARS} characters")
    steps = header.get("diffusion_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or not 1 <= steps <= MAX_DIFFUSION_STEPS):
        raise ProtocolError(f"diffusion_steps must be a whole number from 1 to {MAX_DIFFUSION_STEPS}")
    image = image_nbytes(w, h, c, dtype)
    mask_dtype = header.get("mask_dtype")
    if mask_dtype is not None and mask_dtype not in DTYPE_SIZES:
        raise ProtocolError(f"unknown mask dtype {mask_dtype!r}")
    mask = image_nbytes(w, h, 1, mask_dtype) if mask_dtype else 0
    if image + mask != payload_len:
        raise ProtocolError(f"payload is {payload_len} bytes, expected {image + mask} for {w}x{h}x{c} {dtype}"
                            + (" + mask" if mask else ""))
    return image, mask


# --- state file ---------------------------------------------------------------


def state_path(default: str | os.PathLike | None = None) -> str | None:
    """The state file: ``$INSTRUCTIR_SERVER_STATE`` when set, else ``default``."""
    return os.environ.get(STATE_ENV) or (os.fspath(default) if default else None)


def write_state(path: str | os.PathLike, state: dict) -> None:
    """Atomically write the state file, user-only (0600) in a user-only (0700) folder."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    try:
        os.chmod(folder, 0o700)
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".server-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600) if hasattr(os, "fchmod") else None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_state(path: str | os.PathLike | None) -> dict | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
        int(state["port"]), str(state["token"])
        return state
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- client -------------------------------------------------------------------


class Client:
    """One engine server, as named by its state; each call uses a fresh connection."""

    def __init__(self, state: dict, connect_timeout: float = 5.0, read_timeout: float = 120.0) -> None:
        self.port = int(state["port"])
        self.token = str(state["token"])
        self.pid = state.get("pid")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=self.connect_timeout)
        sock.settimeout(self.read_timeout)
        return sock

    def call(self, header: dict, *payload, on_progress=None, should_cancel=None) -> tuple:
        """Send one request; returns the final ``(header, payload)``; raises ServerError on an error frame.

        ``on_progress(msg)`` sees every progress frame; ``should_cancel()``, polled between
        frames, makes the client send a cancel frame and close.
        """
        header = dict(header, token=self.token, version=PROTOCOL_VERSION)
        parts = _parts(payload)
        size = sum(p.nbytes for p in parts)
        with self._connect() as sock:
            send_head(sock, header, size)
            if size:  # the server checks token and size first: a refusal arrives before any pixels are sent
                reply, plen = recv_header(sock, max_payload=1 << 20)
                if reply.get("type") != "continue":
                    recv_exact(sock, plen)
                    raise ServerError(str(reply.get("code", "error")), str(reply.get("message", "server error")))
                for p in parts:
                    sock.sendall(p)
            while True:
                if should_cancel is not None and should_cancel():
                    try:
                        send_message(sock, {"type": "cancel"})
                    except OSError:
                        pass
                    raise ServerError("cancelled", "cancelled")
                reply, plen = recv_header(sock, max_payload=1 << 40)
                kind = reply.get("type")
                if kind == "progress":
                    if on_progress is not None:
                        on_progress(reply)
                    continue
                data = recv_exact(sock, plen)
                if kind == "error":
                    raise ServerError(str(reply.get("code", "error")), str(reply.get("message", "server error")))
                return reply, data

    def ping(self) -> dict:
        return self.call({"type": "ping"})[0]

    def shutdown(self) -> None:
        self.call({"type": "shutdown"})

    def restore(self, pixels, width: int, height: int, channels: int, dtype: str, instruction: str, *,
                strength: float = 1.0, strength_mode: str = "scale", mask=None, mask_dtype: str | None = None,
                model: str | None = None, device: str | None = None, mode: str | None = None,
                semantic: str | None = None, diffusion_steps: int | None = None, on_progress=None,
                should_cancel=None) -> tuple:
        """Restore interleaved pixels; returns ``(result header, result pixels)``.

        ``mode="spire"`` asks for the optional SPIRE diffusion mode (``semantic``, ``diffusion_steps``).
        """
        header = {"type": "restore", "instruction": instruction, "strength": float(strength),
                  "strength_mode": strength_mode, "width": int(width), "height": int(height),
                  "channels": int(channels), "dtype": dtype}
        if mode and mode != "instructir":
            header["mode"] = mode
            header["semantic"] = semantic or ""
            if diffusion_steps:
                header["diffusion_steps"] = int(diffusion_steps)
        if mask is not None:
            header["mask_dtype"] = mask_dtype or dtype
        if model:
            header["model"] = model
        if device:
            header["device"] = device
        return self.call(header, pixels, mask, on_progress=on_progress, should_cancel=should_cancel)


def connect(state_file: str | os.PathLike | None, timeout: float = 3.0) -> Client | None:
    """A client for the live server named in ``state_file``, or None when there is none."""
    state = read_state(state_file)
    if state is None:
        return None
    client = Client(state, connect_timeout=timeout, read_timeout=timeout)
    try:
        client.ping()
    except (OSError, ProtocolError, ServerError):
        return None
    client.read_timeout = 120.0
    return client


def spawn_server(python: str, state_file: str | os.PathLike, *, engine_path: str | None = None,
                 args: list | None = None, log_file: str | os.PathLike | None = None) -> subprocess.Popen:
    """Start ``python -m engine.cli serve`` detached from the caller (own session, no inherited fds)."""
    env = dict(os.environ)
    env[STATE_ENV] = os.fspath(state_file)
    if engine_path:
        env["PYTHONPATH"] = engine_path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [python, "-m", "engine.cli", "serve", "--state-file", os.fspath(state_file)] + list(args or [])
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), mode=0o700, exist_ok=True)
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log_file else subprocess.DEVNULL
    try:
        kwargs = {"start_new_session": True} if os.name == "posix" else {
            "creationflags": getattr(subprocess, "DETACHED_PROCESS", 0)}
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
                                cwd=engine_path or None, env=env, **kwargs)
    finally:
        if log_file:
            os.close(log)


def ensure_server(state_file: str | os.PathLike, python: str | None, *, engine_path: str | None = None,
                  args: list | None = None, log_file: str | os.PathLike | None = None, timeout: float = 120.0,
                  on_wait=None) -> Client:
    """A client for a live server: the one in ``state_file``, else one started with ``python``.

    ``on_wait(seconds)`` is called while waiting for a new server to come up.
    """
    client = connect(state_file)
    if client is not None:
        return client
    if not python:
        raise ServerUnavailable("no InstructIR engine server is running and no Python interpreter was recorded "
                                "to start one; run 'instructir gimp-install' or start 'instructir serve'")
    if not os.path.exists(python):
        raise ServerUnavailable(f"the Python interpreter recorded at install time, {python}, is gone; "
                                "run 'instructir gimp-install' again from the environment that has the engine")
    try:
        proc = spawn_server(python, state_file, engine_path=engine_path, args=args, log_file=log_file)
    except OSError as exc:
        raise ServerUnavailable(f"cannot start the engine server with {python}: {exc}") from exc
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        client = connect(state_file)
        if client is not None:
            return client
        code = proc.poll()
        if code is not None:
            client = connect(state_file)  # another server won the race for the state file
            if client is not None:
                return client
            raise ServerUnavailable(f"the engine server exited with code {code} while starting"
                                    + _log_tail(log_file))
        if on_wait is not None:
            on_wait(time.monotonic() - start)
        time.sleep(0.2)
    raise ServerUnavailable(f"the engine server did not come up within {timeout:.0f} s" + _log_tail(log_file))


def _log_tail(log_file, lines: int = 6) -> str:
    if not log_file:
        return ""
    try:
        with open(log_file, encoding="utf-8", errors="replace") as fh:
            tail = [line.rstrip() for line in fh.readlines()[-lines:] if line.strip()]
    except OSError:
        return ""
    return (":\n" + "\n".join(tail)) if tail else ""


if __name__ == "__main__":  # pragma: no cover - a quick manual probe: python protocol.py STATE_FILE
    c = connect(sys.argv[1] if len(sys.argv) > 1 else state_path())
    print(c.ping() if c else "no server")
