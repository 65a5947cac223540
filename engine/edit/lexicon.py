"""Photographers' vocabulary per intent (``data/lexicon.json``), used by the planner as a prior.

The learned intent head knows the words the corpus taught it; users also say
"speckly", "smeary", "blow it up", "over-compressed". The lexicon lists such
words per intent in two strengths:

- **strong** words name the problem on their own ("grain", "fog", "upscale",
  "underexposed"). They multiply the head's probability of their class by
  :data:`STRONG_BOOST`, and two strong classes in one clause make two steps
  ("underlit and speckled").
- **weak** words only hint ("soft", "milky", "tiny"): their class is
  multiplied by :data:`WEAK_BOOST`; they never make a step on their own.

A prior, not a rule: a head that is confident about another class still wins
(0.9 against 0.02 x 6). The lexicon also lists words of back-references
("both", "them", "everything"), phrases that only name a place or a subject
("the dark areas", "the night sky"), generic requests ("fix", "sort out"),
polite filler ("thanks", "hi there") and explicit repeats ("again", "twice").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

LEXICON_PATH = Path(__file__).parent / "data" / "lexicon.json"
STRONG_BOOST = 6.0
WEAK_BOOST = 2.0


def _alternation(patterns: list[str]) -> re.Pattern:
    # Longest first, so "out of focus" is found whole rather than as "focus".
    body = "|".join(sorted(patterns, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{body})(?![\w-])", re.IGNORECASE)


@dataclass(frozen=True)
class Hit:
    intent: str
    start: int
    end: int
    strong: bool


class Lexicon:
    """Compiled word lists; ``hits(text)`` finds intent words in order of appearance."""

    def __init__(self, data: dict) -> None:
        self.version = data["version"]
        self.intents = tuple(data["intents"])
        self._strong = {k: _alternation(v["strong"]) for k, v in data["intents"].items()}
        self._weak = {k: _alternation(v["weak"]) for k, v in data["intents"].items() if v.get("weak")}
        self.not_restoration = _alternation(data["not_restoration"])
        self.masked = _alternation(data.get("masked", []) or ["(?!x)x"])
        self.backref = _alternation(data["backref"])
        self.generic = _alternation(data["generic_request"])
        self.filler = re.compile(
            rf"^(?:[\s,.!?:;)(-]|(?<![\w-])(?:{'|'.join(sorted(data['filler'], key=len, reverse=True))})(?![\w-]))*$",
            re.IGNORECASE)
        self.repeat = _alternation(data["repeat"])
        self.twice = _alternation(data["twice"])

    def hits(self, text: str) -> list[Hit]:
        """Intent words in ``text`` by position; a weak word inside a strong one of any class is dropped."""
        masks = [m.span() for m in self.masked.finditer(text)]
        found = [Hit(k, m.start(), m.end(), True) for k, rx in self._strong.items() for m in rx.finditer(text)]
        for k, rx in self._weak.items():
            for m in rx.finditer(text):
                if not any(h.start <= m.start() < h.end or m.start() <= h.start < m.end() for h in found if h.strong):
                    found.append(Hit(k, m.start(), m.end(), False))
        # a strong word inside a longer strong word of another class ("blocks" in "square blocks" is fine;
        # "dark" in "dark-haired" never matches thanks to the word edges)
        found.sort(key=lambda h: (h.start, -(h.end - h.start)))
        kept: list[Hit] = []
        for h in found:
            if any(a <= h.start and h.end <= b for a, b in masks):
                continue
            if any(k.strong and k.start <= h.start and h.end <= k.end and k.intent != h.intent for k in kept):
                continue
            kept.append(h)
        return kept

    def strong(self, text: str) -> list[str]:
        """Classes named by strong words, in order of first appearance."""
        return list(dict.fromkeys(h.intent for h in self.hits(text) if h.strong))

    def prior(self, text: str, classes: tuple[str, ...], hits: list[Hit] | None = None) -> dict[str, float]:
        """Multiplicative weight per class: strong words x STRONG_BOOST, weak x WEAK_BOOST, else 1."""
        hits = self.hits(text) if hits is None else hits
        weights = dict.fromkeys(classes, 1.0)
        for h in hits:
            if h.intent in weights:
                weights[h.intent] = max(weights[h.intent], STRONG_BOOST if h.strong else WEAK_BOOST)
        named = {h.intent for h in hits if h.strong}
        for a, b in (m.span() for m in self.masked.finditer(text)):  # "blur the faces": blur is the edit asked
            for k, rx in self._strong.items():                           # for, not a problem to undo
                if k in weights and k not in named and any(a <= m.start() and m.end() <= b
                                                           for m in rx.finditer(text)):
                    weights[k] /= STRONG_BOOST
        if "unrelated" in weights:
            if any(h.strong for h in hits):
                weights["unrelated"] /= WEAK_BOOST
            elif not hits and (self.not_restoration.search(text) or self.masked.search(text)):
                weights["unrelated"] *= WEAK_BOOST
        return weights

    def is_filler(self, text: str) -> bool:
        return bool(self.filler.match(text))


@lru_cache(maxsize=2)
def load_lexicon(path: Path = LEXICON_PATH) -> Lexicon:
    with open(path, encoding="utf-8") as fh:
        return Lexicon(json.load(fh))
