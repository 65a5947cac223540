"""SPIRE mode over the engine server (``mode: spire`` restore requests), with fake and tiny SPIRE pipelines."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fake_server import Factory, client_of, make_server

import engine.spire
from engine.jobs import check
from engine.serve import protocol
from engine.serve.protocol import ProtocolError, ServerError

ON_CPU = "No GPU found: SPIRE will run on the CPU and take many minutes per photo."
NO_ADAPTER = "No SPIRE adapter is installed. SPIRE weights are not public: train one."


class FakeSpire:
    """SpirePipeline's ``restore`` signature; halves the distance to 0.5; records its calls."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[dict] = []
        self.delay = delay
        self.started = threading.Event()

    def restore(self, image, restoration_prompt, semantic_prompt="", *, negative_prompt="", steps=50, guidance=5.0,
                strength=1.0, upscale=True, seed=0, progress=None, cancel=None):
        self.calls.append({"prompt": str(restoration_prompt), "semantic": semantic_prompt, "steps": steps,
                           "upscale": upscale, "shape": np.shape(image)})
        self.started.set()
        for i in range(steps):
            check(cancel)
            time.sleep(self.delay / steps)
            if progress:
                progress(i + 1, steps + 1)
        if progress:
            progress(steps + 1, steps + 1)
        return (np.asarray(image, np.float32) * 0.5 + 0.25).astype(np.float32)


@pytest.fixture
def spire_ok(monkeypatch):
    monkeypatch.setattr(engine.spire, "available", lambda adapter=None: (True, ON_CPU))


def _server(tmp_path, spire_factory, restorer_factory=None):
    return make_server(tmp_path, spire_factory=spire_factory, restorer_factory=restorer_factory or Factory())


def _u8(h=12, w=10, c=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def test_spire_requests_are_validated():
    base = {"type": "restore", "instruction": "remove the noise", "width": 4, "height": 3, "channels": 4, "dtype": "u8"}
    protocol.check_restore_request(dict(base, mode="spire", semantic="a cat", diffusion_steps=20))
    protocol.check_restore_request(dict(base, mode="instructir"))
    for bad in ({"mode": "dall-e"}, {"mode": "spire", "semantic": 3}, {"mode": "spire", "semantic": "x" * 5000},
                {"mode": "spire", "diffusion_steps": 0}, {"mode": "spire", "diffusion_steps": 2.5},
                {"mode": "spire", "diffusion_steps": True}):
        with pytest.raises(ProtocolError):
            protocol.check_restore_request(dict(base, **bad))


def test_spire_mode_runs_the_pipeline_loaded_once_and_keeps_the_size(tmp_path, spire_ok):
    made = []

    def factory(device):
        made.append(device)
        return FakeSpire()

    with _server(tmp_path, factory) as srv:
        client = client_of(srv)
        img = _u8()
        seen = []
        reply, data = client.restore(img.tobytes(), 10, 12, 4, "u8", "remove the noise, strongly", mode="spire",
                                     semantic="  a red   bicycle ", diffusion_steps=3, on_progress=seen.append)
        out = np.frombuffer(data, np.uint8).reshape(12, 10, 4)
        expected = np.rint((img[..., :3] / 255 * 0.5 + 0.25) * 255)
        assert np.abs(out[..., :3].astype(int) - expected).max() <= 1
        np.testing.assert_array_equal(out[..., 3], img[..., 3])  # alpha untouched
        assert reply["mode"] == "spire" and reply["model"] == "SPIRE"
        assert reply["prompt"] == "Denoise with sigma 0.118" and reply["semantic"] == "a red bicycle"
        assert reply["diffusion_steps"] == 3 and reply["steps"][0]["intent"] == "spire"
        restoring = [m for m in seen if m.get("stage") == "restoring"]
        assert restoring and restoring[-1]["done"] == restoring[-1]["total"]

        # the second request reuses the loaded pipeline; "Upsample" keeps the layer's size; strength blends
        pipe = srv.spire()
        _, half = client.restore(img.tobytes(), 10, 12, 4, "u8", "Upsample to 2x", mode="spire", strength=0.5)
        assert made == ["cpu"] and srv.spire_loads == 1 and pipe.calls[-1]["upscale"] is False
        assert pipe.calls[-1]["shape"] == (12, 10, 3) and pipe.calls[-1]["steps"] == 50  # the pipeline's default
        half = np.frombuffer(half, np.uint8).reshape(12, 10, 4).astype(float)
        assert np.abs(half[..., :3] - (img[..., :3].astype(float) + out[..., :3]) / 2).max() <= 1.5
        assert client.ping()["spire_loaded"] is True
        # and InstructIR mode is untouched by all this
        reply, _ = client.restore(img.tobytes(), 10, 12, 4, "u8", "remove the noise")
        assert reply["mode"] == "instructir" and reply["steps"][0]["intent"] == "noise" and len(pipe.calls) == 2


def test_spire_unavailable_and_bad_prompts_come_back_as_readable_errors(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(engine.spire, "available", lambda adapter=None: (False, NO_ADAPTER))
    with _server(tmp_path, lambda device: made.append(device)) as srv:
        client = client_of(srv)
        with pytest.raises(ServerError) as err:
            client.restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise", mode="spire")
        assert err.value.code == "spire-unavailable"
        assert err.value.message == f"SPIRE mode is not available: {NO_ADAPTER}"
        with pytest.raises(ServerError, match="InstructIR mode"):  # SPIRE does not do haze: said before loading
            client.restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the haze", mode="spire")
        assert made == [] and srv.jobs_done == 0

        def broken(device):
            raise RuntimeError("the adapter was trained for another base model")

        monkeypatch.setattr(engine.spire, "available", lambda adapter=None: (True, ON_CPU))
        srv._spire_factory = broken
        with pytest.raises(ServerError) as err:
            client.restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise", mode="spire")
        assert err.value.code == "spire-unavailable" and "another base model" in err.value.message
        assert client.ping()["type"] == "pong"  # the server stays up


def test_cancelling_a_spire_job_stops_it(tmp_path, spire_ok):
    fake = FakeSpire(delay=5.0)
    with _server(tmp_path, lambda device: fake) as srv:
        client = client_of(srv)
        with pytest.raises(ServerError) as err:
            client.restore(_u8().tobytes(), 10, 12, 4, "u8", "remove the noise", mode="spire", diffusion_steps=50,
                           should_cancel=fake.started.is_set)
        assert err.value.code == "cancelled"
        deadline = time.monotonic() + 5
        while srv._jobs.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not srv._jobs.running and srv.jobs_done == 0


def test_a_tiny_real_pipeline_through_the_server(tmp_path, spire_ok):
    pytest.importorskip("diffusers")
    import torch

    from engine.spire.model import SpireAdapter
    from engine.spire.pipeline import SpirePipeline
    from engine.spire.tiny import tiny_components

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        components = tiny_components()
        pipe = SpirePipeline(components, SpireAdapter.from_unet(components["unet"], vae_scale_factor=2,
                                                                base_model="tiny"), "cpu")
        img = np.random.default_rng(3).random((20, 18, 3), dtype=np.float32)
        with _server(tmp_path, lambda device: pipe) as srv:
            reply, data = client_of(srv).restore(img.tobytes(), 18, 20, 3, "f32", "Deblur with sigma 1.5",
                                                 mode="spire", semantic="noise", diffusion_steps=2)
        out = np.frombuffer(data, "<f4").reshape(20, 18, 3)
        assert reply["prompt"] == "Deblur with sigma 1.5" and np.isfinite(out).all()
        assert 0 <= out.min() and out.max() <= 1 and not np.allclose(out, img)
    finally:
        torch.set_num_threads(threads)
