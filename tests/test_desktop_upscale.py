"""The app follows an up-sampling step that changes the photo's size (issue 15): the view, before/after,
hold-to-compare, History (strength, undo/redo, remove), sessions, export and batch."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPointF, Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from test_desktop import WAIT, after_pixels, open_photo, photo_file, replies, studio, type_instruction  # noqa: E402,F401

from engine.edit.session import StepKind  # noqa: E402
from engine.edit.upsampling import resample  # noqa: E402
from engine.io.images import load_image, picture_from_array, save_image  # noqa: E402

W, H = 64, 48  # the conftest photo


def grab(view) -> np.ndarray:
    """What the view shows on screen, as RGB."""
    image = view.viewport().grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    ptr = image.constBits()
    return np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())[:, : image.width() * 3] \
        .reshape(image.height(), image.width(), 3).copy()


def screen_colour(view, x: float, y: float) -> np.ndarray:
    """The colour on screen at image point (x, y) of the result (in result pixels)."""
    p = view.mapFromScene(QPointF(x + 0.5, y + 0.5))  # the middle of the pixel
    return grab(view)[p.y(), p.x()].astype(int)


def test_upscale_2x_view_split_hold_history_and_status(qtbot, studio, photo_file):  # noqa: F811
    window = studio()
    open_photo(qtbot, window, photo_file)
    window.actual_action.trigger()  # 100 %: the user is judging pixels
    reply = type_instruction(qtbot, window, "upscale it 2x")
    assert reply.kind == "applied" and reply.size == (2 * W, 2 * H)
    doc = window.document
    assert doc.steps[0].kind is StepKind.UPSAMPLE and doc.result().shape == (2 * H, 2 * W, 3)
    assert "now 128 × 96" in replies(window)[-1].text()
    qtbot.waitUntil(lambda: window.view.item.size() == (2.0 * W, 2 * H))
    after = doc.after_image()
    assert (after.width(), after.height()) == (2 * W, 2 * H)
    assert (doc.before_image().width(), doc.before_image().height()) == (W, H)  # the original keeps its pixels
    # The framing stays: the photo is as large on screen as before, now with twice the pixels (50 %).
    assert window.view.zoom() == pytest.approx(0.5)
    assert "64 × 48 → 128 × 96" in window.image_label.text()
    qtbot.waitUntil(lambda: len(window.history.rows) == 1)
    assert "→ 128 × 96" in window.history.rows[0].detail.text()

    # Before/after split and hold-\\: the original, enlarged to the result's size, lines up with the result.
    view = window.view
    window.fit_action.trigger()  # several screen pixels per result pixel: no smoothing, exact colours
    assert view.zoom() > 3
    original, result = doc.session.original, doc.result()

    def expect_before(x, y):  # result pixel (x, y) covers original pixel (x // 2, y // 2)
        return np.round(original[y // 2, x // 2] * 255)

    def expect_after(x, y):
        return np.round(result[y, x] * 255)

    left, right = (11, 11), (2 * W - 11, 11)  # either side of the split line, in result pixels
    for x, y in (left, right):
        assert np.abs(expect_before(x, y) - expect_after(x, y)).max() >= 8  # the refinement shows
    window.set_compare(True)
    window.split_slider.setValue(500)
    assert np.abs(screen_colour(view, *left) - expect_before(*left)).max() <= 2
    assert np.abs(screen_colour(view, *right) - expect_after(*right)).max() <= 2
    window.set_compare(False)
    assert np.abs(screen_colour(view, *left) - expect_after(*left)).max() <= 2
    view.set_show_before(True)  # hold \\: the whole original, at the result's size and place
    for x, y in (left, right, (2 * W - 1, 2 * H - 1)):
        assert np.abs(screen_colour(view, x, y) - expect_before(x, y)).max() <= 2
    view.set_show_before(False)


def test_upscale_strength_undo_redo_remove_and_later_steps(qtbot, studio, photo_file):  # noqa: F811
    from conftest import FakeRestorer

    restorer = FakeRestorer()
    window = studio(restorer)
    open_photo(qtbot, window, photo_file)
    doc = window.document
    type_instruction(qtbot, window, "remove the noise")
    type_instruction(qtbot, window, "make it 2x bigger")
    type_instruction(qtbot, window, "brighten it")
    assert doc.result().shape == (2 * H, 2 * W, 3)
    qtbot.waitUntil(lambda: len(window.history.rows) == 3)
    assert [r.detail.text().split(" · ")[0].split(" → ")[-1] for r in window.history.rows] == \
        ["Denoise", "128 × 96", "Brighten"]

    # Strength 0 on the up-sampling step is the plain resample; no network runs for the slider.
    calls = restorer.calls
    window.history.rows[1].slider.setValue(0)
    assert restorer.calls == calls
    upsample = doc.steps[1]
    assert upsample.strength == 0
    np.testing.assert_allclose(doc.session.result(1), resample(doc.session.result(0), (2 * H, 2 * W)), atol=1e-6)
    assert doc.steps[2].stale  # the step after it previews until recomputed
    qtbot.waitUntil(window.recompute_action.isEnabled)
    with qtbot.waitSignal(window.controller.notice, timeout=WAIT):
        window.recompute_action.trigger()
    assert not doc.session.stale and doc.result().shape == (2 * H, 2 * W, 3)

    # Undo all the way and redo: the size follows each state, in the view and the status bar.
    while doc.stack.canUndo():
        window.undo_action.trigger()
    qtbot.waitUntil(lambda: window.view.item.size() == (float(W), float(H)))
    assert window.image_label.text().startswith("64 × 48  ·")
    while doc.stack.canRedo():
        window.redo_action.trigger()
    qtbot.waitUntil(lambda: window.view.item.size() == (2.0 * W, 2 * H))
    assert doc.steps[1].strength == 0 and not doc.session.stale

    # Removing the up-sampling step: the photo is back at its size; the later step previews at that size.
    window.history.rows[1].remove.click()
    assert [s.kind for s in doc.steps] == [StepKind.INSTRUCTIR, StepKind.INSTRUCTIR]
    assert doc.result().shape == (H, W, 3) and doc.steps[1].stale
    qtbot.waitUntil(lambda: window.view.item.size() == (float(W), float(H)))
    qtbot.waitUntil(window.recompute_action.isEnabled)
    with qtbot.waitSignal(window.controller.notice, timeout=WAIT):
        window.recompute_action.trigger()
    assert doc.steps[1].delta.shape == (H, W, 3)
    window.undo_action.trigger()  # the removal is undone: twice the size again
    assert doc.result().shape == (2 * H, 2 * W, 3)
    qtbot.waitUntil(lambda: len(window.history.rows) == 3)


def test_upscaled_session_roundtrip_export_and_batch(qtbot, studio, photo_file, tmp_path):  # noqa: F811
    window = studio()
    open_photo(qtbot, window, photo_file)
    type_instruction(qtbot, window, "upscale it 2x")
    window.document.set_strength(0, 0.6)
    result = window.document.result().copy()

    saved = tmp_path / "big.irsession"
    window.prompts.session_save = str(saved)
    with qtbot.waitSignal(window.controller.notice, timeout=WAIT):
        window.save_session_action.trigger()
    other = studio(name="cfg2")
    open_photo(qtbot, other, saved)
    assert other.document.steps[0].kind is StepKind.UPSAMPLE and other.document.steps[0].strength == 0.6
    np.testing.assert_array_equal(other.document.result(), result)
    qtbot.waitUntil(lambda: other.view.item.size() == (2.0 * W, 2 * H))
    assert "→ 128 × 96" in other.image_label.text()
    assert any(m.text.endswith("1 step restored from the session, now 128 × 96.") for m in other.conversation.messages)
    np.testing.assert_array_equal(after_pixels(other), np.round(result * 255).reshape(2 * H, -1))

    # Export writes the larger photo, 16-bit, ICC and EXIF kept.
    out = tmp_path / "big.png"
    window.prompts.export = str(out)
    with qtbot.waitSignal(window.controller.exported, timeout=WAIT):
        window.export_action.trigger()
    written, source = load_image(out), load_image(photo_file)
    assert written.size == (2 * W, 2 * H) and written.bit_depth == 16
    assert written.icc_profile == source.icc_profile and b"TestCam" in written.exif
    np.testing.assert_allclose(written.rgb, result, atol=1 / 65535)

    # Batch with the session's steps: every photo comes out twice as large, whatever its own size.
    src = tmp_path / "shoot"
    src.mkdir()
    save_image(picture_from_array(np.full((30, 40, 3), 0.4, np.float32)), src / "a.png")
    save_image(picture_from_array(np.full((25, 20, 3), 0.6, np.float32)), src / "b.png")
    dialog = window.show_batch()
    assert "upscale it 2x (2x, 60%)" in dialog.use_session.text()
    dialog.add_paths([src])
    dialog.out_dir.setText(str(tmp_path / "restored"))
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    assert dialog.wait(WAIT)
    sizes = sorted(load_image(p).size for p in (tmp_path / "restored").rglob("*.png"))
    assert sizes == [(40, 50), (80, 60)]
