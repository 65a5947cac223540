"""The engine server and its wire protocol (engine/serve/server.py, engine/serve/protocol.py)."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fake_server import Factory, an_older_server, client_of, make_server

from engine.serve import protocol
from engine.serve.protocol import Code, ProtocolError, RequestTooLarge, ServerError, Stage
from engine.serve.server import AUTH_TIMEOUT, EngineServer
from engine.serve.state import AlreadyRunningError, write_state

REPO = Path(__file__).resolve().parent.parent

#: Steps keep their correction in half precision (engine.edit.runners.CORRECTION_DTYPE).
HALF = 2.0**-11


# --- protocol -------------------------------------------------------------------


def test_frames_round_trip_with_multi_part_payloads():
    a, b = socket.socketpair()
    with a, b:
        pixels = np.arange(24, dtype="<f4")
        protocol.send_message(a, {"type": "x", "n": 1}, pixels.tobytes(), b"\x01\x02")
        header, payload = protocol.recv_message(b)
        assert header == {"type": "x", "n": 1}
        assert bytes(payload) == pixels.tobytes() + b"\x01\x02"


def test_receiver_refuses_oversized_frames_before_reading_them():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">4sIQ", protocol.MAGIC, 10, 1 << 40))
        with pytest.raises(RequestTooLarge, match="over the limit of 1.0 MB"):
            protocol.recv_header(b, max_payload=1 << 20)
        a.sendall(struct.pack(">4sIQ", protocol.MAGIC, 1 << 30, 0))
        with pytest.raises(RequestTooLarge):
            protocol.recv_header(b)


def test_receiver_refuses_garbage():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"GET / HTTP/1.1\r\n\r\n")
        with pytest.raises(ProtocolError, match="not an InstructIR"):
            protocol.recv_header(b)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">4sIQ", protocol.MAGIC, 3, 0) + b"[1]")
        with pytest.raises(ProtocolError, match="JSON object"):
            protocol.recv_header(b)


def _restore_header(**kw):
    h = {"type": "restore", "instruction": "remove the noise", "width": 4, "height": 3, "channels": 4,
         "dtype": "u8"}
    h.update(kw)
    return h


def test_restore_requests_are_validated():
    protocol.check_restore_request(_restore_header())
    protocol.check_restore_request(_restore_header(dtype="f32", mask_dtype="f32"))
    for bad in [_restore_header(dtype="f64"), _restore_header(channels=5), _restore_header(strength=1.5),
                _restore_header(strength=True), _restore_header(instruction="x" * 5000),
                _restore_header(strength_mode="?"), _restore_header(width=0), _restore_header(mask_dtype="f64"),
                {"type": "restore"}]:
        with pytest.raises(ProtocolError):
            protocol.check_restore_request(bad)


def test_bands_cover_the_image_in_frames_of_bounded_size():
    assert protocol.bands(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert protocol.band_rows(100, 400) == protocol.BAND_BYTES // 400
    assert protocol.band_rows(10**9, 4 * 10**9) == 1  # a row wider than a band still travels, alone


def test_state_file_is_user_only(tmp_path, monkeypatch):
    path = tmp_path / "state" / "server.json"
    write_state(path, {"port": 1234, "token": "t"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert protocol.read_state(path)["port"] == 1234
    os.chmod(path, 0o644)  # a stray wider mode is not kept when the file is replaced
    write_state(path, {"port": 1235, "token": "t"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and protocol.read_state(path)["port"] == 1235
    assert [p.name for p in path.parent.iterdir()] == ["server.json"]  # no temp file left behind
    path.write_text("{not json")
    assert protocol.read_state(path) is None
    monkeypatch.setenv(protocol.STATE_ENV, str(tmp_path / "elsewhere.json"))
    assert protocol.state_path("/default.json") == str(tmp_path / "elsewhere.json")
    from engine.serve.server import default_state_file

    assert default_state_file() == tmp_path / "elsewhere.json"


# --- server with a fake restorer --------------------------------------------------


@pytest.fixture
def server(tmp_path):
    factory = Factory()
    srv = make_server(tmp_path, restorer_factory=factory)
    srv.factory = factory
    with srv:
        yield srv


def _u8(h=12, w=10, c=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def test_server_publishes_loopback_port_and_token(server):
    state = json.loads(server.state_file.read_text())
    assert state["port"] == server.port and state["pid"] == os.getpid()
    assert len(state["token"]) == 64
    assert server.address[0] == "127.0.0.1"
    assert stat.S_IMODE(server.state_file.stat().st_mode) == 0o600
    assert client_of(server).ping()["type"] == "pong"


def test_requests_without_the_token_are_refused(server):
    for token in ("", "0" * 64, None):
        state = {"port": server.port, "token": token or ""}
        with pytest.raises(ServerError) as err:
            protocol.Client(state).restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise")
        assert err.value.code == Code.UNAUTHORIZED
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # no token field at all
        protocol.send_message(sock, {"type": "ping"})
        reply, _ = protocol.recv_message(sock)
        assert reply["code"] == Code.UNAUTHORIZED
    assert server.factory.made == [] and server.jobs_done == 0  # nothing ran
    assert client_of(server).ping()["type"] == "pong"  # and the server is still up


def test_restore_u8_rgba_keeps_alpha_and_streams_progress(server):
    img = _u8()
    seen = []
    reply, data = client_of(server).restore(img.tobytes(), 10, 12, 4, "u8", "remove the noise",
                                            on_progress=seen.append)
    out = np.frombuffer(data, np.uint8).reshape(12, 10, 4)
    expected = np.rint((img[..., :3] / 255 * 0.5 + 0.25) * 255)
    assert np.abs(out[..., :3].astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(out[..., 3], img[..., 3])
    assert reply["steps"][0]["intent"] == "noise" and reply["channels"] == 4 and not reply["resized"]
    restoring = [m for m in seen if m.get("stage") == Stage.RESTORING]
    assert restoring and restoring[-1]["done"] == restoring[-1]["total"]


def test_a_layer_travels_in_bands_both_ways_and_is_read_band_by_band(server, monkeypatch):
    monkeypatch.setattr(protocol, "BAND_BYTES", 10 * 4 * 5)  # 5 rows of 10 RGBA u8 pixels per frame
    img = _u8(h=23)
    asked, got, heads = [], {}, []

    def read(y, n):
        asked.append((y, n))
        return img[y:y + n].tobytes()

    reply, joined = client_of(server).restore(read, 10, 23, 4, "u8", "remove the noise", on_result=heads.append,
                                              on_rows=lambda y, n, data: got.__setitem__(y, bytes(data)))
    assert joined is None and heads[0]["band_rows"] == 5 and heads[0] is reply
    assert asked == [(0, 5), (5, 5), (10, 5), (15, 5), (20, 3)]  # never the whole image at once
    out = np.frombuffer(b"".join(got[y] for y in sorted(got)), np.uint8).reshape(23, 10, 4)
    assert sorted(got) == [0, 5, 10, 15, 20]
    np.testing.assert_array_equal(out[..., 3], img[..., 3])
    assert np.abs(out[..., :3].astype(int) - np.rint((img[..., :3] / 255 * 0.5 + 0.25) * 255)).max() <= 1


def test_mask_blends_and_leaves_unselected_pixels_exact(server):
    rng = np.random.default_rng(1)
    img = rng.random((16, 20, 4), dtype=np.float32) * 1.2 - 0.1  # some values outside [0, 1]
    mask = np.zeros((16, 20), np.float32)
    mask[4:12, 5:15] = 1.0
    mask[4:12, 15] = 0.5
    reply, data = client_of(server).restore(img.tobytes(), 20, 16, 4, "f32", "remove the noise",
                                            mask=mask.tobytes(), mask_dtype="f32")
    out = np.frombuffer(data, "<f4").reshape(16, 20, 4)
    np.testing.assert_array_equal(out[mask == 0], img[mask == 0])  # bit for bit, out-of-range values too
    shown = np.clip(img[..., :3], 0, 1)
    excess = img[..., :3] - shown
    full = shown * 0.5 + 0.25 + excess  # the displayable part restored, the rest carried through
    np.testing.assert_allclose(out[mask == 1][:, :3], full[mask == 1], atol=HALF)
    half = img[4:12, 15, :3] + 0.5 * (full[4:12, 15] - img[4:12, 15, :3])
    np.testing.assert_allclose(out[4:12, 15, :3], half, atol=HALF)
    np.testing.assert_array_equal(out[..., 3], img[..., 3])


def test_linear_float_values_far_above_one_survive(server):
    """HDR / linear float layers: a value of 25 is not clipped to 1 (the excess over 1 is carried through)."""
    img = np.full((8, 8, 3), 0.2, np.float32)
    img[2:4, 2:6] = 25.0
    img[6, :, 1] = -0.5
    img[0, 0] = np.inf
    _, data = client_of(server).restore(img.tobytes(), 8, 8, 3, "f32", "remove the noise")
    out = np.frombuffer(data, "<f4").reshape(8, 8, 3)
    np.testing.assert_allclose(out[2:4, 2:6], 24.0 + 1.0 * 0.5 + 0.25, atol=HALF)  # restored highlight + excess
    assert out[2:4, 2:6].min() > 24 and np.isinf(out[0, 0]).all()
    np.testing.assert_allclose(out[6, :, 1], -0.5 + 0.25, atol=HALF)  # below black keeps its offset
    np.testing.assert_allclose(out[1, 1], 0.2 * 0.5 + 0.25, atol=HALF)  # ordinary pixels are restored as usual


def test_gray_u16_and_strength(server):
    img = np.random.default_rng(2).integers(0, 65536, (8, 9, 2), dtype=np.uint16)
    client = client_of(server)
    _, full = client.restore(img.tobytes(), 9, 8, 2, "u16", "remove the noise")
    _, half = client.restore(img.tobytes(), 9, 8, 2, "u16", "remove the noise", strength=0.5)
    full = np.frombuffer(full, "<u2").reshape(8, 9, 2).astype(float)
    half = np.frombuffer(half, "<u2").reshape(8, 9, 2).astype(float)
    np.testing.assert_array_equal(full[..., 1], img[..., 1])
    levels = 65535 * HALF + 1  # the half-precision correction, then rounding
    np.testing.assert_allclose(full[..., 0], np.rint((img[..., 0] / 65535 * 0.5 + 0.25) * 65535), atol=levels)
    np.testing.assert_allclose(half[..., 0], (img[..., 0] + full[..., 0]) / 2, atol=levels)


def test_strength_scales_instruction_degree_or_overrides_it(server):
    img = np.full((4, 4, 3), 0.2, np.float32)
    client = client_of(server)

    def run(**kw):
        reply, data = client.restore(img.tobytes(), 4, 4, 3, "f32", "remove the noise a bit", **kw)
        return reply["steps"][0]["strength"], float(np.frombuffer(data, "<f4")[0])

    # fake 'noise' maps 0.2 -> 0.35: delta 0.15; "a bit" reads as 0.5
    assert run() == pytest.approx((0.5, 0.275), abs=HALF)
    assert run(strength=0.5) == pytest.approx((0.25, 0.2375), abs=HALF)
    assert run(strength=1.0, strength_mode="override") == pytest.approx((1.0, 0.35), abs=HALF)
    # the strength is set before the network runs: one network call per step, never a second "refresh" pass
    calls = server.factory.made[0][2].calls
    run(strength=0.3)
    assert server.factory.made[0][2].calls == calls + 1


def test_compound_instruction_and_nothing_to_do(server):
    img = np.full((4, 4, 3), 0.2, np.float32)
    reply, _ = client_of(server).restore(img.tobytes(), 4, 4, 3, "f32", "remove the noise and then brighten it")
    assert [s["intent"] for s in reply["steps"]] == ["noise", "low-light"]
    reply, _ = client_of(server).restore(img.tobytes(), 4, 4, 3, "f32", "remove the noise and make me a sandwich")
    assert [p["actionable"] for p in reply["plan"]] == [True, False]  # the plug-in reports the skipped part
    with pytest.raises(ServerError) as err:
        client_of(server).restore(img.tobytes(), 4, 4, 3, "f32", "hello")
    from engine.edit.session import NothingToDoError

    assert err.value.code == NothingToDoError.code and "not a restoration request" in str(err.value)


def test_model_is_loaded_once_and_reused(server):
    client = client_of(server)
    for _ in range(3):
        client.restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise")
    assert len(server.factory.made) == 1 and server.loads == 1 and server.jobs_done == 3
    client.restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise", model="other")
    assert [m[0] for m in server.factory.made] == ["fake", "other"]


def test_a_layer_memory_cannot_hold_is_refused_before_any_pixel_is_read(tmp_path):
    free = {"bytes": 10**6}
    with EngineServer(state_file=tmp_path / "s.json", restorer_factory=Factory(), preload=False,
                      memory_available=lambda: free["bytes"], max_pixels=10**6) as srv:
        client = client_of(srv)
        asked = []
        for _ in range(3):  # refused before the pixels are read: the client always gets the reason
            with pytest.raises(ServerError, match=r"400 x 400 .*needs about .* GB of memory") as err:
                client.restore(lambda y, n: asked.append(y), 400, 400, 4, "u8", "remove the noise")
            assert err.value.code == Code.TOO_LARGE
        with pytest.raises(ServerError, match="more than the engine's limit") as err:
            client.restore(lambda y, n: asked.append(y), 2000, 1000, 4, "u8", "remove the noise")
        assert asked == []
        free["bytes"] = 10**9  # the same layer goes through once memory is there, with no server flag
        reply, _ = client.restore(_u8(400, 400).tobytes(), 400, 400, 4, "u8", "remove the noise")
        assert reply["width"] == 400


def test_malformed_requests_are_refused(server):
    client = client_of(server)
    state = protocol.read_state(server.state_file)

    def raw(header, payload=b""):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            protocol.send_message(sock, dict(header, token=state["token"], version=protocol.PROTOCOL_VERSION),
                                  payload)
            return protocol.recv_message(sock)[0]

    assert "carries no payload" in raw({"type": "ping"}, b"x")["message"]
    assert raw({"type": "restore", "instruction": "x", "width": 10, "height": 10, "channels": 9,
                "dtype": "u8"})["code"] == Code.BAD_REQUEST
    assert raw({"type": "format-disk"})["code"] == Code.BAD_REQUEST
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # an old (v1) plug-in: told to reinstall
        protocol.send_message(sock, {"type": "restore", "token": state["token"], "version": 1,
                                     "instruction": "x", "width": 1, "height": 1, "channels": 3, "dtype": "u8"})
        reply = protocol.recv_message(sock)[0]
        assert reply["code"] == Code.VERSION and "gimp-install" in reply["message"]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # rows out of order
        protocol.send_message(sock, dict(_restore_header(width=2, height=4, channels=3), token=state["token"],
                                         version=protocol.PROTOCOL_VERSION))
        assert protocol.recv_message(sock)[0]["type"] == "continue"
        protocol.send_message(sock, {"type": "rows", "y": 2, "rows": 2}, b"\0" * 12)
        assert protocol.recv_message(sock)[0]["code"] == Code.BAD_REQUEST
    assert client.ping()["type"] == "pong" and server.jobs_done == 0


def _wait(pred, timeout=10.0):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if pred():
            return True
        time.sleep(0.02)
    return False


def _start_job(srv, img, **kw):
    """A raw restore connection whose job has started (its first progress frame arrived)."""
    state = protocol.read_state(srv.state_file)
    sock = socket.create_connection(("127.0.0.1", srv.port))
    h, w, c = img.shape
    protocol.send_message(sock, _restore_header(width=w, height=h, channels=c, token=state["token"],
                                                version=protocol.PROTOCOL_VERSION, **kw))
    assert protocol.recv_message(sock)[0]["type"] == "continue"
    protocol.send_message(sock, {"type": "rows", "y": 0, "rows": h}, img.tobytes())
    header, _ = protocol.recv_message(sock)
    assert header["type"] == "progress"
    return sock


def test_a_client_that_disconnects_cancels_its_job_and_the_server_survives(tmp_path):
    factory = Factory(delay=3.0)
    with EngineServer(state_file=tmp_path / "s.json", restorer_factory=factory, preload=False) as srv:
        img = _u8()
        sock = _start_job(srv, img)
        sock.close()  # GIMP killed the plug-in (the user cancelled)
        assert _wait(lambda: factory.made and factory.made[0][2].cancelled.is_set())
        assert srv.jobs_done == 0
        factory.delay = 0
        factory.made[0][2].delay = 0
        reply, _ = client_of(srv).restore(img.tobytes(), 10, 12, 4, "u8", "remove the noise")
        assert reply["type"] == "result" and srv.jobs_done == 1


def test_a_cancel_frame_cancels(tmp_path):
    factory = Factory(delay=3.0)
    with EngineServer(state_file=tmp_path / "s.json", restorer_factory=factory, preload=False) as srv:
        seen = []
        with pytest.raises(ServerError, match="cancelled"):
            client_of(srv).restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise", on_progress=seen.append,
                                   should_cancel=lambda: len(seen) >= 1)
        assert _wait(lambda: factory.made[0][2].cancelled.is_set())


def test_idle_connections_neither_block_jobs_nor_keep_the_server_alive(tmp_path):
    """Load test: 64 idle TCP connections (no token) held open while jobs run: every job passes."""
    factory = Factory(delay=0.3)
    with EngineServer(state_file=tmp_path / "s.json", restorer_factory=factory, preload=False) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(64)]
        try:
            client = client_of(srv)
            t = time.monotonic()
            for _ in range(3):
                reply, _ = client.restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise")
                assert reply["type"] == "result"
            assert client.ping()["type"] == "pong" and srv.jobs_done == 3
            assert _wait(lambda: srv.lifetime.clients == 0, 2)  # the idle connections never counted as clients
            for sock in idle:  # and each was dropped once its time to authenticate was up
                sock.settimeout(AUTH_TIMEOUT + 5)
                assert sock.recv(1) == b""
            assert time.monotonic() - t < AUTH_TIMEOUT + 8
        finally:
            for sock in idle:
                sock.close()


def test_a_trickling_connection_is_dropped_at_the_deadline(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        t = time.monotonic()
        sock.settimeout(10)
        try:
            for byte in protocol.MAGIC:  # one byte at a time, never a whole header
                sock.sendall(bytes([byte]))
                time.sleep(AUTH_TIMEOUT / 3)
            assert sock.recv(1) == b""
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert time.monotonic() - t < AUTH_TIMEOUT + 3


def test_jobs_queue_in_order_and_a_waiting_client_is_told_its_place(tmp_path):
    factory = Factory(delay=1.5)
    with EngineServer(state_file=tmp_path / "s.json", restorer_factory=factory, preload=False) as srv:
        srv.restorer("fake", "auto")
        first = _start_job(srv, _u8())  # holds the model for 1.5 s
        seen, results = [], []
        second = threading.Thread(target=lambda: results.append(client_of(srv).restore(
            _u8().tobytes(), 10, 12, 4, "u8", "remove the noise", on_progress=seen.append)))
        second.start()
        assert _wait(lambda: any(m["stage"] == Stage.QUEUED for m in seen), 5)
        queued = next(m for m in seen if m["stage"] == Stage.QUEUED)
        assert queued["position"] == 1 and queued["text"] == "queued behind 1 job"
        ping = client_of(srv).ping()  # a ping answers at once while jobs run and wait
        assert ping["running"] and ping["queued"] == 1
        second.join(20)
        first.close()
        assert results and results[0][0]["type"] == "result"
        stages = [m["stage"] for m in seen]
        assert stages.index(Stage.QUEUED) < stages.index(Stage.RESTORING)


def test_one_server_per_state_file_and_cleanup(tmp_path):
    path = tmp_path / "s.json"
    first = EngineServer(state_file=path, restorer_factory=Factory(), preload=False).start()
    try:
        with pytest.raises(AlreadyRunningError, match="already runs"):
            EngineServer(state_file=path, restorer_factory=Factory(), preload=False).start()
        assert protocol.connect(path) is not None and protocol.lock_held(path)
    finally:
        first.close()
    assert not path.exists() and protocol.connect(path) is None and not protocol.lock_held(path)
    with EngineServer(state_file=path, restorer_factory=Factory(), preload=False) as again:
        assert protocol.connect(path).port == again.port


def test_shutdown_is_immediate_and_idle_exit_counts_from_the_lastclient_of(tmp_path):
    srv = EngineServer(state_file=tmp_path / "a.json", restorer_factory=Factory(), preload=False).start()
    t = threading.Thread(target=srv.serve_forever)
    t.start()
    t0 = time.monotonic()
    client_of(srv).shutdown()
    t.join(10)
    assert not t.is_alive() and not (tmp_path / "a.json").exists() and time.monotonic() - t0 < 1.5

    # A job longer than idle_exit keeps it up; an unauthenticated connection held open does not.
    factory = Factory(delay=1.5)
    srv = EngineServer(state_file=tmp_path / "b.json", restorer_factory=factory, preload=False,
                       idle_exit=0.6).start()
    t = threading.Thread(target=srv.serve_forever)
    t.start()
    try:
        reply, _ = client_of(srv).restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise")
        done = time.monotonic()
        assert reply["type"] == "result" and t.is_alive()
        with socket.create_connection(("127.0.0.1", srv.port)):
            t.join(10)
        assert not t.is_alive() and 0.6 <= time.monotonic() - done < 3
        assert not (tmp_path / "b.json").exists()
    finally:
        srv.shutdown()
        t.join(10)


def test_ensure_server_reports_a_missing_interpreter(tmp_path):
    with pytest.raises(protocol.ServerUnavailable, match="is gone"):
        protocol.ensure_server(tmp_path / "s.json", str(tmp_path / "no-python"))
    with pytest.raises(protocol.ServerUnavailable, match="gimp-install"):
        protocol.ensure_server(tmp_path / "s.json", None)


def test_a_server_that_runs_but_does_not_answer_is_not_doubled(tmp_path, monkeypatch):
    """Busy is not "no server": while a server holds the lock, the plug-in waits for it and never starts another."""
    from engine.serve.state import StateLock

    path = tmp_path / "s.json"
    lock = StateLock(path)
    lock.acquire()
    spawned = []
    monkeypatch.setattr(protocol, "spawn_server", lambda *a, **k: spawned.append(a))
    try:
        write_state(path, {"port": 9, "token": "t", "pid": os.getpid()})  # nothing listens on port 9
        with pytest.raises(protocol.ServerUnavailable, match=r"runs but did not answer .*server\.log") as err:
            protocol.ensure_server(path, sys.executable, timeout=0.5, log_file=tmp_path / "server.log")
        assert "serve --stop" in str(err.value) and spawned == []
    finally:
        lock.release()


# --- the real thing: spawned on demand, as the plug-in does -------------------------


def test_ensure_server_starts_a_real_server_that_keeps_the_model(tmp_path, tiny_model_dir):
    state = tmp_path / "state" / "server.json"
    log = tmp_path / "state" / "server.log"
    client = protocol.ensure_server(state, sys.executable, engine_path=str(REPO), log_file=log, timeout=180,
                                    args=["--model", str(tiny_model_dir), "--device", "cpu", "--idle-exit", "120"])
    try:
        assert client.pid != os.getpid()
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        img = np.random.default_rng(3).random((24, 32, 3), dtype=np.float32)
        for _ in range(2):
            reply, data = client.restore(img.tobytes(), 32, 24, 3, "f32", "remove the noise")
        out = np.frombuffer(data, "<f4").reshape(24, 32, 3)
        assert reply["model"] == "tiny-test" and np.isfinite(out).all() and not np.allclose(out, img)
        pong = client.ping()
        assert pong["loads"] == 1 and pong["jobs_done"] == 2 and pong["idle_exit"] == 120
        assert protocol.ensure_server(state, sys.executable).pid == client.pid  # found, not started again
    finally:
        client.shutdown()
    assert _wait(lambda: not state.exists(), 20)


def test_a_model_that_cannot_load_comes_back_as_a_readable_error(tmp_path):
    from engine.model.registry import ModelNotFoundError

    def factory(model, device):
        raise ModelNotFoundError(f"no model called {model!r}")

    with EngineServer(state_file=tmp_path / "s.json", restorer_factory=factory, preload=False) as srv:
        with pytest.raises(ServerError, match="no model called 'nope'") as err:
            client_of(srv).restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise", model="nope")
        assert err.value.code == ModelNotFoundError.code
        assert client_of(srv).ping()["type"] == "pong"


def test_an_unexpected_failure_is_logged_and_reported_as_failed(tmp_path, caplog):
    class Broken(Factory):
        def __call__(self, model, device):
            r = super().__call__(model, device)
            r.restore = lambda *a, **k: 1 / 0
            return r

    with EngineServer(state_file=tmp_path / "s.json", restorer_factory=Broken(), preload=False) as srv:
        with pytest.raises(ServerError, match="ZeroDivisionError.*server's log") as err:
            client_of(srv).restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise")
        assert err.value.code == Code.FAILED
    assert any(r.exc_info for r in caplog.records if r.name == "instructir.server")


def test_an_upsampling_step_answers_a_larger_result_with_alpha_enlarged(server):
    img = _u8(h=12, w=10)
    img[..., 3] = 200
    mask = np.ones((12, 10), np.float32)
    reply, data = client_of(server).restore(img.tobytes(), 10, 12, 4, "u8", "upscale it 2x", mask=mask.tobytes(),
                                            mask_dtype="f32")
    assert reply["resized"] and (reply["width"], reply["height"]) == (20, 24)
    assert reply["steps"][0]["kind"] == "upsample"
    out = np.frombuffer(data, np.uint8).reshape(24, 20, 4)
    assert np.all(out[..., 3] == 200)  # alpha follows the enlargement
    assert abs(float(out[..., :3].mean()) - float(img[..., :3].mean())) < 40


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak RSS")
def test_a_24_megapixel_layer_stays_within_the_server_memory_budget(tmp_path):
    """The server holds one float RGB image plus the session's arrays, never whole float copies of the request
    or the result: its peak over its idle size stays under WireLayer.estimate_bytes (49 B/px for 8-bit RGBA;
    the server before streaming peaked at 88 B/px)."""
    from fake_server import proc_status, reset_peak

    from engine.serve.layers import WireLayer

    state = tmp_path / "s.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fake_server.py"), str(state)], cwd=REPO, env=env)
    try:
        assert _wait(lambda: protocol.connect(state) is not None, 60)
        client = protocol.connect(state)
        client.read_timeout = 600
        w, h = 6000, 4000
        band = np.random.default_rng(0).integers(0, 256, (64, w, 4), dtype=np.uint8)
        band[..., 3] = 255
        before = proc_status(proc.pid, "VmRSS")
        reset_peak(proc.pid)
        rows = []

        def read(y, n):
            return np.resize(band, (n, w, 4)).tobytes()

        def got(y, n, data):
            if y == 0:
                rows.append(np.frombuffer(data, np.uint8)[:8].copy())
            rows.append(n)

        reply, _ = client.restore(read, w, h, 4, "u8", "remove the noise", on_rows=got)
        peak = proc_status(proc.pid, "VmHWM") - before
        assert reply["width"] == w and sum(r for r in rows if isinstance(r, int)) == h
        np.testing.assert_array_equal(rows[0][3::4], 255)
        assert peak <= WireLayer.estimate_bytes(w, h, 4, "u8"), f"peak {peak / 1e6:.0f} MB over idle"
        client.shutdown()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_whole_image_pass_reports_percentages_not_one_step(tmp_path, tiny_model_dir, monkeypatch):
    """Progress comes per strip of the network's pass, so a mid-sized layer moves the bar many times.

    The server forwards at most one update per PROGRESS_INTERVAL; on a fast machine the whole pass can
    take less than a few intervals, so the test forwards every update to see the strips themselves.
    """
    from engine.serve import server as server_module

    monkeypatch.setattr(server_module, "PROGRESS_INTERVAL", 0.0)
    with EngineServer(model=str(tiny_model_dir), device="cpu", state_file=tmp_path / "s.json", preload=False) as srv:
        seen = []
        img = np.random.default_rng(4).integers(0, 256, (240, 320, 3), dtype=np.uint8)
        client_of(srv).restore(img.tobytes(), 320, 240, 3, "u8", "remove the noise", on_progress=seen.append)
    done = [m["done"] for m in seen if m["stage"] == Stage.RESTORING and m["total"] == 1000]
    assert done[-1] == 1000 and len(set(done)) >= 5, done
    assert done == sorted(done)


def test_a_server_from_another_protocol_version_is_replaced(tmp_path, monkeypatch):
    """After an upgrade the plug-in finds the old server still up: it stops it and starts the new one."""
    path = tmp_path / "s.json"
    with an_older_server(path, monkeypatch, lambda state_file: EngineServer(
            state_file=state_file, restorer_factory=Factory(), preload=False)) as (old, runner, started):
        client = protocol.ensure_server(path, sys.executable, timeout=20)
        runner.join(10)
        assert not runner.is_alive()  # the old server was asked to stop, and did
        assert started and client.port == started[0].port != old.port
