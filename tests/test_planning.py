"""The planner: clauses -> distinct problems -> ordered steps (engine.edit.planning).

Two kinds of tests: the planning rules with a keyword head (so a failure is the
planner's, not the model's), and each pattern end to end with the bundled
model on instructions written for these tests (not the held-out set of
bench/understanding.py, and not the corpus).
"""

import json
from pathlib import Path

import pytest
from conftest import FakeIntent
from hypothesis import given
from hypothesis import strategies as st

from engine.edit.lexicon import STRONG_BOOST, load_lexicon
from engine.edit.planning import (
    DEFAULT_ORDER,
    EmptyInstructionError,
    PlannedStep,
    parse_strength,
    plan_instruction,
    split_instruction,
)
from engine.model.instructions import STUDIO_CLASSES

CLASSES = STUDIO_CLASSES


class KeywordHead:
    """A head that knows a few textbook words (probability 0.9), else leans to unrelated (0.5); counts calls."""

    WORDS = {"noise": "noise", "denoise": "noise", "grain": "noise", "blur": "blur", "sharpen": "blur",
             "fog": "haze", "haze": "haze", "dehaze": "haze", "rain": "rain", "dark": "low-light",
             "brighten": "low-light", "upscale": "upsampling", "jpeg": "jpeg", "colours": "enhancement"}

    def __init__(self):
        self.calls = []

    def understand(self, text):
        self.calls.append(text)
        label = next((c for w, c in self.WORDS.items() if w in text.lower()), None)
        sure = 0.9 if label else 0.5
        probs = {c: (1 - sure) / (len(CLASSES) - 1) for c in CLASSES}
        probs[label or "unrelated"] = sure
        return FakeIntent(label or "unrelated", sure, probs)


def intents(steps):
    return [s.intent for s in steps if s.actionable]


def plan(text, model=None):
    return plan_instruction(text, model or KeywordHead())


# --- clauses ------------------------------------------------------------------------


@pytest.mark.parametrize("text, parts", [
    ("remove the noise", ["remove the noise"]),
    ("remove the noise and then brighten it a bit", ["remove the noise", "brighten it a bit"]),
    ("denoise; dehaze strongly. then upscale", ["denoise", "dehaze strongly", "then upscale"]),
    ("grainy, dim and soft", ["grainy", "dim", "soft"]),
    ("upscale it after denoising", ["upscale it", "after denoising"]),
    ("sharpen it without brightening", ["sharpen it", "without brightening"]),
    ("there's salt and pepper everywhere", ["there's salt and pepper everywhere"]),
    ("upscale to 2.5x. thanks", ["upscale to 2.5x", "thanks"]),
    ("make it brighter and sharper", ["make it brighter", "make it sharper"]),  # "make it" carried
    ("make it brighter after denoising", ["make it brighter", "after denoising"]),
])
def test_split(text, parts):
    assert split_instruction(text) == parts


@given(st.text(max_size=80))
def test_split_never_invents_empty_parts(text):
    assert all(p.strip() for p in split_instruction(text))


# --- the rules, with a keyword head -------------------------------------------------


def test_description_and_request_of_one_problem_are_one_step_with_the_users_words():
    steps = plan("my cellar photo is so dark, brighten it a bit")
    assert intents(steps) == ["low-light"]
    assert steps[0].text == "my cellar photo is so dark, brighten it a bit"
    assert steps[0].sources == ["my cellar photo is so dark", "brighten it a bit"]
    assert steps[0].strength == 0.5  # the request's degree


def test_a_pronoun_request_belongs_to_the_one_problem_described():
    steps = plan("the portrait is foggy, clear it up a little")  # the keyword head knows nothing of "clear it up"
    assert [(s.intent, s.strength, s.text) for s in steps] == [
        ("haze", 0.5, "the portrait is foggy, clear it up a little")]
    steps = plan("the portrait is foggy, add a hat to it")
    assert [(s.intent, s.actionable) for s in steps] == [("haze", True), ("unrelated", False)]


def test_carried_words_are_part_of_the_step_text():
    steps = plan("make it brighter and sharper")
    assert {s.intent: s.text for s in steps if s.actionable} == {"low-light": "make it brighter",
                                                                   "blur": "make it sharper"}


def test_back_references_keep_every_problem_described():
    for ref in ("fix both", "sort them out", "deal with all of that", "fix everything", "handle it all"):
        steps = plan(f"the garden shot is foggy and has rain in it, {ref}")
        assert sorted(intents(steps)) == ["haze", "rain"], ref
        assert not any(ref in s.text for s in steps)


def test_a_clause_with_two_strong_words_gives_two_steps():
    steps = plan("underexposed with speckles everywhere")  # the keyword head knows neither word
    assert sorted(intents(steps)) == ["low-light", "noise"]
    assert all(s.text == "underexposed with speckles everywhere" for s in steps)


def test_the_lexicon_lifts_a_hesitant_head_but_does_not_override_a_confident_one():
    class Head:
        def __init__(self, probs):
            self.probs = probs

        def understand(self, text):
            best = max(self.probs, key=self.probs.get)
            return FakeIntent(best, self.probs[best], self.probs)

    base = dict.fromkeys(CLASSES, 0.02)
    hesitant = {**base, "unrelated": 0.4, "haze": 0.3}
    assert intents(plan("the far hills are milky", Head(hesitant))) == ["haze"]  # weak word x2
    confident = {**base, "blur": 0.95, "haze": 0.004}
    assert 0.95 > 0.004 * STRONG_BOOST
    assert intents(plan("make the fog sharper", Head(confident))) == ["blur"]


def test_no_problem_runs_twice_unless_asked_twice():
    assert intents(plan("denoise it, remove the grain, and kill the noise")) == ["noise"]
    assert intents(plan("denoise it, then denoise it once more")) == ["noise", "noise"]
    assert intents(plan("sharpen it twice")) == ["blur", "blur"]
    assert intents(plan("dehaze it, then do it again")) == ["haze", "haze"]
    assert intents(plan("it was sharp once, make it sharp again")) == ["blur"]  # a state, not a repeat
    assert intents(plan("upscale it to twice the size")) == ["upsampling"]
    assert [(s.intent, s.text) for s in plan("upscale it twice")] == [("upsampling", "upscale it twice")]  # 2x
    assert intents(plan("upscale it, then upscale it again")) == ["upsampling", "upsampling"]


def test_explicit_order_is_followed_and_marked():
    cases = {
        "first brighten it, then remove the noise": ["low-light", "noise"],
        "brighten it and after that denoise": ["low-light", "noise"],
        "upscale it after you remove the jpeg blocks": ["jpeg", "upsampling"],
        "before you upscale it, denoise": ["noise", "upsampling"],
        "denoise before upscaling": ["noise", "upsampling"],
        "after the haze is gone, sharpen": ["haze", "blur"],
        "sharpen it, then upscale, and finally fix the colours": ["blur", "upsampling", "enhancement"],
        "upscale first, then dehaze": ["upsampling", "haze"],
    }
    for text, want in cases.items():
        steps = plan(text)
        assert intents(steps) == want, text
        assert {s.ordered_by for s in steps} == {"text"}, text


def test_once_ordered_the_whole_instruction_runs_in_text_order():
    assert intents(plan("brighten, denoise, and then sharpen")) == ["low-light", "noise", "blur"]
    # the request's place counts, not where the problem was first described
    assert intents(plan("it is grainy and the colours are dull. fix the colours and then denoise")) == [
        "enhancement", "noise"]


def test_without_an_order_the_default_order_applies():
    steps = plan("brighten it and remove the noise and the rain")
    assert intents(steps) == [c for c in DEFAULT_ORDER if c in ("low-light", "noise", "rain")]
    assert {s.ordered_by for s in steps} == {"default"}
    assert set(DEFAULT_ORDER) == set(CLASSES) - {"unrelated"}


def test_degree_words_stay_with_their_step():
    steps = plan("brighten it a little and remove the noise completely")
    assert {s.intent: s.strength for s in steps} == {"low-light": 0.5, "noise": 1.0}
    steps = plan("dehaze it, not too much")
    assert [(s.intent, s.strength) for s in steps] == [("haze", 0.5)]
    head = KeywordHead()
    steps = plan("derain the street, but gently", head)
    assert [(s.intent, s.strength) for s in steps] == [("rain", 0.5)]
    assert head.calls == ["derain the street"]  # a lone degree needs no model
    assert [s.strength for s in plan("denoise it, at 40%")] == [0.4]
    steps = plan("it's dark and grainy, fix both slightly")
    assert {s.intent: s.strength for s in steps} == {"low-light": 0.5, "noise": 0.5}
    steps = plan("it's dark and grainy, fix both, gently please")
    assert {s.intent: s.strength for s in steps} == {"low-light": 0.5, "noise": 0.5}


def test_negations_keep_a_problem_out():
    assert intents(plan("don't sharpen it, just brighten it")) == ["low-light"]
    assert intents(plan("no need to dehaze, only denoise")) == ["noise"]
    assert intents(plan("dehaze it without brightening")) == ["haze"]
    assert intents(plan("upscale it without the jpeg blocks")) == ["jpeg", "upsampling"]
    assert intents(plan("brighten it but leave the colours alone")) == ["low-light"]


def test_unrelated_and_unsure_parts_become_no_ops():
    class Model(KeywordHead):
        def understand(self, text):
            if "something" in text:
                self.calls.append(text)
                probs = dict.fromkeys(CLASSES, 0.7 / 8)
                probs["blur"] = 0.3
                return FakeIntent("blur", 0.3, probs)
            return super().understand(text)

    steps = plan("remove the noise and then do something. add a hat to my cat", Model())
    assert [s.actionable for s in steps] == [True, False, False]
    assert "not sure" in steps[1].message.lower()
    assert "not a restoration request" in steps[2].message
    only = plan("add a hat to my cat")
    assert [(s.actionable, s.text) for s in only] == [(False, "add a hat to my cat")]


def test_polite_filler_and_context_add_no_steps_and_no_head_calls():
    head = KeywordHead()
    steps = plan("hi there! please remove the noise, thanks so much", head)
    assert [(s.intent, s.actionable) for s in steps] == [("noise", True)]
    assert head.calls == ["please remove the noise"]


def test_zero_strength_is_a_no_op():
    steps = plan("dehaze at 0%")
    assert [(s.intent, s.actionable, s.strength) for s in steps] == [("haze", False, 0.0)]


@pytest.mark.parametrize("text", ["", "   ", "?!"])
def test_empty_instruction_is_an_error(text):
    with pytest.raises(EmptyInstructionError):
        plan(text)


def test_steps_serialise():
    step = plan("remove the noise")[0]
    d = step.to_dict()
    assert set(d) >= {"text", "intent", "confidence", "strength", "actionable", "message", "sources", "ordered_by"}
    assert json.loads(json.dumps(d)) == d
    assert PlannedStep("x", "noise", 1.0, 1.0, True).sources == []


@pytest.mark.parametrize("text, strength", [
    ("remove the noise", 1.0), ("brighten it a bit", 0.5), ("just a touch of dehazing", 0.25),
    ("brighten at 30%", 0.3), ("dehaze with strength 0.7", 0.7), ("moderately brighten", 0.7),
])
def test_strength_words(text, strength):
    assert parse_strength(text) == pytest.approx(strength)


def test_lexicon_loads_and_names_every_intent():
    lex = load_lexicon()
    assert set(lex.intents) == set(CLASSES) - {"unrelated"}
    assert lex.strong("it's underlit and full of grain") == ["low-light", "noise"]
    assert lex.strong("the colours are fine") == ["enhancement"]
    assert lex.is_filler("thanks so much!") and not lex.is_filler("thanks, now sharpen it")


# --- each pattern end to end, with the bundled model --------------------------------

PATTERNS = [  # (instruction, expected steps, order fixed by the text)
    ("the basement photo came out pitch dark, make it lighter", ["low-light"], False),
    ("the sky in this one is riddled with grain, please smooth it", ["noise"], False),
    ("my friend moved while I pressed the shutter, so he's blurred. sharpen him", ["blur"], False),
    ("the bay is shrouded in mist; get rid of the mist", ["haze"], False),
    ("water streaks from the rain everywhere, clear them away", ["rain"], False),
    ("the logo is tiny, please upscale it 3x", ["upsampling"], False),
    ("underexposed and grainy, fix both please", ["low-light", "noise"], False),
    ("foggy and soft, deal with all of it", ["haze", "blur"], False),
    ("blotchy noise and jpeg artefacts, clean them both", ["noise", "jpeg"], False),
    ("brighten first, then denoise", ["low-light", "noise"], True),
    ("sharpen after upscaling", ["upsampling", "blur"], True),
    ("denoise it and then denoise it again", ["noise", "noise"], True),
    ("just a tad of denoising", ["noise"], False),
    ("can you add a dog next to me", [], False),
    ("put my name in the corner", [], False),
    ("good job, thanks", [], False),
    ("don't denoise, just brighten", ["low-light"], False),
    ("remoev the grian", ["noise"], False),
    ("focus is off, fix it", ["blur"], False),
    ("can you make it less dark?", ["low-light"], False),
]


@pytest.fixture(scope="module")
def bundled():
    from engine.model.pipeline import Restorer

    return Restorer.from_pretrained("studio-small", device="cpu")


@pytest.mark.parametrize("text, want, ordered", PATTERNS)
def test_patterns_with_the_bundled_model(bundled, text, want, ordered):
    steps = plan_instruction(text, bundled, no_op_classes=bundled.bundle.no_op_classes)
    got = intents(steps)
    assert (got if ordered else sorted(got)) == (want if ordered else sorted(want))
    if not want:
        assert steps and not any(s.actionable for s in steps)


def test_pattern_examples_are_not_in_the_held_out_set():
    heldout = Path(__file__).parent / "data" / "heldout_instructions.jsonl"
    texts = {json.loads(line)["text"].lower() for line in heldout.read_text().splitlines() if line.strip()}
    assert len(texts) >= 300
    assert not texts & {t.lower() for t, _, _ in PATTERNS}
