"""Misspelled instructions are corrected toward the restoration vocabulary; real words, numbers and short words stay."""

import time

import pytest
import torch

from engine.model.spelling import SpellingCorrector, correct_spelling, corrector_for


@pytest.fixture(scope="module")
def correct():
    return corrector_for()


@pytest.mark.parametrize("text, word", [
    ("get rid of the grian", "grain"),
    ("reduce the noize", "noise"),
    ("deblok this photo", "deblock"),
    ("remvoe the nosie", "remove the noise"),
    ("the rian streaks", "rain"),
    ("brigthen it slighly", "brighten it slightly"),
    ("compresion artifacs", "compression artifacts"),
    ("its all blured", "blurred"),
])
def test_misspellings_are_fixed(correct, text, word):
    assert word in correct(text)


@pytest.mark.parametrize("text", [
    "make my teeth whiter",
    "remove the photobomber",
    "blur the background for a bokeh effect",
    "convert it to grayscale",
    "undarken this picture",
    "pixelate the kid's face",
    "apply a Lightroom preset",
    "colorize this old photo",
    "remove the noise",
    "teh fog",  # shorter than four letters: never touched
])
def test_real_and_short_words_are_left_alone(correct, text):
    assert correct(text) == text


def test_numbers_and_percentages_are_untouched(correct):
    text = "denoise at 40% with sigma 0.1, upscale 4x to 1080p, quality 20"
    assert correct(text) == text
    assert correct("reduce the noize by 35%") == "reduce the noise by 35%"


def test_case_insensitive_and_case_kept(correct):
    assert correct("Get rid of the GRIAN") == "Get rid of the GRAIN"
    assert correct("Noize everywhere") == "Noise everywhere"


def test_fast_after_the_first(correct):
    correct("warm up the corrector")
    texts = [f"reduce the noize in photo {i}, it is grany and blured {'x' * (i % 7)}eh" for i in range(200)]
    start = time.perf_counter()
    for t in texts:
        correct(t)
    assert (time.perf_counter() - start) / len(texts) < 1e-3


def test_corpus_misspellings_are_not_vocabulary():
    corrector = SpellingCorrector({"the", "remove", "please"}, corpus=["remvoe the nosie", "remove the noise please"])
    assert corrector("remvoe the nosie") == "remove the noise"
    assert corrector.known("noise") and not corrector.known("nosie")


def test_without_a_vocabulary_the_text_is_unchanged(tmp_path):
    assert correct_spelling("reduce the noize", tmp_path) == "reduce the noize"


def test_text_encoder_embeds_the_corrected_text():
    from engine.model.text import TextEncoder

    on, off = TextEncoder(), TextEncoder(spelling=False)
    assert on.prepare("reduce the noize") == "reduce the noise"
    assert off.prepare("reduce the noize") == "reduce the noize"
    assert torch.allclose(on("reduce the noize"), on("reduce the noise"), atol=1e-6)
    assert not torch.allclose(off("reduce the noize"), off("reduce the noise"), atol=1e-3)
