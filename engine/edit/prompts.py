"""Restoration prompts: the SPIRE grammar, degree words, and everyday instructions.

SPIRE's ControlNet reads a *restoration prompt* that names operations and how
strong the degradation is: ``"Deblur with sigma 3.0; Denoise with sigma 0.06;
Upsample to 4x; Dejpeg with quality 40"``, or ``"Remove all degradation"``
when the user does not know (blind restoration). The adapter only ever saw
prompts written by ``format_prompt`` during training, so everything a user
types is parsed into a ``RestorationPrompt`` (values clamped to the trained
ranges and rounded to the printed precision) and written back in that exact
form before it reaches the text encoder.

Degree words ("slightly", "a lot", "at 30%") live here too, so the InstructIR
path (``engine.edit.planning``) and SPIRE read them the same way.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from engine.errors import StudioError

#: SPIRE's sampling defaults: DDIM steps, and the classifier-free guidance on the semantic prompt (used only when
#: a semantic or negative prompt is given). Here rather than in ``engine.spire.pipeline`` so that sessions, the
#: app and the servers read them without importing torch or diffusers.
DEFAULT_SPIRE_STEPS = 50
DEFAULT_SPIRE_GUIDANCE = 5.0

# --- degree words (shared with engine.edit.planning) -------------------------------

DEFAULT_STRENGTH = 1.0
#: A denoising sigma (on [0, 1]) at or above this is full strength; the paper's noise tops out near 50/255.
FULL_STRENGTH_SIGMA = 0.2

#: Degree phrases and the strength they mean. Ordered: longer phrases first so "a little bit" wins over "a bit".
#: "barely" only as a degree of the fix ("barely sharpen it"), not of a symptom ("you can barely see anyone").
DEGREES: tuple[tuple[str, float], ...] = (
    (r"as much as (?:possible|you can)|completely|fully|entirely|totally|aggressively|max(?:imum)?|all the way", 1.0),
    (r"a lot|a great deal|strongly|heavily|significantly|much more|really|very much|hard", 1.0),
    (r"moderately|medium|halfway|reasonably|fairly|somewhat", 0.7),
    (r"just a (?:touch|hair|tad|smidge)|a tiny bit|very (?:slightly|lightly|gently|subtly)|the tiniest|"
     r"barely(?!\s+(?:see|seen|visible|noticeable|make|recogni[sz]e|read|tell|anything|any|there))", 0.25),
    (r"a little bit|a little|a bit|slightly|a touch|a tad|gently|lightly|subtly|mildly|softly|a small amount|"
     r"not too much|just a little|kinda|kind of", 0.5),
)
_DEGREE_RES = [(re.compile(rf"\b(?:{p})\b", re.IGNORECASE), s) for p, s in DEGREES]
_PERCENT = re.compile(r"\b(\d{1,3}(?:\.\d+)?)\s*(?:%|percent\b|per cent\b)", re.IGNORECASE)
_STRENGTH = re.compile(r"\b(?:strength|amount|intensity|level)\s*(?:of|=|:|at|to)?\s*(\d*\.?\d+)", re.IGNORECASE)
_SIGMA = re.compile(r"\b(?:sigma|σ|noise level)\s*(?:of|=|:|at|to)?\s*(\d*\.?\d+)", re.IGNORECASE)


def _clamp01(v: float) -> float:
    return float(min(1.0, max(0.0, v)))


def degree_word(text: str) -> float | None:
    """Strength of the first degree phrase in ``text`` ("slightly" -> 0.5), None when there is none.

    The text is read as the encoder reads it, spelling corrected, so a
    misspelled degree counts ("slighly", "verry slightly").
    """
    try:
        from engine.model.spelling import correct_spelling

        text = correct_spelling(text)
    except (ImportError, OSError, RuntimeError):  # no encoder vocabulary to correct with: read it as written
        pass
    for regex, strength in _DEGREE_RES:
        if regex.search(text):
            return strength
    return None


def _stated_level(text: str) -> float | None:
    """Strength 0..1 from a percentage or "strength 0.7" (over 1: a percentage), None when neither is given."""
    if m := _PERCENT.search(text):
        return _clamp01(float(m.group(1)) / 100)
    if m := _STRENGTH.search(text):
        v = float(m.group(1))
        return _clamp01(v / 100 if v > 1 else v)
    return None


def parse_degree(text: str) -> float | None:
    """Strength 0..1 from a percentage, "strength 0.7", "sigma 0.1" or a degree word; None when none is given."""
    if (level := _stated_level(text)) is not None:
        return level
    if m := _SIGMA.search(text):
        v = float(m.group(1))
        sigma = v / 255 if v > 1 else v
        return _clamp01(max(0.1, sigma / FULL_STRENGTH_SIGMA))
    return degree_word(text)


def parse_strength(text: str) -> float:
    """InstructIR strength 0..1 for one instruction (1.0 when it names none); what ``planning`` uses."""
    found = parse_degree(text)
    return DEFAULT_STRENGTH if found is None else found


# --- the restoration-prompt grammar ----------------------------------------------

#: Value ranges the adapter is trained on (Real-ESRGAN-like). Noise sigma is on [0, 1] intensities (1-30 of 255).
BLUR_RANGE = (0.2, 3.0)
NOISE_RANGE = (0.004, 0.118)
UPSAMPLE_RANGE = (1.0, 4.0)
JPEG_RANGE = (30, 95)
BLIND_TEXT = "Remove all degradation"
EXAMPLE = "Deblur with sigma 3.0; Denoise with sigma 0.06; Upsample to 4x; Dejpeg with quality 40"


class PromptError(StudioError, ValueError):
    """A restoration prompt (or instruction) that cannot be understood; the message says how to fix it."""

    code = "prompt"


class PromptConflictError(PromptError):
    """A well-formed prompt that contradicts itself (an operation twice, blind plus named operations)."""


def _clamp(v: float, lo: float, hi: float) -> float:
    return float(min(hi, max(lo, v)))


def _finite(v: float | int, what: str) -> float:
    v = float(v)
    if not math.isfinite(v):
        raise PromptError(f"{what} must be a finite number, not {v}")
    return v


@dataclass(frozen=True)
class RestorationPrompt:
    """What SPIRE is asked to undo. ``None`` means the operation is absent; ``blind`` stands alone.

    Values are clamped to the trained ranges and rounded to the precision the
    prompt is printed with, so ``parse(format(p)) == p`` for every prompt.
    """

    deblur: float | None = None  # Gaussian blur sigma, pixels
    denoise: float | None = None  # Gaussian noise sigma on [0, 1] intensities
    upsample: float | None = None  # down-sampling factor to undo
    dejpeg: int | None = None  # JPEG quality the image was saved with
    blind: bool = False

    def __post_init__(self) -> None:
        if self.deblur is not None:
            object.__setattr__(self, "deblur", round(_clamp(_finite(self.deblur, "blur sigma"), *BLUR_RANGE), 1))
        if self.denoise is not None:
            object.__setattr__(self, "denoise", round(_clamp(_finite(self.denoise, "noise sigma"), *NOISE_RANGE), 3))
        if self.upsample is not None:
            object.__setattr__(
                self, "upsample", round(_clamp(_finite(self.upsample, "upsampling factor"), *UPSAMPLE_RANGE), 1)
            )
        if self.dejpeg is not None:
            object.__setattr__(self, "dejpeg", int(round(_clamp(_finite(self.dejpeg, "JPEG quality"), *JPEG_RANGE))))
        if self.blind and self.operations:
            raise PromptConflictError(f"'{BLIND_TEXT}' stands alone: drop it, or drop the named operations")
        if not self.blind and not self.operations:
            raise PromptError(f"Name at least one operation (e.g. '{EXAMPLE}') or say '{BLIND_TEXT}'")

    @property
    def operations(self) -> tuple[str, ...]:
        """The named operations in canonical order."""
        return tuple(op for op in _ORDER if getattr(self, op) is not None)

    def __str__(self) -> str:
        return format_prompt(self)


_ORDER = ("deblur", "denoise", "upsample", "dejpeg")


def _decimals(v: float, least: int, most: int) -> str:
    text = f"{v:.{most}f}"
    head, _, tail = text.partition(".")
    tail = tail.rstrip("0").ljust(least, "0")
    return f"{head}.{tail}" if tail else head


def format_prompt(prompt: RestorationPrompt) -> str:
    """The canonical text, exactly as the adapter is trained on it."""
    if prompt.blind:
        return BLIND_TEXT
    parts = []
    if prompt.deblur is not None:
        parts.append(f"Deblur with sigma {prompt.deblur:.1f}")
    if prompt.denoise is not None:
        parts.append(f"Denoise with sigma {_decimals(prompt.denoise, 2, 3)}")
    if prompt.upsample is not None:
        parts.append(f"Upsample to {_decimals(prompt.upsample, 0, 1)}x")
    if prompt.dejpeg is not None:
        parts.append(f"Dejpeg with quality {prompt.dejpeg}")
    return "; ".join(parts)


_NUM = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)"
_OP_RES: dict[str, re.Pattern] = {
    "deblur": re.compile(rf"^(?:deblur|unblur)(?:\s+with)?(?:\s*(?:sigma|σ))?\s*[=:]?\s*{_NUM}?\s*(?:px|pixels?)?$"),
    "denoise": re.compile(rf"^denoise(?:\s+with)?(?:\s*(?:sigma|σ))?\s*[=:]?\s*{_NUM}?$"),
    "upsample": re.compile(rf"^(?:upsample|upscale)(?:\s+(?:to|by|with\s+factor|factor))?\s*[=:]?\s*[x×]?\s*{_NUM}?"
                           rf"\s*[x×]?$"),
    "dejpeg": re.compile(rf"^(?:dejpeg|de-jpeg)(?:\s+with)?(?:\s*(?:quality|q))?\s*[=:]?\s*{_NUM}?$"),
}
_BLIND_RE = re.compile(r"^remove\s+all(?:\s+the)?\s+degradations?$")
_HINTS = {
    "deblur": "Deblur with sigma 1.5",
    "denoise": "Denoise with sigma 0.06",
    "upsample": "Upsample to 4x",
    "dejpeg": "Dejpeg with quality 40",
}
_SPLIT = re.compile(r"\s*(?:;|\n|,(?=\s*[^\d\s])|\band\b)\s*", re.IGNORECASE)


def parse_prompt(text: str) -> RestorationPrompt:
    """Read a restoration prompt; raises ``PromptError`` saying what is wrong and what would be right.

    Case and spacing are free, parts are separated by ``;``, ``,`` or "and",
    "with"/"sigma"/"to" are optional, and a Denoise sigma above 1 is read on the
    0-255 scale. Values outside the trained ranges are clamped.
    """
    if not isinstance(text, str) or not text.strip(" \t\r\n;,."):
        raise PromptError(f"The restoration prompt is empty: write e.g. '{EXAMPLE}' or '{BLIND_TEXT}'")
    values: dict[str, float] = {}
    blind = False
    for raw in _SPLIT.split(text.strip()):
        part = re.sub(r"\s+", " ", raw.strip(" \t.")).lower()
        if not part:
            continue
        if _BLIND_RE.match(part):
            if blind:
                raise PromptConflictError(f"'{BLIND_TEXT}' is given twice")
            blind = True
            continue
        for op, regex in _OP_RES.items():
            if (m := regex.match(part)) is None:
                continue
            if m.group(1) is None:
                raise PromptError(f"'{raw.strip()}' needs a value, e.g. '{_HINTS[op]}'")
            if op in values:
                raise PromptConflictError(f"'{op.capitalize()}' is given twice in '{text.strip()}'")
            value = float(m.group(1))
            if not math.isfinite(value):
                raise PromptError(f"'{raw.strip()}' needs a finite number")
            values[op] = value / 255 if op == "denoise" and value > 1 else value
            break
        else:
            raise PromptError(
                f"'{raw.strip()}' is not a restoration operation. Use Deblur / Denoise / Upsample / Dejpeg with a "
                f"value (e.g. '{EXAMPLE}'), or '{BLIND_TEXT}'"
            )
    return RestorationPrompt(blind=blind, **values)


def normalize_prompt(text: str) -> str:
    """``format_prompt(parse_prompt(text))``: what the adapter will actually read."""
    return format_prompt(parse_prompt(text))


# --- everyday instructions -> restoration prompt -----------------------------------

#: Level (0..1 across an operation's range) when the instruction names no degree: between "slightly" and
#: "moderately", since the user did not say the degradation was mild or severe.
DEFAULT_LEVEL = 0.6

_KEYWORDS: dict[str, re.Pattern] = {
    "deblur": re.compile(r"\b(?:de-?blur\w*|un-?blur\w*|blur\w*|sharpen\w*|sharper|crisp\w*|out of focus|"
                         r"unfocused|focus|soft focus)\b"),
    "denoise": re.compile(r"\b(?:de-?nois\w*|nois\w*|grain\w*|speckl\w*|static)\b"),
    "upsample": re.compile(r"\b(?:upsampl\w*|upscal\w*|up-scal\w*|enlarg\w*|super-?resol\w*|resolution|bigger|"
                           r"larger|pixelated|low-?res|\d+(?:\.\d+)?\s*[x×]|[x×]\s*\d+|\d+(?:\.\d+)?\s*times)(?!\w)"),
    "dejpeg": re.compile(r"\b(?:de-?jpeg|jpe?g\w*|compression|compressed|artifacts?|artefacts?|block\w*|"
                         r"deblock\w*|macroblock\w*)\b"),
}
_BLIND_WORDS = re.compile(
    r"\b(?:remove all|all (?:the )?(?:degradations?|problems|issues|damage|defects)|everything|whatever|"
    r"restore|fix (?:it|this|the (?:photo|image|picture)|up)|clean (?:it |this )?up|enhance|improve|"
    r"make it (?:look )?better|blind)\b"
)
_UNSUPPORTED = re.compile(
    r"\b(haze|hazy|dehaze|fog\w*|mist\w*|smog|rain\w*|derain|dark\w*|brighten\w*|brighter|low.light|"
    r"underexposed|exposure|colou?r\w*|contrast|saturat\w*|white balance|scratch\w*)\b"
)
_CLAUSE = re.compile(r"\s*(?:[;!\n]|,(?!\d)|\.(?!\d)|\band then\b|\bthen\b|\band\b|\bplus\b|\balso\b|&)\s*")
_FACTOR = re.compile(r"(?:(\d+(?:\.\d+)?)\s*(?:[x×]|times)(?!\w)|[x×]\s*(\d+(?:\.\d+)?)\b|"
                     r"\b(?:by|factor(?: of)?|to)\s+(\d+(?:\.\d+)?)\b)")
_QUALITY = re.compile(r"\b(?:quality|q)\s*(?:of|=|:|at)?\s*(\d+(?:\.\d+)?)")
_BLUR_SIGMA = re.compile(r"\b(?:sigma|σ|radius)\s*(?:of|=|:|at)?\s*(\d*\.?\d+)|(\d*\.?\d+)\s*(?:px|pixels?)\b")
_NOISE_SIGMA = re.compile(r"\b(?:sigma|σ|level)\s*(?:of|=|:|at)?\s*(\d*\.?\d+)|(\d+(?:\.\d+)?)\s*/\s*255\b")


def _level_value(op: str, level: float) -> float:
    if op == "deblur":
        return BLUR_RANGE[0] + level * (BLUR_RANGE[1] - BLUR_RANGE[0])
    if op == "denoise":
        return NOISE_RANGE[0] + level * (NOISE_RANGE[1] - NOISE_RANGE[0])
    if op == "dejpeg":  # stronger artefacts = lower quality
        return JPEG_RANGE[1] - level * (JPEG_RANGE[1] - JPEG_RANGE[0])
    return 4.0 if level >= 0.7 else 2.0


def _explicit_value(op: str, clause: str) -> float | None:
    """A number the clause gives for ``op`` in its own unit ("4x", "quality 40", "sigma 25")."""
    if op == "upsample" and (m := _FACTOR.search(clause)):
        return float(next(g for g in m.groups() if g))
    if op == "dejpeg" and (m := _QUALITY.search(clause)):
        return float(m.group(1))
    if op == "deblur" and (m := _BLUR_SIGMA.search(clause)):
        return float(m.group(1) or m.group(2))
    if op == "denoise" and (m := _NOISE_SIGMA.search(clause)):
        if m.group(2):
            return float(m.group(2)) / 255
        v = float(m.group(1))
        return v / 255 if v > 1 else v
    return None


def _clause_level(clause: str) -> float | None:
    level = _stated_level(clause)
    return degree_word(clause) if level is None else level


def from_instruction(text: str) -> RestorationPrompt:
    """Map what a user typed to a restoration prompt.

    A well-formed restoration prompt is taken as is. Otherwise each clause is
    read for an operation ("noise", "blurry", "upscale 4x", "jpeg artifacts")
    and its degree ("slightly", "strongly", "at 30%", or a number in the
    operation's unit); a clause that names only a degree ("remove the noise,
    strongly") qualifies the operation before it. Requests for everything
    ("restore it", "fix the photo") become blind restoration. Requests SPIRE
    was not trained for (haze, rain, brightness) raise ``PromptError``.
    """
    if not isinstance(text, str) or not re.search(r"\w", text):
        raise PromptError(f"The instruction is empty: say what to fix, e.g. 'remove the noise' or '{BLIND_TEXT}'")
    try:
        return parse_prompt(text)
    except PromptConflictError:
        raise
    except PromptError:
        pass  # not (valid) grammar: read it as everyday language
    lowered = text.lower()
    values: dict[str, float] = {}
    levels: dict[str, float | None] = {}
    unsupported: list[str] = []
    last: list[str] = []
    for clause in _CLAUSE.split(lowered):
        if not clause.strip():
            continue
        found = [op for op, regex in _KEYWORDS.items() if regex.search(clause)]
        level = _clause_level(clause)
        if not found:
            if m := _UNSUPPORTED.search(clause):
                unsupported.append(m.group(1))
            for op in last:  # "remove the noise, strongly" / "remove jpeg artifacts, quality 40"
                if (explicit := _explicit_value(op, clause)) is not None:
                    values[op] = explicit
                elif level is not None:
                    levels[op] = level
            continue
        for op in found:
            if (explicit := _explicit_value(op, clause)) is not None:
                values[op] = explicit
            levels[op] = level if level is not None else levels.get(op)
        last = found
    if unsupported:
        raise PromptError(f"SPIRE only removes blur, noise, low resolution and JPEG artifacts; "
                          f"'{unsupported[0]}' needs the InstructIR mode")
    if not levels and not values:
        if _BLIND_WORDS.search(lowered):
            return RestorationPrompt(blind=True)
        raise PromptError(f"Could not tell what to fix in '{text.strip()}'. Say e.g. 'remove the noise', "
                          f"'sharpen it a bit', 'upscale 4x', or '{BLIND_TEXT}'")
    for op, level in levels.items():
        if op not in values:
            values[op] = _level_value(op, DEFAULT_LEVEL if level is None else level)
    return RestorationPrompt(**values)


def to_prompt_text(text_or_prompt: str | RestorationPrompt) -> str:
    """Canonical prompt text for a ``RestorationPrompt``, a prompt string or an everyday instruction."""
    if isinstance(text_or_prompt, RestorationPrompt):
        return format_prompt(text_or_prompt)
    return format_prompt(from_instruction(text_or_prompt))
