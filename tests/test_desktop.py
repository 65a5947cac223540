"""The desktop app, driven through its real widgets (pytest-qt, offscreen) with a fake, deterministic model."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QElapsedTimer, QEvent, QMimeData, QPoint, QPointF, Qt, QTimer, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent, QKeyEvent, QKeySequence, QWheelEvent  # noqa: E402

from desktop.model_provider import ModelProvider, ProviderState  # noqa: E402
from desktop.settings import MODEL_FOLDER, Settings  # noqa: E402
from engine.io.images import load_image, picture_from_array, save_image  # noqa: E402

WAIT = 10_000


class CannedPrompts:
    """Answers every question the window asks, without dialogs."""

    def __init__(self) -> None:
        self.open = self.export = self.session_save = self.session_open = None
        self.recover = True
        self.unsaved = "discard"
        self.asked_unsaved = None
        self.shown: list[str] = []

    def open_path(self, start):
        return self.open

    def export_path(self, suggested):
        self.suggested = suggested
        return self.export

    def session_save_path(self, suggested):
        return self.session_save

    def session_open_path(self, start):
        return self.session_open

    def unsaved_changes(self, name):
        self.asked_unsaved = name
        return self.unsaved


    def offer_recovery(self, description):
        self.recovery_text = description
        return self.recover

    def show_text(self, title, text):
        self.shown.append(text)


def fake(delay: float = 0.0):
    from conftest import FakeRestorer

    return FakeRestorer(delay=delay)


@pytest.fixture
def photo_file(tmp_path, photo) -> Path:
    """A 16-bit PNG with an ICC profile and EXIF, the metadata export must keep."""
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    pic = picture_from_array((photo * 65535).round().astype(np.uint16))
    pic = dataclasses.replace(pic, icc_profile=icc, exif=b"Exif\x00\x00" + exif.tobytes())
    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    save_image(pic, path)
    return path


@pytest.fixture
def studio(qtbot, tmp_path):
    """make(restorer=..., provider=..., **MainWindow options) -> a shown window, canned prompts, private settings."""
    from desktop.main_window import MainWindow

    made = []

    def make(restorer=None, provider=None, name: str = "cfg", **window_options):
        settings = Settings.at(tmp_path / name)
        provider = provider or ModelProvider.fixed(restorer or fake())
        window = MainWindow(settings, provider, prompts=CannedPrompts(), **window_options)
        qtbot.addWidget(window)
        window.resize(1200, 800)
        window.show()
        made.append(window)
        return window

    yield make
    for window in made:
        window.shutdown()


def open_photo(qtbot, window, path) -> None:
    with qtbot.waitSignal(window.controller.opened, timeout=WAIT):
        window.open_path(path)
    qtbot.waitUntil(lambda: window.view.has_image, timeout=WAIT)


def type_instruction(qtbot, window, text: str):
    """Type into the chat box and press Enter, like a user; returns the Reply."""
    with qtbot.waitSignal(window.controller.replied, timeout=WAIT) as blocker:
        window.chat.input.setFocus()
        qtbot.keyClicks(window.chat.input, text)
        qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)
    return blocker.args[0]


def replies(window):
    return [b for b in window.chat.bubbles() if b.role in ("assistant", "error") and b.reply is not None]


def after_pixels(window) -> np.ndarray:
    from PySide6.QtGui import QImage

    image = window.document.after_image().convertToFormat(QImage.Format.Format_RGB888)
    ptr = image.constBits()
    return np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())[:, : image.width() * 3].copy()


# --- the core loop ----------------------------------------------------------------------------------------------


def test_open_instruct_undo_redo_and_strength(qtbot, studio, photo_file):
    restorer = fake()
    window = studio(restorer)
    window.prompts.open = str(photo_file)
    with qtbot.waitSignal(window.controller.opened, timeout=WAIT):
        window.open_action.trigger()  # File -> Open
    qtbot.waitUntil(lambda: window.view.has_image, timeout=WAIT)
    assert window.document.picture.bit_depth == 16
    assert "16-bit" in window.image_label.text()
    original = after_pixels(window)

    reply = type_instruction(qtbot, window, "remove the noise")
    assert reply.kind == "applied" and reply.plan[0].intent == "noise"
    bubble = replies(window)[-1]
    assert "Denoise" in bubble.text() and "% sure" in bubble.text()
    assert reply.thumbnail is not None and reply.seconds > 0
    assert [s.instruction for s in window.document.steps] == ["remove the noise"]
    qtbot.waitUntil(lambda: len(window.history.rows) == 1)
    assert not np.array_equal(after_pixels(window), original)

    # Undo / redo through the menu actions (Ctrl+Z, Ctrl+Shift+Z and Ctrl+Y are their shortcuts).
    assert QKeySequence("Ctrl+Z") in window.undo_action.shortcuts()
    assert {QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")} <= set(window.redo_action.shortcuts())
    window.undo_action.trigger()
    assert window.document.steps == []
    qtbot.waitUntil(lambda: np.array_equal(after_pixels(window), original))
    window.redo_action.trigger()
    assert len(window.document.steps) == 1

    # Drag the strength slider: live re-blend, no network call, one undo entry for the whole drag.
    calls, depth = restorer.calls, window.document.stack.count()
    qtbot.waitUntil(lambda: len(window.history.rows) == 1)
    slider = window.history.rows[0].slider
    slider.setSliderDown(True)
    for value in (80, 60, 40):
        slider.setValue(value)
    slider.setSliderDown(False)
    assert restorer.calls == calls
    assert window.document.stack.count() == depth + 1
    step = window.document.steps[0]
    assert step.strength == pytest.approx(0.4)
    expected = np.clip(window.document.session.original + np.float32(0.4) * step.delta, 0, 1)
    np.testing.assert_allclose(window.document.result(), expected, atol=1e-6)
    qtbot.waitUntil(lambda: window.history.rows[0].value.text() == "40 %")
    window.undo_action.trigger()
    assert window.document.steps[0].strength == pytest.approx(1.0)
    qtbot.waitUntil(lambda: window.history.rows[0].slider.value() == 100)


def test_compound_noop_and_empty_instructions(qtbot, studio, photo_file):
    window = studio()
    open_photo(qtbot, window, photo_file)
    reply = type_instruction(qtbot, window, "remove the noise and then brighten it a bit")
    assert [(p.intent, p.strength) for p in reply.plan] == [("noise", 1.0), ("low-light", 0.5)]
    assert window.document.stack.count() == 1  # a compound instruction is one undo entry
    text = replies(window)[-1].text()
    assert "1. “remove the noise”" in text and "2. “brighten it a bit”" in text and "strength 50%" in text

    reply = type_instruction(qtbot, window, "hello there")
    assert reply.kind == "nothing"
    assert "not a restoration request" in replies(window)[-1].text()
    assert len(window.document.steps) == 2

    before = len(window.chat.bubbles())
    qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)  # empty: nothing is sent
    assert len(window.chat.bubbles()) == before


def test_second_instruction_is_queued_and_cancel_stops(qtbot, studio, photo_file):
    window = studio(fake(delay=0.6))
    open_photo(qtbot, window, photo_file)
    got = []
    window.controller.replied.connect(got.append)
    window.chat.send("remove the noise")
    window.chat.send("brighten it")  # typed while busy
    user = [b for b in window.chat.bubbles() if b.role == "user"]
    assert "Queued" in user[-1].text()
    assert window.chat.busy_row.isVisibleTo(window.chat)
    qtbot.waitUntil(lambda: len(got) == 2, timeout=WAIT)
    assert [r.kind for r in got] == ["applied", "applied"]
    assert [s.instruction for s in window.document.steps] == ["remove the noise", "brighten it"]

    window.chat.send("remove the blur")
    qtbot.waitUntil(lambda: window.chat.progress.value() > 0, timeout=WAIT)
    qtbot.mouseClick(window.chat.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(got) == 3, timeout=WAIT)
    assert got[-1].kind == "cancelled"
    assert len(window.document.steps) == 2
    qtbot.waitUntil(lambda: not window.chat.busy_row.isVisibleTo(window.chat))


def _probe_gaps(qtbot, run) -> list[int]:
    """The gaps (ms) between the ticks of a 5 ms UI timer while ``run(done)`` works until it calls ``done``."""
    clock, gaps, last, finished = QElapsedTimer(), [], [0], []
    clock.start()

    def tick():
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    last[0] = clock.elapsed()
    timer.start()
    run(lambda *_: finished.append(True))
    qtbot.waitUntil(lambda: bool(finished), timeout=WAIT)
    timer.stop()
    gaps.append(clock.elapsed() - last[0])  # up to the end: a stall that never let the timer tick counts too
    return gaps


def test_event_loop_keeps_turning_while_the_model_runs(qtbot, studio, photo_file):
    """Inference on a pool thread: the UI timer keeps ticking while the (1 s) model runs.

    Judged against the same probe with nothing running, so a loaded machine's own stalls do not fail it;
    a restoration on the UI thread would stop the ticks for the whole second and still fails. The real
    latency target (a few ms) is measured by bench/ui_latency.py, not here.
    """
    window = studio(fake(delay=1.0))
    open_photo(qtbot, window, photo_file)
    window.diagnosis.cancel()  # only the restoration runs in the measured second
    idle = _probe_gaps(qtbot, lambda done: QTimer.singleShot(1000, done))
    got = []

    def instruct(done):
        window.controller.replied.connect(done)
        window.controller.replied.connect(got.append)
        window.chat.send("remove the noise")

    start = time.perf_counter()
    busy = _probe_gaps(qtbot, instruct)
    assert got and got[0].kind == "applied"
    assert time.perf_counter() - start >= 1.0
    bound = max(400, 2 * max(idle))  # a stall of the whole inference (>= 1000 ms) is far above it
    assert max(busy) < bound, f"the UI stalled for {max(busy)} ms (idle, the same probe: {max(idle)} ms)"
    assert np.median(busy) <= np.median(idle) + 10, (np.median(busy), np.median(idle))


def test_clicking_a_message_jumps_to_that_state(qtbot, studio, photo_file):
    window = studio()
    open_photo(qtbot, window, photo_file)
    type_instruction(qtbot, window, "remove the noise")
    type_instruction(qtbot, window, "brighten it")
    first, second = replies(window)
    qtbot.mouseClick(first, Qt.MouseButton.LeftButton)
    assert [s.instruction for s in window.document.steps] == ["remove the noise"]
    user_first = [b for b in window.chat.bubbles() if b.role == "user"][0]
    qtbot.mouseClick(user_first, Qt.MouseButton.LeftButton)  # your message: the state before it
    assert window.document.steps == []
    qtbot.mouseClick(second, Qt.MouseButton.LeftButton)
    assert len(window.document.steps) == 2
    assert second.objectName() == "bubbleCurrent"


# --- files ------------------------------------------------------------------------------------------------------


def test_export_keeps_format_bit_depth_icc_and_exif(qtbot, studio, photo_file, tmp_path):
    window = studio()
    open_photo(qtbot, window, photo_file)
    type_instruction(qtbot, window, "remove the noise")
    out = tmp_path / "out.png"
    window.prompts.export = str(out)
    with qtbot.waitSignal(window.controller.exported, timeout=WAIT):
        window.export_action.trigger()
    assert window.prompts.suggested.endswith("photo_restored.png")
    source, written = load_image(photo_file), load_image(out)
    assert written.bit_depth == 16 and written.format == "PNG"
    assert written.icc_profile == source.icc_profile
    assert written.exif and b"TestCam" in written.exif
    np.testing.assert_allclose(written.rgb, window.document.result(), atol=1 / 65535)
    assert window.document.stack.isClean() and "•" not in window.windowTitle()

    # The original is never overwritten: a readable message, not a crash.
    with qtbot.waitSignal(window.controller.notice, timeout=WAIT) as blocker:
        window.controller.export(photo_file)
    assert blocker.args[1] == "error" and "original" in blocker.args[0].lower()
    assert np.array_equal(load_image(photo_file).rgb, source.rgb)


def test_session_roundtrip_and_crash_recovery(qtbot, studio, photo_file, tmp_path):
    window = studio()
    open_photo(qtbot, window, photo_file)
    type_instruction(qtbot, window, "remove the noise and then brighten it a bit")
    window.document.set_strength(0, 0.7)
    saved = tmp_path / "edit.irsession"
    window.prompts.session_save = str(saved)
    with qtbot.waitSignal(window.controller.notice, timeout=WAIT):
        window.save_session_action.trigger()
    result = window.document.result().copy()

    other = studio(name="cfg2")
    open_photo(qtbot, other, saved)
    assert [(s.instruction, s.strength) for s in other.document.steps] == [
        (s.instruction, s.strength) for s in window.document.steps]
    np.testing.assert_array_equal(other.document.result(), result)  # lossless
    assert other.document.picture.bit_depth == 16 and other.document.picture.icc_profile

    # Crash recovery: the first window autosaves, then "crashes" (its lock goes away, the autosave stays).
    window.recovery.save_now()
    qtbot.waitUntil(lambda: window.recovery.path.is_file() and not window.recovery._saving, timeout=WAIT)
    third = studio(name="cfg")  # same settings folder, so the same recovery folder
    assert third.recovery.orphans() == []  # the first window is alive and holds its lock
    window.recovery._lock.unlock()
    assert [o.path for o in third.recovery.orphans()] == [window.recovery.path]
    assert third.offer_recovery()
    assert "photo.png with 2 steps" in third.prompts.recovery_text
    assert len(third.document.steps) == 2 and not third.document.stack.isClean()
    assert third.document.path == photo_file  # export suggests photo_restored.png beside the photo
    assert third.document.name == "photo.png (recovered)" and "(recovered)" in third.windowTitle()
    assert third.document.session_path is None  # Save asks where: the autosave is not the user's file
    assert any("Recovered unsaved work on photo.png" in b.text() for b in third.chat.bubbles())
    assert not window.recovery.path.exists()


def test_batch_of_three_with_cancel_keeps_finished_and_no_partials(qtbot, studio, photo, tmp_path):
    window = studio(fake(delay=0.8))
    src = tmp_path / "shoot"
    (src / "day2").mkdir(parents=True)
    for i, rel in enumerate(["a.png", "b.png", "day2/c.png"]):
        save_image(picture_from_array(np.roll(photo, i, axis=1)), src / rel)
    dialog = window.show_batch()
    assert not dialog.start_button.isEnabled()  # no recipe yet: no steps in the session
    recipe = tmp_path / "recipe.json"
    from engine.edit.session import Recipe

    Recipe([("remove the noise", 0.8)]).save(recipe)
    dialog.set_recipe_file(recipe)

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(src))])
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    dialog.files.dropEvent(drop)  # a folder dropped in: searched recursively
    assert dialog.files.topLevelItemCount() == 3
    out = tmp_path / "restored"
    dialog.out_dir.setText(str(out))
    dialog.format.setCurrentIndex(dialog.format.findData("tiff"))
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    assert dialog.running

    # Cancel while the second photo is being restored and the first is already written.
    qtbot.waitUntil(lambda: (out / "shoot" / "a.tif").is_file() and dialog.items[1].status == "running",
                    timeout=WAIT)
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    assert dialog.wait(WAIT)
    assert dialog.report.cancelled
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["shoot/a.tif"]  # finished file kept, nothing partial or temporary left
    statuses = [dialog.files.topLevelItem(i).text(2) for i in range(3)]
    assert statuses == ["Done", "Cancelled", "Cancelled"]
    assert "1 restored" in dialog.summary.text()
    assert load_image(out / "shoot" / "a.tif").size == (photo.shape[1], photo.shape[0])


# --- errors, settings, entry points ---------------------------------------------------------------------------------


def test_errors_are_readable_messages(qtbot, studio, tmp_path, photo_file):
    from conftest import FakeRestorer

    class OutOfMemory(FakeRestorer):
        def restore(self, image, instruction, progress=None, cancel=None, sink=None):
            raise MemoryError

    window = studio(OutOfMemory())
    reply = type_instruction(qtbot, window, "remove the noise")
    assert reply.kind == "error" and "Open a photo first" in reply.message

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with qtbot.waitSignal(window.controller.notice, timeout=WAIT) as blocker:
        window.open_path(bad)
    assert blocker.args[1] == "error" and "broken.jpg" in blocker.args[0]
    assert not window.document.is_open and window.isVisible()
    assert any("broken.jpg" in b.text() for b in window.chat.bubbles() if b.role == "error")

    open_photo(qtbot, window, photo_file)
    reply = type_instruction(qtbot, window, "remove the noise")
    assert reply.kind == "error" and "Out of memory" in reply.message and "tile size" in reply.message
    assert window.document.steps == []

    # A missing model: the app starts, says so in the status bar and the chat, and refuses politely.
    from engine.model.registry import ModelNotFoundError

    def missing(spec, device, fast, tile):
        raise ModelNotFoundError(f"Unknown model {spec!r}. Known models: instructir-7d; or give a model folder.")

    settings = Settings.at(tmp_path / "missing")
    provider = ModelProvider(settings, loader=missing)
    window2 = studio(provider=provider, name="missing")
    provider.load()
    qtbot.waitUntil(lambda: provider.state is ProviderState.FAILED, timeout=WAIT)
    assert window2.model_label.text() == "Model missing"
    missing_notice = [b for b in window2.chat.bubbles() if "not installed" in b.text()]
    assert missing_notice and missing_notice[0].action_button.text() == "Open Settings…"
    open_photo(qtbot, window2, photo_file)
    reply = type_instruction(qtbot, window2, "remove the noise")
    assert reply.kind == "error" and "Settings" in reply.message


def test_settings_persist_and_status_bar(qtbot, studio, tmp_path):
    from desktop.settings_dialog import SettingsDialog

    window = studio()
    assert window.model_label.text().startswith("Model: fake")
    settings = window.settings
    downloads = []
    dialog = SettingsDialog(settings, window, downloader=lambda progress, cancel: downloads.append(1) or "files")
    qtbot.addWidget(dialog)
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.official_status.text() == "downloaded", timeout=WAIT)
    assert downloads == [1] and dialog.official.isChecked()
    folder = tmp_path / "my-model"
    folder.mkdir()
    dialog.folder.setChecked(True)
    dialog.folder_edit.setText(str(folder))
    dialog.tile.setValue(512)
    dialog.device.setCurrentIndex(dialog.device.findData("cpu"))
    dialog.accept()
    reread = Settings.at(tmp_path / "cfg")
    assert (reread.model_source, reread.model_folder, reread.tile, reread.device) == (
        MODEL_FOLDER, str(folder), 512, "cpu")
    assert reread.model_spec() == str(folder)


def test_drop_recent_zoom_compare_and_command_line(qtbot, studio, photo_file):
    from desktop.app import parse_args

    window = studio()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(photo_file))])
    with qtbot.waitSignal(window.controller.opened, timeout=WAIT):
        window.dropEvent(QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                    Qt.KeyboardModifier.NoModifier))
    assert window.document.path == photo_file
    assert window.settings.recent_files[0] == str(photo_file.resolve())
    assert [a.text() for a in window.recent_menu.actions()][0] == "photo.png"

    view = window.view
    photo_w = window.document.picture.size[0]
    window.actual_action.trigger()
    assert view.zoom() == pytest.approx(1.0)
    wheel = QWheelEvent(QPointF(100, 100), QPointF(100, 100), QPoint(0, 0), QPoint(0, 240),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    view.wheelEvent(wheel)
    assert view.zoom() == pytest.approx(1.0015**240)  # zoomed in by two wheel notches
    window.fit_action.trigger()
    assert view.zoom() != pytest.approx(1.0)

    window.split_action.trigger()
    assert view.compare and window.split_slider.isVisibleTo(window)
    window.split_slider.setValue(250)
    assert view.split == pytest.approx(0.25)
    line = QPoint(round(view.mapFromScene(QPointF(photo_w * 0.25, 0)).x()), view.viewport().height() // 2)
    qtbot.mousePress(view.viewport(), Qt.MouseButton.LeftButton, pos=line)  # grab the split line and drag it
    qtbot.mouseMove(view.viewport(), line + QPoint(60, 0))
    qtbot.mouseRelease(view.viewport(), Qt.MouseButton.LeftButton, pos=line + QPoint(60, 0))
    assert view.split > 0.3 and window.split_slider.value() == round(view.split * 1000)
    from PySide6.QtWidgets import QApplication

    view.setFocus()
    for kind, expect in ((QEvent.Type.KeyPress, True), (QEvent.Type.KeyRelease, False)):
        QApplication.sendEvent(view, QKeyEvent(kind, Qt.Key.Key_Backslash, Qt.KeyboardModifier.NoModifier, "\\"))
        assert view.showing_before is expect  # the view does not use the key: it comes up to the window
    window.chat.input.setFocus()
    QApplication.sendEvent(window.chat.input, QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_Backslash,
                                                        Qt.KeyboardModifier.NoModifier, "\\"))
    assert not view.showing_before and window.chat.input.text().endswith("\\")  # typed, not a comparison

    assert parse_args([str(photo_file)]).file == str(photo_file)
    assert parse_args(["--self-test", "x.png"]).self_test == "x.png"


def test_self_test_flag_runs_the_real_window(qtbot, photo_file, capsys):
    from desktop.app import self_test

    start = time.perf_counter()
    assert self_test(str(photo_file), provider=ModelProvider.fixed(fake())) == 0
    assert "self-test ok" in capsys.readouterr().out
    assert time.perf_counter() - start < 20


@pytest.mark.slow  # builds the session's tiny model (~20-60 s alone; free when the engine tests already built it)
def test_self_test_with_a_real_tiny_model(qtbot, photo_file, tiny_model_dir, capsys):
    """The packaging smoke test end to end: the real Restorer, loaded by the provider, through the window."""
    from desktop.app import main

    assert main(["--self-test", str(photo_file), "--model", str(tiny_model_dir), "--device", "cpu"]) == 0
    assert "self-test ok" in capsys.readouterr().out


# --- issue 17: the rough edges -----------------------------------------------------------------------------------


def _wheel(widget, notches: int = -1) -> None:
    from PySide6.QtWidgets import QApplication

    pos = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(pos, widget.mapToGlobal(pos), QPoint(0, 0), QPoint(0, 120 * notches),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_the_wheel_scrolls_the_history_and_never_changes_a_slider_it_passes_over(qtbot, studio, photo_file):
    window = studio()
    window.resize(1200, 600)
    open_photo(qtbot, window, photo_file)
    for text in ("remove the noise", "brighten it", "remove the blur", "remove the noise", "brighten it"):
        type_instruction(qtbot, window, text)
    qtbot.waitUntil(lambda: len(window.history.rows) == 5)
    bar = window.history.scroll.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=WAIT)  # the list is taller than the panel
    slider, depth = window.history.rows[1].slider, window.document.stack.count()
    window.chat.input.setFocus()
    before = bar.value()
    _wheel(slider, -2)  # the pointer merely passes over the slider while scrolling down
    assert slider.value() == 100 and window.document.stack.count() == depth
    assert [s.strength for s in window.document.steps] == [1.0] * 5
    assert bar.value() > before  # the list scrolled instead

    slider.setFocus()  # clicked: now the wheel is the slider's
    _wheel(slider, -1)
    assert slider.value() < 100 and window.document.steps[1].strength < 1.0


def test_unsaved_changes_offer_save_export_discard_and_cancel(qtbot, studio, photo_file, tmp_path):
    from PySide6.QtWidgets import QApplication, QMessageBox

    from desktop.main_window import Prompts

    window = studio()
    open_photo(qtbot, window, photo_file)
    type_instruction(qtbot, window, "remove the noise")

    seen = []

    def answer():  # the real dialog: read its buttons, press Cancel
        box = next(w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible())
        seen.extend(b.text() for b in box.buttons())
        box.button(QMessageBox.StandardButton.Cancel).click()

    QTimer.singleShot(200, answer)
    assert Prompts(window).unsaved_changes(window.document.name) == "cancel"
    assert {"Save", "Export…", "Discard", "Cancel"} <= set(seen)

    window.prompts.unsaved = "cancel"
    assert not window.open_path(photo_file) and len(window.document.steps) == 1
    window.close()
    assert window.isVisible() and window.prompts.asked_unsaved == "photo.png"

    # Save: the session is written, then the window closes by itself.
    saved = tmp_path / "before-closing.irsession"
    window.prompts.unsaved, window.prompts.session_save = "save", str(saved)
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=WAIT)
    assert saved.is_file()

    # Export…: the photo is written, then the other photo opens.
    other = studio(name="cfg2")
    open_photo(qtbot, other, photo_file)
    type_instruction(qtbot, other, "remove the noise")
    other.prompts.unsaved, other.prompts.export = "export", str(tmp_path / "exported.png")
    second = tmp_path / "second.png"
    save_image(picture_from_array(np.zeros((20, 30, 3), np.float32)), second)
    with qtbot.waitSignal(other.controller.opened, timeout=WAIT):
        assert not other.open_path(second)  # not at once: after the export
    assert (tmp_path / "exported.png").is_file() and other.document.path == second


def test_quick_buttons_wait_for_a_photo_and_the_spire_notice_hides_without_an_adapter(qtbot, studio, photo_file):
    window = studio()
    chat = window.chat
    assert chat.chips and not any(c.isEnabled() for c in chat.chips)
    assert not chat.mode_note.isVisibleTo(chat) or chat.mode_note.text() == ""
    open_photo(qtbot, window, photo_file)
    assert all(c.isEnabled() for c in chat.chips)

    chat.set_suggestions([("Remove haze", "remove the haze", "The photo looks hazy (diagnosis)")], "Suggested:")
    assert [c.text() for c in chat.chips] == ["Remove haze"] and chat.chips[0].isEnabled()
    assert chat.suggestions_title.isVisibleTo(chat)
    chat.set_suggestions([])
    assert len(chat.chips) == 6 and not chat.suggestions_title.isVisibleTo(chat)


def test_progress_says_percent_and_time_left_and_times_agree(qtbot, studio, photo_file):
    window = studio(fake(delay=2.0))
    open_photo(qtbot, window, photo_file)
    activity, status = [], []
    window.controller.activity.connect(activity.append)
    window.controller.activity.connect(lambda _t: status.append(window.statusBar().currentMessage()))
    reply = type_instruction(qtbot, window, "remove the noise")
    assert any("%" in a for a in activity) and any("left" in a for a in activity), activity
    assert any("%" in s for s in status)
    step = window.document.steps[0]
    shown = f"{step.seconds:.1f} s"
    qtbot.waitUntil(lambda: len(window.history.rows) == 1)
    assert shown in window.history.rows[0].detail.text() and shown in replies(window)[-1].text()
    assert reply.seconds >= step.seconds and f"{reply.seconds:.1f} s in all" in replies(window)[-1].text()


def test_removing_a_step_explains_previews_without_blaming_a_strength(qtbot, studio, photo_file):
    window = studio()
    open_photo(qtbot, window, photo_file)
    type_instruction(qtbot, window, "remove the noise and then brighten it a bit")
    window.document.remove_step(0)
    qtbot.waitUntil(lambda: window.history.stale_bar.isVisibleTo(window.history))
    assert "strength" not in window.history.stale_note.text()
    assert "preview" in window.history.rows[0].detail.text()


def test_missing_qt_libraries_are_named_with_the_packages_to_install(monkeypatch, capsys):
    from desktop import app

    ldd = ("/x/libqxcb.so:\n\tlibQt6XcbQpa.so.6 => /x/libQt6XcbQpa.so.6 (0x1)\n"
           "\tlibxcb-icccm.so.4 => not found\n\tlibxcb-keysyms.so.1 => not found\n"
           "/x/libQt6XcbQpa.so.6:\n\tlibxcb-icccm.so.4 => not found\n\tlibweird.so.9 => not found\n")
    missing = app.not_found(ldd)
    assert missing == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libweird.so.9"]
    text = app.qt_libraries_message(missing)
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in text
    assert "sudo dnf install xcb-util-wm xcb-util-keysyms" in text and "libweird.so.9" in text

    monkeypatch.setattr(app, "missing_qt_libraries", lambda: ["libxcb-cursor.so.0"])
    assert app.main([]) == 1  # a readable message instead of Qt's abort
    assert "libxcb-cursor0" in capsys.readouterr().err

    monkeypatch.undo()
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert app.missing_qt_libraries() == []  # no X11 plugin to check
