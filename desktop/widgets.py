"""Small behaviours shared by the panels.

Sliders, spin boxes and combo boxes inside scrolling panels take the mouse
wheel only once they have focus (clicked or tabbed to): a wheel that merely
passes over one scrolls the panel, as in photo editors, instead of changing a
strength and adding an undo entry.
"""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt
from PySide6.QtWidgets import QAbstractScrollArea, QWidget


class _WheelGuard(QObject):
    """Hands wheel events of an unfocused control to the scroll area around it (which scrolls)."""

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Wheel and isinstance(obj, QWidget) and not obj.hasFocus():
            area = obj.parentWidget()
            while area is not None and not isinstance(area, QAbstractScrollArea):
                area = area.parentWidget()
            if area is not None:
                QCoreApplication.sendEvent(area.viewport(), event)
            return True
        return False


_guard: _WheelGuard | None = None


def no_wheel_unless_focused(*widgets: QWidget) -> None:
    """Make each widget ignore the wheel until focused; a click (not the wheel) gives focus."""
    global _guard
    if _guard is None:
        _guard = _WheelGuard(QCoreApplication.instance())
    for widget in widgets:
        widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        widget.installEventFilter(_guard)
