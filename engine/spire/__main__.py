"""Command line for SPIRE until the main CLI grows a mode switch.

    python -m engine.spire check
    python -m engine.spire restore photo.jpg "remove the noise, strongly" --semantic "a cat on a sofa" -o out.png
    python -m engine.spire prompt "get rid of the grain and upscale 4x"      # how an instruction is understood
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.edit.prompts import DEFAULT_SPIRE_GUIDANCE, DEFAULT_SPIRE_STEPS, PromptError, from_instruction


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.spire", description="SPIRE diffusion restoration (optional)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="say whether SPIRE can run here, and why not")
    p = sub.add_parser("prompt", help="show the restoration prompt an instruction becomes")
    p.add_argument("instruction")
    p = sub.add_parser("restore", help="restore one photo")
    p.add_argument("input")
    p.add_argument("instruction", help="a restoration prompt or an everyday instruction")
    p.add_argument("--semantic", default="", help="what the photo shows (empty: semantic-agnostic)")
    p.add_argument("--negative", default="")
    p.add_argument("-o", "--output")
    p.add_argument("--adapter", help="adapter folder (default: the installed one)")
    p.add_argument("--base", help="base model folder or hub id (default: the one the adapter names)")
    p.add_argument("--steps", type=int, default=DEFAULT_SPIRE_STEPS)
    p.add_argument("--guidance", type=float, default=DEFAULT_SPIRE_GUIDANCE)
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--allow-download", action="store_true", help="download a hub-id base model if not cached")
    args = ap.parse_args(argv)

    if args.cmd == "check":
        from engine.spire import available

        ok, reason = available()
        print(("available: " if ok else "unavailable: ") + reason)
        return 0 if ok else 1
    try:
        prompt = from_instruction(args.instruction)
    except PromptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "prompt":
        print(prompt)
        return 0

    from engine.io.images import load_image, output_path_for, save_image
    from engine.spire.pipeline import SpirePipeline

    source = Path(args.input)
    out = output_path_for(source, Path(args.output) if args.output else None)
    if out.exists() and not args.overwrite:
        print(f"error: {out} already exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    picture = load_image(source)
    pipe = SpirePipeline.from_pretrained(args.adapter, args.base, device=args.device,
                                         local_files_only=not args.allow_download)
    print(f"restoring with '{prompt}' on {pipe.choice.label}", file=sys.stderr)
    rgb = pipe.restore(picture.rgb, prompt, args.semantic, negative_prompt=args.negative, steps=args.steps,
                       guidance=args.guidance, strength=args.strength, seed=args.seed,
                       progress=lambda done, total: print(f"\r{done}/{total}", end="", file=sys.stderr))
    print(file=sys.stderr)
    print(save_image(picture.with_rgb(rgb), out, overwrite=args.overwrite))
    return 0


if __name__ == "__main__":
    sys.exit(main())
