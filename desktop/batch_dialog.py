"""Batch export: drop files and folders, pick a recipe, an output folder and a format, watch each file.

The recipe is the current session's steps at their strengths, or a recipe
file. The batch runs on a pool thread through ``engine.edit.batch.run_batch``,
whose atomic writes mean Cancel keeps finished files and leaves no partial
ones; existing outputs are skipped, so running it again resumes. Each row
says where its photo will be written: a dropped folder's photos keep the
folder's name and sub-folders under the output folder, and the dialog says
so before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.edit.batch import BatchItem, collect_inputs, plan_outputs, run_batch
from engine.edit.session import Recipe, StepKind
from engine.edit.upsampling import Enlargement
from engine.jobs import CancelToken

from .icons import icon
from .theme import ERROR, MUTED, OK, WARNING
from .workers import describe_error, run_in_pool

FORMATS = (("Same as each original", None), ("JPEG", "jpeg"), ("PNG", "png"), ("TIFF", "tiff"), ("WebP", "webp"))
STATUS_TEXT = {"pending": "Waiting", "running": "Restoring…", "done": "Done", "skipped": "Skipped (exists)",
               "failed": "Failed", "cancelled": "Cancelled"}
STATUS_COLOUR = {"done": OK, "skipped": MUTED, "failed": ERROR, "cancelled": WARNING, "running": "#cfcfcf"}


class _Events(QObject):
    """Carries run_batch's callbacks from the pool thread to the dialog (queued signal)."""

    item = Signal(int, str, float, str)  # index, status, fraction, error


class FileList(QTreeWidget):
    """Accepts dropped files and folders."""

    pathsDropped = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setHeaderLabels(["Photo", "Saved as", "Status", "Progress"])
        self.setRootIsDecorated(False)
        self.setAlternatingRowColors(True)
        self.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.header().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.header().setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.setColumnWidth(3, 120)

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt's name
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.pathsDropped.emit(paths)
            event.acceptProposedAction()


def _describe_step(step) -> str:
    """'remove the noise (80%)'; an up-sampling step says how each photo is resized: 'upscale it (2x, 100%)'."""
    if step.kind is StepKind.UPSAMPLE:
        return f"{step.instruction} ({Enlargement.from_params(step.params).describe()}, {step.strength:.0%})"
    return f"{step.instruction} ({step.strength:.0%})"


class BatchDialog(QDialog):
    """Non-modal: the photographer can keep editing while a batch runs."""

    finished_batch = Signal(object)  # BatchReport

    def __init__(self, provider, session_recipe=None, settings=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Batch export")
        self.setWindowIcon(icon("batch"))
        self.resize(760, 560)
        self.provider = provider
        self.session_recipe = session_recipe  # callable -> Recipe | None (the current session's steps)
        self.settings = settings
        self.inputs: list[tuple[Path, Path]] = []
        self.items: list[BatchItem] = []
        self.recipe_file: Path | None = None
        self.token: CancelToken | None = None
        self.report = None
        self._events = _Events(self)
        self._events.item.connect(self._on_item)

        self.files = FileList()
        self.files.pathsDropped.connect(self.add_paths)
        add_files = QPushButton(icon("file-add"), "Add photos…")
        add_files.clicked.connect(self._browse_files)
        add_folder = QPushButton(icon("folder-add"), "Add folder…")
        add_folder.clicked.connect(self._browse_folder)
        self.clear_button = QPushButton(icon("clear"), "Clear")
        self.clear_button.clicked.connect(self.clear)
        hint = QLabel("Drag photos or folders here (folders are searched recursively).")
        hint.setObjectName("muted")
        file_buttons = QHBoxLayout()
        file_buttons.addWidget(hint, 1)
        file_buttons.addWidget(add_files)
        file_buttons.addWidget(add_folder)
        file_buttons.addWidget(self.clear_button)

        self.use_session = QRadioButton()
        self.use_file = QRadioButton("Recipe file:")
        self.recipe_label = QLabel("none chosen")
        self.recipe_label.setObjectName("muted")
        choose_recipe = QPushButton(icon("recipe"), "Choose…")
        choose_recipe.clicked.connect(self._browse_recipe)
        self.save_recipe_button = QPushButton(icon("session-save"), "Save current as recipe…")
        self.save_recipe_button.clicked.connect(self._save_recipe)
        recipe_file_row = QHBoxLayout()
        recipe_file_row.addWidget(self.use_file)
        recipe_file_row.addWidget(self.recipe_label, 1)
        recipe_file_row.addWidget(choose_recipe)
        session_row = QHBoxLayout()
        session_row.addWidget(self.use_session, 1)
        session_row.addWidget(self.save_recipe_button)

        self.out_dir = QLineEdit()
        self.out_dir.setPlaceholderText("Folder for the restored photos")
        browse_out = QPushButton(icon("open"), "Browse…")
        browse_out.clicked.connect(self._browse_out)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_dir, 1)
        out_row.addWidget(browse_out)
        self.out_dir.textChanged.connect(self._update_destinations)
        self.format = QComboBox()
        for label, value in FORMATS:
            self.format.addItem(label, value)
        self.format.currentIndexChanged.connect(self._update_destinations)
        self.destination = QLabel("")
        self.destination.setObjectName("muted")
        self.destination.setWordWrap(True)

        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.addRow("Recipe:", session_row)
        form.addRow("", recipe_file_row)
        form.addRow("Output folder:", out_row)
        form.addRow("Format:", self.format)
        form.addRow("", self.destination)

        self.overall = QProgressBar()
        self.overall.setRange(0, 1000)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.start_button = QPushButton(icon("play"), "Start")
        self.start_button.setObjectName("primary")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton(icon("cancel"), "Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.summary, 1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.start_button)
        buttons.addWidget(close)

        layout = QVBoxLayout(self)
        layout.addWidget(self.files, 1)
        layout.addLayout(file_buttons)
        layout.addSpacing(6)
        layout.addLayout(form)
        layout.addWidget(self.overall)
        layout.addLayout(buttons)
        self.refresh_recipe()

    # --- inputs ---------------------------------------------------------------

    def add_paths(self, paths: list[str | Path]) -> int:
        """Add files and folders (recursively); returns how many photos were added."""
        known = {src.resolve() for src, _ in self.inputs}
        added = 0
        for raw in paths:
            try:
                found = collect_inputs([raw])
            except FileNotFoundError as exc:
                self.summary.setText(str(exc))
                continue
            for src, rel in found:
                if src.resolve() not in known:
                    known.add(src.resolve())
                    self.inputs.append((src, rel))
                    item = QTreeWidgetItem([src.name, "", STATUS_TEXT["pending"], ""])
                    item.setToolTip(0, str(src))
                    self.files.addTopLevelItem(item)
                    added += 1
        self._update_destinations()
        self._update_start()
        return added

    def _update_destinations(self, *_args) -> None:
        """Each row's output path, and one line saying how the output folder is laid out."""
        out = self.out_dir.text().strip()
        root = Path(out).expanduser() if out else Path("<output folder>")
        items = plan_outputs(self.inputs, root, self.format.currentData())
        for i, item in enumerate(items):
            row = self.files.topLevelItem(i)
            if row is not None:
                shown = item.output.relative_to(root).as_posix()
                row.setText(1, shown)
                row.setToolTip(1, str(item.output))
        nested = [it for (src, rel), it in zip(self.inputs, items) if len(rel.parts) > 1]
        if nested:
            example = nested[0].output.relative_to(root).as_posix()
            self.destination.setText(f"Photos from a dropped folder keep its name and sub-folders: "
                                     f"{example} is written as {root / example}.")
        elif items:
            self.destination.setText(f"Each photo is written into {root} under its own name; existing files are "
                                     "skipped.")
        else:
            self.destination.setText("")

    def clear(self) -> None:
        if self.token is not None:
            return
        self.inputs.clear()
        self.files.clear()
        self._update_destinations()
        self._update_start()

    def refresh_recipe(self) -> None:
        recipe = self.session_recipe() if self.session_recipe else None
        if recipe is not None and recipe.steps:
            steps = ", ".join(_describe_step(r) for r in recipe.steps)
            self.use_session.setText(f"Current edit: {steps}")
            self.use_session.setEnabled(True)
            self.save_recipe_button.setEnabled(True)
            if not self.use_file.isChecked():
                self.use_session.setChecked(True)
        else:
            self.use_session.setText("Current edit: no steps yet")
            self.use_session.setEnabled(False)
            self.save_recipe_button.setEnabled(False)
            self.use_file.setChecked(True)
        self._update_start()

    def set_recipe_file(self, path: str | Path) -> None:
        try:
            Recipe.load(path)
        except Exception as exc:  # noqa: BLE001 - shown, not raised
            self.summary.setText(f"<span style='color:{ERROR}'>{describe_error(exc)}</span>")
            return
        self.recipe_file = Path(path)
        self.recipe_label.setText(self.recipe_file.name)
        self.use_file.setChecked(True)
        self._update_start()

    def recipe(self) -> Recipe | None:
        if self.use_session.isChecked() and self.session_recipe:
            return self.session_recipe()
        if self.use_file.isChecked() and self.recipe_file is not None:
            return Recipe.load(self.recipe_file)
        return None

    def _update_start(self) -> None:
        has_recipe = (self.use_session.isChecked() and self.use_session.isEnabled()) or self.recipe_file is not None
        self.start_button.setEnabled(self.token is None and bool(self.inputs) and has_recipe)

    # --- running --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.token is not None

    def start(self) -> bool:
        """Start the batch; False (with a message) when something is missing."""
        if self.running:
            return False
        if not self.inputs:
            return self._refuse("Add photos or folders first.")
        if not self.out_dir.text().strip():
            return self._refuse("Choose an output folder.")
        if not self.provider.ready:
            return self._refuse(self.provider.error or "The model is still loading; try again in a moment.")
        try:
            recipe = self.recipe()
        except Exception as exc:  # noqa: BLE001
            return self._refuse(describe_error(exc))
        if recipe is None or not recipe.steps:
            return self._refuse("Choose a recipe: apply some steps first, or pick a recipe file.")
        out = Path(self.out_dir.text().strip()).expanduser()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return self._refuse(describe_error(exc))
        fmt = self.format.currentData()
        self.items = plan_outputs(self.inputs, out, fmt)
        for i in range(self.files.topLevelItemCount()):
            self._show(i, "pending", 0.0, "")
        self.token = token = CancelToken()
        restorer, items, events = self.provider.restorer, self.items, self._events
        self.summary.setText("Working…")
        self.overall.setValue(0)
        self.cancel_button.setEnabled(True)
        self.start_button.setEnabled(False)
        self.clear_button.setEnabled(False)

        def on_event(item: BatchItem, index: int, total: int, fraction: float) -> None:  # pool thread
            events.item.emit(index, item.status, fraction, item.error)

        def work(progress, cancel):
            return run_batch(items, recipe, restorer, fmt=fmt, on_event=on_event, cancel=token)

        run_in_pool(work, on_finished=self._finished, on_failed=self._failed, receiver=self)
        return True

    def cancel(self) -> None:
        """Stop after the current file's network pass; finished files stay, partial ones are never written."""
        if self.token is not None:
            self.token.cancel()
            self.summary.setText("Cancelling…")
            self.cancel_button.setEnabled(False)

    def _refuse(self, message: str) -> bool:
        self.summary.setText(f"<span style='color:{ERROR}'>{message}</span>")
        return False

    def _on_item(self, index: int, status: str, fraction: float, error: str) -> None:
        self._show(index, status, fraction, error)
        total = max(len(self.items), 1)
        done = sum(1 for it in self.items if it.status in ("done", "skipped", "failed"))
        current = fraction if status == "running" else 0.0
        self.overall.setValue(int(1000 * min(1.0, (done + current) / total)))

    def _show(self, index: int, status: str, fraction: float, error: str) -> None:
        row = self.files.topLevelItem(index)
        if row is None:
            return
        text = STATUS_TEXT.get(status, status)
        if status == "failed" and error:
            text = f"Failed: {error}"
        row.setText(2, text)
        row.setToolTip(2, error or text)
        row.setForeground(2, self.palette().text() if status not in STATUS_COLOUR else _brush(STATUS_COLOUR[status]))
        bar = self.files.itemWidget(row, 3)
        if bar is None:
            bar = QProgressBar()
            bar.setRange(0, 100)
            bar.setTextVisible(False)
            bar.setFixedHeight(10)
            self.files.setItemWidget(row, 3, bar)
        bar.setValue(100 if status in ("done", "skipped") else int(100 * fraction) if status == "running" else 0)

    def _finished(self, report) -> None:
        self.token = None
        self.report = report
        for i, item in enumerate(self.items):  # final state of every row, including never-started ones
            status = "cancelled" if report.cancelled and item.status == "pending" else item.status
            self._show(i, status, 1.0, item.error)
        self.summary.setText(report.summary().capitalize() + ".")
        if not report.cancelled:
            self.overall.setValue(1000)
        self._idle()
        self.finished_batch.emit(report)

    def _failed(self, message: str) -> None:
        self.token = None
        self.summary.setText(f"<span style='color:{ERROR}'>{message}</span>")
        self._idle()

    def _idle(self) -> None:
        self.cancel_button.setEnabled(False)
        self.clear_button.setEnabled(True)
        self._update_start()

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Tests and shutdown: pump events until the batch is over."""
        from PySide6.QtCore import QCoreApplication, QDeadlineTimer

        deadline = QDeadlineTimer(timeout_ms)
        while self.running and not deadline.hasExpired():
            QCoreApplication.processEvents()
            QCoreApplication.sendPostedEvents()
        return not self.running

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.running:  # keep running in the background; the window just hides
            self.hide()
            event.ignore()
            return
        super().closeEvent(event)

    # --- file dialogs -------------------------------------------------------------

    def _start_dir(self) -> str:
        return self.settings.last_dir if self.settings else str(Path.home())

    def _browse_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add photos", self._start_dir(),
                                                "Images (*.jpg *.jpeg *.png *.tif *.tiff *.webp *.bmp)")
        if files:
            self.add_paths(files)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder", self._start_dir())
        if folder:
            self.add_paths([folder])

    def _browse_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.out_dir.text() or self._start_dir())
        if folder:
            self.out_dir.setText(folder)

    def _browse_recipe(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Recipe file", self._start_dir(), "Recipes (*.json)")
        if path:
            self.set_recipe_file(path)

    def _save_recipe(self) -> None:
        recipe = self.session_recipe() if self.session_recipe else None
        if recipe is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save recipe", str(Path(self._start_dir()) / "recipe.json"),
                                              "Recipes (*.json)")
        if path:
            try:
                recipe.save(path)
                self.summary.setText(f"Recipe saved to {Path(path).name}.")
            except Exception as exc:  # noqa: BLE001
                self._refuse(describe_error(exc))


def _brush(colour: str):
    from PySide6.QtGui import QBrush, QColor

    return QBrush(QColor(colour))
