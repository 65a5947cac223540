"""Typed access to the app's QSettings, so every key and default lives in one place.

Tests and portable installs point the app at an INI file and a data folder
with ``INSTRUCTIR_STUDIO_SETTINGS`` and ``INSTRUCTIR_STUDIO_DATA``; otherwise
Qt's native store and platformdirs' per-user data folder are used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs
from PySide6.QtCore import QByteArray, QSettings

from engine.model.registry import DEFAULT_MODEL, OFFICIAL_MODEL

APP_NAME = "InstructIR Studio"
ORG_NAME = "InstructIR"
MAX_RECENT = 10

MODEL_BUNDLED, MODEL_OFFICIAL, MODEL_FOLDER = "bundled", "official", "folder"
DEVICES = ("auto", "cpu", "cuda", "mps")


class Settings:
    """The persisted preferences: model, device, tile size, fast mode, recent files, window layout."""

    def __init__(self, store: QSettings | None = None, data_dir: str | os.PathLike | None = None) -> None:
        self.store = store if store is not None else QSettings(ORG_NAME, "studio")
        self._data_dir = Path(data_dir) if data_dir else None

    @classmethod
    def from_environment(cls) -> Settings:
        ini = os.environ.get("INSTRUCTIR_STUDIO_SETTINGS")
        store = QSettings(ini, QSettings.Format.IniFormat) if ini else None
        return cls(store, os.environ.get("INSTRUCTIR_STUDIO_DATA"))

    @classmethod
    def at(cls, folder: str | os.PathLike) -> Settings:
        """Settings kept entirely inside ``folder`` (tests, self-test: never touch the user's preferences)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(QSettings(str(folder / "studio.ini"), QSettings.Format.IniFormat), folder / "data")

    # --- helpers --------------------------------------------------------------

    def _str(self, key: str, default: str = "") -> str:
        value = self.store.value(key, default)
        return default if value is None else str(value)

    def _int(self, key: str, default: int) -> int:
        try:
            return int(self.store.value(key, default))
        except (TypeError, ValueError):
            return default

    def _bool(self, key: str, default: bool) -> bool:
        value = self.store.value(key, default)
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)

    def sync(self) -> None:
        self.store.sync()

    # --- model & performance ----------------------------------------------------

    @property
    def model_source(self) -> str:
        value = self._str("model/source", MODEL_BUNDLED)
        return value if value in (MODEL_BUNDLED, MODEL_OFFICIAL, MODEL_FOLDER) else MODEL_BUNDLED

    @model_source.setter
    def model_source(self, value: str) -> None:
        self.store.setValue("model/source", value)

    @property
    def model_folder(self) -> str:
        return self._str("model/folder")

    @model_folder.setter
    def model_folder(self, value: str) -> None:
        self.store.setValue("model/folder", value)

    def model_spec(self) -> str:
        """What ``Restorer.from_pretrained`` gets: a registry name or a folder."""
        if self.model_source == MODEL_OFFICIAL:
            return OFFICIAL_MODEL
        if self.model_source == MODEL_FOLDER and self.model_folder:
            return self.model_folder
        return DEFAULT_MODEL

    @property
    def device(self) -> str:
        value = self._str("performance/device", "auto")
        return value if value in DEVICES else "auto"

    @device.setter
    def device(self, value: str) -> None:
        self.store.setValue("performance/device", value)

    @property
    def tile(self) -> int:
        """Tile side in pixels; 0 means automatic (whole image when it fits the memory budget)."""
        return max(0, self._int("performance/tile", 0))

    @tile.setter
    def tile(self, value: int) -> None:
        self.store.setValue("performance/tile", int(value))

    @property
    def fast(self) -> bool:
        return self._bool("performance/fast", False)

    @fast.setter
    def fast(self, value: bool) -> None:
        self.store.setValue("performance/fast", bool(value))

    # --- files ----------------------------------------------------------------

    @property
    def recent_files(self) -> list[str]:
        try:
            value = json.loads(self._str("files/recent", "[]"))
        except json.JSONDecodeError:
            return []
        return [str(v) for v in value if isinstance(v, str)][:MAX_RECENT]

    def add_recent(self, path: str | os.PathLike) -> list[str]:
        text = str(Path(path).resolve())
        files = [text] + [f for f in self.recent_files if f != text]
        self.store.setValue("files/recent", json.dumps(files[:MAX_RECENT]))
        return files[:MAX_RECENT]

    def clear_recent(self) -> None:
        self.store.setValue("files/recent", "[]")

    @property
    def last_dir(self) -> str:
        return self._str("files/last_dir", str(Path.home()))

    @last_dir.setter
    def last_dir(self, value: str) -> None:
        self.store.setValue("files/last_dir", value)

    # --- window ---------------------------------------------------------------

    def window_state(self) -> tuple[QByteArray | None, QByteArray | None]:
        geometry, state = self.store.value("window/geometry"), self.store.value("window/state")
        return (geometry if isinstance(geometry, QByteArray) else None,
                state if isinstance(state, QByteArray) else None)

    def save_window_state(self, geometry: QByteArray, state: QByteArray) -> None:
        self.store.setValue("window/geometry", geometry)
        self.store.setValue("window/state", state)

    # --- folders --------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        if self._data_dir is not None:
            return self._data_dir
        return Path(platformdirs.user_data_dir("instructir-studio", ORG_NAME))

    @property
    def recovery_dir(self) -> Path:
        """Where crash-recovery autosaves live (one file per running window)."""
        return self.data_dir / "recovery"
