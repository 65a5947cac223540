"""The one way to write a file: to a hidden temp file beside it, fsynced, then moved into place.

A crash, a full disk or Ctrl+C never leaves a half-written file or damages the
file being replaced, and without ``overwrite`` an existing file is never
clobbered (a hard link makes "create only if absent" atomic where the file
system has them).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from engine.errors import StudioError, WriteError

_umask = os.umask(0)
os.umask(_umask)


class OutputExistsError(StudioError, FileExistsError):
    """The output file already exists and overwriting was not asked for."""

    code = "output-exists"


def describe(path: Path) -> str:
    return f"'{path.name}'" if path.name else f"'{path}'"


def write_error(path: Path, exc: OSError) -> WriteError:
    """A message the user can act on for an OSError met while writing ``path``."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return WriteError(f"Not enough disk space to write {describe(path)}. Free some space and try again; "
                          "nothing was written.")
    if exc.errno == errno.EFBIG:
        return WriteError(f"{describe(path)} is too large for this drive's file system; choose another drive "
                          "or format.")
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return WriteError(f"No permission to write {describe(path)} (the folder is read-only).")
    return WriteError(f"Could not write {describe(path)}: {exc.strerror or exc}.")


def _exists_error(path: Path) -> OutputExistsError:
    return OutputExistsError(f"{describe(path)} already exists; not overwriting it. Choose another name.")


def _commit(tmp: str, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError:  # no hard links (FAT/exFAT cards, some network shares)
        if os.path.lexists(path):
            raise _exists_error(path) from None
        os.replace(tmp, path)
        return
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); best effort, harmless where unsupported."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True, mode: int | None = None) -> Iterator[Path]:
    """A temp path beside ``path`` to write to (by any means); on success it replaces ``path``.

    On an exception the temp file is removed and ``path`` is untouched. The new
    file keeps the mode of the file it replaces, else ``mode``, else the umask
    default. OSErrors become ``WriteError`` with a message for the user.
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise _exists_error(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from exc
    done = False
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        try:
            keep = os.stat(path).st_mode & 0o7777 if overwrite else None
        except OSError:
            keep = None
        os.chmod(tmp, keep if keep is not None else (mode if mode is not None else 0o666 & ~_umask))
        _commit(tmp, path, overwrite)
        done = True
    except StudioError:
        raise
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    fsync_dir(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (tests replace this to simulate a full disk)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view[: 1 << 24])
        view = view[written:]


def write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite, mode=mode) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
    return path


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True, mode: int | None = None) -> Path:
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite, mode=mode)
