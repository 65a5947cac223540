"""The ``diagnose`` request: the server asks for the few regions the diagnosis reads and answers what is wrong."""

from __future__ import annotations

import socket
import sys
import threading
import time

import numpy as np
import pytest
from fake_server import an_older_server, client_of, make_server

from engine.diagnose import diagnose, features
from engine.errors import StudioError
from engine.serve import diagnosis, protocol
from engine.serve.protocol import Code, ServerError
from engine.serve.server import EngineServer


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    from skimage import data

    return data.coffee().astype(np.float32) / 255.0  # 400 x 600, not among the diagnosis' training photos


@pytest.fixture(scope="module")
def noisy(coffee) -> np.ndarray:
    return np.clip(coffee + np.random.default_rng(3).normal(0, 25 / 255, coffee.shape), 0, 1).astype(np.float32)


class ClassicalOnly:
    """A diagnosis model that sees nothing: the diagnosis is then what the classical measures say (noise level,
    exposure, resolution), so these tests of the wire do not depend on the bundled classifier's training."""

    def predict(self, vector):
        from engine.diagnose import Kind

        assert len(vector) == len(features.FEATURE_NAMES)
        return {k: (1.0 if k is Kind.CLEAN else 0.0) for k in Kind}, 0.0

    def __getattr__(self, name):  # anything else (settings of the model) is the bundled model's
        from engine.diagnose import default_model

        return getattr(default_model(), name)


@pytest.fixture
def server(tmp_path):
    from conftest import FakeRestorer

    srv = make_server(tmp_path, restorer_factory=lambda model, device: FakeRestorer(delay=getattr(srv, "delay", 0.0)),
                      diagnose_model=ClassicalOnly)
    with srv:
        yield srv


def _wire(rgb: np.ndarray, dtype: str = "u8", alpha: bool = False, gray: bool = False) -> np.ndarray:
    a = rgb.mean(axis=2, keepdims=True) if gray else rgb
    if alpha:
        a = np.concatenate([a, np.full(a.shape[:2] + (1,), 0.5, np.float32)], axis=2)
    if dtype == "u8":
        return np.rint(a * 255).astype(np.uint8)
    if dtype == "u16":
        return np.rint(a * 65535).astype("<u2")
    return np.ascontiguousarray(a, "<f4")


class Reader:
    """``read(x, y, w, h, step)`` over an array, counting the pixels it hands out."""

    def __init__(self, wire: np.ndarray) -> None:
        self.wire, self.pixels, self.calls = wire, 0, []

    def __call__(self, x, y, w, h, step):
        self.calls.append((x, y, w, h, step))
        part = self.wire[y:y + (h - 1) * step + 1:step, x:x + (w - 1) * step + 1:step]
        assert part.shape[:2] == (h, w), (part.shape, (x, y, w, h, step))
        self.pixels += w * h
        return np.ascontiguousarray(part).tobytes()


def _diagnose(srv, wire: np.ndarray) -> tuple[dict, Reader]:
    read = Reader(wire)
    h, w = wire.shape[:2]
    c = wire.shape[2]
    dtype = {np.dtype("u1"): "u8", np.dtype("<u2"): "u16", np.dtype("<f4"): "f32"}[wire.dtype]
    return client_of(srv).diagnose(read, w, h, c, dtype), read


# --- the regions, measured as the whole photo is ----------------------------------------


@pytest.mark.parametrize("scale", [1, 3])
def test_the_regions_give_the_features_of_the_whole_photo(coffee, scale):
    """The server measures only the regions it asked for; the result must be ``features.analyse`` of all of it."""
    photo = np.tile(coffee, (scale, scale, 1))  # 3: 1200 x 1800, sub-sampled every 3rd pixel
    h, w = photo.shape[:2]
    wanted = diagnosis.regions(w, h)
    assert wanted[0].step == (1 if scale == 1 else 3)
    assert len(wanted) == (1 if scale == 1 else 7)  # a small layer is sent once, whole: its crops are cut from it
    parts = [diagnosis.to_rgb(np.ascontiguousarray(Reader(photo)(*r.to_list())), r, 3, "f32") for r in wanted]
    whole = features.analyse(photo)
    mine = features.analyse_parts(*diagnosis.split(w, h, parts), w, h)
    assert (mine.width, mine.height) == (whole.width, whole.height) == (w, h)
    np.testing.assert_allclose(mine.vector, whole.vector, rtol=1e-5, atol=1e-6)


def test_a_large_layer_is_read_in_a_small_part():
    wanted = diagnosis.regions(6000, 4000)  # 24 MP
    read = sum(r.width * r.height for r in wanted)
    assert read < 0.7e6, read
    assert wanted[0].step == 8 and max(wanted[0].width, wanted[0].height) <= features.ANALYSIS_SIDE
    assert all(r.step == 1 and r.x % 8 == 0 and r.y % 8 == 0 for r in wanted[1:])  # JPEG's grid stays put


@pytest.mark.parametrize("width,height", [(1, 1), (7, 300), (31, 31), (769, 2), (1537, 1537)])
def test_regions_stay_inside_odd_sized_layers(width, height):
    for r in diagnosis.regions(width, height):
        assert r.width >= 1 and r.height >= 1
        assert r.x + (r.width - 1) * r.step < width and r.y + (r.height - 1) * r.step < height


def test_subsample_keeps_every_kth_pixel_of_multibyte_pixels():
    row = np.arange(50 * 4, dtype="<f4").reshape(50, 4)  # 50 RGBA float pixels: 16 bytes each
    got = protocol.subsample(row.tobytes(), 16, 3, 5, 9)
    np.testing.assert_array_equal(np.frombuffer(got, "<f4").reshape(9, 4), row[3::5][:9])
    assert protocol.subsample(row.tobytes(), 16, 2, 1, 4) == row[2:6].tobytes()
    assert len(protocol.subsample(row.tobytes(), 16, 3, 5, 10)) == 160  # pixels 3, 8, ..., 48: ten of them
    with pytest.raises(ValueError):
        protocol.subsample(row.tobytes(), 16, 3, 5, 11)


# --- through the server ------------------------------------------------------------------


def test_a_noisy_layer_is_diagnosed_as_noisy(server, noisy):
    reply, read = _diagnose(server, _wire(noisy))
    assert read.calls == [(0, 0, 600, 400, 1)]  # small enough to travel once, whole
    assert reply["type"] == "diagnosis" and not reply["clean"]
    assert reply["problems"][0]["intent"] == "noise" and reply["problems"][0]["severity"] >= 0.3
    assert "noise" in reply["instruction"].lower() and "noisy" in reply["suggestion"]
    assert (reply["width"], reply["height"]) == (600, 400) and reply["seconds"] >= 0
    expected = diagnose(np.rint(noisy * 255) / 255, model=ClassicalOnly())  # the engine's, on the same pixels
    assert reply["instruction"] == expected.instruction and reply["suggestion"] == expected.suggestion
    assert reply["problems"] == [p.to_dict() for p in expected.problems]
    assert server.diagnoses == 1 and client_of(server).ping()["diagnoses"] == 1


def test_the_bundled_model_answers_as_the_engine_does(tmp_path, noisy, coffee):
    """With the engine's own diagnosis model: the reply is ``diagnose()`` of the layer's pixels."""
    with EngineServer(state_file=tmp_path / "s.json", preload=False) as srv:
        for photo in (noisy, coffee):
            reply, _ = _diagnose(srv, _wire(photo))
            expected = diagnose(np.rint(photo * 255) / 255)
            assert (reply["suggestion"], reply["instruction"]) == (expected.suggestion, expected.instruction)
            assert reply["problems"] == [p.to_dict() for p in expected.problems]
        assert reply["clean"] and not _diagnose(srv, _wire(noisy))[0]["clean"]


def test_a_clean_layer_is_left_alone(server, coffee):
    reply, _ = _diagnose(server, _wire(coffee))
    assert reply["clean"] and reply["instruction"] == "" and "nothing worth fixing" in reply["suggestion"]
    assert all(p["severity"] < 0.3 for p in reply["problems"])


@pytest.mark.parametrize("dtype,alpha,gray", [("u16", True, False), ("f32", False, False), ("u8", True, True)])
def test_depths_alpha_and_gray_read_alike(server, noisy, dtype, alpha, gray):
    reply, _ = _diagnose(server, _wire(noisy, dtype, alpha, gray))
    assert reply["problems"][0]["intent"] == "noise", reply["problems"]


def test_a_big_layer_travels_only_the_regions(server, noisy):
    big = _wire(np.tile(noisy, (5, 5, 1)))  # 2000 x 3000 = 6 MP
    reply, read = _diagnose(server, big)
    assert read.pixels < 0.1 * 2000 * 3000, read.pixels
    assert reply["problems"][0]["intent"] == "noise" and (reply["width"], reply["height"]) == (3000, 2000)
    assert read.calls[0][4] == 4  # the sub-sampled copy: every 4th pixel of every 4th row


def test_a_selection_is_judged_at_the_size_of_its_layer(server, noisy):
    part = _wire(noisy[100:300, 150:450])  # 300 x 200: as a photo of its own, a small one
    alone = client_of(server).diagnose(Reader(part), 300, 200, 3, "u8")
    assert "upsampling" in [p["intent"] for p in alone["problems"] if p["severity"] >= 0.3]
    within = client_of(server).diagnose(Reader(part), 300, 200, 3, "u8", photo_size=(6000, 4000))
    assert "upsampling" not in [p["intent"] for p in within["problems"]]
    assert within["problems"][0]["intent"] == "noise" and (within["width"], within["height"]) == (300, 200)
    assert "resolution" not in within["instruction"]


def test_float_values_outside_the_range_are_clipped(server, coffee):
    wire = _wire(coffee, "f32").copy()
    wire[::2, ::2] += 40.0  # HDR highlights on a regular grid
    reply, _ = _diagnose(server, wire)
    assert reply["type"] == "diagnosis"  # measured on [0, 1]; nothing blows up


def test_a_diagnosis_does_not_wait_behind_a_restore_job(server, coffee):
    server.delay = 4.0
    img = _wire(coffee[:64, :64], "u8")
    done = []
    job = threading.Thread(target=lambda: done.append(
        client_of(server).restore(img.tobytes(), 64, 64, 3, "u8", "remove the noise")))
    job.start()
    deadline = time.monotonic() + 10
    while client_of(server).ping()["running"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    t = time.monotonic()
    reply, _ = _diagnose(server, _wire(coffee))
    assert reply["type"] == "diagnosis" and time.monotonic() - t < 3.0
    assert not done  # the job still runs
    job.join(20)
    assert done


# --- refusals -------------------------------------------------------------------------------


def _raw(srv, header: dict) -> dict:
    state = protocol.read_state(srv.state_file)
    with socket.create_connection(("127.0.0.1", state["port"]), timeout=10) as sock:
        protocol.send_message(sock, dict({"token": state["token"], "version": protocol.PROTOCOL_VERSION}, **header))
        reply, _ = protocol.recv_message(sock)
        return reply


def test_malformed_diagnose_requests_are_refused(server):
    good = {"type": "diagnose", "width": 10, "height": 10, "channels": 3, "dtype": "u8"}
    for bad in [dict(good, dtype="f64"), dict(good, channels=5), dict(good, width=0), {"type": "diagnose"},
                dict(good, photo_width=5, photo_height=100), dict(good, photo_width=100),
                dict(good, photo_width="100", photo_height=100)]:
        reply = _raw(server, bad)
        assert reply["type"] == "error" and reply["code"] == Code.BAD_REQUEST.value, reply
    reply = _raw(server, dict(good, version=protocol.PROTOCOL_VERSION - 1))  # an older plug-in
    assert reply["code"] == Code.VERSION.value and "gimp-install" in reply["message"]
    assert _raw(server, good)["type"] == "continue"


def test_a_layer_over_the_limit_is_refused_before_any_pixel(tmp_path):
    srv = EngineServer(state_file=tmp_path / "s.json", preload=False, max_pixels=1000)
    with srv:
        with pytest.raises(ServerError) as err:
            client_of(srv).diagnose(lambda *a: pytest.fail("no pixel may be read"), 100, 100, 3, "u8")
    assert err.value.code == Code.TOO_LARGE.value


def test_rows_out_of_order_are_refused(server):
    state = protocol.read_state(server.state_file)
    with socket.create_connection(("127.0.0.1", state["port"]), timeout=10) as sock:
        protocol.send_message(sock, {"type": "diagnose", "width": 1600, "height": 1600, "channels": 3, "dtype": "u8",
                                     "token": state["token"], "version": protocol.PROTOCOL_VERSION})
        reply, _ = protocol.recv_message(sock)
        assert reply["type"] == "continue" and len(reply["regions"]) == len(reply["band_rows"]) >= 2
        _, _, w1, h1, _ = reply["regions"][1]  # region 1's rows where region 0's are due (refused on the header)
        protocol.send_head(sock, {"type": "rows", "region": 1, "y": 0, "rows": h1}, w1 * h1 * 3)
        reply, _ = protocol.recv_message(sock)
    assert reply["type"] == "error" and reply["code"] == Code.BAD_REQUEST.value and "region 0" in reply["message"]
    assert client_of(server).ping()["type"] == "pong"


class _Broken(StudioError):
    code = "diagnose-model"


def test_engine_errors_keep_their_code_and_others_are_failed(tmp_path, coffee):
    def missing():
        raise _Broken("cannot read the diagnosis model /nowhere")

    with EngineServer(state_file=tmp_path / "a.json", preload=False, diagnose_model=missing) as srv:
        with pytest.raises(ServerError) as err:
            _diagnose(srv, _wire(coffee))
        assert err.value.code == "diagnose-model" and "/nowhere" in err.value.message
        assert client_of(srv).ping()["type"] == "pong"

    class Odd:
        def predict(self, vector):
            raise RuntimeError("boom")

    with EngineServer(state_file=tmp_path / "b.json", preload=False, diagnose_model=Odd) as srv:
        with pytest.raises(ServerError) as err:
            _diagnose(srv, _wire(coffee))
        assert err.value.code == Code.FAILED.value and "boom" in err.value.message


def test_an_older_server_is_replaced_before_diagnosing(tmp_path, monkeypatch, coffee):
    """A plug-in of this version meeting a server of the last one: ensure_server swaps it, then it diagnoses."""
    path = tmp_path / "s.json"
    with an_older_server(path, monkeypatch, lambda state_file: EngineServer(state_file=state_file, preload=False)
                         ) as (old, runner, started):
        with pytest.raises(ServerError) as err:  # the old one, asked directly, refuses: another version
            client_of(old).diagnose(Reader(_wire(coffee)), 600, 400, 3, "u8")
        assert err.value.code == Code.VERSION.value
        client = protocol.ensure_server(path, sys.executable, timeout=20)
        runner.join(10)
        assert not runner.is_alive() and started and client.port == started[0].port
