"""Apply one recipe to many photos.

Folders are walked recursively and mirrored under the output folder. A file
that fails is reported and the batch goes on; outputs that already exist are
skipped, so a stopped batch resumes where it left off. Decoding the next file
and encoding the previous one overlap with inference on the current one.
Outputs are written atomically: a cancelled batch leaves finished files and
no partial ones.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from engine.edit.recipes import Recipe
from engine.edit.session import EditSession
from engine.edit.upsampling import DEFAULT_MAX_RESULT_PIXELS
from engine.errors import StudioError
from engine.io.images import IMAGE_SUFFIXES, Picture, load_image, save_image
from engine.jobs import Cancelled, CancelToken

FORMAT_SUFFIX = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png", "tiff": ".tif", "tif": ".tif", "webp": ".webp",
                 "bmp": ".bmp"}


class BatchStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"  # the output already existed (a resumed batch)
    UNCHANGED = "unchanged"  # batch auto: nothing worth fixing, nothing written
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (BatchStatus.DONE, BatchStatus.SKIPPED, BatchStatus.UNCHANGED, BatchStatus.FAILED)


@dataclass
class BatchItem:
    source: Path
    output: Path
    status: BatchStatus = BatchStatus.PENDING
    error: str = ""
    seconds: float = 0.0
    note: str = ""  # batch auto: what the diagnosis found and what was done


@dataclass
class BatchReport:
    items: list[BatchItem] = field(default_factory=list)
    cancelled: bool = False

    def count(self, status: BatchStatus) -> int:
        return sum(1 for i in self.items if i.status == status)

    @property
    def failed(self) -> list[BatchItem]:
        return [i for i in self.items if i.status is BatchStatus.FAILED]

    def summary(self) -> str:
        parts = [f"{self.count(BatchStatus.DONE)} restored",
                 f"{self.count(BatchStatus.SKIPPED)} skipped (already done)",
                 f"{self.count(BatchStatus.FAILED)} failed"]
        if self.count(BatchStatus.UNCHANGED):
            parts.insert(1, f"{self.count(BatchStatus.UNCHANGED)} left unchanged (nothing worth fixing)")
        if self.cancelled:
            left = self.count(BatchStatus.PENDING) + self.count(BatchStatus.CANCELLED)
            parts.append(f"cancelled with {left} not processed")
        return ", ".join(parts)


#: ``on_event(item, index, total, fraction_of_this_file)``
BatchCallback = Callable[[BatchItem, int, int, float], None]
#: ``recipe_for(picture) -> (recipe or None to leave the photo unchanged, note for the report)`` (batch auto).
RecipeFor = Callable[[Picture], "tuple[Recipe | None, str]"]


def collect_inputs(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """(source, relative output path) for files and, recursively, folders.

    A folder's files keep their sub-folders under the folder's own name, so two
    input folders never collide in the output.
    """
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                    found.append((f, Path(p.resolve().name) / f.relative_to(p)))
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return found


def plan_outputs(inputs: list[tuple[Path, Path]], out_dir: Path, fmt: str | None = None) -> list[BatchItem]:
    items = []
    for src, rel in inputs:
        suffix = FORMAT_SUFFIX[fmt.lower()] if fmt else rel.suffix
        items.append(BatchItem(src, out_dir / rel.with_suffix(suffix)))
    return items


def run_batch(items: list[BatchItem], recipe: Recipe | None, restorer, *, fmt: str | None = None,
              overwrite: bool = False, quality: int = 95, on_event: BatchCallback | None = None,
              cancel: CancelToken | None = None, max_result_pixels: int = DEFAULT_MAX_RESULT_PIXELS,
              recipe_for: RecipeFor | None = None) -> BatchReport:
    """Process ``items`` in order; never raises for a bad file, only records it.

    ``recipe_for`` (instead of ``recipe``) gives each photo its own recipe, or None to leave it
    unchanged (``engine.diagnose.auto.auto_recipe``: batch ``auto``); its note goes into the item.
    """
    report = BatchReport(items)
    todo = []
    for item in items:
        if item.output.exists() and not overwrite:
            item.status = BatchStatus.SKIPPED
            _emit(on_event, item, items, 1.0)
        else:
            todo.append(item)

    def load(item: BatchItem) -> Picture:
        return load_image(item.source)

    def save(item: BatchItem, picture: Picture) -> None:
        item.output.parent.mkdir(parents=True, exist_ok=True)
        save_image(picture, item.output, format=fmt, overwrite=overwrite, quality=quality)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="batch-io") as pool:
        pending_load: Future | None = pool.submit(load, todo[0]) if todo else None
        pending_saves: list[tuple[BatchItem, Future]] = []
        for n, item in enumerate(todo):
            if cancel is not None and cancel.cancelled:
                report.cancelled = True
                break
            future, pending_load = pending_load, (pool.submit(load, todo[n + 1]) if n + 1 < len(todo) else None)
            item.status = BatchStatus.RUNNING
            _emit(on_event, item, items, 0.0)
            t = time.perf_counter()
            try:
                picture = future.result()
                item_recipe = recipe
                if recipe_for is not None:
                    item_recipe, item.note = recipe_for(picture)
                if item_recipe is None:
                    item.status = BatchStatus.UNCHANGED
                    _emit(on_event, item, items, 1.0)
                else:
                    session = EditSession.replay(item_recipe, picture.rgb, restorer, cancel=cancel,
                                                 max_result_pixels=max_result_pixels,
                                                 progress=lambda d, o, it=item: _emit(on_event, it, items,
                                                                                      d / max(o, 1)))
                    pending_saves.append((item, pool.submit(save, item, picture.with_rgb(session.result()))))
            except Cancelled:
                item.status = BatchStatus.CANCELLED
                report.cancelled = True
                _emit(on_event, item, items, 0.0)
                break
            except (StudioError, OSError, ValueError, RuntimeError) as exc:
                item.status, item.error = BatchStatus.FAILED, str(exc)
                _emit(on_event, item, items, 1.0)
            item.seconds = time.perf_counter() - t
            _finish_saves(pending_saves, on_event, items, wait=False)
        if pending_load is not None:
            pending_load.cancel()
        _finish_saves(pending_saves, on_event, items, wait=True)
    return report


def _finish_saves(pending: list[tuple[BatchItem, Future]], on_event, items, *, wait: bool) -> None:
    for entry in list(pending):
        item, future = entry
        if not wait and not future.done():
            continue
        pending.remove(entry)
        try:
            future.result()
            item.status = BatchStatus.DONE
        except (StudioError, OSError) as exc:
            item.status, item.error = BatchStatus.FAILED, str(exc)
        _emit(on_event, item, items, 1.0)


def _emit(on_event: BatchCallback | None, item: BatchItem, items: list[BatchItem], fraction: float) -> None:
    if on_event is not None:
        on_event(item, items.index(item), len(items), fraction)
