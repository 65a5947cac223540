"""The restoration-prompt grammar, everyday instructions, and the shared degree words."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.edit import planning, prompts
from engine.edit.prompts import (
    BLIND_TEXT,
    BLUR_RANGE,
    JPEG_RANGE,
    NOISE_RANGE,
    UPSAMPLE_RANGE,
    PromptConflictError,
    PromptError,
    RestorationPrompt,
    format_prompt,
    from_instruction,
    normalize_prompt,
    parse_prompt,
)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
maybe = st.one_of(st.none(), finite)
ops = st.fixed_dictionaries({"deblur": maybe, "denoise": maybe, "upsample": maybe, "dejpeg": maybe}).filter(
    lambda d: any(v is not None for v in d.values())
)
restoration_prompts = st.one_of(st.just(RestorationPrompt(blind=True)), ops.map(lambda d: RestorationPrompt(**d)))


# --- canonical form ------------------------------------------------------------


def test_the_issue_example_is_canonical():
    text = "Deblur with sigma 3.0; Denoise with sigma 0.06; Upsample to 4x; Dejpeg with quality 40"
    p = parse_prompt(text)
    assert (p.deblur, p.denoise, p.upsample, p.dejpeg, p.blind) == (3.0, 0.06, 4.0, 40, False)
    assert format_prompt(p) == text == str(p)
    assert normalize_prompt("Remove all degradation") == BLIND_TEXT


@given(restoration_prompts)
def test_format_parse_round_trip(p):
    text = format_prompt(p)
    assert parse_prompt(text) == p
    assert format_prompt(parse_prompt(text)) == text


@given(ops)
def test_values_are_clamped_into_the_trained_ranges(values):
    p = RestorationPrompt(**values)
    for name, (lo, hi) in (("deblur", BLUR_RANGE), ("denoise", NOISE_RANGE), ("upsample", UPSAMPLE_RANGE),
                           ("dejpeg", JPEG_RANGE)):
        v = getattr(p, name)
        assert (v is None) == (values[name] is None)
        if v is not None:
            assert lo <= v <= hi
    assert p.dejpeg is None or isinstance(p.dejpeg, int)


@given(restoration_prompts, st.sampled_from(["lower", "upper", "spaces", "commas", "and", "no-with", "trailing"]))
def test_spelling_variants_parse_to_the_same_prompt(p, variant):
    text = format_prompt(p)
    text = {
        "lower": text.lower(),
        "upper": text.upper(),
        "spaces": "  " + text.replace(" ", "   ").replace(";", " ; ") + "  ",
        "commas": text.replace("; ", ", "),
        "and": text.replace("; ", " and "),
        "no-with": text.replace("with ", ""),
        "trailing": text + ".",
    }[variant]
    assert parse_prompt(text) == p


@given(st.floats(min_value=0, max_value=1e4, allow_nan=False))
def test_out_of_range_numbers_in_text_are_clamped(x):
    p = parse_prompt(f"Deblur with sigma {x}; Dejpeg with quality {x}")
    assert p.deblur == round(min(max(x, BLUR_RANGE[0]), BLUR_RANGE[1]), 1)
    assert JPEG_RANGE[0] <= p.dejpeg <= JPEG_RANGE[1]


def test_denoise_sigma_above_one_is_read_on_the_255_scale():
    assert parse_prompt("Denoise with sigma 15").denoise == round(15 / 255, 3)
    assert parse_prompt("denoise sigma=0.02").denoise == 0.02


@given(st.text(max_size=80))
@settings(max_examples=200)
def test_any_text_parses_or_raises_a_prompt_error(text):
    for fn in (parse_prompt, from_instruction):
        try:
            p = fn(text)
        except PromptError as exc:
            assert str(exc)
        else:
            assert parse_prompt(format_prompt(p)) == p


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("  ;; ", "empty"),
    ("Denoise", "needs a value"),
    ("Upsample to x", "needs a value"),
    ("Dehaze with beta 2", "not a restoration operation"),
    ("Denoise with sigma 0.1; add a cat", "'add a cat' is not a restoration operation"),
    ("Denoise with sigma 0.1; denoise 0.2", "given twice"),
    ("Remove all degradation; Denoise with sigma 0.06", "stands alone"),
    ("Deblur with sigma banana", "not a restoration operation"),
    ("Deblur with sigma 1e999", "finite"),
])
def test_malformed_prompts_say_what_is_wrong(text, message):
    with pytest.raises(PromptError, match=message):
        parse_prompt(text)


def test_a_prompt_must_say_something():
    with pytest.raises(PromptError, match="at least one operation"):
        RestorationPrompt()
    with pytest.raises(PromptConflictError):
        RestorationPrompt(deblur=1.0, blind=True)
    with pytest.raises(PromptError, match="finite"):
        RestorationPrompt(denoise=math.nan)


# --- everyday instructions -------------------------------------------------------

EVERYDAY = [
    ("remove the noise", "Denoise with sigma 0.072"),
    ("remove the noise, strongly", "Denoise with sigma 0.118"),
    ("remove the noise just a touch", "Denoise with sigma 0.033"),
    ("denoise it a bit", "Denoise with sigma 0.061"),
    ("remove noise with sigma 25", "Denoise with sigma 0.098"),
    ("reduce the grain at 30%", "Denoise with sigma 0.038"),
    ("it's blurry", "Deblur with sigma 1.9"),
    ("sharpen it a bit", "Deblur with sigma 1.6"),
    ("deblur it completely", "Deblur with sigma 3.0"),
    ("upscale 4x", "Upsample to 4x"),
    ("make it 2x bigger", "Upsample to 2x"),
    ("upscale it a lot", "Upsample to 4x"),
    ("enlarge by 3", "Upsample to 3x"),
    ("remove the jpeg artifacts", "Dejpeg with quality 56"),
    ("remove jpeg artifacts, quality 40", "Dejpeg with quality 40"),
    ("remove the compression artifacts a little", "Dejpeg with quality 62"),
    ("get rid of the grain and the blur, then upscale x4",
     "Deblur with sigma 1.9; Denoise with sigma 0.072; Upsample to 4x"),
    ("upscale 2.5x and remove the blocky compression", "Upsample to 2.5x; Dejpeg with quality 56"),
    ("fix the photo", BLIND_TEXT),
    ("please restore it", BLIND_TEXT),
    ("remove all degradation", BLIND_TEXT),
    ("Denoise", "Denoise with sigma 0.072"),
    ("deblur with sigma 2; denoise with sigma 0.05", "Deblur with sigma 2.0; Denoise with sigma 0.05"),
]


@pytest.mark.parametrize("instruction, prompt", EVERYDAY)
def test_everyday_instructions(instruction, prompt):
    assert format_prompt(from_instruction(instruction)) == prompt
    assert prompts.to_prompt_text(instruction) == prompt


@pytest.mark.parametrize("instruction, message", [
    ("", "empty"),
    ("hello there", "Could not tell what to fix"),
    ("add a cat", "Could not tell what to fix"),
    ("remove the haze", "InstructIR mode"),
    ("remove the noise, then brighten it", "'brighten' needs the InstructIR mode"),
    ("Denoise with sigma 0.1; Remove all degradation", "stands alone"),
])
def test_instructions_spire_cannot_do_are_refused_clearly(instruction, message):
    with pytest.raises(PromptError, match=message):
        from_instruction(instruction)


def test_degree_words_order_levels():
    def sigma(text):
        return from_instruction(text).denoise

    assert sigma("denoise just a touch") < sigma("denoise slightly") < sigma("denoise") < sigma(
        "denoise moderately") < sigma("denoise strongly")


# --- the same strength words as the InstructIR planner -----------------------------

PLANNING_TABLE = [
    ("remove the noise", 1.0), ("brighten it a bit", 0.5), ("slightly sharpen", 0.5),
    ("just a touch of dehazing", 0.25), ("remove the noise a lot", 1.0), ("denoise as much as possible", 1.0),
    ("brighten at 30%", 0.3), ("dehaze with strength 0.7", 0.7), ("remove the noise with sigma 0.1", 0.5),
    ("remove noise with sigma 51", 1.0), ("moderately brighten", 0.7),
]


@pytest.mark.parametrize("text, strength", PLANNING_TABLE)
def test_strength_words_match_the_planner(text, strength):
    assert prompts.parse_strength(text) == pytest.approx(strength) == planning.parse_strength(text)


@given(st.text(max_size=60))
def test_strength_agrees_with_the_planner_on_any_text(text):
    assert prompts.parse_strength(text) == planning.parse_strength(text)
    assert 0.0 <= prompts.parse_strength(text) <= 1.0


def test_degree_table_is_the_planners():
    planner = getattr(planning, "_DEGREE_RES", prompts._DEGREE_RES)  # gone once planning delegates to prompts
    assert [(r.pattern, s) for r, s in prompts._DEGREE_RES] == [(r.pattern, s) for r, s in planner]
    assert prompts.parse_degree("remove the noise") is None
    assert prompts.parse_degree("remove the noise slightly") == 0.5


@pytest.mark.parametrize("text, strength", [
    ("remove the noise slighly", 0.5), ("brighten it a littel", 0.5), ("remove teh haze a lott", 1.0),
    ("sharpen it verry slightly", 0.25),
])
def test_misspelled_degree_words_still_count(text, strength):
    assert prompts.parse_degree(text) == strength
    assert planning.parse_strength(text) == strength


@pytest.mark.parametrize("text, strength", [
    ("barely sharpen it", 0.25), ("dehaze it, but barely", 0.25),
    ("you can barely see anyone", None), ("the faces are barely visible", None),
])
def test_barely_is_a_degree_of_the_fix_not_of_the_symptom(text, strength):
    assert prompts.degree_word(text) == strength
