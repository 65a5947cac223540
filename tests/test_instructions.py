"""The instruction corpus: every class in both splits, no duplicates, and no train/val overlap."""

import re

from engine.model.instructions import STUDIO_CLASSES, load_corpus
from engine.training import corpus as generator


def _norm(text: str) -> str:
    """Case and punctuation folded; punctuation-only instructions ("???") kept as they are."""
    return re.sub(r"[\W_]+", " ", text.lower()).strip() or text.strip()


def test_corpus_classes_and_sizes():
    corpus = load_corpus()
    assert tuple(corpus["classes"]) == STUDIO_CLASSES
    assert corpus["version"] >= 3
    for cls in STUDIO_CLASSES:
        assert len(corpus["train"][cls]) >= 500, cls
        assert len(corpus["val"][cls]) >= 50, cls
    assert sum(len(v) for v in corpus["train"].values()) >= 5000


def test_the_generator_makes_exactly_the_file_and_keeps_the_hand_written_sentences():
    corpus = load_corpus()
    assert generator.build(generator.hand_written()) == corpus
    for split in ("train", "val"):
        for cls in STUDIO_CLASSES:
            hand = corpus["hand"][split][cls]
            assert corpus[split][cls][:len(hand)] == hand


def test_no_held_out_planning_sentence_is_in_the_corpus():
    heldout = generator.heldout_texts()
    assert len(heldout) >= 300
    corpus = load_corpus()
    assert not heldout & {_norm(t) for split in ("train", "val") for v in corpus[split].values() for t in v}


def test_generated_sentences_are_varied():
    corpus = load_corpus()
    for cls in STUDIO_CLASSES:
        texts = corpus["train"][cls][len(corpus["hand"]["train"][cls]):]
        assert len(texts) >= 300, cls
        lengths = [len(t.split()) for t in texts]
        assert min(lengths) <= 2 and max(lengths) >= 15, cls  # very short and long ones
        assert any("?" in t for t in texts), cls  # questions


def test_no_duplicates_and_no_train_val_overlap():
    corpus = load_corpus()
    train = [_norm(t) for cls in STUDIO_CLASSES for t in corpus["train"][cls]]
    val = [_norm(t) for cls in STUDIO_CLASSES for t in corpus["val"][cls]]
    assert len(set(train)) == len(train)
    assert len(set(val)) == len(val)
    assert not set(train) & set(val)
    assert all(t.strip() for t in train + val)
