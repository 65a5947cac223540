"""``auto``: instructions that name no problem ("fix it", "make it better") are planned from the diagnosis.

    if is_auto_instruction(text):
        auto = plan_auto(picture)          # diagnoses the photo
        print(auto.message)                # says what it saw and what it will do (or why nothing)
        if auto.instruction:
            session.apply(auto.instruction, restorer)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.diagnose.core import Diagnosis, diagnose

_POLITE = r"(?:(?:please|pls|plz|just|can you|could you|would you|will you|kindly|auto|go ahead and)\s+)*"
_OBJECT = (r"(?:it|this|that|everything|all|all of it|whatever(?:'s| is) wrong|what(?:'s| is) wrong|"
           r"(?:this|that|the|my)\s+(?:photo|picture|pic|image|shot|one))")
_GENERIC = (
    rf"(?:fix|repair|restore|correct|improve|clean up|touch up|sort out|auto[- ]?fix|auto[- ]?correct)"
    rf"(?:\s+{_OBJECT})?(?:\s+up)?",
    rf"make\s+{_OBJECT}\s+(?:look\s+)?(?:better|nicer|good|great|right|prettier)",
    r"auto(?:matic|matically|pilot)?|autofix|magic|do your (?:best|thing)|do (?:the|your) magic",
)
_AUTO = re.compile(rf"^{_POLITE}(?:{'|'.join(_GENERIC)})(?:\s+(?:for me|please|thanks|thank you))*$",
                   re.IGNORECASE)


def is_auto_instruction(text: str) -> bool:
    """True for instructions that name no problem: "auto", "fix it", "make it better", "fix this photo".

    "fix the noise" or "make it brighter" name one and are planned as they are.
    """
    t = re.sub(r"[\s,.!?;:]+", " ", (text or "").strip()).strip()
    return bool(t) and bool(_AUTO.match(t))


@dataclass(frozen=True)
class AutoPlan:
    """What ``auto`` found and will do: ``instruction`` is empty when the photo needs nothing."""

    diagnosis: Diagnosis
    instruction: str

    @property
    def message(self) -> str:
        """One line for the user: 'Auto: This photo looks noisy (strong). Doing: Remove the noise'."""
        if not self.instruction:
            return f"Auto: {self.diagnosis.suggestion} Nothing was changed."
        return f"Auto: {self.diagnosis.suggestion} Doing: {self.instruction}"


def plan_auto(photo, **kwargs) -> AutoPlan:
    """Diagnose ``photo`` (anything ``diagnose`` takes, with its keyword arguments) and plan the fix."""
    diagnosis = diagnose(photo, **kwargs)
    return AutoPlan(diagnosis, diagnosis.instruction)


def auto_recipe(photo, runners, *, strength: float | None = None, **kwargs):
    """Batch ``auto``: the recipe that fixes this photo, or None to leave it as it is, and a line for the report.

    ``runners``: the restorer (or ``engine.edit.runners.Runners``) that plans the steps;
    ``strength`` overrides the suggested strengths, as ``--strength`` does.
    """
    import numpy as np

    from engine.edit.recipes import Recipe
    from engine.edit.session import EditSession

    auto = plan_auto(photo, **kwargs)
    if not auto.instruction:
        return None, auto.message
    # Planned on a stand-in image, as batch plans a typed instruction: the steps do not depend on the pixels.
    plan, steps = EditSession(np.zeros((1, 1, 3), np.float32)).plan_steps(auto.instruction, runners,
                                                                          strength=strength)
    if not steps:
        return None, f"Auto: {auto.diagnosis.suggestion} The model did not take '{auto.instruction}' as a " \
                     "restoration; nothing was changed."
    done = ", ".join(f"{s.instruction} ({s.strength:.0%})" for s in steps)
    return Recipe.from_steps(steps), f"Auto: {auto.diagnosis.suggestion} Applied: {done}"


def resolve_instruction(text: str, photo, **kwargs) -> tuple[str, AutoPlan | None]:
    """The instruction to run for ``text`` on ``photo``: ``text`` itself, or the diagnosis' suggestion when
    ``text`` names no problem (then also the plan, to tell the user; its instruction may be empty)."""
    if not is_auto_instruction(text):
        return text, None
    auto = plan_auto(photo, **kwargs)
    return auto.instruction, auto
