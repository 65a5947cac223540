"""InstructIR Studio desktop app (PySide6): the UI talks to the engine only through jobs and signals."""
