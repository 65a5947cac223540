"""PySide6.QtGui as PyInstaller's own hook collects it, minus Qt plugins a desktop photo app never loads.

Filtering here, before the analysis, also keeps out the system libraries only
those plugins link: the GTK3 platform theme alone drags in the host's cairo,
pango, atk, gdk-pixbuf and glib, which then clash with the user's GTK (and the
app draws its own dark theme anyway). Kept: the platforms offscreen (self-test,
CI), xcb, wayland and minimal; imageformats; iconengines (the SVG icons);
input contexts; the xdg-desktop-portal theme; the xcb GL and wayland
integrations. Dropped: eglfs / linuxfb / vnc / vkkhrdisplay / minimalegl
(embedded or remote displays; vnc also needs QtNetwork), egldeviceintegrations,
generic (evdev / TUIO input for embedded devices; TUIO needs QtNetwork), the
GTK3 theme.
"""

from PyInstaller.utils.hooks.qt import add_qt6_dependencies

hiddenimports, binaries, datas = add_qt6_dependencies(__file__)

_DROPPED = (
    "egldeviceintegrations/",
    "generic/",
    "platformthemes/libqgtk3",
    "platforms/libqeglfs",
    "platforms/libqlinuxfb",
    "platforms/libqminimalegl",
    "platforms/libqvkkhrdisplay",
    "platforms/libqvnc",
)


def _keep(entry) -> bool:
    src = str(entry[0]).replace("\\", "/")
    return not any(f"/plugins/{part}" in src for part in _DROPPED)


binaries = [entry for entry in binaries if _keep(entry)]
