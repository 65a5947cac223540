"""Turn what the user typed into ordered, understood steps: each problem once, in a sensible order.

A plan is a list of distinct problems (docs/understanding.md):

- The text is cut into clauses (sentences, commas, "and", "then", "but", "before",
  "after", "without", ...). Each clause is read by the model's intent head,
  with the lexicon of photographers' words (``engine.edit.lexicon``) as a prior.
- Clauses that describe a problem and clauses that ask to fix it become **one**
  step ("the hallway shot is nearly black, please brighten it"); the step's
  ``text`` is the user's own words for that problem (the clauses, joined).
- "both", "all of that", "them", "everything", "it" with a generic request
  ("fix both", "sort it out") refer back to the problems described: no step of
  their own.
- A clause naming two problems ("underlit and speckled") gives two steps.
- A problem runs twice only when asked twice ("... then denoise it again",
  "sharpen it twice", "then do it again").
- "don't sharpen", "no need to dehaze", "without brightening", "leave the
  colours alone" keep that problem out of the plan.
- Degree words stay with their step ("brighten it a little" -> 0.5); a request's
  degree wins over a description's.
- Order: explicit sequencing ("first", "then", "after that", "next", "finally",
  "before", "after", "followed by") is followed; otherwise steps run in
  :data:`DEFAULT_ORDER`, measured by ``bench/step_order.py``.

Text the head cannot place with confidence (a greeting, an unrelated request)
becomes a no-op with a message: the photo is never edited silently.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Protocol

from engine.edit.lexicon import Lexicon, load_lexicon
from engine.edit.prompts import DEGREES, parse_degree, parse_strength
from engine.errors import StudioError

__all__ = ["DEFAULT_ORDER", "EmptyInstructionError", "PlannedStep", "parse_strength", "plan_instruction",
           "split_instruction"]

MIN_CONFIDENCE = 0.45
#: A clause with no lexicon word at all needs a surer head than this to become a step.
MIN_CONFIDENCE_UNHINTED = 0.6
#: ... and one whose best reading is a class its strong lexicon words name may be less sure.
MIN_CONFIDENCE_NAMED = 0.3
#: A clause in none of the lexicon's words, beside clauses that name their problems, adds a problem of its own
#: only as a request this sure ("the subject moved, sharpen it": "moved" is context, not a second problem).
MIN_CONFIDENCE_ALONGSIDE = 0.8
#: In a clause with several strong lexicon words, a class is kept when its (boosted) probability reaches this.
MULTI_FLOOR = 0.02

#: Default order of steps when the text gives none: measured pairwise on Kodak24 crops (bench/step_order.py,
#: table in docs/understanding.md): noise before low light, rain before low light, blur before haze, noise and
#: JPEG before up-sampling. Colour enhancement and up-sampling last.
DEFAULT_ORDER: tuple[str, ...] = ("rain", "noise", "jpeg", "blur", "haze", "low-light", "enhancement", "upsampling")

class EmptyInstructionError(StudioError, ValueError):
    """The instruction has no words in it."""

    code = "empty-instruction"


class Understands(Protocol):
    """Anything with ``understand(text) -> Intent`` (the Restorer)."""

    def understand(self, instruction: str): ...


@dataclass
class PlannedStep:
    """One understood problem of an instruction.

    ``text``: the user's words for it (its clauses joined); ``sources``: those
    clauses; ``ordered_by``: "text" when the instruction fixed the order of the
    steps, "default" when :data:`DEFAULT_ORDER` did.
    """

    text: str
    intent: str
    confidence: float
    strength: float
    actionable: bool
    message: str = ""
    sources: list[str] = field(default_factory=list)
    ordered_by: str = "default"

    def to_dict(self) -> dict:
        return asdict(self)


# --- clauses -----------------------------------------------------------------------

_SEQ_WORDS = r"(?:and\s+then|then|after\s+that|afterwards|next|finally|lastly|followed\s+by|and\s+finally|and\s+next)"
_SEPARATOR = re.compile(
    r"\s*(?:[;!?\n]+|(?<![\d.])\.(?!\d)|:(?=\s))\s*"                      # sentence ends
    rf"|\s*,\s*(?:(?:and|but|so|or)\s+)?(?:{_SEQ_WORDS}\b,?\s*)?"          # commas, with what follows them
    rf"|\s+(?:{_SEQ_WORDS}|and|but|plus|also|as\s+well\s+as|&|while|though)\s+"
    r"|\s+so\s+(?=(?:please|pls|can|could|would|i|it|its|it's|the|this|that|we|you|he|she|they|my|now)\b)"
    r"|\s+(?=(?:before|after|without|except|once(?!\s+(?:more|again)\b))\s)",  # kept with the clause they open
    re.IGNORECASE,
)
#: Phrases never cut in two.
_WHOLE = re.compile(r"salt[- ]and[- ]pepper|black[- ]and[- ]white|rock and roll|before and after|more and more|"
                    r"over and over|up and down|out and about|after the first pass|first pass", re.IGNORECASE)
#: "make it brighter and sharper": the second clause is read (and runs) as "make it sharper".
_CARRY = re.compile(r"^\s*((?:please\s+)?(?:make|get|turn)\s+(?:it|this|them|the\s+\w+|my\s+\w+)\s+)", re.IGNORECASE)
_COMPARATIVE = re.compile(r"^(?:a\s+(?:bit|little|lot|touch)\s+|much\s+|slightly\s+|way\s+)?(?:more\s+\w+|less\s+\w+|"
                          r"(?!(?:after|never|other|either|neither|rather|together|under|over|water|later|ever)\b)"
                          r"\w+er)(?:\s+(?:too|as well|please|still))?$", re.IGNORECASE)
_EDGES = re.compile(r"^[\s,.!;:]+|[\s,.!;:]+$")
_SEQUENCE_LEAD = re.compile(rf"^(?:,\s*)?(?:(?:and|but|so)\s+)?{_SEQ_WORDS}\b|^(?:step\s+(?:two|three|four|[2-9]))\b",
                            re.IGNORECASE)
_SEQ_IN_LEAD = re.compile(rf"\b{_SEQ_WORDS}\b", re.IGNORECASE)
_FIRST = re.compile(r"\b(?:first(?:ly)?|first of all|to start(?: with)?|start (?:by|with)|begin (?:by|with)|"
                    r"step (?:one|1))\b", re.IGNORECASE)
_FIRST_NOT = re.compile(r"\bthe first\b|\bfirst (?:pass|time|attempt|go|try)\b", re.IGNORECASE)
_BEFORE = re.compile(r"^before\b", re.IGNORECASE)
_AFTER = re.compile(r"^(?:after|once)\b(?!\s+that\b)", re.IGNORECASE)
_NEGATION = re.compile(
    r"^(?:(?:but|and|just|please|also)\s+)*(?:don'?t|do not|dont|no need to|there'?s no need to|never|no|not|without|"
    r"avoid|skip|i don'?t want(?: you)? to|you don'?t (?:need|have) to)\b(?!\s+(?:too|so|very)\b)|"
    r"\bleave (?:the |my |its? )?(?:[\w-]+ ){0,2}(?:alone|as (?:it is|they are|is))\b",
    re.IGNORECASE)
_WITHOUT_NOUN = re.compile(r"^without\s+(?:the|any|those|these|all|its?|that)\b", re.IGNORECASE)
#: Verbs a request starts with (after "please", "can you", ...): a request's degree wins over a description's,
#: and an unrelated clause is reported only when it asks for something.
_VERBS = (
    "remove|fix|make|add|crop|rotate|turn|convert|change|put|give|take|get|clean|clear|brighten|lighten|sharpen|"
    "denoise|dehaze|derain|defog|deblur|unblur|dejpeg|deblock|upscale|upsample|upsize|enlarge|enhance|boost|reduce|"
    "increase|decrease|lift|improve|correct|restore|repair|erase|delete|cut|kill|lose|drop|bring|push|open|blow|"
    "double|smooth|tidy|sort|deal|handle|save|send|share|write|tell|set|flip|swap|draw|paint|apply|run|do|try|use|"
    "keep|leave|undo|stop|show|print|resize|zoom|replace|blur|darken|warm|cool|saturate|desaturate|wipe|strip|"
    "crisp|tighten|steady|lighten|grade|punch|recover|address|eliminate|scrub|knock|tone|pump|raise|expose|help|"
    "super-res|superres|unfog|declutter|retouch|color|colour|straighten|mirror|frame|caption|move|transform|"
    "generate|create|insert|replace|remove|let|go|cancel|export|name|rename|describe|find|count|explain|identify")
_REQUEST = re.compile(
    r"^(?:(?:hi|hey|hello|please|pls|plz|so|and|but|now|ok|okay|just|also|then|next|finally|first)[\s,!]+)*"
    r"(?:(?:can|could|would|will|may)\s+(?:you|u|it|this|i|we)\b|please\b|pls\b|plz\b|"
    r"i\s*(?:want|need|would like|'d like|'d love|would love|wish)\b|(?:try to|go ahead and)\b|"
    rf"(?:{_VERBS})\b)",
    re.IGNORECASE)
_REPEAT_NOT = re.compile(r"\b(?:make|makes|making|get|gets|look|looks|be|become|bring|back|feel)\b[^,.;]*\bagain\b"
                         r"|\btwice (?:as|the)\b", re.IGNORECASE)
_DEGREE_WORDS = re.compile("|".join([*(rf"\b(?:{p})\b" for p, _ in DEGREES),
                                     r"\b\d{1,3}(?:\.\d+)?\s*(?:%|percent\b|per cent\b)",
                                     r"\b(?:at|with|using|a)?\s*(?:strength|amount|intensity|level)\s*(?:of|=|:|at|to)?"
                                     r"\s*\d*\.?\d+"]), re.IGNORECASE)
_THRICE = re.compile(r"\b(?:thrice|three times|3 times)\b", re.IGNORECASE)
_PRONOUN = re.compile(r"\b(?:it|them|this|that|those|these|both|everything)\b", re.IGNORECASE)
_DO_AGAIN = re.compile(r"^(?:(?:and|then|please)\s+)*(?:do|run|apply|repeat)\b", re.IGNORECASE)


@dataclass
class _Clause:
    text: str
    start: int
    end: int
    index: int
    sentence: int
    lead: str = ""  # the separator before it
    prefix: str = ""  # words carried from the clause before ("make it " of "make it brighter and sharper")


def _clauses(text: str) -> list[_Clause]:
    protected = [m.span() for m in _WHOLE.finditer(text)]
    cuts = [m for m in _SEPARATOR.finditer(text)
            if not any(a < m.start() < b or a < m.end() < b for a, b in protected) and m.end() > m.start()]
    out: list[_Clause] = []
    pos, lead, sentence = 0, "", 0
    for m in [*cuts, None]:
        end = m.start() if m else len(text)
        raw = text[pos:end]
        trimmed = _EDGES.sub("", raw)
        if trimmed and re.search(r"\w", trimmed):
            s = pos + raw.find(trimmed)
            clause = _Clause(trimmed, s, s + len(trimmed), len(out), sentence, lead)
            carry = _CARRY.match(out[-1].prefix + out[-1].text) if out else None  # a chain carries on
            if carry and _COMPARATIVE.match(trimmed):
                # the step runs as "make it sharper"; the head reads "sharper" alone, since the carried words
                # would pull it toward what the clause before asked for
                clause.prefix = carry.group(1)
            out.append(clause)
        if m is not None:
            lead = m.group(0)
            if re.search(r"[;!?\n]|\.(?!\d)", lead):
                sentence += 1
            pos = m.end()
    return out


def split_instruction(text: str) -> list[str]:
    """The clauses of an instruction, in order, with carried words (what each means is ``plan_instruction``'s job)."""
    return [c.prefix + c.text for c in _clauses(text)]


# --- reading one clause -----------------------------------------------------------


@dataclass
class _Reading:
    clause: _Clause
    kind: str  # "problem" | "generic" | "filler" | "unrelated" | "unsure" | "negated" | "qualifier" | "repeat-last"
    intents: list[str] = field(default_factory=list)
    strong: list[str] = field(default_factory=list)
    weak: list[str] = field(default_factory=list)
    confidence: dict[str, float] = field(default_factory=dict)
    label: str = ""
    degree: float | None = None
    request: bool = False
    repeat: bool = False
    twice: bool = False
    times: int = 1


def _spell(text: str) -> str:
    try:
        from engine.model.spelling import correct_spelling

        return correct_spelling(text)
    except (ImportError, OSError, RuntimeError):  # no encoder vocabulary to correct with
        return text


def _posterior(probabilities: dict[str, float], prior: dict[str, float]) -> dict[str, float]:
    joint = {c: p * prior.get(c, 1.0) for c, p in probabilities.items()}
    total = sum(joint.values()) or 1.0
    return {c: v / total for c, v in joint.items()}


def _read(clause: _Clause, intent, lex: Lexicon, no_op: tuple[str, ...], min_confidence: float,
          corrected: str) -> _Reading:
    words = corrected.lower()
    hits = lex.hits(words)
    strong = list(dict.fromkeys(h.intent for h in hits if h.strong))
    reading = _Reading(clause, "problem", degree=parse_degree(clause.text), request=bool(_REQUEST.match(words)),
                       strong=strong, weak=list(dict.fromkeys(h.intent for h in hits if not h.strong)))
    repeat_ok = not _REPEAT_NOT.search(words)
    reading.twice = repeat_ok and bool(lex.twice.search(words) or _THRICE.search(words))
    reading.times = 3 if reading.twice and _THRICE.search(words) else 2 if reading.twice else 1
    reading.repeat = repeat_ok and bool(lex.repeat.search(words))
    if _NEGATION.search(words) and not _WITHOUT_NOUN.match(words):
        reading.kind, reading.intents = "negated", strong
        return reading
    if intent is None:  # filler / generic / a lone degree: decided without the head
        if lex.is_filler(words):
            reading.kind = "filler"
        elif _degree_only(words, lex):
            reading.kind = "qualifier"  # "..., lightly": qualifies the step before it
        elif reading.repeat and _DO_AGAIN.match(words):
            reading.kind = "repeat-last"
        else:
            reading.kind = "generic"
        return reading
    probs = dict(intent.probabilities) or {intent.label: intent.confidence}
    post = _posterior(probs, lex.prior(words, tuple(probs), hits))
    best = max(post, key=post.get)
    reading.label, reading.confidence = best, post
    if len(strong) >= 2:
        kept = [c for c in strong if post.get(c, 0.0) >= MULTI_FLOOR]
        mass = sum(post[c] for c in kept)
        if len(kept) >= 2 and mass >= min_confidence:
            reading.intents = kept
            reading.confidence = {**post, **{c: mass for c in kept}}
            return reading
    if best in no_op:
        reading.kind = "unrelated"
        if reading.degree is not None and not hits and len(words.split()) <= 4:
            reading.kind = "qualifier"  # "not too much", "strongly": qualifies the step before it
        return reading
    if best in strong:  # the head's best reading is what the user's own words name
        needed = min(min_confidence, MIN_CONFIDENCE_NAMED)
    else:
        needed = min_confidence if hits else max(min_confidence, MIN_CONFIDENCE_UNHINTED)
    reading.intents = [best]
    if post[best] < needed:
        reading.kind = "unsure"
    return reading


def _degree_only(words: str, lex: Lexicon) -> bool:
    """A clause that is nothing but a degree ("gently", "but not too much", "at 40%")."""
    if parse_degree(words) is None:
        return False
    rest = _DEGREE_WORDS.sub(" ", words)
    rest = re.sub(r"\b(?:but|and|just|only|please|do it|though|not|at|by|to|with)\b", " ", rest)
    return lex.is_filler(rest)


def _needs_head(clause: _Clause, corrected: str, lex: Lexicon) -> bool:
    """False for filler and for generic requests / back-references that name no problem ("fix both")."""
    words = corrected.lower()
    if lex.is_filler(words):
        return False
    if lex.hits(words):
        return True
    if _DO_AGAIN.match(words) and lex.repeat.search(words):
        return False
    if _degree_only(words, lex):
        return False
    n = len(re.findall(r"\w+", words))
    return not ((lex.backref.search(words) or lex.generic.search(words)) and n <= 8)


def _prime(model, texts: list[str]) -> None:
    """Embed all clauses in one batch when the model exposes its encoder (the Restorer does): 2-3x faster."""
    encoder = getattr(model, "encoder", None)
    known = getattr(model, "_embeddings", None) or {}  # the Restorer's own per-instruction cache
    texts = [t for t in texts if t.strip() not in known]
    if len(texts) > 1 and callable(getattr(encoder, "encode", None)):
        try:
            encoder.encode(texts)
        except Exception:  # noqa: BLE001 - priming is an optimisation only; understand() will report errors
            pass


# --- the plan ----------------------------------------------------------------------


@dataclass
class _Problem:
    intent: str
    readings: list[_Reading]
    rank: float

    def confidence(self) -> float:
        return max(r.confidence.get(self.intent, 0.0) for r in self.readings if r.confidence) if any(
            r.confidence for r in self.readings) else 0.0


def _ranks(readings: list[_Reading]) -> tuple[list[float], bool]:
    """A sequence rank per clause and whether the text gave any order.

    Once the text orders anything, the whole instruction is read in text order
    ("brighten, denoise, and then sharpen"), adjusted by "first", "before" and "after".
    """
    ranks: list[float] = []
    explicit = False
    for i, r in enumerate(readings):
        c = r.clause
        if i and (_SEQ_IN_LEAD.search(c.lead) or _SEQUENCE_LEAD.match(c.text)):
            explicit = True
        rank = float(i)
        if _FIRST.search(c.text) and not _FIRST_NOT.search(c.text):
            rank, explicit = -1000.0 + i, True
        ranks.append(rank)
    for i, r in enumerate(readings):
        c = r.clause
        same_before = i > 0 and readings[i - 1].clause.sentence == c.sentence
        same_after = i + 1 < len(readings) and readings[i + 1].clause.sentence == c.sentence
        if _BEFORE.match(c.text):
            explicit = True
            if same_before:
                ranks[i] = ranks[i - 1] + 0.5  # "denoise it before you upscale it"
            elif same_after:
                ranks[i] = ranks[i + 1] + 0.5  # "before you brighten it, denoise"
        elif _AFTER.match(c.text):
            explicit = True
            if same_before:
                ranks[i] = ranks[i - 1] - 0.5  # "upscale after denoising"
            elif same_after:
                ranks[i + 1] = max(ranks[i + 1], ranks[i] + 0.5)  # "after you dehaze, remove the rain"
    return ranks, explicit


def _joined(text: str, readings: list[_Reading]) -> str:
    """The user's words for a step: its clauses, as one span of the text when they are adjacent."""
    clauses = sorted({r.clause.index: r.clause for r in readings}.values(), key=lambda c: c.start)
    parts, span = [], None
    for c in clauses:
        if span and c.index == span[2] + 1:
            span = (span[0], c.end, c.index, span[3])
        else:
            if span:
                parts.append(span[3] + text[span[0]:span[1]])
            span = (c.start, c.end, c.index, c.prefix)
    parts.append(span[3] + text[span[0]:span[1]])
    return ", ".join(parts)


def _strength(problem: _Problem, qualifiers: dict[int, float]) -> float:
    degrees = [(r.request, r.clause.index, r.degree) for r in problem.readings if r.degree is not None]
    degrees += [(True, i, d) for i, d in qualifiers.items() if any(r.clause.index == i - 1 for r in problem.readings)]
    if not degrees:
        return parse_strength("")
    return max(degrees, key=lambda t: (t[0], t[1]))[2]


def plan_instruction(text: str, model: Understands, *, no_op_classes: tuple[str, ...] = ("unrelated",),
                     min_confidence: float = MIN_CONFIDENCE) -> list[PlannedStep]:
    """Clauses -> distinct problems -> ordered steps. Raises ``EmptyInstructionError`` for blank text."""
    if not text or not re.search(r"\w", text):
        raise EmptyInstructionError("The instruction is empty: say what to fix, e.g. 'remove the noise'.")
    lex = load_lexicon()
    clauses = _clauses(text) or [_Clause(text.strip(), 0, len(text), 0, 0)]
    corrected = [_spell(c.text) for c in clauses]
    asks = [_needs_head(c, k, lex) for c, k in zip(clauses, corrected)]
    _prime(model, [c.text for c, a in zip(clauses, asks) if a])
    readings = [_read(c, model.understand(c.text) if a else None, lex, no_op_classes, min_confidence, k)
                for c, a, k in zip(clauses, asks, corrected)]
    ranks, explicit = _ranks(readings)

    excluded = {i for r in readings if r.kind == "negated" for i in r.intents}
    qualifiers = {r.clause.index: r.degree for r in readings if r.kind == "qualifier"}
    problems: list[_Problem] = []
    by_intent: dict[str, _Problem] = {}
    generic: list[_Reading] = []
    notes: list[_Reading] = []
    if not any(r.kind == "problem" for r in readings):  # nothing named: a generic request is read by the head
        for i, r in enumerate(readings):
            if r.kind == "generic":
                c = r.clause
                readings[i] = _read(c, model.understand(c.text), lex, no_op_classes, min_confidence, corrected[i])
    named = [r for r in readings if r.kind == "problem" and r.strong]
    for r, rank in zip(readings, ranks):
        if (r.kind in ("problem", "unsure", "unrelated") and not r.strong and r.request and not (r.repeat or r.twice)
                and _PRONOUN.search(r.clause.text) and any(o is not r for o in named)
                and not lex.not_restoration.search(r.clause.text)):
            r.kind = "generic"  # "..., please smooth it": a request about the problem described, by pronoun
            generic.append(r)
            continue
        if r.kind == "unsure" and r.intents and any(
                o.kind == "problem" and r.intents[0] in o.intents for o in readings):
            r.kind = "problem"  # a hesitant description of a problem another clause names clearly
        if r.kind == "problem" and r.strong and not set(r.intents) & set(r.strong):
            # the head read it as another class than its own words name; when another clause names that class
            # too, the words win ("grey and flat, boost the colours": "flat" is no second problem)
            elsewhere = [c for c in r.strong if any(o is not r and c in o.intents for o in named)]
            if elsewhere:
                r.intents = elsewhere[:1]
        if (r.kind == "problem" and not r.strong and r.intents[0] not in r.weak and named
                and not any(r.intents[0] in o.intents for o in named)
                and not (r.request and r.confidence.get(r.intents[0], 0.0) >= MIN_CONFIDENCE_ALONGSIDE)):
            continue  # the head's guess, which the clause's words do not hint at, beside clauses that name theirs
        if r.kind == "problem":
            for intent in r.intents:
                if intent in excluded:
                    continue
                if intent in by_intent and not (r.repeat or (r.twice and intent != "upsampling")):
                    known = by_intent[intent]
                    if r.request and not any(x.request for x in known.readings):
                        known.rank = rank  # sequencing words go with the request, not with the description
                    known.readings.append(r)
                    continue
                p = _Problem(intent, [r], rank)
                problems.append(p)
                by_intent[intent] = p
                # "sharpen it twice", "denoise three times"; but "enlarge it twice" is a factor (the step reads it)
                for k in range(1, 1 if intent == "upsampling" else r.times):
                    problems.append(_Problem(intent, [r], rank + 0.01 * k))
        elif r.kind == "repeat-last" and problems:
            last = problems[-1]
            problems.append(_Problem(last.intent, [*last.readings, r], rank))
        elif r.kind == "generic":
            generic.append(r)
        elif r.kind in ("unrelated", "unsure", "negated"):
            notes.append(r)
    for i in sorted(qualifiers):  # "fix both, gently": the degree goes to what "fix both" refers to
        j = i - 1
        while j >= 0 and readings[j].kind == "filler":
            j -= 1
        if j >= 0 and readings[j].kind == "generic" and readings[j].degree is None:
            readings[j].degree = qualifiers.pop(i)
    for g in generic:  # a back-reference names nothing new: its degree (if any) goes to what it refers to
        if len(problems) == 1:
            problems[0].readings.append(g)  # "it's grainy, please smooth it": the request's words are the step's too
        elif problems:
            for p in problems:
                if g.degree is not None and all(x.degree is None for x in p.readings):
                    p.readings.append(g)
        else:
            notes.append(g)

    ordered_by = "text" if explicit and len({p.rank for p in problems}) > 1 else "default"
    position = {c: i for i, c in enumerate(DEFAULT_ORDER)}
    if ordered_by == "text":
        problems.sort(key=lambda p: (p.rank, position.get(p.intent, len(position))))
    else:
        problems.sort(key=lambda p: position.get(p.intent, len(position)))

    steps: list[PlannedStep] = []
    for p in problems:
        # a back-reference's words ("fix both") belong to a step only when it is the one problem referred to
        words = _joined(text, [r for r in p.readings if r.kind != "generic" or len(problems) == 1] or p.readings)
        strength = _strength(p, qualifiers)
        step = PlannedStep(words, p.intent, p.confidence(), strength, strength > 0,
                           "" if strength > 0 else f"'{words}' asks for zero strength; nothing was changed.",
                           sources=[r.clause.text for r in p.readings], ordered_by=ordered_by)
        steps.append(step)
    if steps:  # context ("we were hiking", "my dad took it") is no request: only requests get a note
        notes = [r for r in notes if r.request or r.kind == "negated"]
    for r in notes:
        steps.append(_no_op(r, text if not steps and len(readings) == 1 else r.clause.text))
    if not steps:
        steps.append(_no_op(readings[0] if len(readings) == 1 else None, text.strip()))
    return steps


def _no_op(r: _Reading | None, words: str) -> PlannedStep:
    if r is None or r.kind in ("unrelated", "filler", "generic", "qualifier"):
        label = r.label if r and r.label else "unrelated"
        conf = r.confidence.get(label, 0.0) if r and r.confidence else 0.0
        return PlannedStep(words, label, conf, 1.0, False, f"'{words}' is not a restoration request; nothing was "
                           "changed.", sources=[words])
    if r.kind == "negated":
        return PlannedStep(words, r.intents[0] if r.intents else "unrelated", 1.0, 0.0, False,
                           f"'{words}' asks not to change something; nothing was changed for it.", sources=[words])
    label = r.intents[0] if r.intents else r.label
    conf = r.confidence.get(label, 0.0)
    return PlannedStep(words, label, conf, parse_strength(words), False,
                       f"Not sure what '{words}' asks for (best guess: {label}, {conf:.0%}); nothing was changed. "
                       "Try e.g. 'remove the noise'.", sources=[words])
