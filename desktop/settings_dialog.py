"""Settings: which model (bundled, official 7D with a download button, or a folder), device, tile size, fast mode.

Values are written to :class:`desktop.settings.Settings` (QSettings) on OK;
the window then reloads the model. The download runs on a pool thread with
a busy bar (the engine's hub has no byte-level progress hook yet).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.model.registry import DEFAULT_MODEL, OFFICIAL_MODEL

from .icons import icon
from .settings import MODEL_BUNDLED, MODEL_FOLDER, MODEL_OFFICIAL, Settings
from .theme import ERROR, MUTED, OK
from .workers import run_in_pool

DEVICE_LABELS = {"auto": "Automatic (GPU when available)", "cpu": "CPU", "cuda": "NVIDIA GPU (CUDA)",
                 "mps": "Apple GPU (Metal)"}


def model_status() -> dict[str, bool]:
    """Which models are installed (bundled folder present, official weights in the cache)."""
    from engine.model.registry import list_models

    try:
        return {e.name: e.available for e in list_models()}
    except Exception:  # noqa: BLE001 - a broken cache only means "not available"
        return {}


def download_official(progress, cancel):
    from engine.model.hub import download_official as download

    return download(progress=False)


class SettingsDialog(QDialog):
    """Edits a Settings object; ``accepted`` means it was written."""

    def __init__(self, settings: Settings, parent: QWidget | None = None, downloader=download_official) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setWindowIcon(icon("settings"))
        self.setMinimumWidth(560)
        self.settings = settings
        self.downloader = downloader
        self.downloading = False
        status = model_status()

        self.bundled = QRadioButton(f"Bundled model ({DEFAULT_MODEL})")
        self.official = QRadioButton("Official InstructIR-7D weights (published with the paper)")
        self.folder = QRadioButton("Model folder:")
        self.group = QButtonGroup(self)
        for button in (self.bundled, self.official, self.folder):
            self.group.addButton(button)
        self.bundled_status = self._status(status.get(DEFAULT_MODEL, False), "installed", "not installed yet")
        self.official_status = self._status(status.get(OFFICIAL_MODEL, False), "downloaded", "not downloaded")
        self.download_button = QPushButton(icon("save"), "Download (~60 MB)")
        self.download_button.clicked.connect(self.start_download)
        self.download_bar = QProgressBar()
        self.download_bar.setRange(0, 0)
        self.download_bar.setFixedHeight(8)
        self.download_bar.setTextVisible(False)
        self.download_bar.hide()
        self.folder_edit = QLineEdit(settings.model_folder)
        self.folder_edit.setPlaceholderText("model.safetensors + model_card.json, or the official trio")
        browse = QPushButton(icon("open"), "Browse…")
        browse.clicked.connect(self._browse)

        model_box = QGroupBox("Model")
        grid = QGridLayout(model_box)
        grid.addWidget(self.bundled, 0, 0, 1, 2)
        grid.addWidget(self.bundled_status, 0, 2)
        grid.addWidget(self.official, 1, 0, 1, 2)
        grid.addWidget(self.official_status, 1, 2)
        grid.addWidget(self.download_button, 2, 1)
        grid.addWidget(self.download_bar, 2, 2)
        grid.addWidget(self.folder, 3, 0)
        grid.addWidget(self.folder_edit, 3, 1)
        grid.addWidget(browse, 3, 2)
        grid.setColumnStretch(1, 1)
        {MODEL_BUNDLED: self.bundled, MODEL_OFFICIAL: self.official, MODEL_FOLDER: self.folder}[
            settings.model_source].setChecked(True)

        from engine.model.devices import available_devices, cpu_supports_bf16

        self.device = QComboBox()
        devices = ["auto", *available_devices()]
        for name in dict.fromkeys(devices):
            self.device.addItem(DEVICE_LABELS.get(name, name), name)
        index = self.device.findData(settings.device)
        self.device.setCurrentIndex(max(0, index))
        self.tile = QSpinBox()
        self.tile.setRange(0, 4096)
        self.tile.setSingleStep(128)
        self.tile.setSpecialValueText("Automatic")
        self.tile.setSuffix(" px")
        self.tile.setValue(settings.tile)
        self.tile.setToolTip("Large photos are processed in tiles of this size; smaller tiles use less memory")
        self.fast = QCheckBox("Fast mode (half precision: bf16 on CPU, fp16 on GPU)")
        self.fast.setChecked(settings.fast)
        self.bf16 = cpu_supports_bf16()
        if not self.bf16 and "cuda" not in devices and "mps" not in devices:
            self.fast.setChecked(False)
            self.fast.setEnabled(False)
            self.fast.setToolTip("This CPU has no native bf16 support, so fast mode would not be faster")

        perf_box = QGroupBox("Performance")
        form = QFormLayout(perf_box)
        form.addRow("Device:", self.device)
        form.addRow("Tile size:", self.tile)
        form.addRow("", self.fast)

        self.message = QLabel("")
        self.message.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        for button in buttons.buttons():
            button.setIcon(QIcon())  # the platform's coloured check/cross icons clash with the dark theme
        self.ok_button.setObjectName("primary")

        layout = QVBoxLayout(self)
        layout.addWidget(model_box)
        layout.addWidget(perf_box)
        layout.addWidget(self.message)
        layout.addWidget(buttons)

    @staticmethod
    def _status(ok: bool, yes: str, no: str) -> QLabel:
        label = QLabel(yes if ok else no)
        label.setStyleSheet(f"color: {OK if ok else MUTED};")
        return label

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder", self.folder_edit.text() or str(Path.home()))
        if folder:
            self.folder_edit.setText(folder)
            self.folder.setChecked(True)

    # --- download -------------------------------------------------------------

    def start_download(self) -> None:
        if self.downloading:
            return
        self.downloading = True
        self.download_button.setEnabled(False)
        self.download_bar.show()
        self.official_status.setText("downloading…")
        self.official_status.setStyleSheet("")
        run_in_pool(self.downloader, on_finished=self._downloaded, on_failed=self._download_failed, receiver=self)

    def _downloaded(self, _files) -> None:
        self.downloading = False
        self.download_bar.hide()
        self.download_button.setEnabled(True)
        self.official_status.setText("downloaded")
        self.official_status.setStyleSheet(f"color: {OK};")
        self.official.setChecked(True)
        self.message.setText("The official weights are ready. Press OK to use them.")

    def _download_failed(self, message: str) -> None:
        self.downloading = False
        self.download_bar.hide()
        self.download_button.setEnabled(True)
        self.official_status.setText("not downloaded")
        self.message.setText(f"<span style='color:{ERROR}'>Download failed: {message}</span>")

    # --- saving ---------------------------------------------------------------

    def source(self) -> str:
        if self.official.isChecked():
            return MODEL_OFFICIAL
        if self.folder.isChecked():
            return MODEL_FOLDER
        return MODEL_BUNDLED

    def accept(self) -> None:
        if self.folder.isChecked() and not Path(self.folder_edit.text()).expanduser().is_dir():
            self.message.setText(f"<span style='color:{ERROR}'>Choose an existing model folder.</span>")
            return
        self.settings.model_source = self.source()
        self.settings.model_folder = self.folder_edit.text().strip()
        self.settings.device = self.device.currentData()
        self.settings.tile = self.tile.value()
        self.settings.fast = self.fast.isChecked()
        self.settings.sync()
        super().accept()
