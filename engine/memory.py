"""Process memory: keep freed buffers for reuse, and measure peak RSS.

glibc serves every allocation over its mmap threshold (at most 32 MB) with a
fresh ``mmap`` and unmaps it on free, so every layer of every tile pays page
faults and page zeroing for its activations (the original InstructIR code ran
2.6x-9x slower for it). Turning those mmaps off and raising the trim threshold
from inside the process makes glibc keep freed activations on its heap and
hand the same pages to the next layer and the next tile. The price is that
the heap does not shrink after a run; peak memory is bounded by the tile
planner, not by glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_tuned = False


def keep_freed_buffers(trim_threshold: int = 1 << 30) -> bool:
    """Ask glibc to reuse freed activation buffers instead of unmapping them (Linux only; idempotent)."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, ctypes.c_int(0)) == 1
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(trim_threshold, 2**31 - 1))) == 1
    except (OSError, AttributeError):
        return False
    _tuned = ok
    return ok


def default_allocator() -> None:
    """Undo ``keep_freed_buffers``: glibc's default mmap behaviour (benchmarks compare both)."""
    global _tuned
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_MAX, ctypes.c_int(65536))
        libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(128 * 1024))
        libc.malloc_trim(ctypes.c_size_t(0))
    except (OSError, AttributeError):
        return
    _tuned = False


def available_memory() -> int:
    """Memory the system can give us now, in bytes (``MemAvailable``; a 4 GB guess where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4_000_000_000


def current_rss() -> int:
    """Resident set size in bytes (Linux ``/proc``; 0 elsewhere)."""
    return _status_field("VmRSS")


def peak_rss() -> int:
    """Peak resident set size since start or the last ``reset_peak_rss`` (bytes)."""
    return _status_field("VmHWM")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter for this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _status_field(name: str) -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
