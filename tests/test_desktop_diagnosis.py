"""The Assistant says what the diagnosis sees and offers this photo's fixes (issue 16, item 3).

The behaviour (timing, cancelling, clicks) is driven with a fake diagnosis that reads the noise of the
pixels; the last tests run the engine's real ``engine.diagnose.diagnose`` on a clean and a noisy photo.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from test_desktop import WAIT, open_photo, photo_file, replies, studio  # noqa: E402,F401

from desktop.chat_panel import SUGGESTIONS  # noqa: E402
from desktop.diagnosis import LOOKING, Purpose  # noqa: E402
from engine.io.images import picture_from_array, save_image  # noqa: E402

DEFAULT_LABELS = [label for label, _ in SUGGESTIONS]


class FakeDiagnose:
    """Noise read from the pixels (blind to smooth gradients); optionally slow, and it notices cancel."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls, self.cancelled, self.finished = [], [], []
        self.lock = threading.Lock()

    def __call__(self, rgb, *, path=None, cancel=None):
        from engine.diagnose import Diagnosis, Kind, Problem

        mean = float(rgb.mean())
        with self.lock:
            self.calls.append(mean)
        deadline = time.monotonic() + self.delay
        while time.monotonic() < deadline:
            if cancel is not None and cancel.cancelled:
                with self.lock:
                    self.cancelled.append(mean)
                cancel.raise_if_cancelled()
            time.sleep(0.01)
        noise = float(np.median(np.abs(np.diff(rgb, 2, axis=1)))) / 1.65  # ~sigma: MAD of a second difference
        severity = round(min(1.0, max(0.0, (noise - 0.0135) / 0.135)), 3)  # the noisy test photo: 0.9
        problems = ()
        if severity >= 0.15:
            text = "remove the noise" + (" a little" if severity < 0.5 else "")
            problems = (Problem(Kind.NOISE, severity, f"grain of about {255 * noise:.0f}/255", text, 1.0),)
        with self.lock:
            self.finished.append(mean)
        return Diagnosis(problems, rgb.shape[1], rgb.shape[0])


def noisy_file(tmp_path, photo, name="noisy.png", sigma=0.15, seed=0):
    rng = np.random.default_rng(seed)
    noisy = np.clip(photo + rng.normal(0, sigma, photo.shape), 0, 1).astype(np.float32)
    path = tmp_path / name
    save_image(picture_from_array(noisy), path)
    return path


def labels(window):
    return [c.text() for c in window.chat.chips]


def notices(window):
    return [b.text() for b in window.chat.bubbles() if b.role == "notice"]


def test_the_photo_shows_first_and_the_diagnosis_follows(qtbot, studio, tmp_path, photo):  # noqa: F811
    diagnose = FakeDiagnose(delay=1.5)
    window = studio(diagnose=diagnose)
    path = noisy_file(tmp_path, photo)
    start = time.perf_counter()
    with qtbot.waitSignal(window.controller.opened, timeout=WAIT):
        window.open_path(path)
    qtbot.waitUntil(lambda: window.view.has_image, timeout=WAIT)
    shown = time.perf_counter() - start
    assert not diagnose.finished, "the photo waited for its diagnosis"
    assert shown < 1.5  # the diagnosis takes 1.5 s: the photo did not wait for it
    assert labels(window) == DEFAULT_LABELS and window.chat.suggestions_title.text() == LOOKING
    assert window.chat.input.hasFocus()

    with qtbot.waitSignal(window.diagnosis.diagnosed, timeout=WAIT) as blocker:
        pass
    assert blocker.args[1] is Purpose.OPENED
    assert labels(window) == ["Remove noise"] and all(c.isEnabled() for c in window.chat.chips)
    assert window.chat.suggestions_title.text() == "This photo looks noisy (strong)."
    assert "grain of about" in window.chat.chips[0].toolTip() and "Ctrl+click" in window.chat.chips[0].toolTip()
    said = notices(window)[-1]
    assert said.startswith("What I see: this photo looks noisy (strong).") and "grain of about" in said


def test_a_diagnosis_arriving_after_an_instruction_was_sent_goes_under_the_opened_message(
        qtbot, studio, tmp_path, photo):  # noqa: F811
    from conftest import FakeRestorer

    window = studio(FakeRestorer(delay=2.0), diagnose=FakeDiagnose(delay=0.5))  # restoring takes longer
    open_photo(qtbot, window, noisy_file(tmp_path, photo))
    seen = []
    window.diagnosis.diagnosed.connect(lambda d, purpose: seen.append(purpose))
    window.chat.send("brighten it")  # typed before the diagnosis came
    qtbot.waitUntil(lambda: Purpose.AFTER_STEP in seen, timeout=WAIT)
    assert seen == [Purpose.OPENED, Purpose.AFTER_STEP]
    texts = [m.text.split(":")[0] for m in window.conversation.messages]
    opened = next(i for i, t in enumerate(texts) if t.startswith("Opened noisy.png"))
    assert texts[opened + 1] == "What I see"  # the story reads in order: opened, seen, asked, done, left
    assert texts[opened + 2] == "brighten it" and texts[-1].startswith("It still looks")


def test_a_newer_photo_cancels_the_older_diagnosis(qtbot, studio, tmp_path, photo):  # noqa: F811
    diagnose = FakeDiagnose(delay=3.0)
    window = studio(diagnose=diagnose)
    first = noisy_file(tmp_path, photo, "first.png")
    second = tmp_path / "second.png"
    save_image(picture_from_array(photo * 0.5), second)  # clean, and darker: another mean
    seen = []
    window.diagnosis.diagnosed.connect(lambda d, purpose: seen.append((d, purpose)))
    open_photo(qtbot, window, first)
    qtbot.waitUntil(lambda: len(diagnose.calls) == 1, timeout=WAIT)
    open_photo(qtbot, window, second)
    qtbot.waitUntil(lambda: len(seen) == 1, timeout=WAIT)
    assert diagnose.cancelled == diagnose.calls[:1]  # the first photo's diagnosis stopped, unfinished
    assert seen[0][0].clean and labels(window) == DEFAULT_LABELS
    assert window.chat.suggestions_title.text() == "This photo looks fine: nothing worth fixing."
    assert not any("noisy" in text for text in notices(window))  # nothing was said about the first photo


def test_click_applies_modifier_click_edits_and_after_each_step_it_says_what_is_left(
        qtbot, studio, tmp_path, photo):  # noqa: F811
    diagnose = FakeDiagnose()
    window = studio(diagnose=diagnose)
    with qtbot.waitSignal(window.diagnosis.diagnosed, timeout=WAIT):
        open_photo(qtbot, window, noisy_file(tmp_path, photo))
    chat = window.chat
    assert labels(window) == ["Remove noise"]

    for modifier in (Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier):
        chat.input.clear()
        qtbot.mouseClick(chat.chips[0], Qt.MouseButton.LeftButton, modifier)
        assert chat.input.text() == "remove the noise" and chat.input.hasFocus()  # to edit first
        assert not window.controller.busy and not window.document.steps  # nothing was sent
    chat.input.clear()

    with qtbot.waitSignal(window.diagnosis.diagnosed, timeout=WAIT) as blocker:
        qtbot.mouseClick(chat.chips[0], Qt.MouseButton.LeftButton)  # one click applies
    assert [s.instruction for s in window.document.steps] == ["remove the noise"]
    assert replies(window)[-1].reply.plan[0].intent == "noise"
    diagnosis, purpose = blocker.args
    assert purpose is Purpose.AFTER_STEP and not diagnosis.clean  # the fake denoiser halves the noise
    assert notices(window)[-1].startswith("It still looks a little noisy (grain of about")
    assert labels(window) == ["Remove noise a little"]

    with qtbot.waitSignal(window.diagnosis.diagnosed, timeout=WAIT) as blocker:
        qtbot.mouseClick(chat.chips[0], Qt.MouseButton.LeftButton)
    assert blocker.args[0].clean and notices(window)[-1] == "It looks fine now: nothing more worth fixing."
    assert labels(window) == DEFAULT_LABELS

    # Undo: the buttons follow the photo shown, silently.
    said = len(notices(window))
    with qtbot.waitSignal(window.diagnosis.diagnosed, timeout=WAIT) as blocker:
        window.undo_action.trigger()
    assert blocker.args[1] is Purpose.REFRESH and labels(window) == ["Remove noise a little"]
    assert len(notices(window)) == said


class SetDiagnose:
    """Reports whatever problems the test sets, whatever the pixels."""

    def __init__(self, *problems) -> None:
        self.problems = problems

    def __call__(self, rgb, *, path=None, cancel=None):
        from engine.diagnose import Diagnosis

        return Diagnosis(tuple(self.problems), rgb.shape[1], rgb.shape[0])


def test_a_problem_left_after_each_step_is_said_once_per_photo(qtbot, studio, tmp_path, photo):  # noqa: F811
    from engine.diagnose import Kind, Problem

    small = Problem(Kind.UPSAMPLING, 0.3, "only 96 x 64 pixels", "increase the resolution", 1.0)
    grain = Problem(Kind.NOISE, 0.3, "grain of about 9/255", "remove the noise a little", 0.5)
    diagnose = SetDiagnose(small)
    window = studio(diagnose=diagnose)
    path = tmp_path / "small.png"
    save_image(picture_from_array(photo), path)

    def apply(text):
        with qtbot.waitSignal(window.diagnosis.diagnosed, timeout=WAIT) as blocker:
            window.chat.send(text)
        assert blocker.args[1] is Purpose.AFTER_STEP
        return [t for t in notices(window) if t.startswith("It ")]

    with qtbot.waitSignal(window.diagnosis.diagnosed, timeout=WAIT):
        open_photo(qtbot, window, path)
    assert "a little low in resolution" in notices(window)[-1]
    assert apply("remove the noise") == []  # said when it opened; no step of these changes it
    assert apply("brighten it") == []
    assert labels(window) == ["Upscale 2×"]  # the button stays all the same

    diagnose.problems = (small, grain)  # something new: only that is said
    assert apply("remove the blur") == ["It now looks a little noisy (grain of about 9/255)."]
    assert apply("brighten it") == ["It now looks a little noisy (grain of about 9/255)."]
    assert labels(window) == ["Fix both", "Remove noise a little", "Upscale 2×"]

    diagnose.problems = ()
    assert apply("remove the noise")[-1] == "It looks fine now: nothing more worth fixing."
    diagnose.problems = (small,)  # back after it looked fine: said again
    assert apply("brighten it")[-1] == "It now looks a little low in resolution (only 96 x 64 pixels)."

    open_photo(qtbot, window, noisy_file(tmp_path, photo))  # another photo: told afresh
    qtbot.waitUntil(lambda: "What I see" in notices(window)[-1], timeout=WAIT)
    assert "a little low in resolution" in notices(window)[-1]


def test_the_fix_button_of_the_notice_applies_the_whole_suggestion(qtbot, studio, tmp_path, photo):  # noqa: F811
    window = studio(diagnose=FakeDiagnose())
    with qtbot.waitSignal(window.diagnosis.diagnosed, timeout=WAIT):
        open_photo(qtbot, window, noisy_file(tmp_path, photo))
    bubble = next(b for b in reversed(window.chat.bubbles()) if getattr(b, "action_button", None))
    assert bubble.action_button.text() == "Fix it: “Remove the noise”"
    with qtbot.waitSignal(window.controller.replied, timeout=WAIT) as blocker:
        bubble.action_button.click()
    assert blocker.args[0].kind == "applied" and window.document.steps[0].intent == "noise"

    # The button of a photo closed since does not act on the one open now.
    open_photo(qtbot, window, noisy_file(tmp_path, photo, "other.png", seed=1))
    steps = window.document.steps
    bubble.action_button.click()
    assert window.document.steps == steps and not window.controller.busy
    assert "opened before" in notices(window)[-1]


def test_fix_it_applies_what_the_diagnosis_suggests_and_leaves_a_clean_photo_alone(
        qtbot, studio, tmp_path, photo):  # noqa: F811
    from test_desktop import type_instruction

    window = studio(diagnose=FakeDiagnose())
    open_photo(qtbot, window, noisy_file(tmp_path, photo))
    reply = type_instruction(qtbot, window, "fix it")
    assert reply.kind == "applied" and [s.intent for s in window.document.steps] == ["noise"]
    assert reply.message == "Auto: This photo looks noisy (strong). Doing: Remove the noise"
    assert reply.message in replies(window)[-1].text()

    clean = tmp_path / "clean.png"
    save_image(picture_from_array(photo), clean)
    open_photo(qtbot, window, clean)
    reply = type_instruction(qtbot, window, "make it better please")
    assert reply.kind == "nothing" and not window.document.steps
    assert reply.message == "Auto: This photo looks fine: nothing worth fixing. Nothing was changed."
    assert reply.message in replies(window)[-1].text()


def test_several_problems_offer_the_whole_fix_first_then_each_in_the_order_they_are_applied():
    from desktop.diagnosis import describe, suggestions_for
    from engine.diagnose import Diagnosis, Kind, Problem

    d = Diagnosis((Problem(Kind.LOW_LIGHT, 0.9, "under-exposed: average brightness 8%", "brighten it", 1.0),
                   Problem(Kind.NOISE, 0.4, "grain of about 9/255 in flat areas", "remove the noise a little", 0.5)),
                  640, 480)
    buttons = suggestions_for(d)
    assert [(b.label, b.instruction) for b in buttons] == [
        ("Fix both", "Remove the noise a little and brighten it"),
        ("Remove noise a little", "remove the noise a little"), ("Brighten", "brighten it")]
    assert "under-exposed" in buttons[2].tip and "Ctrl+click" in buttons[0].tip
    said = describe(d, Purpose.OPENED).splitlines()
    assert said[0] == "What I see: this photo looks dark (strong) and a little noisy."
    assert said[1:3] == ["• dark (strong): under-exposed: average brightness 8%",
                         "• a little noisy: grain of about 9/255 in flat areas"]


def test_a_failing_diagnosis_leaves_the_generic_buttons_and_says_nothing(qtbot, studio, photo_file):  # noqa: F811
    calls = []

    def broken(rgb, *, path=None, cancel=None):
        calls.append(1)
        raise ValueError("the diagnosis model does not match its features")

    window = studio(diagnose=broken)
    said = len(window.conversation)
    open_photo(qtbot, window, photo_file)
    qtbot.waitUntil(lambda: bool(calls) and window.chat.suggestions_title.text() == "", timeout=WAIT)
    assert labels(window) == DEFAULT_LABELS and all(c.isEnabled() for c in window.chat.chips)
    assert len(window.conversation) == said + 1  # only "Opened photo.png…"


# --- the engine's real diagnosis -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coffee():
    from skimage import data

    return data.coffee().astype(np.float32) / 255.0


def test_real_diagnosis_leaves_a_clean_photo_alone_and_offers_the_noise_fix(qtbot, studio, tmp_path, coffee):  # noqa: F811
    pytest.importorskip("engine.diagnose")
    window = studio()  # the default: engine.diagnose.diagnose, its model loaded once on the worker thread
    clean, noisy = tmp_path / "coffee.png", tmp_path / "coffee-noisy.png"
    save_image(picture_from_array(coffee), clean)
    from engine.training import degradations

    save_image(picture_from_array(degradations.gaussian_noise(coffee, np.random.default_rng(2), sigma=30).image),
               noisy)  # the noise the engine's own tests expect it to name

    with qtbot.waitSignal(window.diagnosis.diagnosed, timeout=30_000) as blocker:
        open_photo(qtbot, window, clean)
    assert blocker.args[0].clean
    assert labels(window) == DEFAULT_LABELS  # no fix suggested: the generic buttons stay
    assert notices(window)[-1] == "This photo looks fine: nothing worth fixing."

    start = time.perf_counter()
    with qtbot.waitSignal(window.diagnosis.diagnosed, timeout=30_000) as blocker:
        with qtbot.waitSignal(window.controller.opened, timeout=WAIT):
            window.open_path(noisy)
        opened = time.perf_counter() - start
    diagnosis = blocker.args[0]
    assert diagnosis.main is not None and diagnosis.main.intent.value == "noise"
    noise = next(c for c in window.chat.chips if c.instruction.startswith("remove the noise"))
    assert "noisy" in window.chat.suggestions_title.text()
    with qtbot.waitSignal(window.controller.replied, timeout=WAIT) as reply:
        qtbot.mouseClick(noise, Qt.MouseButton.LeftButton)
    assert reply.args[0].kind == "applied" and window.document.steps[0].intent == "noise"
    assert opened < 5  # opening a 600 x 400 photo did not wait for anything
