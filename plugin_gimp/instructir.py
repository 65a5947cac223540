#!/usr/bin/env python3
"""InstructIR for GIMP 3.0: Filters > InstructIR...

Restores the active layer (or the selected part of it) following a plain
language instruction ("remove the noise") and puts the result on a new layer
above it, named after the instruction, in one undo step.

GIMP's Python has no torch: the work is done by the InstructIR engine server
(``instructir serve``) over a loopback connection. This plug-in starts that
server on demand with the Python interpreter recorded by ``instructir
gimp-install`` (see ``instructir.json`` next to this file); the server keeps
the model loaded, so only the first run pays for loading it.

The optional SPIRE diffusion mode (``mode`` = spire, with an optional
``semantic`` description of the image) runs on the same server when an
adapter is installed there; otherwise the server says why it cannot.

Only the standard library and GIMP's own gi modules are used (no numpy).
"""

import json
import os
import sys

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
DEFAULT_INSTRUCTION = "remove the noise"
MAX_LAYER_NAME = 64
DEVICES = (("auto", "Automatic (GPU when available)"), ("cpu", "CPU"), ("cuda", "NVIDIA GPU (CUDA)"),
           ("mps", "Apple GPU (MPS)"))
MODES = (("instructir", "InstructIR", "Fast restoration from a plain instruction"),
         ("spire", "SPIRE (diffusion)", "Diffusion restoration of blur, noise, low resolution and JPEG artefacts; "
                                        "needs a SPIRE adapter on the engine's computer and, in practice, a GPU"))
_EIGHT_BIT = {getattr(Gimp.Precision, n) for n in ("U8_LINEAR", "U8_NON_LINEAR", "U8_PERCEPTUAL")
              if hasattr(Gimp.Precision, n)}


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
    """Maps server progress frames for drawable ``index`` of ``count`` onto GIMP's progress bar."""

    def __init__(self, count, name="InstructIR"):
        self.name = name
        self.count = max(1, count)
        self.index = 0
        self.fraction = None
        self.updates = 0
        self.text = None

    def set_text(self, text):
        if text != self.text:
            self.text = text
            Gimp.progress_set_text(text)

    def __call__(self, msg):
        stage = msg.get("stage")
        if stage == "loading":
            self.set_text(f"{self.name}: loading the model (first run only)\u2026")
        elif stage == "queued":
            self.set_text(f"{self.name}: waiting for another image to finish\u2026")
        elif stage == "restoring":
            self.set_text(f"{self.name}: restoring\u2026")
        total, done = msg.get("total") or 0, msg.get("done") or 0
        if stage == "restoring" and total > 0 and done > 0:
            frac = (self.index + min(1.0, done / total)) / self.count
            if self.fraction is None or frac >= self.fraction:
                self.fraction = frac
                Gimp.progress_update(frac)
                self.updates += 1
        elif self.fraction is None or self.fraction <= self.index / self.count:
            Gimp.progress_pulse()  # nothing measurable yet (loading, or one whole-image pass): show activity


def connect(record, model, device):
    state_file = protocol.state_path(record.get("state_file"))
    if not state_file:
        raise PluginError("The InstructIR plug-in is not set up: run 'instructir gimp-install' in the "
                          "environment that has the InstructIR engine, then restart GIMP.")
    args = ["--idle-exit", str(record.get("idle_exit", 3600))]
    if model:
        args += ["--model", model]
    if device:
        args += ["--device", device]

    def waiting(seconds):
        Gimp.progress_set_text(f"InstructIR: starting the engine ({seconds:.0f} s)\u2026")
        Gimp.progress_pulse()

    try:
        return protocol.ensure_server(state_file, record.get("python"), engine_path=record.get("engine_path"),
                                      args=args, log_file=record.get("log_file"), timeout=180, on_wait=waiting)
    except protocol.ServerUnavailable as exc:
        raise PluginError("InstructIR: " + str(exc)) from None


def read_region(image, drawable):
    """Pixels of the part to process: the selection's bounds within the layer (or all of it), and its mask."""
    non_empty, x, y, w, h = drawable.mask_intersect()
    if not non_empty or w <= 0 or h <= 0:
        raise PluginError(f"InstructIR: the selection does not cover any part of the layer '{drawable.get_name()}'.")
    if image.get_precision() in _EIGHT_BIT:
        fmt, dtype = "R'G'B'A u8", "u8"
    else:
        fmt, dtype = "R'G'B'A float", "f32"
    rect = Gegl.Rectangle.new(x, y, w, h)
    pixels = bytes(drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.NONE))
    mask = None
    if not Gimp.Selection.is_empty(image):
        _, ox, oy = drawable.get_offsets()
        sel = image.get_selection().get_buffer()
        mask = bytes(sel.get(Gegl.Rectangle.new(x + ox, y + oy, w, h), 1.0, "Y float", Gegl.AbyssPolicy.NONE))
    return (x, y, w, h), fmt, dtype, pixels, mask


def restore_drawables(image, drawables, instruction, strength, model, device, mode="instructir", semantic=""):
    """Process every drawable over the engine, then add all result layers in one undo group.

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
    results = []
    for i, drawable in enumerate(drawables):
        progress.index = i
        rect, fmt, dtype, pixels, mask = read_region(image, drawable)
        _, _, w, h = rect
        seen = []

        def on_progress(msg, drawable=drawable, seen=seen):
            if not seen:
                seen.append(msg)
                _trace("working", source=drawable.get_id())
            progress(msg)

        try:
            reply, data = client.restore(pixels, w, h, 4, dtype, instruction, strength=strength, mask=mask,
                                         mask_dtype="f32" if mask is not None else None, model=model,
                                         device=device, on_progress=on_progress,
                                         mode="spire" if spire else None, semantic=semantic if spire else None)
        except protocol.ServerError as exc:
            raise PluginError(f"{name}: " + exc.message) from None
        except (OSError, protocol.ProtocolError) as exc:
            raise PluginError(f"{name}: lost the connection to the engine server ({exc}).") from None
        if spire and reply.get("mode") != "spire":  # a server from before SPIRE mode ignores the request's mode
            raise PluginError("SPIRE: the running engine server is too old for SPIRE mode; stop it with "
                              "'instructir serve --stop' and try again (a new one is started).")
        results.append((drawable, rect, fmt, data, reply))
    Gimp.progress_set_text(f"{name}: adding the result layer\u2026")
    _trace("progress", updates=progress.updates, fraction=progress.fraction)

    new_layers = []
    started = image.undo_group_start()
    _trace("undo_group_start", ok=bool(started))
    try:
        for drawable, (x, y, w, h), fmt, data, reply in results:
            layer = Gimp.Layer.new_from_drawable(drawable, image)
            layer.set_name(layer_name(f"SPIRE: {reply.get('prompt') or instruction}" if spire else instruction))
            image.insert_layer(layer, drawable.get_parent(), image.get_item_position(drawable))
            buf = layer.get_buffer()
            buf.set(Gegl.Rectangle.new(x, y, w, h), fmt, data)
            buf.flush()
            layer.update(x, y, w, h)
            new_layers.append(layer)
            _trace("layer", id=layer.get_id(), name=layer.get_name(), source=drawable.get_id(),
                   rect=[x, y, w, h], steps=reply.get("steps"), model=reply.get("model"))
        if new_layers:
            image.set_selected_layers(new_layers)
    finally:
        ended = image.undo_group_end()
        _trace("undo_group_end", ok=bool(ended))
    Gimp.progress_update(1.0)
    Gimp.progress_end()
    Gimp.displays_flush()
    skipped = [p for r in results for p in r[4].get("plan", []) if not p.get("actionable")]
    return new_layers, skipped


def run(procedure, run_mode, image, drawables, config, data):
    if run_mode == Gimp.RunMode.INTERACTIVE:
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
        ok = dialog.run()
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
        if not instruction:
            raise PluginError("InstructIR: type what to fix, for example \u201cremove the noise\u201d.")
        if not drawables:
            raise PluginError("InstructIR: select a layer first.")
        for d in drawables:
            if not isinstance(d, Gimp.Layer) or isinstance(d, Gimp.GroupLayer):
                raise PluginError(f"InstructIR works on pixel layers; '{d.get_name()}' is not one.")
        layers, skipped = restore_drawables(image, list(drawables), instruction, strength, model,
                                            None if device == "auto" else device, mode, semantic)
    except PluginError as exc:
        Gimp.progress_end()
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(str(exc)))
    except Exception as exc:  # noqa: BLE001 - anything else still reaches the user as a message
        Gimp.progress_end()
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                           GLib.Error(f"InstructIR failed: {type(exc).__name__}: {exc}"))
    if skipped and run_mode == Gimp.RunMode.INTERACTIVE:
        Gimp.message("InstructIR skipped: " + "; ".join(p.get("message") or p.get("text", "") for p in skipped))
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
        procedure.add_string_argument("instruction", "_Instruction", "What to fix, in plain language",
                                      DEFAULT_INSTRUCTION, GObject.ParamFlags.READWRITE)
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
