"""Diagnosis: what is wrong with a photo, how badly, and the instruction that fixes it.

    from engine.diagnose import diagnose
    d = diagnose(picture)          # a Picture, an HxWx3 float32 array in [0, 1], or a path
    d.problems                     # (Problem(intent=Kind.NOISE, severity=0.82, reason=..., instruction=...), ...)
    d.suggestion                   # "This photo looks noisy (strong) and a little dark."
    d.instruction                  # "Remove the noise and brighten it a little" ('' when nothing is worth fixing)

``auto`` (``is_auto_instruction``, ``resolve_instruction``) turns instructions
that name no problem ("fix it") into the diagnosis' instruction.
"""

from engine.diagnose.auto import AutoPlan, is_auto_instruction, plan_auto, resolve_instruction
from engine.diagnose.core import (
    REPORT_FLOOR,
    WORTH_FIXING,
    Diagnosis,
    Problem,
    default_model,
    diagnose,
)
from engine.diagnose.model import DiagnoseModel, DiagnoseModelError, Kind

__all__ = [
    "REPORT_FLOOR", "WORTH_FIXING", "AutoPlan", "DiagnoseModel", "DiagnoseModelError", "Diagnosis", "Kind",
    "Problem", "default_model", "diagnose", "is_auto_instruction", "plan_auto", "resolve_instruction",
]
