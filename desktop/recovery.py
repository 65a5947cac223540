"""Crash recovery: each running window autosaves its session, and the next start offers what a crash left.

Every window owns ``<id>.irsession`` plus a QLockFile ``<id>.lock`` in the
recovery folder. A clean exit deletes both. At start, an autosave whose lock
can be taken (its owner is gone) is an orphan from a crash, offered for
restoring. Autosaves are written on a pool thread, debounced, from a snapshot
taken on the UI thread, never while a restoration runs (writing a large
session takes CPU the restoration needs) and at a lower thread priority.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, QTimer

from .document import SESSION_SUFFIX, Document, save_session_file
from .workers import run_in_pool

AUTOSAVE_DELAY_MS = 2500


@dataclass
class Orphan:
    """An autosave left by a window that did not exit cleanly."""

    path: Path
    source: str
    steps: int
    saved: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.saved))
        steps = f"{self.steps} step{'' if self.steps == 1 else 's'}"
        return f"{Path(self.source).name or 'an unsaved photo'} with {steps}, autosaved {when}"


class RecoveryStore(QObject):
    """Autosaves one document and finds orphans of crashed runs."""

    def __init__(self, folder: Path, document: Document, parent: QObject | None = None,
                 delay_ms: int = AUTOSAVE_DELAY_MS, busy=None) -> None:
        """``busy()``: whether a restoration runs now (the autosave then waits for it to end)."""
        super().__init__(parent)
        self.busy = busy or (lambda: False)
        self.folder = Path(folder)
        self.document = document
        self.id = uuid.uuid4().hex[:12]
        self.path = self.folder / f"{self.id}{SESSION_SUFFIX}"
        self._lock: QLockFile | None = None
        self._saving = False
        self._again = False
        self.enabled = True
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.save_now)
        document.changed.connect(self.schedule)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = QLockFile(str(self.folder / f"{self.id}.lock"))
        self._lock.setStaleLockTime(0)
        self._lock.tryLock(0)

    def schedule(self) -> None:
        if self.enabled and self.document.is_open:
            self.timer.start()

    def save_now(self) -> None:
        """Snapshot now (UI thread), write on a pool thread; nothing to keep when there are no edits."""
        if not self.enabled:
            return
        if not self.document.is_open or not self.document.steps:
            self._remove_autosave()
            return
        if self._saving:
            self._again = True
            return
        if self.busy():
            self.timer.start()  # after the running restoration
            return
        self._saving = True
        session, picture = self.document.session.clone(), self.document.picture
        meta = {"source": str(self.document.path or ""), "steps": len(session.steps), "saved": time.time()}
        path, info = self.path, self.path.with_suffix(".json")

        def work(progress, cancel):
            self.folder.mkdir(parents=True, exist_ok=True)
            save_session_file(path, session, picture)
            info.write_text(json.dumps(meta), encoding="utf-8")
            return path

        run_in_pool(work, on_finished=lambda _: self._saved(), on_failed=lambda _: self._saved(), receiver=self,
                    background=True)

    def _saved(self) -> None:
        self._saving = False
        if self._again:
            self._again = False
            self.save_now()

    def _remove_autosave(self) -> None:
        for p in (self.path, self.path.with_suffix(".json")):
            p.unlink(missing_ok=True)

    def stop(self) -> None:
        """Clean exit: the autosave is not needed any more."""
        self.enabled = False
        self.timer.stop()
        self._remove_autosave()
        if self._lock is not None:
            self._lock.unlock()
            self._lock = None
        (self.folder / f"{self.id}.lock").unlink(missing_ok=True)

    # --- orphans ----------------------------------------------------------------

    def orphans(self) -> list[Orphan]:
        """Autosaves whose owner is gone (its lock could be taken), newest first."""
        found = []
        for path in sorted(self.folder.glob(f"*{SESSION_SUFFIX}")) if self.folder.is_dir() else []:
            if path == self.path:
                continue
            lock = QLockFile(str(path.with_suffix(".lock")))
            lock.setStaleLockTime(0)
            if not lock.tryLock(0):
                continue  # another window is alive and owns it
            lock.unlock()
            try:
                meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
            found.append(Orphan(path, str(meta.get("source", "")), int(meta.get("steps", 0)),
                                float(meta.get("saved", path.stat().st_mtime))))
        return sorted(found, key=lambda o: o.saved, reverse=True)

    @staticmethod
    def discard(orphan: Orphan) -> None:
        for p in (orphan.path, orphan.path.with_suffix(".json"), orphan.path.with_suffix(".lock")):
            p.unlink(missing_ok=True)
