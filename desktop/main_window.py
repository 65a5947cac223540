"""The main window: the photo in the middle, the assistant (chat) and the history docked on the right.

The window owns no logic of its own: it wires widgets to the document
(``Document`` + QUndoStack), the controller (queued jobs) and the model
provider, and asks the user questions through :class:`Prompts` so tests can
answer them.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.io.images import IMAGE_SUFFIXES

from .batch_dialog import BatchDialog
from .chat_panel import ChatPanel
from .controller import Reply, ReplyKind, StudioController
from .conversation import Conversation, NoticeKind
from .diagnosis import PhotoDiagnosis
from .document import SESSION_SUFFIX, Document
from .history_panel import HistoryPanel
from .icons import icon
from .image_view import ImageView
from .model_provider import ModelProvider, ProviderState
from .recovery import RecoveryStore
from .settings import APP_NAME, Settings
from .settings_dialog import SettingsDialog
from .spire_mode import SpireProvider, SpireState
from .theme import ERROR, MUTED
from .workers import background_pool

OPEN_FILTER = "Photos (*.jpg *.jpeg *.png *.tif *.tiff *.webp *.bmp *.gif);;Sessions (*.irsession);;All files (*)"
COMPARE_KEY = Qt.Key.Key_Backslash


class Prompts:
    """Every question the window asks, in one place (tests replace it with canned answers)."""

    def __init__(self, parent: QWidget) -> None:
        self.parent = parent

    def open_path(self, start: str) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self.parent, "Open a photo or session", start, OPEN_FILTER)
        return path or None

    def export_path(self, suggested: str) -> str | None:
        path, _ = QFileDialog.getSaveFileName(
            self.parent, "Export the restored photo", suggested,
            "Same format (*.jpg *.jpeg *.png *.tif *.tiff *.webp *.bmp);;JPEG (*.jpg);;PNG (*.png);;TIFF (*.tif)")
        return path or None

    def session_save_path(self, suggested: str) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self.parent, "Save session", suggested, "Sessions (*.irsession)")
        if path and not path.endswith(SESSION_SUFFIX):
            path += SESSION_SUFFIX
        return path or None

    def session_open_path(self, start: str) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self.parent, "Open session", start, "Sessions (*.irsession)")
        return path or None

    def unsaved_changes(self, name: str) -> str:
        """"save" (the session), "export" (the photo), "discard" or "cancel", as photo editors ask."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Unsaved changes",
                          f"Save the edits of “{name}” before going on?", parent=self.parent)
        box.setInformativeText("Save keeps every step and strength in a session file; Export writes the "
                               "restored photo. Discarded edits are lost.")
        save = box.addButton("Save", QMessageBox.ButtonRole.AcceptRole)
        export = box.addButton("Export…", QMessageBox.ButtonRole.ActionRole)
        discard = box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(save)
        box.setEscapeButton(cancel)
        box.exec()
        clicked = box.clickedButton()
        return {save: "save", export: "export", discard: "discard"}.get(clicked, "cancel")

    def offer_recovery(self, description: str) -> bool:
        answer = QMessageBox.question(
            self.parent, "Restore unsaved work?",
            f"InstructIR Studio did not close properly last time.\n\nRestore {description}?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Discard, QMessageBox.StandardButton.Yes)
        return answer == QMessageBox.StandardButton.Yes

    def show_text(self, title: str, text: str) -> None:
        QMessageBox.information(self.parent, title, text)


class MainWindow(QMainWindow):
    """InstructIR Studio's window."""

    def __init__(self, settings: Settings, provider: ModelProvider, *, prompts: Prompts | None = None,
                 autosave: bool = True, spire: SpireProvider | None = None, diagnose=None) -> None:
        """``spire``: the optional SPIRE mode (default: checked with ``engine.spire.available()``);
        ``diagnose``: what looks at an opened photo (default: ``engine.diagnose.diagnose``)."""
        super().__init__()
        self.settings = settings
        self.provider = provider
        self.spire = spire if spire is not None else SpireProvider(settings, device=provider.device_override,
                                                                   parent=self)
        self.prompts = prompts or Prompts(self)
        self.document = Document(self)
        self.conversation = Conversation(self)
        self.controller = StudioController(self.document, provider, parent=self, spire=self.spire,
                                           conversation=self.conversation, diagnose=diagnose)
        self.diagnosis = PhotoDiagnosis(self.document, self.conversation, diagnose=diagnose,
                                        busy=lambda: self.controller.busy, send=self.controller.send, parent=self)
        self.diagnosis.warm_up()
        self.batch_dialog: BatchDialog | None = None
        self._closing = False
        self._last_model_error = ""

        self.setWindowTitle(APP_NAME)
        self.setWindowIcon(icon("app"))
        self.setAcceptDrops(True)
        self.resize(1360, 860)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowNestedDocks)

        self._build_view()
        self._build_docks()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_status()
        self._connect()

        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(0)
        self._render_timer.timeout.connect(self.render)


        self.recovery = RecoveryStore(settings.recovery_dir, self.document, self,
                                      busy=lambda: self.controller.busy)
        self.recovery.enabled = autosave
        if autosave:
            self.recovery.start()

        geometry, state = settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)
        self.render()
        self._model_state()
        self._spire_state()
        if self.spire.state is SpireState.CHECKING:
            self.spire.check()

    # --- construction ---------------------------------------------------------

    def _build_view(self) -> None:
        self.view = ImageView()
        self.zoom_label = QLabel("")
        self.zoom_label.setObjectName("muted")
        self.zoom_label.setMinimumWidth(48)
        self.split_slider = QSlider(Qt.Orientation.Horizontal)
        self.split_slider.setRange(0, 1000)
        self.split_slider.setValue(500)
        self.split_slider.setFixedWidth(180)
        self.split_slider.setToolTip("Before/after split: drag, or drag the line on the photo")
        self.split_slider.valueChanged.connect(lambda v: self.view.set_split(v / 1000))
        self.view.splitChanged.connect(self._sync_split_slider)
        self.view.zoomChanged.connect(
            lambda z: self.zoom_label.setText(f"{z:.0%}" if self.view.has_image else ""))

        bar = QWidget()
        bar.setObjectName("viewBar")
        bar.setStyleSheet("#viewBar { background: #222; border-top: 1px solid #1b1b1b; }")
        row = QHBoxLayout(bar)
        row.setContentsMargins(8, 3, 8, 3)
        row.setSpacing(4)
        self.view_bar_buttons: dict[str, QToolButton] = {}
        self.split_label = QLabel("Before")
        self.split_label.setObjectName("muted")
        after_label = QLabel("After")
        after_label.setObjectName("muted")
        row.addWidget(self.split_label)
        row.addWidget(self.split_slider)
        row.addWidget(after_label)
        self.view_hint = QLabel("Ctrl+D: before/after split  ·  hold \\ to see the original  ·  wheel: zoom  ·  "
                                "drag: pan")
        self.view_hint.setObjectName("muted")
        row.addWidget(self.view_hint)
        row.addStretch(1)
        self._split_widgets = (self.split_label, self.split_slider, after_label)
        self.view_bar = row

        holder = QWidget()
        layout = QVBoxLayout(holder)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.view, 1)
        layout.addWidget(bar)
        self.setCentralWidget(holder)

    def _build_docks(self) -> None:
        self.chat = ChatPanel(conversation=self.conversation)
        self.history = HistoryPanel()
        self.chat_dock = QDockWidget("Assistant", self)
        self.chat_dock.setObjectName("assistantDock")
        self.chat_dock.setWidget(self.chat)
        self.history_dock = QDockWidget("History", self)
        self.history_dock.setObjectName("historyDock")
        self.history_dock.setWidget(self.history)
        for dock in (self.chat_dock, self.history_dock):
            dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                             | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                             | QDockWidget.DockWidgetFeature.DockWidgetClosable)
            self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.splitDockWidget(self.chat_dock, self.history_dock, Qt.Orientation.Vertical)
        self.resizeDocks([self.chat_dock], [430], Qt.Orientation.Horizontal)
        self.resizeDocks([self.chat_dock, self.history_dock], [560, 260], Qt.Orientation.Vertical)
        self.conversation.add_notice("Open a photo, then tell me what is wrong with it in your own words: noise, blur, "
                             "haze, rain, too dark, JPEG artefacts… Compound requests work too, e.g. “remove the "
                             "noise and then brighten it a bit”.")

    def _action(self, text: str, slot=None, shortcut=None, icon_name: str | None = None, tip: str = "",
                checkable: bool = False) -> QAction:
        action = QAction(text, self)
        if icon_name:
            action.setIcon(icon(icon_name))
        if shortcut is not None:
            shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        action.setCheckable(checkable)
        if slot is not None:
            action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        A, K = self._action, QKeySequence.StandardKey  # noqa: N806
        self.open_action = A("&Open…", self.open_dialog, K.Open, "open", "Open a photo or a session (Ctrl+O)")
        self.export_action = A("&Export", self.export, K.Save, "save",
                               "Export the restored photo, keeping format, bit depth, ICC and EXIF (Ctrl+S)")
        self.export_as_action = A("Export &As…", self.export_as, "Ctrl+Shift+S", None, "Export under a new name")
        self.open_session_action = A("Open &Session…", self.open_session, "Ctrl+Shift+O", "session-open",
                                     "Open a saved session")
        self.save_session_action = A("Save Se&ssion…", self.save_session, "Ctrl+Alt+S", "session-save",
                                     "Save the photo with all steps and strengths, losslessly")
        self.batch_action = A("&Batch Export…", self.show_batch, "Ctrl+B", "batch",
                              "Apply these steps to many photos (Ctrl+B)")
        self.settings_action = A("Se&ttings…", self.show_settings, "Ctrl+,", "settings",
                                 "Model, device, tile size, fast mode")
        self.quit_action = A("&Quit", self.close, K.Quit)

        self.undo_action = self.document.stack.createUndoAction(self, "&Undo")
        self.undo_action.setShortcuts([QKeySequence(K.Undo)])
        self.undo_action.setIcon(icon("undo"))
        self.redo_action = self.document.stack.createRedoAction(self, "&Redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.redo_action.setIcon(icon("redo"))
        for action in (self.undo_action, self.redo_action):
            self.addAction(action)
        self.recompute_action = A("Re&compute Previews", self.controller.recompute, None, "refresh",
                                  "Run the model on steps that are previews after a strength change")
        self.cancel_action = A("&Cancel", lambda: self.controller.cancel(), "Esc", "cancel",
                               "Stop the running edit (Esc)")

        self.fit_action = A("&Fit to Window", self.view.fit_to_window, "Ctrl+0", "zoom-fit", "Fit (Ctrl+0)")
        self.actual_action = A("&100 %", self.view.actual_size, "Ctrl+1", "zoom-100", "100 % (Ctrl+1)")
        self.zoom_in_action = A("Zoom &In", self.view.zoom_in, K.ZoomIn, "zoom-in", "Zoom in (Ctrl++)")
        self.zoom_out_action = A("Zoom &Out", self.view.zoom_out, K.ZoomOut, "zoom-out", "Zoom out (Ctrl+-)")
        self.split_action = A("Before/After &Split", self.set_compare, "Ctrl+D", "compare",
                              "Before/after split view (Ctrl+D); hold \\ to see the original", checkable=True)
        self.shortcuts_action = A("&Keyboard Shortcuts", self.show_shortcuts)
        self.about_action = A("&About InstructIR Studio", self.show_about)

    def _build_menus(self) -> None:
        menu = self.menuBar()
        file = menu.addMenu("&File")
        file.addAction(self.open_action)
        self.recent_menu = file.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        file.addSeparator()
        file.addAction(self.export_action)
        file.addAction(self.export_as_action)
        file.addSeparator()
        file.addAction(self.open_session_action)
        file.addAction(self.save_session_action)
        file.addSeparator()
        file.addAction(self.batch_action)
        file.addSeparator()
        file.addAction(self.settings_action)
        file.addSeparator()
        file.addAction(self.quit_action)
        edit = menu.addMenu("&Edit")
        edit.addAction(self.undo_action)
        edit.addAction(self.redo_action)
        edit.addSeparator()
        edit.addAction(self.recompute_action)
        edit.addAction(self.cancel_action)
        view = menu.addMenu("&View")
        for action in (self.fit_action, self.actual_action, self.zoom_in_action, self.zoom_out_action):
            view.addAction(action)
        view.addSeparator()
        view.addAction(self.split_action)
        view.addSeparator()
        view.addAction(self.chat_dock.toggleViewAction())
        view.addAction(self.history_dock.toggleViewAction())
        help_menu = menu.addMenu("&Help")
        help_menu.addAction(self.shortcuts_action)
        help_menu.addAction(self.about_action)
        self._fill_recent()

    def _build_toolbar(self) -> None:
        bar = self.addToolBar("Main")
        bar.setObjectName("mainToolbar")
        bar.setMovable(False)
        bar.setIconSize(QSize(22, 22))
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        for action in (self.open_action, self.export_action):
            bar.addAction(action)
        bar.addSeparator()
        bar.addAction(self.undo_action)
        bar.addAction(self.redo_action)
        bar.addSeparator()
        bar.addAction(self.split_action)
        self.hold_button = QToolButton()
        self.hold_button.setIcon(icon("eye"))
        self.hold_button.setToolTip("Hold to see the original (or hold \\)")
        self.hold_button.pressed.connect(lambda: self.view.set_show_before(True))
        self.hold_button.released.connect(lambda: self.view.set_show_before(False))
        bar.addWidget(self.hold_button)
        bar.addSeparator()
        for action in (self.fit_action, self.actual_action, self.zoom_in_action, self.zoom_out_action):
            bar.addAction(action)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        bar.addWidget(spacer)
        bar.addAction(self.batch_action)
        bar.addAction(self.settings_action)
        self.toolbar = bar

    def _build_status(self) -> None:
        status = self.statusBar()
        status.setSizeGripEnabled(False)
        self.image_label = QLabel("")
        self.image_label.setObjectName("muted")
        self.model_label = QLabel("")
        status.addPermanentWidget(self.image_label)
        status.addPermanentWidget(self.zoom_label)
        status.addPermanentWidget(self.model_label)

    def _connect(self) -> None:
        doc, ctl, chat, hist = self.document, self.controller, self.chat, self.history
        doc.changed.connect(self.schedule_render)
        doc.opened.connect(self._on_opened)
        doc.stack.indexChanged.connect(lambda _i: self._update_current())
        doc.stack.cleanChanged.connect(lambda _c: self._update_title())

        chat.sendRequested.connect(ctl.send)
        chat.spireRequested.connect(ctl.send_spire)
        chat.modeChanged.connect(self._mode_changed)
        chat.cancelRequested.connect(lambda: ctl.cancel())
        chat.stateRequested.connect(self.jump_to)
        ctl.replied.connect(self._on_reply)
        ctl.notice.connect(lambda text, _kind: self.statusBar().showMessage(text, 8000))
        ctl.opened.connect(self._on_document_opened)
        ctl.busyChanged.connect(self._on_busy)
        ctl.progress.connect(chat.set_progress)
        ctl.activity.connect(self._on_activity)
        doc.rendered.connect(self.schedule_render)

        diag = self.diagnosis
        diag.suggestionsChanged.connect(chat.set_suggestions)
        ctl.opened.connect(lambda _text: diag.photo_opened())
        ctl.replied.connect(lambda r: diag.step_applied(r) if r.kind is ReplyKind.APPLIED else None)
        doc.changed.connect(diag.document_changed)

        hist.strengthChanged.connect(doc.set_strength)
        hist.removeRequested.connect(doc.remove_step)
        hist.recomputeRequested.connect(ctl.recompute)
        hist.originalRequested.connect(lambda: doc.stack.setIndex(0))

        self.provider.stateChanged.connect(self._model_state)
        self.spire.stateChanged.connect(self._spire_state)

    # --- rendering ------------------------------------------------------------

    def schedule_render(self) -> None:
        """Coalesce: many slider events in one event-loop turn render once."""
        self._render_timer.start()

    def render(self) -> None:
        doc = self.document
        self.view.set_images(doc.before_image(), doc.after_image())
        sizes = None
        if doc.session is not None:
            sizes = [tuple(reversed(doc.session.size_after(i))) for i in range(len(doc.steps))]
        self.history.set_steps(doc.steps, sizes)
        self._update_image_label()  # an up-sampling step (or its undo) changes the size shown
        self._update_current()
        self._update_title()
        self._update_actions()

    def _on_opened(self) -> None:
        self.view.set_images(self.document.before_image(), self.document.after_image(), reset_view=True)
        self._update_image_label()
        self._update_actions()
        self._update_title()

    def _update_image_label(self) -> None:
        p = self.document.picture
        if p is None:
            self.image_label.setText("")
            return
        w, h = p.size
        text = f"{w} × {h}"
        if (size := self.document.size()) is not None and size != (w, h):
            text += f" → {size[0]} × {size[1]}"  # an up-sampling step enlarged it
        self.image_label.setText(f"{text}  ·  {p.bit_depth}-bit {p.format or ''}".strip())

    def _update_current(self) -> None:
        stack = self.document.stack
        token = None
        for i in range(stack.index() - 1, -1, -1):
            command = stack.command(i)
            if hasattr(command, "instruction"):
                token = command.token
                break
        self.conversation.set_current(token)

    def _update_title(self) -> None:
        doc = self.document
        name = doc.name if doc.is_open else ""
        modified = doc.is_open and not doc.stack.isClean()
        self.setWindowTitle(f"{name}{' •' if modified else ''} — {APP_NAME}" if name else APP_NAME)

    def _update_actions(self) -> None:
        has = self.document.is_open
        for action in (self.export_action, self.export_as_action, self.save_session_action,
                       self.split_action, self.fit_action, self.actual_action, self.zoom_in_action,
                       self.zoom_out_action):
            action.setEnabled(has)
        self.hold_button.setEnabled(has)
        self.chat.set_photo_open(has)
        self.recompute_action.setEnabled(has and self.document.session.stale)
        self.cancel_action.setEnabled(self.controller.busy)
        for w in self._split_widgets:
            w.setVisible(self.view.compare)
        self.view_hint.setVisible(has and not self.view.compare)

    # --- controller events ------------------------------------------------------

    def _on_reply(self, reply: Reply) -> None:
        if reply.kind is ReplyKind.APPLIED:
            self.statusBar().showMessage(f"Applied “{reply.instruction}” in {reply.seconds:.1f} s", 5000)
        self._update_current()

    def _on_activity(self, text: str) -> None:
        """What runs now, with percent and time left: in the Assistant and in the status bar."""
        self.chat.set_activity(text)
        if self.controller.busy:
            self.statusBar().showMessage(text)

    def _on_document_opened(self, text: str) -> None:
        self._update_image_label()
        doc = self.document
        if doc.path is not None and doc.path.exists() and doc.path.parent != self.settings.recovery_dir:
            self.settings.add_recent(doc.path)
            self.settings.last_dir = str(doc.path.parent)
            self._fill_recent()
        self.chat.input.setFocus()

    def _on_busy(self, busy: bool) -> None:
        self.chat.set_busy(busy)
        self.cancel_action.setEnabled(busy)
        if not busy:
            self.statusBar().clearMessage()

    def _model_state(self) -> None:
        provider = self.provider
        self.model_label.setText(provider.describe())
        failed = provider.state is ProviderState.FAILED
        self.model_label.setStyleSheet(f"color: {ERROR if failed else MUTED};")
        self.model_label.setToolTip(provider.error)
        if failed and provider.error != self._last_model_error:
            self._last_model_error = provider.error
            self.conversation.add_notice(provider.error, NoticeKind.ERROR, action=("Open Settings…",
                                                                                    self.show_settings))
        elif not failed:
            self._last_model_error = ""

    def _spire_state(self) -> None:
        spire = self.spire
        self.chat.set_spire_state(spire.ok, spire.reason, spire.error if spire.state is SpireState.FAILED else "",
                                  loading=spire.state is SpireState.LOADING)

    def _mode_changed(self, mode: str) -> None:
        if self.chat.is_spire:
            self.spire.load()  # warm up while the user types (once; a no-op when loaded or loading)
            self.chat.semantic.setFocus()
        self.statusBar().showMessage("SPIRE (diffusion) mode" if self.chat.is_spire else "InstructIR mode", 3000)

    # --- commands ---------------------------------------------------------------

    def jump_to(self, token, before: bool) -> None:
        if not self.document.jump_to(token, before):
            self.statusBar().showMessage("That state was replaced by later edits (undo, then a new edit).", 6000)

    def set_compare(self, on: bool) -> None:
        self.view.set_compare(on)
        if self.split_action.isChecked() != on:
            self.split_action.setChecked(on)
        self._update_actions()

    def _sync_split_slider(self, fraction: float) -> None:
        self.split_slider.blockSignals(True)
        self.split_slider.setValue(round(fraction * 1000))
        self.split_slider.blockSignals(False)

    def _resolve_unsaved(self, then) -> bool:
        """True to go on now; otherwise the user cancelled, or chose Save/Export and ``then`` runs once written."""
        doc = self.document
        if not doc.is_open or doc.stack.isClean() or not doc.steps:
            return True
        answer = self.prompts.unsaved_changes(doc.name)
        if answer == "discard":
            return True
        if answer == "save":
            if path := doc.session_path or self._ask_session_path():
                self.controller.save_session(path, then=then)
        elif answer == "export":
            if path := self._ask_export_path():
                self.controller.export(path, then=then)
        return False

    def open_path(self, path: str | Path) -> bool:
        """Open a photo or session (the command line, drops, the menus all come here); False if not now."""
        if not self._resolve_unsaved(lambda: self.open_path(path)):
            return False
        self.controller.open_path(Path(path))
        return True

    def open_dialog(self) -> None:
        if path := self.prompts.open_path(self.settings.last_dir):
            self.open_path(path)

    def open_session(self) -> None:
        if path := self.prompts.session_open_path(self.settings.last_dir):
            self.open_path(path)

    def export(self) -> None:
        doc = self.document
        if doc.export_path is not None:
            self.controller.export(doc.export_path)
        else:
            self.export_as()

    def export_as(self) -> None:
        if self.document.is_open and (path := self._ask_export_path()):
            self.controller.export(path)

    def _ask_export_path(self) -> str | None:
        from engine.io.images import output_path_for

        doc = self.document
        source = doc.picture.source or doc.path or Path(self.settings.last_dir) / "photo.png"
        if source.suffix.lower() == SESSION_SUFFIX:
            source = source.with_suffix(".png")
        return self.prompts.export_path(str(output_path_for(source)))

    def save_session(self) -> None:
        if self.document.is_open and (path := self._ask_session_path()):
            self.controller.save_session(path)

    def _ask_session_path(self) -> str | None:
        doc = self.document
        base = doc.session_path or doc.path or Path(self.settings.last_dir) / "photo"
        return self.prompts.session_save_path(str(base.with_suffix(SESSION_SUFFIX)))

    def show_batch(self) -> BatchDialog:
        if self.batch_dialog is None:
            self.batch_dialog = BatchDialog(
                self.provider, lambda: self.document.session.to_recipe() if self.document.steps else None,
                self.settings, self)
        self.batch_dialog.refresh_recipe()
        self.batch_dialog.show()
        self.batch_dialog.raise_()
        return self.batch_dialog

    def show_settings(self) -> bool:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.provider.load()
            if self.spire.state is not SpireState.CHECKING:
                self.spire.check()  # the device may have changed, or an adapter been installed meanwhile
            return True
        return False

    def show_shortcuts(self) -> None:
        self.prompts.show_text("Keyboard shortcuts", "\n".join((
            "Enter — send the instruction", "Esc — cancel the running edit",
            "Click a suggestion — apply it    Ctrl+click / Shift+click — edit it before sending",
            "Ctrl+Z — undo    Ctrl+Shift+Z / Ctrl+Y — redo",
            "Ctrl+0 — fit    Ctrl+1 — 100 %    Ctrl+wheel or wheel — zoom    drag — pan",
            "Ctrl+D — before/after split    hold \\ — show the original",
            "Ctrl+O — open    Ctrl+S — export    Ctrl+B — batch export")))

    def show_about(self) -> None:
        self.prompts.show_text(f"About {APP_NAME}", (
            f"{APP_NAME}\n\nRestore photos by saying what is wrong with them. Runs locally with the InstructIR "
            "network (Conde et al., ECCV 2024).\n\n" + self.provider.describe()))

    def _fill_recent(self) -> None:
        menu = self.recent_menu
        menu.clear()
        files = self.settings.recent_files
        for path in files:
            action = menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda _=False, p=path: self.open_path(p))
        if files:
            menu.addSeparator()
            menu.addAction("Clear Recent", lambda: (self.settings.clear_recent(), self._fill_recent()))
        else:
            menu.addAction("No recent photos").setEnabled(False)

    # --- crash recovery -----------------------------------------------------------

    def offer_recovery(self) -> bool:
        """After a crash: offer the newest orphaned autosave; the others are discarded when declined."""
        orphans = self.recovery.orphans()
        if not orphans:
            return False
        newest = orphans[0]
        if self.prompts.offer_recovery(newest.describe()):
            self.controller.open_path(newest.path, recovered=True)
            self.controller.queue.wait_idle(120_000)
            restored = self.document.is_open
        else:
            restored = False
        for orphan in orphans:
            RecoveryStore.discard(orphan)
        return restored

    # --- drag & drop ------------------------------------------------------------

    @staticmethod
    def _dropped_path(event) -> Path | None:
        if not event.mimeData().hasUrls():
            return None
        for url in event.mimeData().urls():
            if url.isLocalFile():
                path = Path(url.toLocalFile())
                if path.suffix.lower() in IMAGE_SUFFIXES | {".gif", SESSION_SUFFIX}:
                    return path
        return None

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self._dropped_path(event) is not None:
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self._dropped_path(event) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if (path := self._dropped_path(event)) is not None:
            event.acceptProposedAction()
            self.open_path(path)

    # --- closing ----------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop background work and forget the autosave (a clean exit)."""
        if self._closing:
            return
        self._closing = True
        self.controller.cancel(quiet=True)
        self.diagnosis.cancel()
        if self.batch_dialog is not None and self.batch_dialog.running:
            self.batch_dialog.cancel()
            self.batch_dialog.wait(10_000)
        self.controller.queue.wait_idle(10_000)
        self.controller.queue.pool.waitForDone(10_000)
        self.diagnosis.pool.waitForDone(10_000)
        self.recovery.enabled = False  # a save in flight is the last one; then the autosave is removed
        background_pool().waitForDone(10_000)
        self.recovery.stop()
        self.document.stack.blockSignals(True)  # its destructor must not call back into a closing window
        self.document.blockSignals(True)

    # --- hold \\ to see the original ------------------------------------------------------------------------
    # Key events the focused widget does not use (a text box uses "\\") come up to the window. (An
    # application-wide event filter would do the same, but then every event of the app would have to take
    # Python's lock, and wait for the restoring thread to hand it over.)

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if not self._compare_key(event, shown=True):
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if not self._compare_key(event, shown=False):
            super().keyReleaseEvent(event)

    def _compare_key(self, event, shown: bool) -> bool:
        """Show the original while the compare key is held (auto-repeat ignored); True when it was that key."""
        if event.key() != COMPARE_KEY:
            return False
        if not event.isAutoRepeat():
            self.view.set_show_before(shown)
        event.accept()
        return True

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if not self._closing and not self._resolve_unsaved(self.close):
            event.ignore()
            return
        self.settings.save_window_state(self.saveGeometry(), self.saveState())
        self.settings.sync()
        self.shutdown()
        super().closeEvent(event)
