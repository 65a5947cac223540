"""``instructir gimp-install``: put the GIMP 3 plug-in where GIMP looks for it.

GIMP runs a plug-in only from a folder of its own name holding an executable
file of that name, so the plug-in lands as ``plug-ins/instructir/instructir.py``
(mode 755), next to the stdlib protocol client (``instructir_protocol.py``)
and a record of this install (``instructir.json``): the Python interpreter
that has the engine, which the plug-in uses to start ``instructir serve`` on
demand, where the server's state file lives, and how long that server stays
up after its last client (``--idle-exit``, 300 s by default). Every file is
written with the one atomic writer (``engine.io.atomic``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from engine.io import atomic
from engine.serve import protocol
from engine.serve.server import default_state_file

PLUGIN_NAME = "instructir"
GIMP_VERSION_DIR = "3.0"
RECORD_FILE = "instructir.json"
PROTOCOL_MODULE = "instructir_protocol.py"
#: Seconds the engine server stays up after the last filter run (its model stays loaded meanwhile).
IDLE_EXIT_SECONDS = 300


def gimp_user_dir() -> Path:
    """GIMP 3.0's per-user folder (``$GIMP3_DIRECTORY`` overrides it, as it does for GIMP)."""
    env = os.environ.get("GIMP3_DIRECTORY")
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "GIMP" / GIMP_VERSION_DIR
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "GIMP" / GIMP_VERSION_DIR
    return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "GIMP" / GIMP_VERSION_DIR


def default_plugin_dir() -> Path:
    return gimp_user_dir() / "plug-ins"


def plugin_source() -> Path:
    """The plug-in file shipped in the ``plugin_gimp`` package."""
    return Path(__file__).resolve().parent / "instructir.py"


def engine_path() -> str:
    """The folder that holds the ``engine`` package (put on PYTHONPATH when the plug-in starts the server)."""
    return str(Path(__file__).resolve().parent.parent)


def install(plugin_dir: str | os.PathLike | None = None, *, python: str | None = None, model: str = "default",
            device: str = "auto", state_file: str | os.PathLike | None = None,
            idle_exit: float = IDLE_EXIT_SECONDS) -> Path:
    """Install (or update) the plug-in; returns the installed plug-in file."""
    if idle_exit < 0:
        raise ValueError("idle_exit must be 0 (never) or a number of seconds")
    python = python or sys.executable
    target = Path(plugin_dir).expanduser() if plugin_dir else default_plugin_dir()
    folder = target / PLUGIN_NAME
    folder.mkdir(parents=True, exist_ok=True)
    src = plugin_source()
    if not src.is_file():
        raise FileNotFoundError(f"the plug-in source {src} is missing from this installation")
    state = Path(state_file) if state_file else default_state_file()
    record = {
        "python": python,
        "engine_path": engine_path(),
        "state_file": str(state),
        "log_file": str(state.with_name("server.log")),
        "model": model,
        "device": device,
        "idle_exit": float(idle_exit),
    }
    dest = folder / f"{PLUGIN_NAME}.py"
    _copy(src, dest, 0o755)
    _copy(Path(protocol.__file__), folder / PROTOCOL_MODULE, 0o644)
    atomic.write_text(folder / RECORD_FILE, json.dumps(record, indent=2) + "\n")
    return dest


def uninstall(plugin_dir: str | os.PathLike | None = None) -> list[Path]:
    """Remove the plug-in folder; returns what was removed (nothing when it was not installed)."""
    target = Path(plugin_dir).expanduser() if plugin_dir else default_plugin_dir()
    folder = target / PLUGIN_NAME
    if not (folder / f"{PLUGIN_NAME}.py").exists() and not (folder / RECORD_FILE).exists():
        return []
    shutil.rmtree(folder)
    return [folder]


def _copy(src: Path, dest: Path, mode: int) -> None:
    with atomic.atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    os.chmod(dest, mode)


def cmd_gimp_install(args) -> int:
    if args.uninstall:
        removed = uninstall(args.plugin_dir)
        print("removed " + ", ".join(map(str, removed)) if removed else "the GIMP plug-in was not installed")
        return 0
    path = install(args.plugin_dir, python=args.python, model=args.model, device=args.device,
                   idle_exit=args.idle_exit)
    print(f"installed {path}")
    if args.idle_exit:
        print(f"the engine server stops {args.idle_exit:g} s after the last filter run")
    print("restart GIMP, then use Filters > InstructIR...")
    return 0


def register_cli(subparsers) -> None:
    """Add ``gimp-install`` to the ``instructir`` command (an ``instructir.commands`` entry point)."""
    p = subparsers.add_parser("gimp-install", help="install the GIMP 3 plug-in (Filters > InstructIR...)")
    p.add_argument("--uninstall", action="store_true", help="remove the plug-in")
    p.add_argument("--plugin-dir", help="GIMP's plug-ins folder (default: the user's GIMP 3.0 plug-ins folder)")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs the engine server "
                                                            "(default: this one)")
    p.add_argument("--model", default="default", help="model the server loads by default")
    p.add_argument("--device", default="auto", help="device the server uses by default")
    p.add_argument("--idle-exit", type=_seconds, default=IDLE_EXIT_SECONDS, metavar="SECONDS",
                   help="stop the engine server this long after the last filter run, freeing its memory "
                        f"(default {IDLE_EXIT_SECONDS}; 0: keep it running)")
    p.set_defaults(func=cmd_gimp_install)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a number of seconds, 0 or more")
    return value
