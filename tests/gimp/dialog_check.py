"""The dialog's diagnosis, run with GIMP's own Python, GLib and GEGL, without a display.

Runs inside the GIMP root (``python3 dialog_check.py PLUGIN RAW WIDTH HEIGHT OUT``): loads the
installed plug-in's code (everything but its ``Gimp.main`` call), puts the raw 8-bit RGB pixels
in ``RAW`` into a real GEGL buffer standing in for a layer, and runs ``DialogDiagnosis`` as the
dialog does (``prepare`` + ``start``) on a GLib main loop, with stand-ins for the label, the
button and the procedure config. It records what the label and the instruction field end up
holding, on which threads the layer was read, and the longest time the main loop was held up
(a 5 ms ticker), and writes them to ``OUT`` as JSON. ``tests/test_gimp_real.py`` checks them.
"""

import json
import sys
import threading
import time

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib  # noqa: E402

plugin, raw, width, height, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
source = open(plugin, encoding="utf-8").read()
code = source[:source.rindex("Gimp.main(")]  # the plug-in without its entry point
ns = {"__file__": plugin, "__name__": "instructir_plugin"}
exec(compile(code, plugin, "exec"), ns)
Gegl.init(None)

buffer = Gegl.Buffer.new("R'G'B' u8", 0, 0, width, height)
with open(raw, "rb") as fh:
    buffer.set(Gegl.Rectangle.new(0, 0, width, height), "R'G'B' u8", fh.read())


class Layer:
    def get_buffer(self):
        return buffer

    def is_gray(self):
        return False

    def has_alpha(self):
        return False

    def get_width(self):
        return width

    def get_height(self):
        return height


class Image:
    def get_precision(self):
        return Gimp.Precision.U8_NON_LINEAR


class Config:
    def __init__(self, **values):
        self.values = values

    def get_property(self, name):
        return self.values[name]

    def set_property(self, name, value):
        self.values[name] = value


class Text:
    def __init__(self):
        self.texts, self.sensitive = [], None

    def set_text(self, text):
        self.texts.append(text)

    def set_sensitive(self, value):
        self.sensitive = value


result = {"read_threads": [], "reads": 0}
config = Config(instruction="", suggested="")
diag = ns["DialogDiagnosis"].__new__(ns["DialogDiagnosis"])
diag.prepare(config, Image(), (Layer(), (0, 0, width, height), "layer"), ns["load_record"](), None, "cpu")
direct = diag.read


def read(*args):
    result["read_threads"].append(threading.current_thread().name)
    result["reads"] += 1
    return direct(*args)


diag.read = read
diag.label, diag.button = Text(), Text()
loop = GLib.MainLoop()
ticks = {"last": time.monotonic(), "gap": 0.0, "count": 0}


def tick():
    now = time.monotonic()
    ticks["gap"] = max(ticks["gap"], now - ticks["last"])
    ticks["last"] = now
    ticks["count"] += 1
    if diag.reply is not None or (diag.label.texts and "could not" in diag.label.texts[-1]):
        loop.quit()
    return True


started = time.monotonic()
diag.start()
GLib.timeout_add(5, tick)
GLib.timeout_add_seconds(240, loop.quit)
loop.run()
diag.close()
result.update(seconds=time.monotonic() - started, max_gap=ticks["gap"], ticks=ticks["count"], reply=diag.reply,
              labels=diag.label.texts, button=diag.button.sensitive, config=config.values,
              main_thread=threading.main_thread().name)
with open(out, "w", encoding="utf-8") as fh:
    json.dump(result, fh, indent=1)
