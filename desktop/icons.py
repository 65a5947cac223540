"""Icons from ``resources/icons`` (SVG, drawn for the dark theme); missing files give an empty icon, never a crash."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QIcon, QPainter, QPixmap

from engine.model.registry import resources_dir

DISABLED_OPACITY = 0.32
_SIZES = (14, 16, 20, 22, 24, 32, 48)


def icons_dir() -> Path:
    return resources_dir() / "icons"


@cache
def icon(name: str) -> QIcon:
    """The icon ``resources/icons/NAME.svg`` with a clearly dimmed disabled state.

    Qt's generated disabled look greys the pixmap, which is invisible on icons
    that are already light grey, so disabled actions would look clickable.
    """
    path = icons_dir() / f"{name}.svg"
    if not path.is_file():
        return QIcon()
    base = QIcon(str(path))
    result = QIcon(str(path))
    for size in _SIZES:
        normal = base.pixmap(size, size)
        if normal.isNull():
            continue
        dim = QPixmap(normal.size())
        dim.setDevicePixelRatio(normal.devicePixelRatio())
        dim.fill(Qt.GlobalColor.transparent)
        painter = QPainter(dim)
        painter.setOpacity(DISABLED_OPACITY)
        painter.drawPixmap(0, 0, normal)
        painter.end()
        result.addPixmap(dim, QIcon.Mode.Disabled)
    return result
