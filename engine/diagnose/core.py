"""Say what is wrong with a photo, how badly, and which instruction fixes it.

``diagnose(photo)`` combines the classical measures (noise level, JPEG
quantisation tables, exposure, resolution) with the learned classifier of
``engine.diagnose.model`` into a list of problems, each with a severity in
``[0, 1]``: at ``WORTH_FIXING`` (0.3) and above a problem is worth fixing and
goes into the suggested instruction, "Remove the noise and brighten it a
little". The classifier names the kind of damage and how strong it is; the
classical measures add what they can tell on their own and explain it in
numbers (a photo can be both noisy and dark; a JPEG file states its quality).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.diagnose import features
from engine.diagnose.model import INTENTS, DiagnoseModel, Kind
from engine.jobs import CancelToken, check

#: A problem at this severity or above is worth fixing (goes into the suggestion).
WORTH_FIXING = 0.3
#: Problems below this are not reported at all.
REPORT_FLOOR = 0.15
#: Severity words: at or above ``STRONG`` a problem is "strong", below ``MODERATE`` it is "a little".
STRONG, MODERATE = 0.75, 0.5
#: At most this many problems go into one suggested instruction (the most severe ones).
MAX_STEPS = 3
#: On photos this large (megapixels) an enlarged look is fixed by sharpening, not by enlarging again.
LARGE_MEGAPIXELS = 2.0
#: Photos this small (megapixels; 480 x 320) or smaller are worth enlarging: upsampling is suggested.
SMALL_MEGAPIXELS = 0.15

#: The order in which fixes are applied: artefacts of the file and the sensor first, the look last.
STEP_ORDER: tuple[Kind, ...] = (Kind.JPEG, Kind.NOISE, Kind.RAIN, Kind.HAZE, Kind.BLUR, Kind.LOW_LIGHT,
                                Kind.ENHANCEMENT, Kind.UPSAMPLING)

#: How each kind is named in a sentence ("This photo looks noisy") and the instruction that fixes it.
_WORDS: dict[Kind, tuple[str, str]] = {
    Kind.NOISE: ("noisy", "remove the noise"),
    Kind.BLUR: ("blurry", "remove the blur"),
    Kind.RAIN: ("streaked with rain", "remove the rain"),
    Kind.HAZE: ("hazy", "remove the haze"),
    Kind.LOW_LIGHT: ("dark", "brighten it"),
    Kind.ENHANCEMENT: ("flat and dull", "enhance the colors and contrast"),
    Kind.UPSAMPLING: ("low in resolution", "increase the resolution"),
    Kind.JPEG: ("blocky from JPEG compression", "remove the JPEG artifacts"),
}


def degree(severity: float) -> str:
    """'strong', '' (clearly) or 'a little' for a severity worth fixing."""
    return "strong" if severity >= STRONG else ("" if severity >= MODERATE else "a little")


def strength_for(severity: float) -> float:
    """The suggested strength: the whole correction, or half of it for a mild problem ("a little")."""
    return 1.0 if severity >= MODERATE else 0.5


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the photo."""

    intent: Kind
    severity: float
    reason: str
    instruction: str
    strength: float

    @property
    def worth_fixing(self) -> bool:
        return self.severity >= WORTH_FIXING

    def describe(self) -> str:
        """'noisy (strong)', 'dark', 'a little dark'."""
        adjective = _WORDS[self.intent][0]
        d = degree(self.severity)
        return f"{adjective} (strong)" if d == "strong" else (f"a little {adjective}" if d else adjective)

    def to_dict(self) -> dict:
        return {"intent": self.intent.value, "severity": round(self.severity, 3), "reason": self.reason,
                "instruction": self.instruction, "strength": self.strength}


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@dataclass(frozen=True)
class Diagnosis:
    """Problems found (most severe first), the sentence that says so and the instruction that fixes them."""

    problems: tuple[Problem, ...]
    width: int
    height: int
    path: Path | None = None
    #: The numbers the reasons quote: noise sigma (0-255), JPEG quality, mean brightness, class probabilities.
    measures: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def to_fix(self) -> tuple[Problem, ...]:
        """The problems worth fixing, most severe first (at most ``MAX_STEPS``)."""
        return tuple(p for p in self.problems if p.worth_fixing)[:MAX_STEPS]

    @property
    def main(self) -> Problem | None:
        return self.to_fix[0] if self.to_fix else None

    @property
    def clean(self) -> bool:
        return not self.to_fix

    @property
    def suggestion(self) -> str:
        """'This photo looks noisy (strong) and a little dark.' or why nothing needs fixing."""
        if self.clean:
            return "This photo looks fine: nothing worth fixing."
        return f"This photo looks {_join([p.describe() for p in self.to_fix])}."

    @property
    def steps(self) -> tuple[Problem, ...]:
        """The problems worth fixing in the order the fixes are applied (one per fix: enlarged-looking and
        blurry both ask to remove the blur)."""
        seen: set[str] = set()
        out = []
        for p in self.to_fix:  # most severe first: it sets the strength of a shared fix
            fix = p.instruction.removesuffix(" a little")
            if fix not in seen:
                seen.add(fix)
                out.append(p)
        return tuple(sorted(out, key=lambda p: STEP_ORDER.index(p.intent)))

    @property
    def instruction(self) -> str:
        """'Remove the noise and brighten it a little'; empty when nothing is worth fixing."""
        if self.clean:
            return ""
        text = _join([p.instruction for p in self.steps])
        return text[0].upper() + text[1:]

    def to_dict(self) -> dict:
        """What ``instructir diagnose --json`` prints for a photo."""
        return {"path": str(self.path) if self.path else None, "width": self.width, "height": self.height,
                "problems": [p.to_dict() for p in self.problems], "suggestion": self.suggestion,
                "instruction": self.instruction}


# --- the model, loaded once ------------------------------------------------------------

_model: DiagnoseModel | None = None
_model_lock = threading.Lock()


def default_model() -> DiagnoseModel:
    """The bundled diagnosis model, loaded on first use (thread-safe; the instance is immutable)."""
    global _model
    with _model_lock:
        if _model is None:
            _model = DiagnoseModel.load()
        return _model


# --- classical severities ----------------------------------------------------------------


def jpeg_quality(path: str | os.PathLike | None) -> float | None:
    """The IJG quality a JPEG file was saved at, from its luminance quantisation table (None otherwise)."""
    if path is None:
        return None
    from PIL import Image, UnidentifiedImageError

    from engine.diagnose.measures import jpeg_quality_from_table

    try:
        with Image.open(path) as im:  # reads the header only
            if im.format != "JPEG":
                return None
            tables = getattr(im, "quantization", None) or {}
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return jpeg_quality_from_table(tables.get(0)) if tables else None


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at ``lo``, 1 at ``hi``, linear between (either direction)."""
    return float(min(1.0, max(0.0, (x - lo) / (hi - lo))))


def classical_severities(values: dict[str, float], width: int, height: int,
                         quality: float | None) -> dict[Kind, float]:
    """What the measures say on their own, where they can be trusted on their own."""
    sigma = features.noise_sigma_255(values)
    mean, p95 = values["exp_mean"], values["exp_p95"]
    out = {
        # sigma 3 (0-255) is invisible, 10 worth removing, 25 and above strong.
        Kind.NOISE: _ramp(sigma, 3.0, 25.0),
        # An average brightness under 25% with no bright parts is under-exposed; a night scene with lights, less so.
        Kind.LOW_LIGHT: _ramp(0.25 - mean, 0.0, 0.2) * (1.0 if p95 < 0.6 else 0.5),
    }
    if quality is not None:  # quality 75 and above: no visible artefacts; 10: strong
        out[Kind.JPEG] = _ramp(75.0 - quality, 0.0, 70.0)
    megapixels = width * height / 1e6
    if megapixels < 2 * SMALL_MEGAPIXELS:  # 0.3 at SMALL_MEGAPIXELS, 0.25 more for each halving of the pixels
        severity = WORTH_FIXING + 0.25 * math.log2(SMALL_MEGAPIXELS / max(megapixels, 1e-4))
        out[Kind.UPSAMPLING] = float(min(0.85, max(0.0, severity)))
    return out


def _reason(kind: Kind, values: dict[str, float], width: int, height: int, quality: float | None,
            probability: float, classical: float, learned: float) -> str:
    sigma = features.noise_sigma_255(values)
    if kind is Kind.NOISE:
        return f"grain of about {sigma:.0f}/255 in flat areas"
    if kind is Kind.LOW_LIGHT:
        return f"under-exposed: average brightness {values['exp_mean']:.0%}"
    if kind is Kind.JPEG:
        if quality is not None and classical >= learned:
            return f"saved as JPEG at quality about {quality:.0f}"
        return "8x8 block edges from JPEG compression"
    if kind is Kind.UPSAMPLING and classical >= learned:
        return f"only {width} x {height} pixels"
    if kind is Kind.UPSAMPLING:
        return "no fine detail below a few pixels, as in an enlarged small photo"
    if kind is Kind.BLUR:
        return "soft edges: little fine detail at full resolution"
    if kind is Kind.HAZE:
        return f"a bright veil that lowers contrast (dark channel at {values['dc_p50']:.0%})"
    if kind is Kind.RAIN:
        return "thin bright streaks running one way"
    if kind is Kind.ENHANCEMENT:
        cast = values["col_cast_rb"]
        tint = " and a warm cast" if cast > 0.12 else (" and a cool cast" if cast < -0.12 else "")
        return f"flat contrast ({values['exp_spread']:.0%} of the range) and dull colours{tint}"
    return f"{kind.value} ({probability:.0%})"


# --- the diagnosis -------------------------------------------------------------------------------------


def _pixels_and_path(photo) -> tuple[np.ndarray, Path | None]:
    """A Picture, an HxWx3 array in [0, 1] or a path to load."""
    if isinstance(photo, (str, os.PathLike)):
        from engine.io.images import load_image

        picture = load_image(photo)
        return picture.rgb, Path(photo)
    rgb = getattr(photo, "rgb", photo)
    source = getattr(photo, "source", None)
    arr = np.asarray(rgb, np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"diagnose needs an HxWx3 image, got shape {arr.shape}")
    return arr, Path(source) if source else None


def diagnose(photo, *, path: str | os.PathLike | None = None, model: DiagnoseModel | None = None,
             cancel: CancelToken | None = None) -> Diagnosis:
    """Diagnose a photo: a ``Picture``, a float32 HxWx3 array in ``[0, 1]`` or a file path.

    ``path`` names the file the pixels came from when ``photo`` is an array (its JPEG tables
    are read; a Picture brings its own ``source``). Pure computation on the caller's thread:
    safe to call from several threads at once; about 0.1-0.3 s whatever the photo's size.
    """
    rgb, source = _pixels_and_path(photo)
    source = Path(path) if path is not None else source
    model = model or default_model()
    check(cancel)
    analysis = features.analyse(rgb)
    check(cancel)
    return from_analysis(analysis, model, source)


def from_analysis(analysis: features.Analysis, model: DiagnoseModel, source: Path | None = None) -> Diagnosis:
    """The diagnosis of measured features (``diagnose`` without the measuring; benchmarks re-use measures)."""
    values, w, h = analysis.values, analysis.width, analysis.height
    probabilities, strength = model.predict(analysis.vector)
    quality = jpeg_quality(source)
    classical = classical_severities(values, w, h, quality)
    problems = []
    for kind in INTENTS:
        floor = model.floor(kind)
        learned = probabilities[kind] * (floor + (1.0 - floor) * strength)
        severity = max(learned, classical.get(kind, 0.0))
        if severity < REPORT_FLOOR:
            continue
        reason = _reason(kind, values, w, h, quality, probabilities[kind], classical.get(kind, 0.0), learned)
        fix = _WORDS[kind][1]
        if kind is Kind.UPSAMPLING and w * h >= LARGE_MEGAPIXELS * 1e6:
            fix = _WORDS[Kind.BLUR][1]
        # An enlargement is all or nothing: its fix takes no degree.
        mild = degree(severity) == "a little" and fix != _WORDS[Kind.UPSAMPLING][1]
        problems.append(Problem(kind, round(float(severity), 4), reason, fix + (" a little" if mild else ""),
                                strength_for(severity) if mild else 1.0))
    problems.sort(key=lambda p: -p.severity)
    measures = {"noise_sigma": round(features.noise_sigma_255(values), 2), "jpeg_quality": quality,
                "brightness": round(values["exp_mean"], 4), "strength": round(strength, 4),
                "probabilities": {k.value: round(v, 4) for k, v in probabilities.items()}}
    return Diagnosis(tuple(problems), w, h, source, measures)
