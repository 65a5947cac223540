"""``instructir diagnose PHOTO... [--json]``: what is wrong with each photo and the instruction that fixes it.

With ``--json`` one JSON object per line and photo (JSON Lines)::

    {"path": "a.jpg", "problems": [{"intent": "noise", "severity": 0.82, "reason": "...", ...}],
     "suggestion": "This photo looks noisy (strong).", "instruction": "Remove the noise", ...}

A photo that cannot be read gives ``{"path": ..., "error": ..., "code": ...}`` and the
exit status 1; the others are still diagnosed.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path


def _photos(paths: list[str]) -> list[Path]:
    """Files as given, folders walked recursively for photos (sorted)."""
    from engine.io.images import IMAGE_SUFFIXES

    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            out += [f for f in sorted(p.rglob("*"))
                    if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
        else:
            out.append(p)
    return out


def format_text(diagnosis) -> str:
    """The human-readable report of one photo."""
    lines = [f"{diagnosis.path}: {diagnosis.suggestion}"]
    for p in diagnosis.problems:
        mark = "*" if p.worth_fixing else " "
        lines.append(f"  {mark} {p.intent.value:12s} {p.severity:.2f}  {p.reason}")
    if diagnosis.instruction:
        lines.append(f"  fix: instructir restore {shlex.quote(str(diagnosis.path))} "
                     f"{shlex.quote(diagnosis.instruction)}")
    return "\n".join(lines)


def cmd_diagnose(args) -> int:
    from engine.diagnose.core import default_model, diagnose
    from engine.errors import StudioError
    from engine.io.images import load_image

    model = default_model()
    failed = 0
    for path in _photos(args.photos):
        try:
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist")
            d = diagnose(load_image(path), model=model)
        except (StudioError, OSError) as exc:
            failed += 1
            code = getattr(exc, "code", "not-found" if isinstance(exc, FileNotFoundError) else "io")
            if args.json:
                print(json.dumps({"path": str(path), "error": str(exc), "code": code}), flush=True)
            else:
                print(f"instructir: error: {exc}", file=sys.stderr)
            continue
        print(json.dumps(d.to_dict()) if args.json else format_text(d), flush=True)
    return 1 if failed else 0


def register_cli(sub) -> None:
    """Add ``diagnose`` to the ``instructir`` sub-commands."""
    p = sub.add_parser("diagnose", help="say what is wrong with photos and which instruction fixes it")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photos or folders of photos")
    p.add_argument("--json", action="store_true", help="one JSON object per photo and line (JSON Lines)")
    p.set_defaults(func=cmd_diagnose)
