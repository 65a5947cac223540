import pytest
from conftest import FakeIntent
from hypothesis import given
from hypothesis import strategies as st

from engine.edit.planning import EmptyInstructionError, parse_strength, plan_instruction, split_instruction


@pytest.mark.parametrize("text, parts", [
    ("remove the noise", ["remove the noise"]),
    ("remove the noise and then brighten it a bit", ["remove the noise", "brighten it a bit"]),
    ("denoise; dehaze strongly. then upscale", ["denoise", "dehaze strongly", "upscale"]),
    ("Please get rid of the noise and the blur, then brighten it slightly",
     ["Please get rid of the noise", "Please get rid of the blur", "brighten it slightly"]),
    ("make it sharper and brighter", ["make it sharper", "make it brighter"]),
    ("remove rain and fog", ["remove rain", "remove fog"]),
    ("I love rain and fog", ["I love rain and fog"]),
    ("it's too dark", ["it's too dark"]),
])
def test_split(text, parts):
    assert split_instruction(text) == parts


@pytest.mark.parametrize("text, strength", [
    ("remove the noise", 1.0),
    ("brighten it a bit", 0.5),
    ("slightly sharpen", 0.5),
    ("just a touch of dehazing", 0.25),
    ("remove the noise a lot", 1.0),
    ("denoise as much as possible", 1.0),
    ("brighten at 30%", 0.3),
    ("dehaze with strength 0.7", 0.7),
    ("remove the noise with sigma 0.1", 0.5),
    ("remove noise with sigma 51", 1.0),
    ("moderately brighten", 0.7),
])
def test_strength_words(text, strength):
    assert parse_strength(text) == pytest.approx(strength)


@given(st.text(max_size=60))
def test_strength_always_in_range(text):
    assert 0.0 <= parse_strength(text) <= 1.0


@given(st.text(max_size=80))
def test_split_never_invents_empty_parts(text):
    assert all(p.strip() for p in split_instruction(text))


class Model:
    def __init__(self, table):
        self.table = table

    def understand(self, text):
        for key, (label, conf) in self.table.items():
            if key in text:
                return FakeIntent(label, conf, {})
        return FakeIntent("unrelated", 0.9, {})


def test_unrelated_and_unsure_parts_become_no_ops():
    model = Model({"noise": ("noise", 0.95), "something": ("blur", 0.3)})
    steps = plan_instruction("remove the noise and then do something. hello there", model)
    assert [s.actionable for s in steps] == [True, False, False]
    assert "not sure" in steps[1].message.lower()
    assert "not a restoration request" in steps[2].message


@pytest.mark.parametrize("text", ["", "   ", "?!"])
def test_empty_instruction_is_an_error(text):
    with pytest.raises(EmptyInstructionError):
        plan_instruction(text, Model({}))
