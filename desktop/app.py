"""``instructir-studio``: start the desktop app, optionally opening a photo or session.

``--self-test IMAGE`` opens IMAGE, applies "remove the noise", exports to a
temporary file and exits 0 (packaging smoke test; needs no display).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

#: How long a thread running Python keeps the interpreter lock from another that wants it (seconds).
SWITCH_INTERVAL_S = 0.001
SELF_TEST_INSTRUCTION = "remove the noise"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="instructir-studio", description="Restore photos from plain instructions.")
    parser.add_argument("file", nargs="?", help="a photo or a .irsession file to open")
    parser.add_argument("--self-test", metavar="IMAGE", help="open IMAGE, remove the noise, export, exit (0 = ok)")
    parser.add_argument("--model", help="model name or folder for this run (default: the one in Settings)")
    parser.add_argument("--device", help="auto, cpu, cuda or mps for this run")
    return parser.parse_args(argv)


#: What Qt's X11 platform plugin (libqxcb) and the Qt libraries under it load, and which package has each:
#: (Debian 12 / Ubuntu 22.04, Debian 13 / Ubuntu 24.04, Fedora). Checked with ldd on minimal Debian 12 and 13.
QT_SYSTEM_LIBRARIES = {
    "libEGL.so.1": ("libegl1", "libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libgl1", "libglvnd-glx"),
    "libX11.so.6": ("libx11-6", "libx11-6", "libX11"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libx11-xcb1", "libX11-xcb"),
    "libdbus-1.so.3": ("libdbus-1-3", "libdbus-1-3", "dbus-libs"),
    "libfontconfig.so.1": ("libfontconfig1", "libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "libfreetype6", "freetype"),
    "libglib-2.0.so.0": ("libglib2.0-0", "libglib2.0-0t64", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "libglib2.0-0t64", "glib2"),
    "libxcb.so.1": ("libxcb1", "libxcb1", "libxcb"),
    "libxcb-cursor.so.0": ("libxcb-cursor0", "libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb-render0", "libxcb"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb-sync1", "libxcb"),
    "libxcb-util.so.1": ("libxcb-util1", "libxcb-util1", "xcb-util"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb-xkb1", "libxcb"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11-0", "libxkbcommon-x11"),
}


def not_found(ldd_output: str) -> list[str]:
    """The libraries ``ldd`` could not find, in order, once each."""
    missing = [line.split("=>")[0].strip() for line in ldd_output.splitlines() if "=> not found" in line]
    return list(dict.fromkeys(missing))


def missing_qt_libraries() -> list[str]:
    """System libraries the X11 platform plugin needs but cannot find (Linux with X11 only; [] if unsure)."""
    import shutil
    import subprocess

    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux") or (platform and not platform.startswith("xcb")):
        return []
    if not platform and os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("DISPLAY"):
        return []  # Qt picks its Wayland plugin
    try:
        import PySide6
    except ImportError:
        return []
    qt = Path(PySide6.__file__).resolve().parent / "Qt"
    files = [qt / "plugins" / "platforms" / "libqxcb.so", *sorted((qt / "lib").glob("libQt6XcbQpa.so*"))[:1]]
    ldd = shutil.which("ldd")
    if ldd is None or not files[0].is_file():
        return []
    try:
        out = subprocess.run([ldd, *map(str, files)], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return not_found(out)


def qt_libraries_message(missing: list[str]) -> str:
    """What to install, for the distributions we know, naming only the missing packages."""
    def packages(column: int) -> str:
        names = [QT_SYSTEM_LIBRARIES[m][column] for m in missing if m in QT_SYSTEM_LIBRARIES]
        return " ".join(dict.fromkeys(names))

    lines = [f"InstructIR Studio cannot open a window: Qt's X11 plugin needs system libraries that are not "
             f"installed ({', '.join(missing)}). Install them, then start the app again:"]
    if packages(0):
        lines += [f"  Debian 12, Ubuntu 22.04:  sudo apt-get install {packages(0)}",
                  f"  Debian 13, Ubuntu 24.04:  sudo apt-get install {packages(1)}",
                  f"  Fedora:                   sudo dnf install {packages(2)}"]
    unknown = [m for m in missing if m not in QT_SYSTEM_LIBRARIES]
    if unknown:
        lines.append(f"  (the package that has {', '.join(unknown)} depends on your distribution)")
    lines.append("Without a display, QT_QPA_PLATFORM=offscreen instructir-studio --self-test PHOTO checks the rest.")
    return "\n".join(lines)


def _application():
    from PySide6.QtWidgets import QApplication

    from .icons import icon
    from .settings import APP_NAME, ORG_NAME
    from .theme import apply_theme

    # A worker running Python hands the interpreter lock over after this long when the UI thread asks for
    # it (default 5 ms); the UI thread asks again after nearly every Qt call it makes while a worker runs.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName(APP_NAME)
        app.setOrganizationName(ORG_NAME)
        app.setApplicationDisplayName(APP_NAME)
        app.setDesktopFileName("instructir-studio")
        app.setWindowIcon(icon("app"))
    apply_theme(app)
    return app


def _provider(settings, model: str | None, device: str | None):
    from .model_provider import ModelProvider

    return ModelProvider(settings, model=model, device=device)


def self_test(image: str, model: str | None = None, device: str | None = None, provider=None,
              timeout_s: float = 600) -> int:
    """Open ``image`` in a real (hidden) window, apply one instruction, export, check the file; 0 on success."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = _application()  # noqa: F841 - keeps the QApplication alive
    from engine.io.images import load_image

    from .main_window import MainWindow
    from .settings import Settings

    with tempfile.TemporaryDirectory(prefix="instructir-self-test-") as tmp:
        settings = Settings.at(Path(tmp) / "settings")
        if provider is None:
            provider = _provider(settings, model, device)
            provider.load()
        window = MainWindow(settings, provider, autosave=False)
        replies, notices = [], []
        window.controller.replied.connect(replies.append)
        window.controller.notice.connect(lambda text, kind: notices.append((kind, text)))
        try:
            window.open_path(image)
            window.controller.queue.wait_idle(int(timeout_s * 1000))
            if not window.document.is_open:
                print(f"self-test failed: could not open {image}: {notices[-1][1] if notices else '?'}",
                      file=sys.stderr)
                return 1
            window.controller.send(SELF_TEST_INSTRUCTION)
            window.controller.queue.wait_idle(int(timeout_s * 1000))
            applied = [r for r in replies if r.kind == "applied"]
            if not applied:
                why = replies[-1].message if replies else "no reply"
                print(f"self-test failed: '{SELF_TEST_INSTRUCTION}' was not applied: {why}", file=sys.stderr)
                return 1
            suffix = Path(image).suffix if Path(image).suffix.lower() in (".png", ".jpg", ".jpeg", ".tif",
                                                                          ".tiff", ".webp") else ".png"
            out = Path(tmp) / f"self-test{suffix}"
            window.controller.export(out)
            window.controller.queue.wait_idle(int(timeout_s * 1000))
            if not out.is_file():
                print(f"self-test failed: export did not write {out}: {notices[-1][1] if notices else '?'}",
                      file=sys.stderr)
                return 1
            written = load_image(out)
            if written.size != window.document.picture.size:
                print("self-test failed: the exported photo has the wrong size", file=sys.stderr)
                return 1
            step = window.document.steps[0]
            print(f"self-test ok: {Path(image).name} -> {step.intent} ({step.confidence:.0%}), "
                  f"{step.seconds:.1f} s, exported {written.size[0]}x{written.size[1]} with {provider.describe()}")
            return 0
        finally:
            window.shutdown()
            window.deleteLater()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``instructir-studio`` (a gui-script: ``sys.exit(main())``)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.self_test:
        return self_test(args.self_test, args.model, args.device)
    if missing := missing_qt_libraries():  # Qt would abort with "could not load the Qt platform plugin"
        print(qt_libraries_message(missing), file=sys.stderr)
        return 1

    app = _application()
    from PySide6.QtCore import QTimer

    from .main_window import MainWindow
    from .settings import Settings

    settings = Settings.from_environment()
    provider = _provider(settings, args.model, args.device)
    window = MainWindow(settings, provider)
    _install_excepthook(window)
    window.show()
    provider.load()
    if args.file:
        window.open_path(args.file)
    else:
        QTimer.singleShot(200, window.offer_recovery)
    return app.exec()


def _install_excepthook(window) -> None:
    """A bug in a slot shows a message in the window instead of taking the app down."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        logging.getLogger("desktop").error("unexpected error", exc_info=(kind, value, tb))
        try:
            window.conversation.add_notice(f"Internal error ({kind.__name__}: {value}). Your work is autosaved.",
                                           "error")
        except Exception:  # noqa: BLE001 - never fail inside the hook
            previous(kind, value, tb)

    sys.excepthook = hook


if __name__ == "__main__":
    sys.exit(main())
