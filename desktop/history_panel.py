"""One row per applied step: its instruction, what it was understood as, and a live strength slider.

Sliders re-blend the stored correction (no network), so dragging is
immediate; one drag is one undo entry. A slider takes the mouse wheel only
once clicked (focused), so scrolling the list never edits the photo. Rows are
rebuilt only when the list of steps changes, never while a slider is being
dragged.
"""

from __future__ import annotations

import itertools

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.edit.session import Step, StepKind

from .controller import intent_name, plural
from .icons import icon
from .widgets import no_wheel_unless_focused

_drags = itertools.count(1)


class StepRow(QFrame):
    """A step: "2  brighten it a bit", "Brighten · 88 % sure · 1.3 s", slider, value, remove."""

    strengthChanged = Signal(int, float, int)  # index, strength, drag id (0: not part of a drag)
    removeRequested = Signal(int)

    def __init__(self, index: int, step: Step, size: tuple[int, int] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.index = index
        self._drag: int | None = None
        self.title = QLabel()
        self.title.setObjectName("title")
        self.title.setWordWrap(True)
        self.detail = QLabel()
        self.detail.setObjectName("muted")
        self.detail.setWordWrap(True)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 100)
        self.slider.setPageStep(10)
        self.slider.setToolTip("Strength of this step: re-blends instantly, without running the model again "
                               "(click it first to use the mouse wheel or arrow keys)")
        no_wheel_unless_focused(self.slider)
        self.value = QLabel()
        self.value.setMinimumWidth(38)
        self.value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.remove = QToolButton()
        self.remove.setIcon(icon("remove"))
        self.remove.setIconSize(QSize(14, 14))
        self.remove.setAutoRaise(True)
        self.remove.setToolTip("Remove this step (undoable)")
        self.remove.clicked.connect(lambda: self.removeRequested.emit(self.index))

        # two lines: title and remove; what it was understood as, the slider and its value
        grid = QGridLayout(self)
        grid.setContentsMargins(10, 5, 6, 6)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(1)
        grid.addWidget(self.title, 0, 0, 1, 3)
        grid.addWidget(self.remove, 0, 3, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(self.detail, 1, 0)
        grid.addWidget(self.slider, 1, 1)
        grid.addWidget(self.value, 1, 2, 1, 2)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 2)
        self.slider.setMinimumWidth(90)

        self.slider.sliderPressed.connect(self._press)
        self.slider.sliderReleased.connect(self._release)
        self.slider.valueChanged.connect(self._changed)
        self.update_step(index, step, size)

    def update_step(self, index: int, step: Step, size: tuple[int, int] | None = None) -> None:
        """Show ``step`` without emitting anything (the document is already in this state).

        ``size``: (width, height) after the step, shown for a step that changes the photo's size.
        """
        self.index = index
        self.step = step
        self.title.setText(f"{index + 1}   {step.instruction}")
        if step.kind is StepKind.SPIRE:
            params = step.params
            detail = f"SPIRE · {params.get('prompt', '')} · {plural(int(params.get('sampling_steps', 0)), 'step')}"
            if params.get("semantic"):
                detail += f" · “{params['semantic']}”"
        elif step.kind is StepKind.UPSAMPLE:
            detail = step.summary() + (f" → {size[0]} × {size[1]}" if size else "")
        else:
            detail = f"{intent_name(step.intent)} · {step.confidence:.0%} sure"
        if step.seconds >= 0.05:  # the same time as the step's line in the Assistant's reply
            detail += f" · {step.seconds:.1f} s"
        if step.stale:
            detail += " · preview"
        self.detail.setText(detail)
        name = "stepRowStale" if step.stale else "stepRow"
        if self.objectName() != name:  # re-styling costs the UI thread ms a row: only when the look changes
            self.setObjectName(name)
            self.setToolTip("Previewed from the step's earlier correction; press Recompute for the exact result"
                            if step.stale else "")
            self.style().unpolish(self)
            self.style().polish(self)
        if not self.slider.isSliderDown():
            self.slider.blockSignals(True)
            self.slider.setValue(round(step.strength * 100))
            self.slider.blockSignals(False)
        self.value.setText(f"{self.slider.value()} %")

    def _press(self) -> None:
        self._drag = next(_drags)

    def _release(self) -> None:
        self._drag = None

    def _changed(self, value: int) -> None:
        self.value.setText(f"{value} %")
        drag = self._drag if self.slider.isSliderDown() and self._drag else 0
        self.strengthChanged.emit(self.index, value / 100.0, drag)


class HistoryPanel(QWidget):
    """The list of steps, an "Original" header and a Recompute button while later steps are previews."""

    strengthChanged = Signal(int, float, int)
    removeRequested = Signal(int)
    recomputeRequested = Signal()
    originalRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[StepRow] = []
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QWidget()
        self.list_layout = QVBoxLayout(body)
        self.list_layout.setContentsMargins(10, 8, 10, 8)
        self.list_layout.setSpacing(6)
        self.original = QPushButton(icon("compare"), "  Original")
        self.original.setToolTip("Show the photo without any edits (undoes to the start; Redo brings them back)")
        self.original.clicked.connect(self.originalRequested)
        self.original.setStyleSheet("text-align: left; padding: 6px 10px;")
        self.list_layout.addWidget(self.original)
        self.empty = QLabel("No edits yet. Type an instruction in the Assistant panel.")
        self.empty.setObjectName("muted")
        self.empty.setWordWrap(True)
        self.list_layout.addWidget(self.empty)
        self.list_layout.addStretch(1)
        self.scroll.setWidget(body)

        self.stale_note = QLabel("Steps marked “preview” reuse their earlier correction because a step before "
                                 "them changed.")
        self.stale_note.setObjectName("muted")
        self.stale_note.setWordWrap(True)
        self.recompute = QPushButton(icon("refresh"), "Recompute")
        self.recompute.setToolTip("Run the model again on the previewed steps for the exact result")
        self.recompute.clicked.connect(self.recomputeRequested)
        self.stale_bar = QWidget()
        bar = QHBoxLayout(self.stale_bar)
        bar.setContentsMargins(10, 4, 10, 8)
        bar.addWidget(self.stale_note, 1)
        bar.addWidget(self.recompute)
        self.stale_bar.hide()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.scroll, 1)
        layout.addWidget(self.stale_bar)

    def set_steps(self, steps: list[Step], sizes: list[tuple[int, int]] | None = None) -> None:
        """Sync rows with the document: update in place when only strengths/flags changed.

        ``sizes``: (width, height) after each step (shown where a step changes the size).
        """
        sizes = sizes or [None] * len(steps)
        keep = 0  # rows of the same steps are updated in place; only the rest are built (a new step: one row)
        while keep < min(len(steps), len(self.rows)) and self.rows[keep].step.instruction == steps[keep].instruction \
                and self.rows[keep].step.delta is steps[keep].delta:
            keep += 1
        for row in self.rows[keep:]:
            self.list_layout.removeWidget(row)
            row.deleteLater()
        self.rows = self.rows[:keep]
        for i, (row, step) in enumerate(zip(self.rows, steps)):
            row.update_step(i, step, sizes[i])
        for i in range(keep, len(steps)):
            row = StepRow(i, steps[i], sizes[i])
            row.strengthChanged.connect(self.strengthChanged)
            row.removeRequested.connect(self.removeRequested)
            self.list_layout.insertWidget(self.list_layout.count() - 1, row)
            self.rows.append(row)
        self.empty.setVisible(not steps)
        self.stale_bar.setVisible(any(s.stale for s in steps))

    def set_enabled_editing(self, enabled: bool) -> None:
        self.recompute.setEnabled(enabled)
