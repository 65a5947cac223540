#!/usr/bin/env python3
"""InstructIR for GIMP 3.0: Filters > InstructIR...

Restores the active layer (or the selected part of it) following a plain
language instruction ("remove the noise") and puts the result on a new layer
above it, named after the instruction, in one undo step. A result larger than
the layer (an up-sampling step, "make it 2x bigger") opens as a new image.

GIMP's Python has no torch: the work is done by the InstructIR engine server
(``instructir serve``) over a loopback connection. This plug-in starts that
server on demand with the Python interpreter recorded by ``instructir
gimp-install`` (see ``instructir.json`` next to this file); the server keeps
the model loaded, so only the first run pays for loading it, and exits a few
minutes after the last run. Layers travel in bands read from and written to
GEGL as they go, so neither side ever holds a whole copy.

When the dialog opens it shows what the engine sees in the active layer (or the
selected part of it): "This layer looks noisy (strong) and a little dark", each
problem's reason, and the suggested instruction, which goes into the
instruction field when that is empty. The diagnosis runs beside the dialog (a
worker thread talks to the engine; the few regions it reads are taken from the
layer on GTK's main loop, a few rows at a time), so the dialog appears at once
and is never held up by it. Run non-interactively with an empty instruction,
the filter applies the diagnosis' suggestion.

The optional SPIRE diffusion mode (``mode`` = spire, with an optional
``semantic`` description of the image) runs on the same server when an
adapter is installed there; otherwise the server says why it cannot.

Only the standard library and GIMP's own gi modules are used (no numpy).
"""

import json
import os
import sys
import threading

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
try:
    import instructir_protocol as protocol  # installed next to this file by ``instructir gimp-install``
except ImportError:  # running from a source checkout
    sys.path.insert(0, os.path.dirname(HERE))
    from engine.serve import protocol

PROC_NAME = "plug-in-instructir"
RECORD_FILE = os.path.join(HERE, "instructir.json")
TRACE_ENV = "INSTRUCTIR_GIMP_TRACE"
#: Empty: the dialog fills in the diagnosis' suggestion (a script's empty instruction applies it too).
DEFAULT_INSTRUCTION = ""
#: Source rows read from the layer per main-loop turn while the dialog's diagnosis runs.
DIAGNOSIS_ROWS_PER_TURN = 32
MAX_LAYER_NAME = 64
DEVICES = (("auto", "Automatic (GPU when available)"), ("cpu", "CPU"), ("cuda", "NVIDIA GPU (CUDA)"),
           ("mps", "Apple GPU (MPS)"))
MODES = (("instructir", "InstructIR", "Fast restoration from a plain instruction"),
         ("spire", "SPIRE (diffusion)", "Diffusion restoration of blur, noise, low resolution and JPEG artefacts; "
                                        "needs a SPIRE adapter on the engine's computer and, in practice, a GPU"))
_EIGHT_BIT = {getattr(Gimp.Precision, n) for n in ("U8_LINEAR", "U8_NON_LINEAR", "U8_PERCEPTUAL")
              if hasattr(Gimp.Precision, n)}
_SIXTEEN_BIT = {getattr(Gimp.Precision, n) for n in ("U16_LINEAR", "U16_NON_LINEAR", "U16_PERCEPTUAL")
                if hasattr(Gimp.Precision, n)}
DEFAULT_IDLE_EXIT = 300


class PluginError(Exception):
    """A failure to show to the user as one readable message."""


def _trace(event, **fields):
    """Append one JSON line to $INSTRUCTIR_GIMP_TRACE (tests read what GIMP answered)."""
    path = os.environ.get(TRACE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(fields, event=event)) + "\n")


def load_record():
    """What ``instructir gimp-install`` recorded (interpreter, state file, defaults); {} when absent."""
    try:
        with open(RECORD_FILE, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def layer_name(instruction):
    text = " ".join(instruction.split())
    return text if len(text) <= MAX_LAYER_NAME else text[:MAX_LAYER_NAME - 1] + "\u2026"


class Progress:
    """Maps server progress frames for drawable ``index`` of ``count`` onto GIMP's progress bar and text."""

    def __init__(self, count, name="InstructIR"):
        self.name = name
        self.count = max(1, count)
        self.index = 0
        self.fraction = None
        self.updates = 0
        self.text = None
        self.queued = []  # every "queued behind N" the server reported

    def set_text(self, text):
        if text != self.text:
            self.text = text
            Gimp.progress_set_text(text)

    def __call__(self, msg):
        stage = msg.get("stage")
        total, done = msg.get("total") or 0, msg.get("done") or 0
        if stage == protocol.Stage.LOADING.value:
            self.set_text(f"{self.name}: loading the model (first run only)\u2026")
        elif stage == protocol.Stage.QUEUED.value:
            ahead = int(msg.get("position") or 0)
            self.queued.append(ahead)
            self.set_text(f"{self.name}: busy, queued behind {ahead} job{'s' if ahead != 1 else ''}\u2026")
        elif stage == protocol.Stage.RESTORING.value:
            part = f" {100 * done // total}%" if total else ""
            self.set_text(f"{self.name}: restoring{part}\u2026")
        if stage == protocol.Stage.RESTORING.value and total > 0 and done > 0:
            frac = (self.index + min(1.0, done / total)) / self.count
            if self.fraction is None or frac >= self.fraction:
                self.fraction = frac
                Gimp.progress_update(frac)
                self.updates += 1
        elif self.fraction is None or self.fraction <= self.index / self.count:
            Gimp.progress_pulse()  # nothing measurable yet (loading, queued): show activity


def server_args(record, model, device):
    """The ``instructir serve`` arguments a server started from here gets."""
    args = ["--idle-exit", str(record.get("idle_exit", DEFAULT_IDLE_EXIT))]
    if model or record.get("model"):
        args += ["--model", model or record.get("model")]
    if device or record.get("device"):
        args += ["--device", device or record.get("device")]
    return args


def connect(record, model, device):
    state_file = protocol.state_path(record.get("state_file"))
    if not state_file:
        raise PluginError("The InstructIR plug-in is not set up: run 'instructir gimp-install' in the "
                          "environment that has the InstructIR engine, then restart GIMP.")
    args = server_args(record, model, device)

    def waiting(seconds):
        Gimp.progress_set_text(f"InstructIR: starting the engine ({seconds:.0f} s)\u2026")
        Gimp.progress_pulse()

    try:
        return protocol.ensure_server(state_file, record.get("python"), engine_path=record.get("engine_path"),
                                      args=args, log_file=record.get("log_file"), timeout=180, on_wait=waiting)
    except protocol.ServerUnavailable as exc:
        raise PluginError("InstructIR: " + str(exc)) from None


_DTYPES = ((_EIGHT_BIT, "u8", "u8"), (_SIXTEEN_BIT, "u16", "u16"))


def wire_format(image, drawable):
    """(babl format, dtype, channels) the layer travels in: its own depth where the wire has it, else float.

    8- and 16-bit layers keep their integer depth; half, 32-bit and float layers travel as 32-bit float,
    whose values outside [0, 1] (HDR, linear light) come back as they went. Gray stays gray, and only
    layers with alpha send an alpha channel.
    """
    precision = image.get_precision()
    babl, dtype = "float", "f32"
    for group, name, wire in _DTYPES:
        if precision in group:
            babl, dtype = name, wire
    gray, alpha = drawable.is_gray(), drawable.has_alpha()
    channels = (1 if gray else 3) + (1 if alpha else 0)
    model = {1: "Y'", 2: "Y'A", 3: "R'G'B'", 4: "R'G'B'A"}[channels]
    return f"{model} {babl}", dtype, channels


def region(image, drawable):
    """The part to process: the selection's bounds within the layer (or all of it), and whether to mask."""
    non_empty, x, y, w, h = drawable.mask_intersect()
    if not non_empty or w <= 0 or h <= 0:
        raise PluginError(f"InstructIR: the selection does not cover any part of the layer '{drawable.get_name()}'.")
    return (x, y, w, h), not Gimp.Selection.is_empty(image)


class Result:
    """Where one drawable's result goes, band by band as it arrives: a new layer above the source, or,
    when the result is larger (an up-sampling step), a new image of that size."""

    def __init__(self, image, drawable, rect, fmt, name, undo):
        self.image, self.drawable, self.rect, self.fmt, self.name, self.undo = image, drawable, rect, fmt, name, undo
        self.layer = self.buffer = self.new_image = None
        self.reply = None

    def begin(self, reply):
        self.reply = reply
        x, y, w, h = self.rect
        if reply.get("resized"):
            self._new_image(int(reply["width"]), int(reply["height"]))
        else:
            self.undo.open()
            self.layer = Gimp.Layer.new_from_drawable(self.drawable, self.image)
            self.layer.set_name(self.name)
            self.image.insert_layer(self.layer, self.drawable.get_parent(), self.image.get_item_position(self.drawable))
            self.origin = (x, y)
        self.buffer = self.layer.get_buffer()
        Gimp.progress_set_text("InstructIR: adding the result\u2026")

    def _new_image(self, width, height):
        """An enlarged result opens as a new image: the original keeps its size, layers and undo history."""
        src = self.image
        image = Gimp.Image.new_with_precision(width, height, src.get_base_type(), src.get_precision())
        image.undo_disable()  # the new image starts with a clean history
        profile = src.get_color_profile()
        if profile is not None:
            image.set_color_profile(profile)
        self.layer = Gimp.Layer.new(image, self.name, width, height, self.drawable.type(), 100.0,
                                    Gimp.LayerMode.NORMAL)
        image.insert_layer(self.layer, None, 0)
        self.new_image = image
        self.origin = (0, 0)

    def rows(self, y, n, data):
        x0, y0 = self.origin
        width = int(self.reply["width"])
        self.buffer.set(Gegl.Rectangle.new(x0, y0 + y, width, n), self.fmt, data)
        Gimp.progress_update(min(1.0, (y + n) / max(1, int(self.reply["height"]))))

    def finish(self):
        self.buffer.flush()
        x0, y0 = self.origin
        self.layer.update(x0, y0, int(self.reply["width"]), int(self.reply["height"]))
        if self.new_image is not None:
            self.new_image.undo_enable()
            self.new_image.clean_all()
            if self.undo.interactive:
                Gimp.Display.new(self.new_image)

    def discard(self):
        """A result cut off half-way (the connection was lost): leave nothing behind."""
        if self.new_image is not None:
            self.new_image.delete()
        elif self.layer is not None:
            self.image.remove_layer(self.layer)


class UndoGroup:
    """One undo group on the image, opened at the first result layer and closed once at the end."""

    def __init__(self, image, interactive):
        self.image, self.interactive = image, interactive
        self.opened = False

    def open(self):
        if not self.opened:
            self.opened = True
            _trace("undo_group_start", ok=bool(self.image.undo_group_start()))

    def close(self):
        if self.opened:
            self.opened = False
            _trace("undo_group_end", ok=bool(self.image.undo_group_end()))


# --- diagnosis -------------------------------------------------------------------------------------


def region_reader(drawable, rect, fmt, pixel_bytes):
    """``read(x, y, w, h, step)`` of the diagnose request over ``rect`` of ``drawable``: the pixels
    ``x + i * step`` of the rows ``y + j * step``, read from GEGL (a block at once, or row by row when
    sub-sampling) and thinned with byte slicing."""
    source = drawable.get_buffer()
    rx, ry = rect[0], rect[1]

    def read(x, y, w, h, step):
        if step == 1:
            return bytes(source.get(Gegl.Rectangle.new(rx + x, ry + y, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE))
        span = (w - 1) * step + 1
        out = bytearray()
        for j in range(h):
            row = source.get(Gegl.Rectangle.new(rx + x, ry + y + j * step, span, 1), 1.0, fmt,
                             Gegl.AbyssPolicy.NONE)
            out += protocol.subsample(row, pixel_bytes, 0, step, w)
        return bytes(out)

    return read


def diagnosis_target(image, drawables):
    """(drawable, rect, subject) to diagnose: the first selected pixel layer, within the selection; or None."""
    if not drawables or image.get_base_type() == Gimp.ImageBaseType.INDEXED:
        return None
    drawable = drawables[0]
    if not isinstance(drawable, Gimp.Layer) or isinstance(drawable, Gimp.GroupLayer):
        return None
    try:
        rect, masked = region(image, drawable)
    except PluginError:
        return None
    return drawable, rect, "selection" if masked else "layer"


def photo_size(target):
    """The whole layer's size when ``target`` is a selection of it (the engine judges resolution on it)."""
    drawable, rect, subject = target
    size = (drawable.get_width(), drawable.get_height())
    return size if subject == "selection" and size != (rect[2], rect[3]) else None


def diagnose_now(client, image, target):
    """The engine's diagnosis of ``target`` (see :func:`diagnosis_target`), read on this thread."""
    drawable, rect, _ = target
    fmt, dtype, channels = wire_format(image, drawable)
    read = region_reader(drawable, rect, fmt, channels * protocol.DTYPE_SIZES[dtype])
    return client.diagnose(read, rect[2], rect[3], channels, dtype, photo_size(target))


class _Closed(Exception):
    """The dialog closed while its diagnosis was still reading the layer."""


class DialogDiagnosis:
    """The diagnosis shown in the dialog: a label (and a button that puts the suggestion in the field),
    filled in when the engine answers.

    A worker thread starts the engine server if needed and talks to it; the layer is read only on the
    main loop (GIMP's calls are not for other threads), ``DIAGNOSIS_ROWS_PER_TURN`` rows per turn, so the
    dialog stays responsive. Nothing here ever waits for the engine on the main loop; once the dialog is
    closed, late answers are dropped.
    """

    def __init__(self, dialog, config, image, target, record, model, device):
        self.prepare(config, image, target, record, model, device)
        self.build(dialog)

    def prepare(self, config, image, target, record, model, device):
        """Everything but the widgets (tests/gimp/dialog_check.py runs this part without a display)."""
        self.config, self.image, self.target, self.record = config, image, target, record
        self.model, self.device = model, device
        drawable, rect, _ = target  # everything that asks GIMP is done here, on the main thread
        fmt, self.dtype, self.channels = wire_format(image, drawable)
        self.read = region_reader(drawable, rect, fmt, self.channels * protocol.DTYPE_SIZES[self.dtype])
        self.photo_size = photo_size(target)
        self.closed = False
        self.reply = None

    def build(self, dialog):
        gi.require_version("Gtk", "3.0")  # GimpUi 3.0's own GTK
        from gi.repository import Gtk

        target = self.target
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6)
        self.label = Gtk.Label(label="Looking at the " + target[2] + "\u2026", xalign=0.0)
        self.label.set_line_wrap(True)
        self.label.set_max_width_chars(60)
        self.label.set_selectable(True)
        self.button = Gtk.Button(label="_Use the suggestion", use_underline=True)
        self.button.set_sensitive(False)
        self.button.set_halign(Gtk.Align.START)
        self.button.connect("clicked", self._use)
        box.pack_start(self.label, False, False, 0)
        box.pack_start(self.button, False, False, 0)
        area = dialog.get_content_area()
        area.pack_start(box, False, False, 6)
        area.reorder_child(box, 0)
        box.show_all()
        self.box = box

    def start(self):
        threading.Thread(target=self._work, name="instructir-diagnose", daemon=True).start()

    def close(self):
        self.closed = True

    # worker thread -----------------------------------------------------------------------------

    def _work(self):
        try:
            client = self._connect()
            rect = self.target[1]
            reply = client.diagnose(self._on_main_loop(self.read), rect[2], rect[3], self.channels, self.dtype,
                                    self.photo_size)
        except _Closed:
            return
        except protocol.ServerError as exc:
            self._later(self._failed, exc.message)
        except PluginError as exc:
            self._later(self._failed, str(exc))
        except Exception as exc:  # noqa: BLE001 - the dialog still works without a diagnosis
            self._later(self._failed, f"{type(exc).__name__}: {exc}")
        else:
            self._later(self._show, reply)

    def _connect(self):
        state_file = protocol.state_path(self.record.get("state_file"))
        if not state_file:
            raise PluginError("the plug-in is not set up ('instructir gimp-install')")
        client = protocol.connect(state_file)
        if client is not None and int(client.ping().get("version", 0)) == protocol.PROTOCOL_VERSION:
            return client
        self._later(self._status, "Starting the engine to look at the " + self.target[2] + "\u2026")
        try:
            return protocol.ensure_server(state_file, self.record.get("python"),
                                          engine_path=self.record.get("engine_path"),
                                          args=server_args(self.record, self.model, self.device),
                                          log_file=self.record.get("log_file"), timeout=180)
        except protocol.ServerUnavailable as exc:
            raise PluginError(str(exc)) from None

    def _on_main_loop(self, read):
        """``read`` run on the main loop, a few rows per turn, while this thread waits for it."""
        def proxied(x, y, w, h, step):
            rows = DIAGNOSIS_ROWS_PER_TURN  # each row is one row of the layer, whatever the step
            out = bytearray()
            for j in range(0, h, rows):
                n = min(rows, h - j)
                done, box = threading.Event(), []

                def turn(j=j, n=n, done=done, box=box):
                    if not self.closed:
                        try:
                            box.append(read(x, y + j * step, w, n, step))
                        except Exception as exc:  # noqa: BLE001 - handed to the worker
                            box.append(exc)
                    done.set()
                    return False

                GLib.idle_add(turn)
                while not done.wait(0.2):
                    if self.closed:
                        raise _Closed()
                if self.closed or not box:
                    raise _Closed()
                if isinstance(box[0], Exception):
                    raise box[0]
                out += box[0]
            return bytes(out)

        return proxied

    def _later(self, fn, *args):
        def call():
            if not self.closed:
                fn(*args)
            return False

        GLib.idle_add(call)

    # main loop ------------------------------------------------------------------------------------

    def _status(self, text):
        self.label.set_text(text)

    def _failed(self, message):
        _trace("diagnosis", error=message)
        self.label.set_text("InstructIR could not look at the " + self.target[2] + ": " + message)

    def _show(self, reply):
        self.reply = reply
        _trace("diagnosis", suggestion=reply.get("suggestion"), instruction=reply.get("instruction"))
        self.label.set_text(protocol.diagnosis_text(reply, self.target[2]))
        self.button.set_sensitive(bool(reply.get("instruction")))
        text = protocol.prefill(self.config.get_property("instruction"), reply,
                                self.config.get_property("suggested"))
        if text is not None:
            self._fill(text)

    def _use(self, _button):
        if self.reply and self.reply.get("instruction"):
            self._fill(self.reply["instruction"])

    def _fill(self, text):
        self.config.set_property("instruction", text)
        self.config.set_property("suggested", text)


def _lost(name, exc, record):
    log = record.get("log_file")
    where = f" The engine server's log is {log}." if log else ""
    return PluginError(f"{name}: lost the connection to the engine server ({exc}). Run the filter again: it "
                       f"starts a new engine server if this one is gone.{where}")


def restore_drawables(image, drawables, instruction, strength, model, device, mode="instructir", semantic="",
                      interactive=False):
    """Process every drawable over the engine, adding each result as it arrives, all in one undo group.

    The layer travels to the engine in bands read from GEGL as they are sent and comes back the same way,
    so neither side holds it whole; the engine checks its size against its memory before a pixel is read.
    ``mode`` "spire" asks the engine for SPIRE diffusion (``semantic``: what the image shows, may be empty).
    """
    record = load_record()
    model = model or record.get("model") or None
    device = device or record.get("device") or None
    spire = mode == "spire"
    name = "SPIRE" if spire else "InstructIR"
    Gimp.progress_init(f"{name}: {layer_name(instruction)}")
    progress = Progress(len(drawables), name)
    client = connect(record, model, device)
    undo = UndoGroup(image, interactive)
    results = []
    try:
        for i, drawable in enumerate(drawables):
            progress.index = i
            rect, masked = region(image, drawable)
            x, y, w, h = rect
            fmt, dtype, channels = wire_format(image, drawable)
            source = drawable.get_buffer()
            _, ox, oy = drawable.get_offsets()
            selection = image.get_selection().get_buffer() if masked else None

            def read(row, n, source=source, x=x, y=y, w=w, fmt=fmt):
                return bytes(source.get(Gegl.Rectangle.new(x, y + row, w, n), 1.0, fmt, Gegl.AbyssPolicy.NONE))

            def read_mask(row, n, x=x, y=y, w=w, ox=ox, oy=oy, selection=selection):
                return bytes(selection.get(Gegl.Rectangle.new(x + ox, y + oy + row, w, n), 1.0, "Y float",
                                           Gegl.AbyssPolicy.NONE))

            seen = []

            def on_progress(msg, drawable=drawable, seen=seen):
                if not seen:
                    seen.append(msg)
                    _trace("working", source=drawable.get_id())
                progress(msg)

            layer_title = layer_name(instruction)
            result = Result(image, drawable, rect, fmt, layer_title, undo)
            Gimp.progress_set_text(f"{name}: sending the layer to the engine\u2026")
            try:
                reply, _ = client.restore(read, w, h, channels, dtype, instruction, strength=strength,
                                          mask=read_mask if masked else None, mask_dtype="f32" if masked else None,
                                          model=model, device=device, on_progress=on_progress,
                                          mode="spire" if spire else None, semantic=semantic if spire else None,
                                          on_result=result.begin, on_rows=result.rows)
            except protocol.ServerError as exc:
                result.discard()
                log = record.get("log_file")
                hint = f" (the engine server's log is {log})" if exc.code == protocol.Code.FAILED.value and log else ""
                raise PluginError(f"{name}: " + exc.message + hint) from None
            except (OSError, protocol.ProtocolError) as exc:
                result.discard()
                raise _lost(name, exc, record) from None
            if spire and reply.get("mode") != "spire":
                result.discard()
                raise PluginError("SPIRE: the running engine server is too old for SPIRE mode; stop it with "
                                  "'instructir serve --stop' and try again (a new one is started).")
            if spire:
                result.layer.set_name(layer_name(f"SPIRE: {reply.get('prompt') or instruction}"))
            result.finish()
            results.append(result)
            _trace("layer", id=result.layer.get_id(), name=result.layer.get_name(), source=drawable.get_id(),
                   rect=list(rect), steps=reply.get("steps"), model=reply.get("model"),
                   new_image=result.new_image.get_id() if result.new_image is not None else None,
                   size=[reply.get("width"), reply.get("height")], format=fmt)
        layers = [r.layer for r in results if r.new_image is None]
        if layers:
            image.set_selected_layers(layers)
    finally:
        undo.close()
    _trace("progress", updates=progress.updates, fraction=progress.fraction, queued=progress.queued)
    Gimp.progress_update(1.0)
    Gimp.progress_end()
    Gimp.displays_flush()
    return results


def suggested_instruction(image, drawables, model, device):
    """A script's empty instruction: the diagnosis' suggestion for the first layer ('' when it looks fine)."""
    target = diagnosis_target(image, drawables)
    if target is None:
        raise PluginError("InstructIR: type what to fix, for example \u201cremove the noise\u201d.")
    record = load_record()
    client = connect(record, model or record.get("model") or None, device or record.get("device") or None)
    try:
        reply = diagnose_now(client, image, target)
    except protocol.ServerError as exc:
        raise PluginError("InstructIR could not look at the layer: " + exc.message) from None
    except (OSError, protocol.ProtocolError) as exc:
        raise _lost("InstructIR", exc, record) from None
    _trace("diagnosis", suggestion=reply.get("suggestion"), instruction=reply.get("instruction"),
           text=protocol.diagnosis_text(reply, target[2]), width=reply.get("width"), height=reply.get("height"),
           prefill=protocol.prefill("", reply))
    if not reply.get("instruction"):
        note = protocol.diagnosis_text(reply, target[2]) + " Nothing was changed."
        _trace("message", text=note)
        Gimp.message(note)
    return str(reply.get("instruction") or "")


def summary(results):
    """What was done and what was skipped, for an instruction with parts that were not run."""
    plan = [p for r in results for p in r.reply.get("plan", [])]
    skipped = [p for p in plan if not p.get("actionable")]
    if not skipped:
        return ""
    applied = ", ".join(f"'{p.get('text')}'" for p in plan if p.get("actionable"))
    reasons = "; ".join((p.get("message") or f"'{p.get('text')}' is not a restoration request").split(";")[0]
                        for p in skipped)
    where = "a new image" if any(r.new_image is not None for r in results) else "a new layer"
    return f"InstructIR applied {applied} on {where}. Skipped: {reasons}."


def run(procedure, run_mode, image, drawables, config, data):
    interactive = run_mode == Gimp.RunMode.INTERACTIVE
    if interactive:
        gi.require_version("GimpUi", "3.0")
        from gi.repository import GimpUi

        GimpUi.init(PROC_NAME)
        dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title="InstructIR")
        dialog.get_scale_entry("strength", 1.0)  # a slider rather than a bare spin button
        dialog.fill(["mode", "instruction", "semantic", "strength", "model", "device"])
        try:  # the semantic prompt only means something to SPIRE
            only_spire = Gimp.ValueArray.new_from_values([GObject.Value(GObject.TYPE_STRING, "spire")])
            dialog.set_sensitive_if_in("semantic", None, "mode", only_spire, True)
        except Exception:  # noqa: BLE001 - cosmetic; an older GIMP 3 just leaves the field editable
            pass
        looking = None
        target = diagnosis_target(image, list(drawables or []))
        if target is not None:
            device = config.get_property("device") or "auto"
            looking = DialogDiagnosis(dialog, config, image, target, load_record(),
                                      (config.get_property("model") or "").strip() or None,
                                      None if device == "auto" else device)
            looking.start()
        ok = dialog.run()
        if looking is not None:
            looking.close()
        dialog.destroy()
        if not ok:
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())

    instruction = (config.get_property("instruction") or "").strip()
    strength = float(config.get_property("strength"))
    model = (config.get_property("model") or "").strip()
    device = config.get_property("device") or "auto"
    mode = config.get_property("mode") or "instructir"
    semantic = " ".join((config.get_property("semantic") or "").split())
    try:
        if not instruction and not interactive and mode != "spire":
            instruction = suggested_instruction(image, list(drawables or []), model,
                                                None if device == "auto" else device)
            if not instruction:  # a clean layer: nothing to do, and the user is told why
                return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
        if not instruction:
            raise PluginError("InstructIR: type what to fix, for example \u201cremove the noise\u201d.")
        if image.get_base_type() == Gimp.ImageBaseType.INDEXED:  # the menu is disabled for these too
            raise PluginError("InstructIR works on RGB and grayscale images; convert this indexed image first "
                              "(Image > Mode > RGB).")
        if not drawables:
            raise PluginError("InstructIR: select a layer first.")
        for d in drawables:
            if not isinstance(d, Gimp.Layer) or isinstance(d, Gimp.GroupLayer):
                raise PluginError(f"InstructIR works on pixel layers; '{d.get_name()}' is not one.")
        results = restore_drawables(image, list(drawables), instruction, strength, model,
                                    None if device == "auto" else device, mode, semantic, interactive)
    except PluginError as exc:
        Gimp.progress_end()
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(str(exc)))
    except Exception as exc:  # noqa: BLE001 - anything else still reaches the user as a message
        Gimp.progress_end()
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                           GLib.Error(f"InstructIR failed: {type(exc).__name__}: {exc}"))
    note = summary(results)
    if note:
        _trace("message", text=note)
        if interactive:
            Gimp.message(note)
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


class InstructIR(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROC_NAME]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE
                                       | Gimp.ProcedureSensitivityMask.DRAWABLES)
        procedure.set_menu_label("InstructIR...")
        procedure.add_menu_path("<Image>/Filters")
        procedure.set_documentation(
            "Restore the layer following a plain-language instruction",
            "Restores the active layer, or the selected part of it, following an instruction such as "
            "'remove the noise' or 'brighten it a bit', with the InstructIR network, and puts the result "
            "on a new layer above it. Mode 'spire' uses the optional SPIRE diffusion model instead (blur, "
            "noise, low resolution, JPEG; 'semantic' says what the image shows). The work is done by the "
            "InstructIR engine server (instructir serve), started on demand.",
            name)
        procedure.set_attribution("InstructIR Studio", "InstructIR Studio", "2026")
        modes = Gimp.Choice.new()
        for i, (nick, label, help_text) in enumerate(MODES):
            modes.add(nick, i, label, help_text)
        procedure.add_choice_argument("mode", "M_ode", "InstructIR, or the optional SPIRE diffusion mode", modes,
                                      "instructir", GObject.ParamFlags.READWRITE)
        procedure.add_string_argument("instruction", "_Instruction",
                                      "What to fix, in plain language (empty: what the diagnosis suggests)",
                                      DEFAULT_INSTRUCTION, GObject.ParamFlags.READWRITE)
        # Not an argument: what the dialog's diagnosis last put in the field (GIMP keeps it with the last
        # values), so an untouched suggestion for another photo is replaced by this photo's.
        procedure.add_string_aux_argument("suggested", "Suggested", "The instruction the diagnosis last filled in",
                                          "", GObject.ParamFlags.READWRITE)
        procedure.add_string_argument("semantic", "_What's in the image",
                                      "SPIRE only, optional: what the image shows, e.g. 'a cat on a sofa'",
                                      "", GObject.ParamFlags.READWRITE)
        procedure.add_double_argument("strength", "Stren_gth",
                                      "Scales the strength read from the instruction (1: as written)",
                                      0.0, 1.0, 1.0, GObject.ParamFlags.READWRITE)
        procedure.add_string_argument("model", "_Model", "Model name or folder (empty: the installed default)",
                                      "", GObject.ParamFlags.READWRITE)
        devices = Gimp.Choice.new()
        for i, (nick, label) in enumerate(DEVICES):
            devices.add(nick, i, label, "")
        procedure.add_choice_argument("device", "_Device", "Where the engine runs", devices, "auto",
                                      GObject.ParamFlags.READWRITE)
        return procedure


Gimp.main(InstructIR.__gtype__, sys.argv)
