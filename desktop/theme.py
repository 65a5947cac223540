"""A dark, neutral theme like photo editors use: grey surroundings so colours in the photo are judged fairly."""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

ACCENT = "#4a9eff"
ERROR = "#ff6b6b"
WARNING = "#f0b94a"
OK = "#6fcf8f"
MUTED = "#9a9a9a"

STYLE = f"""
QMainWindow, QDialog {{ background: #262626; }}
QToolBar {{ background: #2d2d2d; border: none; border-bottom: 1px solid #1b1b1b; spacing: 2px; padding: 3px 6px; }}
QToolBar QToolButton {{ padding: 4px; border-radius: 4px; }}
QToolBar QToolButton:hover {{ background: #3a3a3a; }}
QToolBar QToolButton:checked {{ background: #24466e; }}
QToolBar::separator {{ background: #3c3c3c; width: 1px; margin: 4px 6px; }}
QStatusBar {{ background: #2d2d2d; border-top: 1px solid #1b1b1b; color: #c8c8c8; }}
QStatusBar QLabel {{ padding: 0 8px; }}
QDockWidget {{ color: #d0d0d0; font-weight: 600; }}
QDockWidget::title {{ background: #2d2d2d; padding: 6px 10px; border-bottom: 1px solid #1b1b1b; }}
QScrollArea {{ border: none; background: transparent; }}
QLineEdit, QPlainTextEdit {{
    background: #1d1d1d; border: 1px solid #3d3d3d; border-radius: 5px; padding: 5px 7px;
    selection-background-color: {ACCENT};
}}
QLineEdit:focus, QPlainTextEdit:focus {{ border-color: {ACCENT}; }}
QLineEdit:disabled {{ color: #6f6f6f; }}
QPushButton {{ background: #383838; border: 1px solid #464646; border-radius: 5px; padding: 5px 12px; }}
QPushButton:hover {{ background: #424242; }}
QPushButton:pressed {{ background: #2f2f2f; }}
QPushButton:disabled {{ color: #6a6a6a; background: #2e2e2e; border-color: #363636; }}
QPushButton#primary {{ background: #2f6fb8; border-color: #3b7fcc; color: white; }}
QPushButton#primary:hover {{ background: #3a7cc8; }}
QPushButton#chip {{ background: #303030; border: 1px solid #444; border-radius: 10px; padding: 2px 8px;
    color: #cfcfcf; }}
QPushButton#chip:disabled {{ color: #6a6a6a; border-color: #383838; }}
QPushButton#chip:hover {{ background: #3a3a3a; border-color: {ACCENT}; }}
QProgressBar {{ background: #1d1d1d; border: 1px solid #3d3d3d; border-radius: 4px; text-align: center;
    height: 14px; color: #e0e0e0; }}
QProgressBar::chunk {{ background: {ACCENT}; border-radius: 3px; }}
QSlider::groove:horizontal {{ height: 4px; background: #444; border-radius: 2px; }}
QSlider::sub-page:horizontal {{ background: {ACCENT}; border-radius: 2px; }}
QSlider::handle:horizontal {{ background: #e6e6e6; width: 14px; height: 14px; margin: -5px 0; border-radius: 7px; }}
QSlider::handle:horizontal:hover {{ background: white; }}
QSlider::sub-page:horizontal:disabled {{ background: #5a5a5a; }}
QFrame#bubbleUser {{ background: #2f4f75; border-radius: 10px; }}
QFrame#bubbleAssistant {{ background: #333333; border-radius: 10px; }}
QFrame#bubbleAssistant:hover, QFrame#bubbleUser:hover {{ border: 1px solid #555; }}
QFrame#bubbleError {{ background: #452a2a; border: 1px solid #6b3a3a; border-radius: 10px; }}
QFrame#bubbleNotice {{ background: transparent; }}
QFrame#bubbleCurrent {{ background: #333333; border: 1px solid {ACCENT}; border-radius: 10px; }}
QFrame#stepRow {{ background: #303030; border-radius: 7px; }}
QFrame#stepRowStale {{ background: #303030; border: 1px dashed {WARNING}; border-radius: 7px; }}
QRadioButton, QCheckBox {{ spacing: 8px; }}
QRadioButton::indicator, QCheckBox::indicator {{ width: 12px; height: 12px; border: 2px solid #8c8c8c;
    background: #1d1d1d; }}
QRadioButton::indicator {{ border-radius: 8px; }}
QCheckBox::indicator {{ border-radius: 3px; }}
QRadioButton::indicator:hover, QCheckBox::indicator:hover {{ border-color: #c8c8c8; }}
QRadioButton::indicator:checked {{ border-color: {ACCENT}; background: qradialgradient(cx: 0.5, cy: 0.5,
    radius: 0.5, fx: 0.5, fy: 0.5, stop: 0 {ACCENT}, stop: 0.55 {ACCENT}, stop: 0.65 #1d1d1d, stop: 1 #1d1d1d); }}
QCheckBox::indicator:checked {{ border-color: {ACCENT}; background: {ACCENT}; }}
QRadioButton::indicator:disabled, QCheckBox::indicator:disabled {{ border-color: #4a4a4a; }}
QRadioButton:checked {{ color: #ffffff; }}
QLabel#muted {{ color: {MUTED}; }}
QLabel#title {{ font-weight: 600; }}
QTreeWidget {{ background: #1f1f1f; border: 1px solid #3a3a3a; border-radius: 5px;
    alternate-background-color: #242424; }}
QHeaderView::section {{ background: #2d2d2d; border: none; border-bottom: 1px solid #1b1b1b; padding: 4px 6px; }}
QGroupBox {{ border: 1px solid #3a3a3a; border-radius: 6px; margin-top: 14px; padding-top: 8px; }}
QGroupBox::title {{ subcontrol-origin: margin; left: 10px; padding: 0 4px; color: #d0d0d0; font-weight: 600; }}
QMenu {{ background: #2d2d2d; border: 1px solid #444; }}
QMenu::item:selected {{ background: #2f5f95; }}
QToolTip {{ background: #1d1d1d; color: #e0e0e0; border: 1px solid #4a4a4a; padding: 4px; }}
"""


def dark_palette() -> QPalette:
    p = QPalette()
    roles = {
        QPalette.ColorRole.Window: "#262626",
        QPalette.ColorRole.WindowText: "#e2e2e2",
        QPalette.ColorRole.Base: "#1d1d1d",
        QPalette.ColorRole.AlternateBase: "#262626",
        QPalette.ColorRole.ToolTipBase: "#1d1d1d",
        QPalette.ColorRole.ToolTipText: "#e2e2e2",
        QPalette.ColorRole.PlaceholderText: "#7c7c7c",
        QPalette.ColorRole.Text: "#e2e2e2",
        QPalette.ColorRole.Button: "#353535",
        QPalette.ColorRole.ButtonText: "#e2e2e2",
        QPalette.ColorRole.BrightText: "#ffffff",
        QPalette.ColorRole.Highlight: ACCENT,
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: ACCENT,
    }
    for role, colour in roles.items():
        p.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6f6f6f"))
    return p


def apply_theme(app: QApplication) -> None:
    """Fusion + dark palette + a small stylesheet; font a touch larger than Qt's default for readability."""
    app.setStyle("Fusion")
    app.setPalette(dark_palette())
    font = QFont(app.font())
    if font.pointSizeF() < 10:
        font.setPointSizeF(10)
        app.setFont(font)
    app.setStyleSheet(STYLE)
