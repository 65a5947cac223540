"""The engine server's wire protocol, and the client that the GIMP plug-in uses.

Standard library only, Python 3.8+: ``instructir gimp-install`` copies this
file next to the plug-in (as ``instructir_protocol.py``), because GIMP's own
Python has neither torch nor, necessarily, numpy.

Wire format (TCP on 127.0.0.1). Every message, either way, is one frame::

    b"IIR1" | header length (uint32, big-endian) | payload length (uint64, big-endian)
    header: UTF-8 JSON object | payload: raw bytes

A request's header carries ``token`` (the secret from the state file),
``version`` (:data:`PROTOCOL_VERSION`) and ``type``: ``ping``, ``restore``,
``diagnose`` or ``shutdown``. The server drops a connection whose first header has not fully
arrived within two seconds, so idle connections cannot use it up.

A ``restore`` request carries ``instruction``, ``strength`` (0..1, scales the
strengths read from the instruction; ``strength_mode: "override"`` replaces
them, like the CLI's ``--strength``), ``width``, ``height``, ``channels``
(1 gray, 2 gray+alpha, 3 RGB, 4 RGBA), ``dtype`` (``u8``, ``u16`` or ``f32``,
interleaved rows, values non-linear sRGB, f32 values may lie outside [0, 1])
and optionally ``mask_dtype`` (a one-channel selection mask the result is
blended with). Optional ``model`` and ``device`` pick the model. Optional
``mode``: ``"instructir"`` (the default) or ``"spire"``, the optional
diffusion mode: the instruction is then read as a SPIRE restoration prompt,
``semantic`` (text, may be empty) says what the image shows and
``diffusion_steps`` (1-1000) how many sampling steps to take.

The request header has no payload. The server checks the token, the sizes and
whether its memory can hold the job *before any pixel is sent*, and answers an
``error`` frame or ``continue`` with ``band_rows``: the client then sends the
image as ``rows`` frames (``y``, ``rows``; payload: those rows of pixels, then
the same rows of the mask), top to bottom, ``band_rows`` rows each (the last
may be shorter). No frame is ever larger than about :data:`BAND_BYTES`, so no
image size needs a server setting.

The server then answers with any number of ``progress`` frames (``stage``, one
of :class:`Stage`; ``done`` and ``total`` (per mille while restoring),
``text``, and ``position`` (jobs ahead of this one) while queued), then either
one ``error`` frame (``code``, ``message``) or one ``result`` frame (``width``,
``height``, ``channels``, ``dtype``, ``band_rows``, the ``plan`` and the
``steps`` run) followed by the result's ``rows`` frames. A result can be
larger than the request (an up-sampling step): its ``width``/``height`` say so,
and the selection mask is then not applied. A client cancels by sending a
``cancel`` frame or simply by closing the connection.

A ``diagnose`` request (version 3 and later) asks what is wrong with a layer (or the selected part of
it): ``width``, ``height``, ``channels`` and ``dtype`` as for ``restore``, and optionally
``photo_width``/``photo_height``, the size of the whole layer a selection is part of (the
resolution is judged on it: a small selection of a large photo is not a small photo). The diagnosis reads a
sub-sampled copy and a few full-resolution crops, never the whole layer, so the server answers
``continue`` with ``regions``: a list of ``[x, y, width, height, step]``, each the pixels
``x + i * step`` (``i < width``) of the rows ``y + j * step`` (``j < height``). The client sends each
region, in order, as ``rows`` frames (``region``, ``y``, ``rows``; ``y`` counts the region's own rows),
``band_rows`` rows at a time, and the server answers one ``error`` frame or one ``diagnosis`` frame:
``problems`` (each ``intent``, ``severity`` 0..1, ``reason``, ``instruction``, ``strength``),
``suggestion`` (a sentence), ``instruction`` (the fix; empty when nothing is worth fixing), ``clean``,
``width``, ``height`` and ``seconds``. A diagnosis does not wait behind restore jobs.

A server checks ``version`` on ``restore`` and ``diagnose`` and refuses another with ``version``;
:func:`ensure_server` replaces a running server whose ``ping`` reports another version, so a plug-in
and a server from different releases never exchange requests the other does not know.

The server publishes where it listens in a state file (JSON: ``port``,
``token``, ``pid``), readable by the user only; ``INSTRUCTIR_SERVER_STATE``
overrides its location.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import struct
import subprocess
import sys
import time

PROTOCOL_VERSION = 3
MAGIC = b"IIR1"
_FRAME = struct.Struct(">4sIQ")
HOST = "127.0.0.1"
MAX_HEADER_BYTES = 1 << 20
#: Target size of one ``rows`` frame; a band is at least one row, whatever the width.
BAND_BYTES = 8 << 20
MAX_INSTRUCTION_CHARS = 2000
MODES = ("instructir", "spire")
MAX_DIFFUSION_STEPS = 1000
DTYPE_SIZES = {"u8": 1, "u16": 2, "f32": 4}
STATE_ENV = "INSTRUCTIR_SERVER_STATE"


class Stage(str, enum.Enum):
    """What a ``progress`` frame reports."""

    LOADING = "loading"      # loading the model (first job only)
    QUEUED = "queued"        # waiting behind other jobs; ``position`` says how many
    RESTORING = "restoring"  # ``done``/``total``: per mille of the job
    WORKING = "working"      # a heartbeat with nothing new to measure


class Code(str, enum.Enum):
    """Error codes of the protocol itself; engine errors travel with their own ``StudioError.code``."""

    BAD_REQUEST = "bad-request"
    UNAUTHORIZED = "unauthorized"
    VERSION = "version"
    TOO_LARGE = "too-large"
    CANCELLED = "cancelled"
    FAILED = "failed"


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


def recv_into(sock: socket.socket, view: memoryview, deadline: float | None = None) -> None:
    """Fill ``view`` from the socket; past ``deadline`` (``time.monotonic()``) raise ``socket.timeout``."""
    got, n = 0, view.nbytes
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")  # noqa: UP041 - TimeoutError only since 3.10 (GIMP may be older)
            sock.settimeout(left)
        k = sock.recv_into(view[got:], min(n - got, 1 << 22))
        if k == 0:
            raise ConnectionClosed("connection closed mid-frame" if got else "connection closed")
        got += k


def recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytearray:
    buf = bytearray(n)
    recv_into(sock, memoryview(buf), deadline)
    return buf


def recv_header(sock: socket.socket, max_header: int = MAX_HEADER_BYTES, max_payload: int = 1 << 20,
                deadline: float | None = None) -> tuple:
    """Read a frame's header; returns ``(header dict, payload length)`` with the payload still unread."""
    try:
        head = recv_exact(sock, _FRAME.size, deadline)
    except ConnectionClosed:
        raise ConnectionClosed("connection closed") from None
    magic, hlen, plen = _FRAME.unpack(head)
    if magic != MAGIC:
        raise ProtocolError("not an InstructIR engine frame")
    if hlen > max_header:
        raise RequestTooLarge(f"header of {hlen} bytes is over the limit of {max_header}")
    if plen > max_payload:
        raise RequestTooLarge(f"a frame of {plen / 1e6:.1f} MB is over the limit of {max_payload / 1e6:.1f} MB")
    try:
        header = json.loads(bytes(recv_exact(sock, hlen, deadline)).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    return header, plen


def recv_message(sock: socket.socket, max_header: int = MAX_HEADER_BYTES, max_payload: int = 1 << 20) -> tuple:
    header, plen = recv_header(sock, max_header, max_payload)
    return header, recv_exact(sock, plen)


def error_frame(code, message: str) -> dict:
    return {"type": "error", "code": getattr(code, "value", code), "message": message}


def raise_error(reply: dict) -> None:
    raise ServerError(str(reply.get("code", Code.FAILED.value)), str(reply.get("message", "server error")))


# --- images -------------------------------------------------------------------


def image_nbytes(width: int, height: int, channels: int, dtype: str) -> int:
    return int(width) * int(height) * int(channels) * DTYPE_SIZES[dtype]


def row_bytes(header: dict) -> tuple:
    """(pixel bytes, mask bytes) of one row of a restore request or result."""
    w, c = int(header["width"]), int(header["channels"])
    mask = header.get("mask_dtype")
    return w * c * DTYPE_SIZES[header["dtype"]], (w * DTYPE_SIZES[mask] if mask else 0)


def band_rows(width: int, bytes_per_row: int) -> int:
    """Rows per ``rows`` frame: about :data:`BAND_BYTES` each, at least one row."""
    return max(1, BAND_BYTES // max(1, int(bytes_per_row)))


def bands(height: int, rows: int):
    """``(y, n)`` of the bands covering ``height`` rows, ``rows`` at a time."""
    return [(y, min(rows, height - y)) for y in range(0, int(height), max(1, int(rows)))]


def _check_layer(header: dict, kind: str) -> tuple[int, int]:
    """The layer fields every pixel request has (size, channels, dtype); returns (width, height)."""
    try:
        w, h, c = int(header["width"]), int(header["height"]), int(header["channels"])
        dtype = header["dtype"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"{kind} request without a valid {exc}") from None
    if dtype not in DTYPE_SIZES:
        raise ProtocolError(f"unknown dtype {dtype!r} (u8, u16 or f32)")
    if c not in (1, 2, 3, 4) or w < 1 or h < 1:
        raise ProtocolError(f"bad image size {w}x{h}x{c}")
    return w, h


def check_restore_request(header: dict) -> None:
    """Validate a ``restore`` header (sizes, types, ranges); raises ProtocolError."""
    _check_layer(header, "restore")
    try:
        instruction = header["instruction"]
    except KeyError as exc:
        raise ProtocolError(f"restore request without a valid {exc}") from None
    if not isinstance(instruction, str) or len(instruction) > MAX_INSTRUCTION_CHARS:
        raise ProtocolError(f"the instruction must be text of at most {MAX_INSTRUCTION_CHARS} characters")
    strength = header.get("strength", 1.0)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= float(strength) <= 1.0:
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
    mask_dtype = header.get("mask_dtype")
    if mask_dtype is not None and mask_dtype not in DTYPE_SIZES:
        raise ProtocolError(f"unknown mask dtype {mask_dtype!r}")


def check_diagnose_request(header: dict) -> None:
    """Validate a ``diagnose`` header; raises ProtocolError."""
    w, h = _check_layer(header, "diagnose")
    whole = header.get("photo_width"), header.get("photo_height")
    if whole != (None, None):
        if any(isinstance(v, bool) or not isinstance(v, int) for v in whole) or whole[0] < w or whole[1] < h:
            raise ProtocolError("photo_width and photo_height must be whole numbers at least width and height")


def subsample(row, pixel_bytes: int, start: int, step: int, count: int) -> bytes:
    """Pixels ``start``, ``start + step``, ... (``count`` of them) of one row of interleaved pixels.

    Plain byte slicing (no numpy): the GIMP plug-in reads a region's rows whole and keeps every
    ``step``-th pixel, as the engine's diagnosis does (taking pixels, not averaging them, keeps
    the photo's noise in the copy).
    """
    view = memoryview(row).cast("B")
    if step == 1:
        return bytes(view[start * pixel_bytes:(start + count) * pixel_bytes])
    out = bytearray(count * pixel_bytes)
    stride = step * pixel_bytes
    for b in range(pixel_bytes):
        part = view[start * pixel_bytes + b::stride][:count]
        if len(part) != count:
            raise ValueError(f"the row holds {len(part)} of the {count} pixels asked for")
        out[b::pixel_bytes] = part
    return bytes(out)


# --- the diagnosis, as the plug-in's dialog shows it ------------------------------


def diagnosis_text(reply: dict, subject: str = "layer") -> str:
    """The dialog's label for a ``diagnosis`` reply: the sentence, each problem worth fixing with its reason,
    and the suggested instruction. ``subject`` names what was looked at ("layer", "selection")."""
    sentence = str(reply.get("suggestion") or "")
    if sentence.startswith("This photo "):
        sentence = f"This {subject} " + sentence[len("This photo "):]
    lines = [sentence]
    for p in reply.get("problems") or []:
        severity = float(p.get("severity") or 0.0)
        if severity >= 0.3:
            lines.append(f"\u2022 {p.get('intent')} ({severity:.0%}): {p.get('reason')}")
    if reply.get("instruction"):
        lines.append(f"Suggested: {reply['instruction']}")
    return "\n".join(line for line in lines if line)


def prefill(current: str | None, reply: dict, last_prefill: str | None = None) -> str | None:
    """The instruction to put in the dialog's field, or None to leave the field alone.

    The suggestion goes in when the field is empty, or when it still holds what an earlier
    diagnosis put there (``last_prefill``: GIMP remembers the last values, and an untouched
    suggestion for another photo is not the user's own words). Text the user typed stays.
    """
    suggestion = str(reply.get("instruction") or "").strip()
    text = " ".join((current or "").split())
    if not suggestion or text == suggestion:
        return None
    if not text or (last_prefill and text == " ".join(last_prefill.split())):
        return suggestion
    return None


# --- state file ---------------------------------------------------------------


def state_path(default: str | os.PathLike | None = None) -> str | None:
    """The state file: ``$INSTRUCTIR_SERVER_STATE`` when set, else ``default``."""
    return os.environ.get(STATE_ENV) or (os.fspath(default) if default else None)


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


def pid_alive(pid) -> bool:
    """Whether process ``pid`` exists (POSIX; elsewhere: assume it does)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    def _header(self, header: dict) -> dict:
        return dict(header, token=self.token, version=PROTOCOL_VERSION)

    def _ask(self, sock: socket.socket, header: dict) -> dict:
        """Send a request (token and version added); returns the reply's header, its payload read and dropped."""
        send_message(sock, self._header(header))
        return _next_reply(sock)

    def _begin(self, sock: socket.socket, header: dict) -> dict:
        """Send a pixel request's header; returns the server's ``continue`` reply, or raises its refusal.

        The server checks token, sizes and memory first, so a refusal arrives before any pixel is read.
        """
        reply = self._ask(sock, header)
        if reply.get("type") != "continue":
            raise_error(reply)
        return reply

    def call(self, header: dict) -> dict:
        """Send a request without pixels (ping, shutdown); returns the reply header."""
        with self._connect() as sock:
            reply = self._ask(sock, header)
            if reply.get("type") == "error":
                raise_error(reply)
            return reply

    def ping(self) -> dict:
        return self.call({"type": "ping"})

    def shutdown(self) -> None:
        self.call({"type": "shutdown"})

    def diagnose(self, read, width: int, height: int, channels: int, dtype: str,
                 photo_size: tuple | None = None) -> dict:
        """What is wrong with an image; returns the ``diagnosis`` reply (``suggestion``, ``instruction``...).

        ``read(x, y, width, height, step)`` gives the pixels ``x + i * step`` of the rows ``y + j * step``
        (``width`` x ``height`` of them, interleaved like ``restore``'s); it is called only for the parts
        the server asks for, a band at a time, so a caller never reads the whole image. ``photo_size``:
        (width, height) of the whole layer when the image is a selection of it.
        """
        header = {"type": "diagnose", "width": int(width), "height": int(height), "channels": int(channels),
                  "dtype": dtype}
        if photo_size:
            header["photo_width"], header["photo_height"] = int(photo_size[0]), int(photo_size[1])
        pixel = int(channels) * DTYPE_SIZES[dtype]
        with self._connect() as sock:
            reply = self._begin(sock, header)
            regions = reply.get("regions") or []
            per_region = reply.get("band_rows") or [band_rows(r[2], r[2] * pixel) for r in regions]
            _send_bands(sock, (({"type": "rows", "region": index, "y": j, "rows": n}, read(x, y + j * step, w, n, step))
                               for index, (x, y, w, h, step) in enumerate(regions)
                               for j, n in bands(h, max(1, int(per_region[index])))))
            reply = _next_reply(sock)
            if reply.get("type") == "error":
                raise_error(reply)
            if reply.get("type") != "diagnosis":
                raise ProtocolError(f"unexpected {reply.get('type')!r} frame from the server")
            return reply

    def restore(self, pixels, width: int, height: int, channels: int, dtype: str, instruction: str, *,
                strength: float = 1.0, strength_mode: str = "scale", mask=None, mask_dtype: str | None = None,
                model: str | None = None, device: str | None = None, mode: str | None = None,
                semantic: str | None = None, diffusion_steps: int | None = None, on_progress=None,
                should_cancel=None, on_result=None, on_rows=None) -> tuple:
        """Restore an image; returns ``(result header, result pixels)``.

        ``pixels`` (and ``mask``) are either bytes-like holding the whole image or a function
        ``read(y, rows)`` giving those rows, called band by band as they are sent, so a caller
        never needs the whole image in memory. The result arrives the same way: ``on_result(header)``
        sees the result header first, then ``on_rows(y, rows, data)`` each band; without
        ``on_rows`` the bands are joined and returned. ``on_progress(msg)`` sees every progress
        frame; ``should_cancel()``, polled between frames, makes the client send ``cancel`` and stop.
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
        pix_row, mask_row = row_bytes(header)
        read_pixels = _reader(pixels, pix_row)
        read_mask = _reader(mask, mask_row) if mask is not None else None
        with self._connect() as sock:
            reply = self._begin(sock, header)
            _send_bands(sock, (({"type": "rows", "y": y, "rows": n}, read_pixels(y, n),
                                read_mask(y, n) if read_mask else None)
                               for y, n in bands(height, int(reply.get("band_rows") or 1))))
            return self._receive(sock, on_progress, should_cancel, on_result, on_rows)

    def _receive(self, sock, on_progress, should_cancel, on_result, on_rows) -> tuple:
        while True:
            if should_cancel is not None and should_cancel():
                try:
                    send_message(sock, {"type": "cancel"})
                except OSError:
                    pass
                raise ServerError(Code.CANCELLED.value, "cancelled")
            reply, plen = recv_header(sock)
            kind = reply.get("type")
            if kind == "progress":
                recv_exact(sock, plen)
                if on_progress is not None:
                    on_progress(reply)
                continue
            if kind == "error":
                recv_exact(sock, plen)
                raise_error(reply)
            if kind != "result":
                raise ProtocolError(f"unexpected {kind!r} frame from the server")
            break
        if on_result is not None:
            on_result(reply)
        pix_row, _ = row_bytes(reply)
        height = int(reply["height"])
        joined = bytearray() if on_rows is None else None
        expected = 0
        while expected < height:
            head, plen = recv_header(sock, max_payload=max(BAND_BYTES, pix_row) * 2)
            y, n = int(head.get("y", -1)), int(head.get("rows", 0))
            if head.get("type") != "rows" or y != expected or n < 1 or plen != n * pix_row:
                raise ProtocolError("the server sent a malformed result band")
            data = recv_exact(sock, plen)
            if joined is None:
                on_rows(y, n, data)
            else:
                joined += data
            expected += n
        return reply, joined


def _next_reply(sock: socket.socket) -> dict:
    """The header of the server's next frame, its (small) payload read and dropped."""
    reply, plen = recv_header(sock)
    recv_exact(sock, plen)
    return reply


def _send_bands(sock: socket.socket, frames) -> None:
    """Send the ``rows`` frames ``frames`` yields (``(header, *payload)``, read as they are sent).

    A server that refuses mid-way (a malformed band) answers an error and closes, so the next send
    fails: the error it left is read and raised instead of the bare OSError.
    """
    try:
        for header, *payload in frames:
            send_message(sock, header, *payload)
    except OSError:
        reply, _ = recv_header(sock)
        if reply.get("type") == "error":
            raise_error(reply)
        raise


def _reader(source, row: int):
    """A ``read(y, rows)`` for ``source``: a function already, or bytes-like holding all rows."""
    if callable(source):
        return source
    view = memoryview(source).cast("B")
    return lambda y, n: view[y * row:(y + n) * row]


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


def lock_path(state_file: str | os.PathLike) -> str:
    """The lock a running server holds for its whole life, next to its state file."""
    return os.fspath(state_file) + ".lock"


def lock_held(state_file: str | os.PathLike | None) -> bool | None:
    """Whether a server holds the lock of ``state_file`` (None where that cannot be told: no fcntl)."""
    if not state_file:
        return False
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(lock_path(state_file), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may have got
    return False


def server_alive(state_file: str | os.PathLike | None) -> dict | None:
    """The state of a server that exists but did not answer (it holds the lock), else None."""
    held = lock_held(state_file)
    state = read_state(state_file) or ({} if held else None)
    if held is None:
        held = state is not None and pid_alive(state.get("pid"))
    return state if held else None


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


#: ``instructir serve`` exits with this when another server holds the state file's lock.
EXIT_ALREADY_RUNNING = 3


def ensure_server(state_file: str | os.PathLike, python: str | None, *, engine_path: str | None = None,
                  args: list | None = None, log_file: str | os.PathLike | None = None, timeout: float = 120.0,
                  on_wait=None) -> Client:
    """A client for a live server: the one in ``state_file``, else one started with ``python``.

    A server from another protocol version is asked to stop and replaced. A server whose
    process lives but does not answer yet is waited for, never doubled. ``on_wait(seconds)``
    is called while waiting for a server to come up.
    """
    client = connect(state_file)
    if client is not None:
        if _same_version(client):
            return client
        try:
            client.shutdown()  # an engine server from before an upgrade: replace it
        except (OSError, ProtocolError, ServerError):
            pass
        _wait_gone(state_file, client.pid, 10.0)
    start = time.monotonic()

    def spawn():
        _check_python(python)
        try:
            return spawn_server(python, state_file, engine_path=engine_path, args=args, log_file=log_file)
        except OSError as exc:
            raise ServerUnavailable(f"cannot start the engine server with {python}: {exc}"
                                    + _log_hint(log_file)) from exc

    proc = spawn() if server_alive(state_file) is None else None  # else one is there, starting: wait for it
    spawns = 1
    while time.monotonic() - start < timeout:
        client = connect(state_file)
        if client is not None:
            return client
        code = proc.poll() if proc is not None else None
        if code is not None:
            if code != EXIT_ALREADY_RUNNING:
                raise ServerUnavailable(f"the engine server exited with code {code} while starting"
                                        + _log_tail(log_file) + _log_hint(log_file))
            proc = None  # another one won the race for the state file: wait for that one
        if proc is None and spawns < 3 and server_alive(state_file) is None:
            # The one we waited for is gone (it lost a race, or was a replaced server still letting go of
            # its lock when we looked): start ours.
            proc, spawns = spawn(), spawns + 1
        if on_wait is not None:
            on_wait(time.monotonic() - start)
        time.sleep(0.2)
    alive = server_alive(state_file)
    if alive is not None:
        raise ServerUnavailable(f"the engine server (pid {alive.get('pid')}) runs but did not answer within "
                                f"{timeout:.0f} s; stop it with 'instructir serve --stop' (or end that process) "
                                "and try again" + _log_hint(log_file))
    raise ServerUnavailable(f"the engine server did not come up within {timeout:.0f} s" + _log_tail(log_file)
                            + _log_hint(log_file))


def _same_version(client: Client) -> bool:
    try:
        return int(client.ping().get("version", 0)) == PROTOCOL_VERSION
    except (OSError, ProtocolError, ServerError, TypeError, ValueError):
        return False


def _wait_gone(state_file, pid, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (read_state(state_file) is not None and pid_alive(pid)):
        time.sleep(0.1)


def _check_python(python: str | None) -> None:
    if not python:
        raise ServerUnavailable("no InstructIR engine server is running and no Python interpreter was recorded "
                                "to start one; run 'instructir gimp-install' or start 'instructir serve'")
    if not os.path.exists(python):
        raise ServerUnavailable(f"the Python interpreter recorded at install time, {python}, is gone; "
                                "run 'instructir gimp-install' again from the environment that has the engine")


def _log_hint(log_file) -> str:
    return f" (the engine server's log is {log_file})" if log_file else ""


def _log_tail(log_file, lines: int = 6) -> str:
    if not log_file:
        return ""
    try:
        with open(log_file, encoding="utf-8", errors="replace") as fh:
            tail = [line.rstrip() for line in fh.readlines()[-lines:] if line.strip()]
    except OSError:
        return ""
    return (":\n" + "\n".join(tail) + "\n") if tail else ""


if __name__ == "__main__":  # pragma: no cover - a quick manual probe: python protocol.py STATE_FILE
    c = connect(sys.argv[1] if len(sys.argv) > 1 else state_path())
    print(c.ping() if c else "no server")
