"""QUndoCommands over the document: each holds the step lists before and after, so undo/redo is a swap.

Snapshots are cheap: a Step is a few numbers plus a reference to its
correction array, which is shared and never copied.
"""

from __future__ import annotations

import itertools

import numpy as np
from PySide6.QtGui import QImage, QUndoCommand

from engine.edit.session import Step

STRENGTH_ID = 1001
_tokens = itertools.count(1)


class StepsCommand(QUndoCommand):
    """Swap the document between two step lists."""

    def __init__(self, document, before: list[Step], after: list[Step], text: str) -> None:
        super().__init__(text)
        self.document = document
        self.before = before
        self.after = after
        self.token = next(_tokens)

    def redo(self) -> None:
        self.document.set_steps(self.after)

    def undo(self) -> None:
        self.document.set_steps(self.before)

    def refreshed(self, steps: list[Step]) -> None:
        """Stale steps were recomputed exactly: swap in the exact versions where this snapshot matches."""
        self.before = _merge_exact(self.before, steps)
        self.after = _merge_exact(self.after, steps)


def _merge_exact(snapshot: list[Step], exact: list[Step]) -> list[Step]:
    out = []
    for i, step in enumerate(snapshot):
        fresh = exact[i] if i < len(exact) else None
        same = fresh is not None and all(
            (a.instruction, a.strength) == (b.instruction, b.strength) for a, b in zip(snapshot[:i + 1], exact[:i + 1]))
        out.append(fresh if same and step.stale and not fresh.stale else step)
    return out


class ApplyCommand(StepsCommand):
    """An instruction's new steps. The first redo shows the worker's already-rendered result."""

    def __init__(self, document, before: list[Step], after: list[Step], instruction: str, *,
                 result: np.ndarray | None = None, display: QImage | None = None) -> None:
        super().__init__(document, before, after, f"Apply “{instruction}”")
        self.instruction = instruction
        self._first = (result, display)

    def redo(self) -> None:
        result, display = self._first
        self._first = (None, None)
        self.document.set_steps(self.after, result, display)


class StrengthCommand(StepsCommand):
    """A strength change; changes of the same step within one slider drag merge into one undo entry."""

    def __init__(self, document, before: list[Step], after: list[Step], index: int, drag_id: int = 0) -> None:
        text = f"Strength of “{after[index].instruction}” to {after[index].strength:.0%}"
        super().__init__(document, before, after, text)
        self.index = index
        self.drag_id = drag_id

    def id(self) -> int:
        return STRENGTH_ID

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 - Qt's name
        if not isinstance(other, StrengthCommand) or not self.drag_id:
            return False
        if other.index != self.index or other.drag_id != self.drag_id:
            return False
        self.after = other.after
        self.setText(other.text())
        return True
