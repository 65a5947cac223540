"""InstructIR Studio desktop app (PySide6): the UI talks to the engine only through jobs and signals."""

from . import compat  # noqa: F401 - must run before any Qt call (see compat's docstring)
