"""Turn what the user typed into ordered, understood steps.

"remove the noise and then brighten it a bit" becomes two steps, each with its
own intent (from the model's head), confidence and strength ("a bit" -> 0.5).
Text the head cannot place with confidence (a greeting, an unrelated request)
becomes a no-op with a message: the photo is never edited silently.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Protocol

from engine.edit.prompts import parse_strength

__all__ = ["EmptyInstructionError", "PlannedStep", "parse_strength", "plan_instruction", "split_instruction"]

MIN_CONFIDENCE = 0.45
_EDGES = re.compile(r"^[\s,.!]+|[\s,.!]+$")


def _trim(text: str) -> str:
    """Drop surrounding whitespace (any Unicode kind) and stray punctuation."""
    return _EDGES.sub("", text)

# Compound instructions: explicit sequencing words always split.
_SEQUENCE = re.compile(
    r"\s*(?:;|\n|(?<=[a-z0-9)])\.(?:\s+|$)|,?\s+and\s+then\s+|,?\s+then\s+|,?\s+after\s+that,?\s+|"
    r",?\s+afterwards,?\s+|,?\s+and\s+also\s+|,?\s+also\s+|,?\s+plus\s+|,?\s+as\s+well\s+as\s+|\s*&\s*)",
    re.IGNORECASE,
)
# "and" / "," split only when what follows starts a new request (a verb or a comparative).
_ACTIONS = (
    "remove|reduce|fix|brighten|lighten|darken|sharpen|deblur|unblur|denoise|dehaze|derain|clean|clear|get|"
    "make|increase|decrease|upscale|upsample|enhance|correct|boost|lift|restore|improve|eliminate|kill|erase|"
    "take|turn|add|bring|recover|undo|repair|enlarge|reduce|smooth|balance|adjust|fix up|lose|cut|drop|"
    "deblock|dejpeg|desaturate|saturate|warm|cool|please"
)
_COMPARATIVES = "brighter|sharper|clearer|crisper|cleaner|lighter|less|more|bigger|larger|higher|smoother|warmer|cooler"
_AND_SPLIT = re.compile(rf",?\s+and\s+(?=(?:{_ACTIONS}|{_COMPARATIVES})\b)|,\s+(?=(?:{_ACTIONS})\b)", re.IGNORECASE)
_DEGRADATIONS = (
    "noise|grain|graininess|speckles|blur|blurriness|motion blur|rain|raindrops|rain streaks|haze|fog|mist|smog|"
    "jpeg artifacts|jpeg artefacts|compression artifacts|compression artefacts|artifacts|artefacts|blockiness|"
    "colou?r cast|darkness|shadows"
)
_NOUN_AND = re.compile(rf",?\s+and\s+(?=(?:the\s+|any\s+|all\s+)?(?:{_DEGRADATIONS})\b)", re.IGNORECASE)
_VERB = re.compile(r"^\s*((?:please\s+)?(?:remove|reduce|fix|get rid of|clean up|clear up|clear|eliminate|"
                   r"take out|take away|kill|erase|correct|lose|cut|drop)\s+)", re.IGNORECASE)
_CARRY = re.compile(r"^\s*((?:please\s+)?(?:make|get|turn)\s+(?:it|this|the\s+\w+|my\s+\w+)\s+)", re.IGNORECASE)


class Understands(Protocol):
    """Anything with ``understand(text) -> Intent`` (the Restorer)."""

    def understand(self, instruction: str): ...


@dataclass
class PlannedStep:
    """One understood part of an instruction."""

    text: str
    intent: str
    confidence: float
    strength: float
    actionable: bool
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class EmptyInstructionError(ValueError):
    """The instruction has no words in it."""


def split_instruction(text: str) -> list[str]:
    """Ordered parts of a compound instruction; a single request stays whole."""
    parts: list[str] = []
    for chunk in _SEQUENCE.split(text):
        chunk = re.sub(r"^(?:and\s+)?then\s+", "", _trim(chunk or ""), flags=re.IGNORECASE)
        if not chunk:
            continue
        pieces = [_trim(p) for p in _AND_SPLIT.split(chunk) if p and _trim(p)]
        carry = _CARRY.match(pieces[0]) if pieces else None
        for i, piece in enumerate(pieces):
            if i and carry and re.match(rf"^(?:{_COMPARATIVES})\b", piece, re.IGNORECASE):
                piece = carry.group(1) + piece
            verb = _VERB.match(piece)
            if not verb:
                parts.append(piece)
                continue
            nouns = [_trim(n) for n in _NOUN_AND.split(piece)]
            parts += [nouns[0]] + [verb.group(1) + n for n in nouns[1:] if n]
    return parts


def plan_instruction(text: str, model: Understands, *, no_op_classes: tuple[str, ...] = ("unrelated",),
                     min_confidence: float = MIN_CONFIDENCE) -> list[PlannedStep]:
    """Split, classify and weigh each part. Raises ``EmptyInstructionError`` for blank text."""
    if not text or not re.search(r"\w", text):
        raise EmptyInstructionError("The instruction is empty: say what to fix, e.g. 'remove the noise'.")
    steps = []
    for part in split_instruction(text):
        intent = model.understand(part)
        strength = parse_strength(part)
        if intent.label in no_op_classes:
            steps.append(PlannedStep(part, intent.label, intent.confidence, strength, False,
                                     f"'{part}' is not a restoration request; nothing was changed."))
        elif intent.confidence < min_confidence:
            steps.append(PlannedStep(part, intent.label, intent.confidence, strength, False,
                                     f"Not sure what '{part}' asks for (best guess: {intent.label}, "
                                     f"{intent.confidence:.0%}); nothing was changed. Try e.g. 'remove the noise'."))
        elif strength <= 0:
            steps.append(PlannedStep(part, intent.label, intent.confidence, 0.0, False,
                                     f"'{part}' asks for zero strength; nothing was changed."))
        else:
            steps.append(PlannedStep(part, intent.label, intent.confidence, strength, True))
    return steps
