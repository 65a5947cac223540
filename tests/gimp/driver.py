"""Batch driver for the real-GIMP test; runs inside ``gimp-console-3.0 --batch-interpreter=python-fu-eval``.

Reads the job from ``$INSTRUCTIR_DRIVER_JOB`` (JSON: ``out`` folder and ``cases``),
runs ``plug-in-instructir`` non-interactively the way a script would, and
writes ``results.json`` plus raw float32 pixel dumps for the host-side test to
check. Any exception makes gimp-console exit non-zero.
"""

import json
import os
import struct
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

JOB = json.load(open(os.environ["INSTRUCTIR_DRIVER_JOB"], encoding="utf-8"))
OUT = JOB["out"]
PDB = Gimp.get_pdb()


def dump(drawable, name, fmt="R'G'B'A float"):
    """Write a drawable's pixels as raw float32 (rows of RGBA or Y) and return how to read them."""
    w, h = drawable.get_width(), drawable.get_height()
    data = bytes(drawable.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE))
    path = os.path.join(OUT, name + ".f32")
    with open(path, "wb") as fh:
        fh.write(data)
    return {"file": path, "width": w, "height": h, "channels": 4 if fmt.startswith("R") else 1}


def describe(layer, image):
    _, ox, oy = layer.get_offsets()
    return {"id": layer.get_id(), "name": layer.get_name(), "position": image.get_item_position(layer),
            "offsets": [ox, oy], "width": layer.get_width(), "height": layer.get_height(),
            "has_alpha": layer.has_alpha(), "is_gray": layer.is_gray(), "type": int(layer.type())}


TRACE = os.environ.get("INSTRUCTIR_GIMP_TRACE")


def trace(event, **fields):
    if TRACE:
        with open(TRACE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(fields, event=event)) + "\n")


PRECISIONS = {"u16": "U16_NON_LINEAR", "float-linear": "FLOAT_LINEAR"}


def run_case(proc, case):
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(case["input"]))
    if case.get("grayscale"):
        image.convert_grayscale()
    if case.get("precision"):
        image.convert_precision(getattr(Gimp.Precision, PRECISIONS[case["precision"]]))
    if case.get("indexed"):
        image.convert_indexed(Gimp.ConvertDitherType.NONE, Gimp.ConvertPaletteType.GENERATE, 32, False, False, "")
    source = image.get_layers()[0]
    if case.get("fill"):  # [x, y, w, h, value]: a block of linear-light values (HDR), written as linear float
        x, y, w, h, value = case["fill"]
        data = struct.pack("<f", value) * 3 + struct.pack("<f", 1.0)
        buf = source.get_buffer()
        buf.set(Gegl.Rectangle.new(x, y, w, h), "RGBA float", data * (w * h))
        buf.flush()
        source.update(x, y, w, h)
    images_before = {i.get_id() for i in Gimp.get_images()}
    if case.get("ellipse"):
        x, y, w, h = case["ellipse"]
        image.select_ellipse(Gimp.ChannelOps.REPLACE, x, y, w, h)
    before = [describe(layer, image) for layer in image.get_layers()]

    trace("case", name=case["name"])
    if case.get("wait"):
        time.sleep(case["wait"])  # lets the host queue a job of its own first
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [source])
    config.set_property("instruction", case["instruction"])
    config.set_property("strength", case.get("strength", 1.0))
    if case.get("model"):
        config.set_property("model", case["model"])
    result = proc.run(config)
    status = result.index(0)
    error = None
    if status != Gimp.PDBStatusType.SUCCESS:
        error = PDB.get_last_error() if hasattr(PDB, "get_last_error") else None
        if not error and result.length() > 1:
            error = str(result.index(1))

    record = {"name": case["name"], "status": status.value_nick, "error": error,
              "precision": image.get_precision().value_nick, "base_type": image.get_base_type().value_nick,
              "before": before, "after": [describe(layer, image) for layer in image.get_layers()],
              "selected": [layer.get_id() for layer in image.get_selected_layers()],
              "source_id": source.get_id()}
    fmt = "RGBA float" if case.get("precision") == "float-linear" else "R'G'B'A float"
    record["source"] = dump(source, case["name"] + "-source", fmt)
    new = [layer for layer in image.get_layers() if layer.get_id() not in {b["id"] for b in before}]
    if new:
        record["new"] = dump(new[0], case["name"] + "-new", fmt)
    opened = [i for i in Gimp.get_images() if i.get_id() not in images_before and i.get_id() != image.get_id()]
    record["new_images"] = [{"width": i.get_width(), "height": i.get_height(), "layers": len(i.get_layers()),
                             "precision": i.get_precision().value_nick, "dirty": i.is_dirty()} for i in opened]
    if opened:
        record["new_image"] = dump(opened[0].get_layers()[0], case["name"] + "-new-image", fmt)
        for i in opened:
            i.delete()
    if not Gimp.Selection.is_empty(image):
        record["mask"] = dump(image.get_selection(), case["name"] + "-mask", "Y float")
    if case.get("export") and new:
        Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(case["export"]), None)
        record["exported"] = case["export"]
    image.delete()
    return record


def main():
    results = {"gimp_version": Gimp.version(), "cases": []}
    proc = PDB.lookup_procedure("plug-in-instructir")
    if proc is None:
        raise RuntimeError("plug-in-instructir is not registered")
    results["procedure"] = {
        "menu_label": proc.get_menu_label(),
        "menu_paths": list(proc.get_menu_paths()),
        "image_types": proc.get_image_types(),
        "arguments": [spec.get_name() for spec in proc.get_arguments()],
    }
    for case in JOB["cases"]:
        try:
            results["cases"].append(run_case(proc, case))
        except Exception:  # noqa: BLE001 - recorded for the host test, which fails with the traceback
            results["cases"].append({"name": case["name"], "status": "driver-error",
                                     "error": traceback.format_exc()})
    with open(os.path.join(OUT, "results.json"), "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)


main()
