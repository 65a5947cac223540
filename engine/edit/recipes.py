"""Recipes: a session's steps (instruction, strength, kind, size) to replay on other photos."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.edit.steps import SessionError, Step, StepKind
from engine.io.atomic import write_text

RECIPE_FORMAT = "instructir-recipe"
RECIPE_VERSION = 2


@dataclass(frozen=True)
class RecipeStep:
    """One step to replay; ``params`` holds what the kind needs (the up-sampling factor or target size)."""

    instruction: str
    strength: float = 1.0
    kind: StepKind = StepKind.INSTRUCTIR
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", StepKind(self.kind))

    @classmethod
    def of(cls, step: Step) -> RecipeStep:
        return cls(step.instruction, step.strength, step.kind, dict(step.params))

    def to_dict(self) -> dict:
        d: dict = {"instruction": self.instruction, "strength": self.strength, "kind": self.kind.value}
        if self.params:
            d["params"] = self.params
        return d


@dataclass
class Recipe:
    """Steps that can be replayed on other photos (SPIRE steps are not: batch runs InstructIR)."""

    steps: list[RecipeStep]
    model: str | None = None

    def __post_init__(self) -> None:  # (instruction, strength) pairs are accepted for brevity
        self.steps = [s if isinstance(s, RecipeStep) else RecipeStep(*s) for s in self.steps]

    @classmethod
    def from_steps(cls, steps: list[Step]) -> Recipe:
        kept = [s for s in steps if s.kind is not StepKind.SPIRE]
        return cls([RecipeStep.of(s) for s in kept], kept[0].model if kept else None)

    def to_dict(self) -> dict:
        return {"format": RECIPE_FORMAT, "version": RECIPE_VERSION, "model": self.model,
                "steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        if not isinstance(data, dict) or data.get("format") != RECIPE_FORMAT:
            raise SessionError("not an InstructIR recipe (missing format: instructir-recipe)")
        try:
            steps = [RecipeStep(str(s["instruction"]), float(s.get("strength", 1.0)),
                                StepKind(s.get("kind", StepKind.INSTRUCTIR.value)), dict(s.get("params") or {}))
                     for s in data["steps"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SessionError(f"malformed recipe step: {exc}") from exc
        if not steps:
            raise SessionError("the recipe has no steps")
        return cls(steps, data.get("model"))

    def save(self, path: str | os.PathLike) -> Path:
        return write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise SessionError(f"cannot read recipe {path}: {exc}") from exc
