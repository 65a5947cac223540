"""SPIRE (diffusion) mode in the desktop app: offered or greyed out, its prompt fields, and its steps."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from test_desktop import WAIT, after_pixels, fake, open_photo, replies, studio  # noqa: E402, F401

from desktop.chat_panel import INSTRUCTIR, SPIRE  # noqa: E402
from desktop.document import load_session_file, save_session_file  # noqa: E402
from desktop.spire_mode import SpireProvider, SpireState  # noqa: E402
from desktop.theme import WARNING  # noqa: E402
from engine.edit.session import EditSession, StepKind  # noqa: E402
from engine.io.images import picture_from_array, save_image  # noqa: E402
from engine.jobs import check  # noqa: E402

NO_ADAPTER = ("No SPIRE adapter is installed. SPIRE weights are not public: train one (python -m engine.spire.train, "
              "see docs/spire.md) and put it in /nowhere/spire, or set INSTRUCTIR_SPIRE_ADAPTER.")
ON_CPU = "No GPU found: SPIRE will run on the CPU and take many minutes per photo."


class FakeSpire:
    """Same ``restore`` signature as SpirePipeline; brightens a little; records every call."""

    def __init__(self, delay: float = 0.0, shape: tuple[int, int] | None = None) -> None:
        self.calls: list[dict] = []
        self.delay = delay
        self.shape = shape

    def restore(self, image, restoration_prompt, semantic_prompt="", *, negative_prompt="", steps=50, guidance=5.0,
                strength=1.0, upscale=True, seed=0, progress=None, cancel=None):
        from engine.edit.prompts import from_instruction

        prompt = str(from_instruction(str(restoration_prompt)))
        self.calls.append({"prompt": prompt, "semantic": semantic_prompt, "steps": steps, "upscale": upscale,
                           "seed": seed, "input": np.array(image)})
        for i in range(steps):
            check(cancel)
            time.sleep(self.delay / steps)
            if progress:
                progress(i + 1, steps + 1)
        out = np.clip(np.asarray(image) * 0.8 + 0.15, 0, 1).astype(np.float32)
        if self.shape:
            out = np.zeros((*self.shape, 3), np.float32)
        if progress:
            progress(steps + 1, steps + 1)
        return out


@pytest.fixture
def photo_file(tmp_path, photo):
    path = tmp_path / "photo.png"
    save_image(picture_from_array((photo * 255).round().astype(np.uint8)), path)
    return path


@pytest.fixture
def make(studio):  # noqa: F811 - the fixture imported from test_desktop
    """build(spire=..., restorer=...) -> a shown MainWindow (test_desktop's studio) with SPIRE wired in."""

    def build(spire=None, restorer=None, name="cfg"):
        return studio(restorer=restorer, name=name, autosave=False, spire=spire)

    return build


def spire_item(window):
    chat = window.chat
    return chat.mode.model().item(chat.mode.findData(SPIRE))


def send_spire(qtbot, window, text, semantic="", steps=2):
    chat = window.chat
    assert chat.set_mode(SPIRE)
    chat.semantic.setText(semantic)
    chat.steps_box.setValue(steps)
    with qtbot.waitSignal(window.controller.replied, timeout=WAIT * 3) as blocker:
        chat.input.setFocus()
        chat.input.setText(text)
        qtbot.keyClick(chat.input, Qt.Key.Key_Return)
    return blocker.args[0]


# --- offered or not -------------------------------------------------------------------------------------------


def test_spire_is_greyed_out_with_the_reason_when_no_adapter_is_installed(qtbot, make, monkeypatch):
    import engine.spire

    monkeypatch.setattr(engine.spire, "available", lambda adapter=None: (False, NO_ADAPTER))
    window = make()  # the real provider: it asks engine.spire.available() in the background
    qtbot.waitUntil(lambda: window.spire.state is SpireState.UNAVAILABLE, timeout=WAIT)
    chat = window.chat
    assert not spire_item(window).isEnabled()
    tip = chat.mode.itemData(chat.mode.findData(SPIRE), Qt.ItemDataRole.ToolTipRole)
    assert tip == "Not available on this computer: No SPIRE adapter is installed."  # one sentence, no commands
    assert not chat.mode_note.isVisible()  # no notice for a mode this computer has not set up
    assert not chat.set_mode(SPIRE) and not chat.is_spire
    assert not chat.spire_row.isVisible() and not chat.understood.isVisible()
    with pytest.raises(Exception, match="not available"):  # and a request that gets through anyway is refused
        window.spire.require()


def test_semantic_field_and_understood_label_follow_the_mode(qtbot, make):
    window = make(SpireProvider.fixed(FakeSpire(), reason=ON_CPU))
    chat = window.chat
    assert spire_item(window).isEnabled() and chat.mode.currentData() == INSTRUCTIR
    assert not chat.spire_row.isVisible() and not chat.understood.isVisible() and not chat.mode_note.isVisible()
    assert all(c.isVisible() for c in chat.chips) and not any(c.isVisible() for c in chat.spire_chips)

    qtbot.keyClicks(chat.input, "remove the noise, strongly")
    chat.mode.setCurrentIndex(chat.mode.findData(SPIRE))  # as picking it in the combo box does
    assert chat.spire_row.isVisible() and chat.semantic.isVisible() and chat.understood.isVisible()
    assert chat.semantic.placeholderText() == "What's in the photo? (optional)"
    assert chat.mode_note.isVisible() and chat.mode_note.text() == ON_CPU and WARNING in chat.mode_note.styleSheet()
    assert not any(c.isVisible() for c in chat.chips) and all(c.isVisible() for c in chat.spire_chips)
    assert "Understood as: <b>Denoise with sigma 0.118</b>" in chat.understood.text()

    chat.input.clear()
    qtbot.keyClicks(chat.input, "sharpen it a bit and upscale 2x")
    assert "Deblur with sigma 1.6; Upsample to 2x" in chat.understood.text()
    chat.input.clear()
    qtbot.keyClicks(chat.input, "remove the haze")
    assert "InstructIR mode" in chat.understood.text() and WARNING in chat.understood.styleSheet()
    sent = []
    chat.spireRequested.connect(lambda *a: sent.append(a))
    qtbot.keyClick(chat.input, Qt.Key.Key_Return)  # not understood: not sent, the text stays to be fixed
    assert sent == [] and chat.input.text() == "remove the haze"

    assert chat.set_mode(INSTRUCTIR)
    assert not chat.spire_row.isVisible() and not chat.understood.isVisible() and not chat.mode_note.isVisible()


# --- running it -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pipeline():
    """A real SpirePipeline on tiny random models (engine/spire/tiny.py), built in memory on the CPU."""
    pytest.importorskip("diffusers")
    import torch

    from engine.spire.model import SpireAdapter
    from engine.spire.pipeline import SpirePipeline
    from engine.spire.tiny import tiny_components

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny models are all per-op overhead (see tests/test_spire.py)
    components = tiny_components()
    adapter = SpireAdapter.from_unet(components["unet"], vae_scale_factor=2, base_model="tiny")
    yield SpirePipeline(components, adapter, "cpu")
    torch.set_num_threads(threads)


def test_spire_instruction_is_a_step_that_undo_removes(qtbot, make, photo_file, tiny_pipeline):
    window = make(SpireProvider.fixed(tiny_pipeline))
    open_photo(qtbot, window, photo_file)
    original = after_pixels(window)
    progress = []
    window.controller.progress.connect(lambda d, t: progress.append((d, t)))

    reply = send_spire(qtbot, window, "remove the noise", semantic="a colourful gradient", steps=2)
    assert reply.kind == "applied", reply.message
    step = window.document.steps[-1]
    assert step.kind is StepKind.SPIRE and step.params["prompt"] == "Denoise with sigma 0.072"
    assert (step.params["semantic"], step.params["sampling_steps"], step.instruction) == (
        "a colourful gradient", 2, "remove the noise")
    assert step.delta.shape == window.document.session.original.shape
    text = replies(window)[-1].text()
    assert "SPIRE: Denoise with sigma 0.072" in text and "2 steps" in text and " s" in text
    assert any(d >= 1000 for d, _ in progress)
    qtbot.waitUntil(lambda: len(window.history.rows) == 1)
    assert "SPIRE · Denoise with sigma 0.072" in window.history.rows[0].detail.text()
    qtbot.waitUntil(lambda: not np.array_equal(after_pixels(window), original))
    user = [b for b in window.chat.bubbles() if b.role == "user"][-1]
    assert "SPIRE · “a colourful gradient”" in user.text()

    window.undo_action.trigger()
    assert window.document.steps == []
    qtbot.waitUntil(lambda: np.array_equal(after_pixels(window), original))
    window.redo_action.trigger()
    assert len(window.document.steps) == 1 and window.document.steps[0].delta is step.delta


def test_upsampling_keeps_the_size_and_wrong_sizes_and_cancel_are_readable(qtbot, make, photo_file):
    spire = FakeSpire()
    window = make(SpireProvider.fixed(spire))
    open_photo(qtbot, window, photo_file)

    reply = send_spire(qtbot, window, "upscale 2x")
    assert reply.kind == "applied" and spire.calls[-1]["upscale"] is False
    assert window.document.result().shape == window.document.session.original.shape
    assert "keeps its size" in replies(window)[-1].text()

    spire.shape = (10, 10)  # a pipeline that answers with another size is refused, nothing changes
    reply = send_spire(qtbot, window, "remove the noise")
    assert reply.kind == "error" and "10x10 image for a" in reply.message
    assert len(window.document.steps) == 1

    spire.shape, spire.delay = None, 3.0
    chat = window.chat
    chat.steps_box.setValue(50)
    chat.input.setText("remove the noise")
    with qtbot.waitSignal(window.controller.replied, timeout=WAIT) as blocker:
        qtbot.keyClick(chat.input, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: len(spire.calls) == 3, timeout=WAIT)
        chat.cancel_button.click()
    assert blocker.args[0].kind == "cancelled" and len(window.document.steps) == 1


def test_stale_spire_steps_are_recomputed_with_spire_and_survive_session_files(qtbot, make, photo_file, tmp_path):
    spire, restorer = FakeSpire(), fake()
    window = make(SpireProvider.fixed(spire), restorer)
    open_photo(qtbot, window, photo_file)
    window.chat.set_mode(INSTRUCTIR)
    with qtbot.waitSignal(window.controller.replied, timeout=WAIT):
        window.controller.send("remove the noise")
    send_spire(qtbot, window, "remove the blur", semantic="a gradient", steps=3)
    assert [s.kind for s in window.document.steps] == [StepKind.INSTRUCTIR, StepKind.SPIRE]

    window.document.set_strength(0, 0.5)  # the SPIRE step's input changed: it becomes a preview
    assert window.document.steps[1].stale
    calls = restorer.calls
    with qtbot.waitSignal(window.controller.notice, timeout=WAIT):
        window.controller.recompute()
    assert restorer.calls == calls and len(spire.calls) == 2  # SPIRE redid its own step, InstructIR did nothing
    np.testing.assert_allclose(spire.calls[-1]["input"], window.document.session.result(0), atol=1e-6)
    assert spire.calls[-1]["semantic"] == "a gradient" and spire.calls[-1]["steps"] == 3
    assert not window.document.session.stale and window.document.steps[1].kind is StepKind.SPIRE

    path = save_session_file(tmp_path / "s.irsession", window.document.session, window.document.picture)
    session, _ = load_session_file(path)
    again = session.steps[1]
    assert again.kind is StepKind.SPIRE and again.params == window.document.steps[1].params
    np.testing.assert_array_equal(session.result(), window.document.result())
    engine_view = EditSession.load(path)  # the engine reads the same file, SPIRE step and all
    assert engine_view.steps[1].kind is StepKind.SPIRE


def test_the_sampling_defaults_load_without_torch_or_diffusers():
    """The steps box, sessions and the server read SPIRE's defaults; the pipeline is loaded only when SPIRE runs."""
    probe = ("import sys, desktop.spire_mode, engine.edit.session, engine.spire; print(sorted(m for m in sys.modules "
             "if m.split('.')[0] in ('torch', 'diffusers', 'transformers') or m.startswith('engine.spire.')"
             " and m != 'engine.spire.adapters'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent, env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_provider_checks_then_loads_once(qtbot):
    loads = []
    provider = SpireProvider(availability=lambda: (True, ON_CPU), loader=lambda device: loads.append(device) or 1)
    provider.check()
    qtbot.waitUntil(lambda: provider.ok is True, timeout=WAIT)
    assert provider.on_cpu
    with pytest.raises(Exception, match="Loading"):
        provider.require()  # NotReady: the task keeps its place while the pipeline loads
    qtbot.waitUntil(lambda: provider.state is SpireState.READY, timeout=WAIT)
    provider.load()
    assert provider.require() == 1 and loads == ["auto"]


def test_a_stale_spire_step_without_spire_says_what_to_do(qtbot, make, photo_file):
    spire = SpireProvider.fixed(FakeSpire())
    window = make(spire)
    open_photo(qtbot, window, photo_file)
    with qtbot.waitSignal(window.controller.replied, timeout=WAIT):
        window.controller.send("remove the noise")
    send_spire(qtbot, window, "remove the blur")
    window.document.set_strength(0, 0.5)
    # e.g. the session moved to another computer
    spire.state, spire.ok, spire.reason = SpireState.UNAVAILABLE, False, NO_ADAPTER
    with qtbot.waitSignal(window.controller.replied, timeout=WAIT) as blocker:
        window.controller.send("brighten it")
    reply = blocker.args[0]
    assert reply.kind == "error" and "must be recomputed first" in reply.message and NO_ADAPTER in reply.message
    assert len(window.document.steps) == 2  # nothing changed
