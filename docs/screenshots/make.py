"""Take the README's screenshots of the desktop app in a real window under Xvfb.

    python docs/screenshots/make.py                 # starts Xvfb itself (xvfb-run) when there is no display
    python docs/screenshots/make.py --out /tmp/shots

Writes diagnosis.png (a photo just opened: what the diagnosis sees and the suggestions for it),
main-window.png (a photo with one instruction, before/after split), compound.png (a finished compound
instruction: the reply with each step and the History rows), upscale.png (a small photo up-scaled 2x,
the original enlarged left of the split), batch.png and settings.png.
Uses the bundled model on resources/samples/astronaut_noisy.png, with settings in a temporary folder
(nothing of the user's is read or written). Look at the pictures before committing them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "resources" / "samples" / "astronaut_noisy.png"
SIZE = (1440, 900)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent))
    p.add_argument("--photo", default=str(SAMPLE))
    args = p.parse_args(argv)
    if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM", "xcb") == "xcb":
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            print("No display and no xvfb-run: apt-get install xvfb xauth", file=sys.stderr)
            return 1
        screen = f"-screen 0 {SIZE[0] + 100}x{SIZE[1] + 100}x24"
        return subprocess.call([xvfb, "-a", "-s", screen, sys.executable, __file__, *sys.argv[1:]])
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from PySide6.QtCore import QEventLoop, QTimer

    from desktop.app import _application
    from desktop.main_window import MainWindow
    from desktop.model_provider import ModelProvider
    from desktop.settings import Settings
    from desktop.settings_dialog import SettingsDialog
    from engine.model.pipeline import Restorer

    app = _application()

    def wait(condition, timeout=600.0, settle=0.3):
        deadline = time.monotonic() + timeout
        loop, tick = QEventLoop(), QTimer()
        tick.timeout.connect(lambda: (condition() or time.monotonic() > deadline) and loop.quit())
        tick.start(30)
        if not condition():
            loop.exec()
        tick.stop()
        end = time.monotonic() + settle  # let layouts and repaints finish
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

    def send(text):
        replies = []
        window.controller.replied.connect(replies.append)
        window.chat.input.setText(text)
        window.chat.send(text)
        wait(lambda: replies)
        window.controller.replied.disconnect(replies.append)
        return replies[0]

    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp:
        settings = Settings.at(Path(tmp) / "settings")
        provider = ModelProvider.fixed(Restorer.from_pretrained(device="cpu"))
        window = MainWindow(settings, provider, autosave=False)
        window.resize(*SIZE)
        window.show()
        seen = []  # diagnoses shown (after opening, after each instruction)
        window.diagnosis.diagnosed.connect(lambda d, _purpose: seen.append(d))
        window.open_path(args.photo)
        wait(lambda: window.document.is_open and not window.controller.busy)
        wait(lambda: seen, timeout=120.0, settle=0.6)
        print(f"diagnosis: {window.diagnosis.last.suggestion if window.diagnosis.last else 'none'}")
        window.grab().save(str(out / "diagnosis.png"))

        reply = send("remove the noise")
        print(f"main window: {reply.kind} {reply.message}")
        wait(lambda: len(seen) >= 2, timeout=60.0)  # what still looks wrong after it
        window.set_compare(True)
        window.view.set_split(0.5)
        wait(lambda: True, settle=0.6)
        window.grab().save(str(out / "main-window.png"))

        window.set_compare(False)
        window.undo_action.trigger()
        reply = send("the photo is grainy and a bit dark: remove the noise, then brighten it slightly")
        print(f"compound: {reply.kind}, {len(reply.steps)} steps {reply.message}")
        wait(lambda: True, settle=0.6)
        window.grab().save(str(out / "compound.png"))

        from engine.io.images import load_image, save_image  # a small photo to enlarge: a quarter of the sample

        small = Path(tmp) / "astronaut_small.png"
        picture = load_image(args.photo)
        h, w = picture.rgb.shape[:2]
        save_image(picture.with_rgb(picture.rgb[h // 8: h // 8 + h // 2, w // 4: w // 4 + w // 2]), small)
        window.document.stack.setClean()  # nothing to ask about: the edits above were for the pictures
        window.open_path(small)
        wait(lambda: window.document.path == small and not window.controller.busy)
        reply = send("upscale it 2x")
        print(f"upscale: {reply.kind} {reply.size} {reply.message}")
        window.set_compare(True)
        window.view.set_split(0.5)
        window.actual_action.trigger()
        wait(lambda: True, settle=0.6)
        window.grab().save(str(out / "upscale.png"))
        window.set_compare(False)

        batch = window.show_batch()
        batch.add_paths([ROOT / "resources" / "samples"])
        batch.out_dir.setText(str(Path.home() / "Pictures" / "restored"))
        wait(lambda: True, settle=0.5)
        batch.grab().save(str(out / "batch.png"))
        batch.close()

        dialog = SettingsDialog(settings, window)
        dialog.show()
        wait(lambda: True, settle=0.5)
        dialog.grab().save(str(out / "settings.png"))
        dialog.close()

        window.shutdown()
        window.close()
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.png')))} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
