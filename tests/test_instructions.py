"""The instruction corpus: every class in both splits, no duplicates, and no train/val overlap."""

import re

from engine.edit.instructions import STUDIO_CLASSES, load_corpus


def _norm(text: str) -> str:
    """Case and punctuation folded; punctuation-only instructions ("???") kept as they are."""
    return re.sub(r"[\W_]+", " ", text.lower()).strip() or text.strip()


def test_corpus_classes_and_sizes():
    corpus = load_corpus()
    assert tuple(corpus["classes"]) == STUDIO_CLASSES
    assert corpus["version"] >= 2
    for cls in STUDIO_CLASSES:
        assert len(corpus["train"][cls]) >= 140, cls
        assert corpus["val"][cls], cls


def test_no_duplicates_and_no_train_val_overlap():
    corpus = load_corpus()
    train = [_norm(t) for cls in STUDIO_CLASSES for t in corpus["train"][cls]]
    val = [_norm(t) for cls in STUDIO_CLASSES for t in corpus["val"][cls]]
    assert len(set(train)) == len(train)
    assert len(set(val)) == len(val)
    assert not set(train) & set(val)
    assert all(t.strip() for t in train + val)
