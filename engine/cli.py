"""``instructir``: restore photos from the command line.

    instructir restore photo.jpg "please remove the noise" -o clean.jpg
    instructir batch photos/ --instruction "remove the noise" -o out/
    instructir plan "remove the noise and then brighten it a bit" --json
    instructir diagnose photo.jpg [--json]          # what is wrong; "auto" / "fix it" restore from it
    instructir models [list | download NAME | verify NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from engine.diagnose import cli as diagnose_cli
from engine.edit.upsampling import DEFAULT_MAX_RESULT_PIXELS
from engine.errors import StudioError
from engine.model.options import add_restorer_arguments
from engine.serve import server as serve_cli

EXIT_ERROR, EXIT_USAGE, EXIT_CANCELLED = 1, 2, 130


class CliError(StudioError):
    """A failure to report in one readable line (no traceback)."""

    code = "usage"


def _restorer(args):
    from engine.model.pipeline import Restorer

    budget = int(args.max_memory * 2**30) if args.max_memory else None
    return Restorer.from_pretrained(args.model, device=args.device, fast=args.fast, tile=args.tile or None,
                                    memory_budget=budget)


def _bar(desc: str, total: int = 1000):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="", bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
                disable=None, file=sys.stderr)


def _progress_into(bar):
    def update(done: int, total: int) -> None:
        bar.n = int(bar.total * done / max(total, 1))
        bar.refresh()

    return update


def _report_plan(plan) -> None:
    for step in plan:
        mark = "applied" if step.actionable else "skipped"
        print(f"  {mark}: {step.text!r} -> {step.intent} ({step.confidence:.0%}), strength {step.strength:.2f}"
              + (f" | {step.message}" if step.message else ""), file=sys.stderr)


def cmd_restore(args) -> int:
    from engine.edit.session import EditSession
    from engine.io.images import load_image, output_path_for, save_image

    source = Path(args.input)
    picture = load_image(source)
    out = output_path_for(source, Path(args.output) if args.output else None)
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} already exists; pass --overwrite to replace it")
    from engine.diagnose import resolve_instruction

    instruction, auto = resolve_instruction(args.instruction, picture)  # "auto", "fix it": from the diagnosis
    if auto is not None:
        print(auto.message, file=sys.stderr)
        if not instruction:
            return 0
    restorer = _restorer(args)
    session = EditSession(picture.rgb, max_result_pixels=int(args.max_result_mp * 1e6))
    with _bar("restoring") as bar:
        plan = session.apply(instruction, restorer, strength=args.strength, progress=_progress_into(bar))
    _report_plan(plan)
    result = picture.with_rgb(session.result())
    del session, picture  # the steps' corrections and the decoded original: an up-scaled photo needs the room
    path = save_image(result, out, overwrite=args.overwrite, quality=args.quality)
    print(path)
    return 0


def cmd_batch(args) -> int:
    from engine.edit.batch import collect_inputs, plan_outputs, run_batch
    from engine.edit.recipes import Recipe
    from engine.edit.session import EditSession
    from engine.jobs import CancelToken

    if bool(args.instruction) == bool(args.recipe):
        raise CliError("give exactly one of --instruction TEXT or --recipe FILE")
    recipe = Recipe.load(args.recipe) if args.recipe else None
    items = plan_outputs(collect_inputs(args.paths), Path(args.output), args.format)
    if not items:
        raise CliError("no images found in the given paths")
    restorer = _restorer(args)
    from engine.diagnose import is_auto_instruction

    recipe_for = None
    if recipe is None and is_auto_instruction(args.instruction):  # each photo planned from its own diagnosis
        from engine.diagnose.auto import auto_recipe

        def recipe_for(picture):
            return auto_recipe(picture, restorer, strength=args.strength)
    elif recipe is None:
        # Planned once, on a stand-in image: every photo then replays the same steps (sizes follow each photo).
        import numpy as np

        plan, steps = EditSession(np.zeros((1, 1, 3), np.float32)).plan_steps(args.instruction, restorer,
                                                                              strength=args.strength)
        _report_plan(plan)
        if not steps:
            from engine.edit.session import NothingToDoError

            raise NothingToDoError(plan)
        recipe = Recipe.from_steps(steps)
    cancel = CancelToken()
    from tqdm import tqdm

    with tqdm(total=len(items), desc="batch", unit="file", file=sys.stderr, disable=None) as bar:
        def on_event(item, index, total, fraction):
            if item.status.finished:
                bar.n = sum(1 for i in items if i.status.finished)
                bar.set_postfix_str(item.source.name)
                bar.refresh()
                if item.status is item.status.FAILED:
                    tqdm.write(f"failed: {item.source}: {item.error}", file=sys.stderr)

        try:
            report = run_batch(items, recipe, restorer, fmt=args.format, overwrite=args.overwrite,
                               quality=args.quality, on_event=on_event, cancel=cancel,
                               max_result_pixels=int(args.max_result_mp * 1e6), recipe_for=recipe_for)
        except KeyboardInterrupt:
            cancel.cancel()
            raise
    if recipe_for is not None:  # what was done to each photo
        for item in items:
            print(f"{item.source}: {item.status.value}" + (f": {item.note}" if item.note else ""))
    print(report.summary())
    return EXIT_ERROR if report.failed else 0


def cmd_plan(args) -> int:
    """One instruction: today's output. Several: one JSON object per line (``--json``), the model loaded once."""
    from engine.edit.planning import EmptyInstructionError, plan_instruction
    from engine.model.pipeline import Restorer

    restorer = Restorer.from_pretrained(args.model, device="cpu")
    several = len(args.instruction) > 1
    failed = 0
    for n, instruction in enumerate(args.instruction):
        if several and n and not args.json:
            print()
        try:
            steps = plan_instruction(instruction, restorer, no_op_classes=restorer.bundle.no_op_classes)
        except EmptyInstructionError as exc:
            if not several:
                raise
            failed += 1
            if args.json:
                print(json.dumps({"instruction": instruction, "model": restorer.name, "error": str(exc)}))
            else:
                print(f"{instruction!r}\n  error: {exc}")
            continue
        if args.json:
            record = {"model": restorer.name, "steps": [s.to_dict() for s in steps]}
            print(json.dumps({**record, "instruction": instruction}) if several else json.dumps(record, indent=2))
            continue
        if several:
            print(repr(instruction))
        for s in steps:
            state = "apply" if s.actionable else "no-op"
            print(f"{'  ' if several else ''}{state}: {s.text!r} -> {s.intent} ({s.confidence:.0%}), "
                  f"strength {s.strength:.2f} {s.message}".rstrip())
    return EXIT_ERROR if failed else 0


def cmd_models(args) -> int:
    from engine.model import hub
    from engine.model.registry import OFFICIAL_MODEL, list_models

    if args.action == "list":
        for e in list_models():
            state = "installed" if e.available else "not downloaded"
            print(f"{e.name:16s} {e.kind:9s} {state:15s} {e.description}" + (f"  [{e.path}]" if e.path else ""))
        return 0
    if args.name != OFFICIAL_MODEL:
        raise CliError(f"only {OFFICIAL_MODEL} can be downloaded or verified; bundled models ship with the app")
    if args.action == "download":
        files = hub.download_official(progress=True)
        print(f"downloaded to {files.image_weights.parent}")
        return 0
    files = hub.official_from_folder(Path(args.folder)) if args.folder else hub.official_from_cache()
    if files is None:
        raise CliError(f"{OFFICIAL_MODEL} is not downloaded; run 'instructir models download {OFFICIAL_MODEL}'")
    for name, digest in hub.verify_official(files).items():
        print(f"ok  {digest}  {name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="instructir", description="Restore photos from plain-language instructions.")
    sub = ap.add_subparsers(dest="command", required=True)

    def model_opts(p):
        add_restorer_arguments(p)
        p.add_argument("--max-memory", type=float, metavar="GB",
                       help="memory the network may use (default 1.3 GB on CPU, 70%% of free VRAM on CUDA); "
                            "more lets larger photos run whole instead of in tiles")
        p.add_argument("--strength", type=float, help="override every step's strength (0..1)")
        p.add_argument("--overwrite", action="store_true", help="replace existing output files")
        p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality of outputs")
        p.add_argument("--max-result-mp", type=float, default=DEFAULT_MAX_RESULT_PIXELS / 1e6, metavar="MP",
                       help="refuse up-sampling to more megapixels than this (default %(default).0f)")

    p = sub.add_parser("restore", help="restore one photo")
    p.add_argument("input")
    p.add_argument("instruction", help='what to fix; "auto" (or "fix it") fixes what the diagnosis finds')
    p.add_argument("-o", "--output", help="output file or folder (default: next to the input, *_restored)")
    model_opts(p)
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("batch", help="apply one instruction or recipe to files and folders")
    p.add_argument("paths", nargs="+")
    p.add_argument("--instruction", help='what to fix; "auto" diagnoses and fixes each photo on its own')
    p.add_argument("--recipe", help="recipe JSON exported from a session")
    p.add_argument("-o", "--output", required=True, help="output folder (input folders are mirrored inside)")
    p.add_argument("--format", choices=["jpeg", "png", "tiff", "webp"], help="output format (default: keep)")
    model_opts(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("plan", help="show how instructions are understood (the model is loaded once)")
    p.add_argument("instruction", nargs="+", help="one or more instructions")
    p.add_argument("--json", action="store_true", help="JSON; one object per line (JSON Lines) for several")
    p.add_argument("--model", default="default")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("models", help="list, download or verify models")
    p.add_argument("action", nargs="?", default="list", choices=["list", "download", "verify"])
    p.add_argument("name", nargs="?", default="instructir-7d")
    p.add_argument("--folder", help="verify a local folder instead of the cache")
    p.set_defaults(func=cmd_models)

    diagnose_cli.register_cli(sub)  # diagnose (engine/diagnose/cli.py)
    serve_cli.register_cli(sub)  # serve (engine/serve/server.py)
    for entry in entry_points(group="instructir.commands"):  # front ends add theirs (gimp-install)
        entry.load()(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from engine.jobs import Cancelled

    try:
        return args.func(args)
    except (KeyboardInterrupt, Cancelled):
        print("cancelled; no partial output was written", file=sys.stderr)
        return EXIT_CANCELLED
    except (StudioError, FileNotFoundError) as exc:
        print(f"instructir: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
