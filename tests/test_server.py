"""The engine server and its wire protocol (engine/serve/server.py, engine/serve/protocol.py)."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.serve import protocol
from engine.serve.protocol import ProtocolError, RequestTooLarge, ServerError
from engine.serve.server import AlreadyRunning, EngineServer

REPO = Path(__file__).resolve().parent.parent


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
        with pytest.raises(RequestTooLarge, match="over the server's limit"):
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
    assert protocol.check_restore_request(_restore_header(), 48) == (48, 0)
    assert protocol.check_restore_request(_restore_header(dtype="f32", mask_dtype="f32"), 192 + 48) == (192, 48)
    for bad, size in [(_restore_header(), 47), (_restore_header(dtype="f64"), 48),
                      (_restore_header(channels=5), 60), (_restore_header(strength=1.5), 48),
                      (_restore_header(instruction="x" * 5000), 48), (_restore_header(strength_mode="?"), 48),
                      ({"type": "restore"}, 0)]:
        with pytest.raises(ProtocolError):
            protocol.check_restore_request(bad, size)


def test_state_file_is_user_only(tmp_path, monkeypatch):
    path = tmp_path / "state" / "server.json"
    protocol.write_state(path, {"port": 1234, "token": "t"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert protocol.read_state(path)["port"] == 1234
    path.write_text("{not json")
    assert protocol.read_state(path) is None
    monkeypatch.setenv(protocol.STATE_ENV, str(tmp_path / "elsewhere.json"))
    assert protocol.state_path("/default.json") == str(tmp_path / "elsewhere.json")
    from engine.serve.server import default_state_file

    assert default_state_file() == tmp_path / "elsewhere.json"


# --- server with a fake restorer --------------------------------------------------


class Factory:
    def __init__(self, delay: float = 0.0):
        from conftest import FakeRestorer

        self.made = []
        self.delay = delay
        self.cls = FakeRestorer

    def __call__(self, model, device):
        r = self.cls(delay=self.delay)
        r.cancelled = threading.Event()
        original = r.restore

        def restore(image, instruction, progress=None, cancel=None):
            try:
                return original(image, instruction, progress=progress, cancel=cancel)
            except Exception:
                if cancel is not None and cancel.cancelled:
                    r.cancelled.set()
                raise

        r.restore = restore
        self.made.append((model, device, r))
        return r


@pytest.fixture
def server(tmp_path):
    factory = Factory()
    srv = EngineServer(model="fake", device="cpu", state_file=tmp_path / "run" / "server.json",
                       restorer_factory=factory, preload=False)
    srv.factory = factory
    with srv:
        yield srv


def _client(srv) -> protocol.Client:
    return protocol.Client(protocol.read_state(srv.state_file))


def _u8(h=12, w=10, c=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def test_server_publishes_loopback_port_and_token(server):
    state = json.loads(server.state_file.read_text())
    assert state["port"] == server.port and state["pid"] == os.getpid()
    assert len(state["token"]) == 64
    assert server._sock.getsockname()[0] == "127.0.0.1"
    assert stat.S_IMODE(server.state_file.stat().st_mode) == 0o600
    assert _client(server).ping()["type"] == "pong"


def test_requests_without_the_token_are_refused(server):
    for token in ("", "0" * 64, None):
        state = {"port": server.port, "token": token or ""}
        with pytest.raises(ServerError) as err:
            protocol.Client(state).restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise")
        assert err.value.code == "unauthorized"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # no token field at all
        protocol.send_message(sock, {"type": "ping"})
        reply, _ = protocol.recv_message(sock)
        assert reply["code"] == "unauthorized"
    assert server.factory.made == [] and server.jobs_done == 0  # nothing ran
    assert _client(server).ping()["type"] == "pong"  # and the server is still up


def test_restore_u8_rgba_keeps_alpha_and_streams_progress(server):
    img = _u8()
    seen = []
    reply, data = _client(server).restore(img.tobytes(), 10, 12, 4, "u8", "remove the noise",
                                          on_progress=seen.append)
    out = np.frombuffer(data, np.uint8).reshape(12, 10, 4)
    expected = np.rint((img[..., :3] / 255 * 0.5 + 0.25) * 255)
    assert np.abs(out[..., :3].astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(out[..., 3], img[..., 3])
    assert reply["steps"][0]["intent"] == "noise" and reply["channels"] == 4
    restoring = [m for m in seen if m.get("stage") == "restoring"]
    assert restoring and restoring[-1]["done"] == restoring[-1]["total"]


def test_mask_blends_and_leaves_unselected_pixels_exact(server):
    rng = np.random.default_rng(1)
    img = rng.random((16, 20, 4), dtype=np.float32) * 1.2 - 0.1  # out-of-range floats survive outside the mask
    mask = np.zeros((16, 20), np.float32)
    mask[4:12, 5:15] = 1.0
    mask[4:12, 15] = 0.5
    reply, data = _client(server).restore(img.tobytes(), 20, 16, 4, "f32", "remove the noise",
                                          mask=mask.tobytes(), mask_dtype="f32")
    out = np.frombuffer(data, "<f4").reshape(16, 20, 4)
    np.testing.assert_array_equal(out[mask == 0], img[mask == 0])
    full = np.clip(img[..., :3], 0, 1) * 0.5 + 0.25
    np.testing.assert_allclose(out[mask == 1][:, :3], full[mask == 1], atol=1e-6)
    half = img[4:12, 15, :3] + 0.5 * (full[4:12, 15] - img[4:12, 15, :3])
    np.testing.assert_allclose(out[4:12, 15, :3], half, atol=1e-6)


def test_gray_u16_and_strength(server):
    img = np.random.default_rng(2).integers(0, 65536, (8, 9, 2), dtype=np.uint16)
    client = _client(server)
    _, full = client.restore(img.tobytes(), 9, 8, 2, "u16", "remove the noise")
    _, half = client.restore(img.tobytes(), 9, 8, 2, "u16", "remove the noise", strength=0.5)
    full = np.frombuffer(full, "<u2").reshape(8, 9, 2).astype(float)
    half = np.frombuffer(half, "<u2").reshape(8, 9, 2).astype(float)
    np.testing.assert_array_equal(full[..., 1], img[..., 1])
    np.testing.assert_allclose(full[..., 0], np.rint((img[..., 0] / 65535 * 0.5 + 0.25) * 65535), atol=2)
    np.testing.assert_allclose(half[..., 0], (img[..., 0] + full[..., 0]) / 2, atol=2)


def test_strength_scales_instruction_degree_or_overrides_it(server):
    img = np.full((4, 4, 3), 0.2, np.float32)
    client = _client(server)

    def run(**kw):
        reply, data = client.restore(img.tobytes(), 4, 4, 3, "f32", "remove the noise a bit", **kw)
        return reply["steps"][0]["strength"], float(np.frombuffer(data, "<f4")[0])

    # fake 'noise' maps 0.2 -> 0.35: delta 0.15; "a bit" reads as 0.5
    assert run() == pytest.approx((0.5, 0.275))
    assert run(strength=0.5) == pytest.approx((0.25, 0.2375))
    assert run(strength=1.0, strength_mode="override") == pytest.approx((1.0, 0.35))


def test_compound_instruction_and_nothing_to_do(server):
    img = np.full((4, 4, 3), 0.2, np.float32)
    reply, _ = _client(server).restore(img.tobytes(), 4, 4, 3, "f32", "remove the noise and then brighten it")
    assert [s["intent"] for s in reply["steps"]] == ["noise", "low-light"]
    with pytest.raises(ServerError) as err:
        _client(server).restore(img.tobytes(), 4, 4, 3, "f32", "hello")
    assert err.value.code == "nothing-to-do" and "not a restoration request" in str(err.value)


def test_model_is_loaded_once_and_reused(server):
    client = _client(server)
    for _ in range(3):
        client.restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise")
    assert len(server.factory.made) == 1 and server.loads == 1 and server.jobs_done == 3
    client.restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise", model="other")
    assert [m[0] for m in server.factory.made] == ["fake", "other"]


def test_oversized_and_malformed_requests_are_refused(tmp_path):
    with EngineServer(state_file=tmp_path / "s.json", restorer_factory=Factory(), preload=False,
                      max_request_bytes=1000) as srv:
        client = _client(srv)
        for _ in range(5):  # refused before the pixels are sent: the client always reads the reason
            with pytest.raises(ServerError, match="max-request-mb") as err:
                client.restore(_u8(400, 400).tobytes(), 400, 400, 4, "u8", "remove the noise")
            assert err.value.code == "too-large"
        with pytest.raises(ServerError, match="carries no payload"):
            client.call({"type": "ping"}, b"x")
        with pytest.raises(ServerError) as err:
            client.call({"type": "restore", "instruction": "x", "width": 10, "height": 10, "channels": 4,
                         "dtype": "u8"}, b"\0" * 10)
        assert err.value.code == "bad-request"
        with pytest.raises(ServerError) as err:
            client.call({"type": "format-disk"})
        assert err.value.code == "bad-request"
        assert client.ping()["type"] == "pong"


def _wait(pred, timeout=10.0):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_a_client_that_disconnects_cancels_its_job_and_the_server_survives(tmp_path):
    factory = Factory(delay=3.0)
    with EngineServer(state_file=tmp_path / "s.json", restorer_factory=factory, preload=False) as srv:
        state = protocol.read_state(srv.state_file)
        sock = socket.create_connection(("127.0.0.1", srv.port))
        img = _u8()
        protocol.send_message(sock, _restore_header(width=10, height=12, token=state["token"]), img.tobytes())
        assert protocol.recv_message(sock)[0]["type"] == "continue"
        header, _ = protocol.recv_header(sock)
        assert header["type"] == "progress"
        sock.close()  # GIMP killed the plug-in (the user cancelled)
        assert _wait(lambda: factory.made and factory.made[0][2].cancelled.is_set())
        assert srv.jobs_done == 0
        factory.delay = 0
        factory.made[0][2].delay = 0
        reply, _ = _client(srv).restore(img.tobytes(), 10, 12, 4, "u8", "remove the noise")
        assert reply["type"] == "result" and srv.jobs_done == 1


def test_a_cancel_frame_cancels(tmp_path):
    factory = Factory(delay=3.0)
    with EngineServer(state_file=tmp_path / "s.json", restorer_factory=factory, preload=False) as srv:
        seen = []
        with pytest.raises(ServerError, match="cancelled"):
            _client(srv).restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise", on_progress=seen.append,
                                 should_cancel=lambda: len(seen) >= 1)
        assert _wait(lambda: factory.made[0][2].cancelled.is_set())


def test_one_server_per_state_file_and_cleanup(tmp_path):
    path = tmp_path / "s.json"
    first = EngineServer(state_file=path, restorer_factory=Factory(), preload=False).start()
    try:
        with pytest.raises(AlreadyRunning, match="already runs"):
            EngineServer(state_file=path, restorer_factory=Factory(), preload=False).start()
        assert protocol.connect(path) is not None
    finally:
        first.close()
    assert not path.exists() and protocol.connect(path) is None
    with EngineServer(state_file=path, restorer_factory=Factory(), preload=False) as again:
        assert protocol.connect(path).port == again.port


def test_shutdown_request_and_idle_exit(tmp_path):
    srv = EngineServer(state_file=tmp_path / "a.json", restorer_factory=Factory(), preload=False).start()
    t = threading.Thread(target=srv.serve_forever)
    t.start()
    _client(srv).shutdown()
    t.join(10)
    assert not t.is_alive() and not (tmp_path / "a.json").exists()

    srv = EngineServer(state_file=tmp_path / "b.json", restorer_factory=Factory(), preload=False,
                       idle_exit=0.3).start()
    t0 = time.monotonic()
    srv.serve_forever()
    assert time.monotonic() - t0 < 5 and not (tmp_path / "b.json").exists()


def test_ensure_server_reports_a_missing_interpreter(tmp_path):
    with pytest.raises(protocol.ServerUnavailable, match="is gone"):
        protocol.ensure_server(tmp_path / "s.json", str(tmp_path / "no-python"))
    with pytest.raises(protocol.ServerUnavailable, match="gimp-install"):
        protocol.ensure_server(tmp_path / "s.json", None)


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
        times = []
        for _ in range(2):
            t = time.perf_counter()
            reply, data = client.restore(img.tobytes(), 32, 24, 3, "f32", "remove the noise")
            times.append(time.perf_counter() - t)
        out = np.frombuffer(data, "<f4").reshape(24, 32, 3)
        assert reply["model"] == "tiny-test" and np.isfinite(out).all() and not np.allclose(out, img)
        pong = client.ping()
        assert pong["loads"] == 1 and pong["jobs_done"] == 2
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
            _client(srv).restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise", model="nope")
        assert err.value.code == "failed"
        assert _client(srv).ping()["type"] == "pong"
