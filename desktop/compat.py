"""Work-arounds for third-party bugs, applied once when ``desktop`` is imported.

PySide6/shiboken6 6.12.0 on CPython < 3.12 drops a reference to ``None`` on
every call of a void C++ method and to ``True`` on every signal emit (on 3.12+
those objects are immortal, so the bug is invisible there). After some
thousands of calls CPython aborts with "none_dealloc: deallocating None".
6.11.3 is not affected. Until the dependency is pinned, we give the three
singletons a reference count so large that the leak can never reach zero,
which is what CPython 3.12 does for them anyway.
"""

from __future__ import annotations

import sys

IMMORTAL_BOOST = 1 << 40


def _affected() -> bool:
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython" or hasattr(sys, "gettotalrefcount"):
        return False  # immortal singletons, another interpreter, or a debug build (different object layout)
    try:
        import shiboken6
    except ImportError:
        return False
    version = tuple(getattr(shiboken6, "__version_info__", (0, 0))[:2])
    return version >= (6, 12)


def protect_singletons() -> bool:
    """Make None/True/False effectively immortal where the buggy binding would free them; True if applied."""
    if not _affected():
        return False
    import ctypes

    for obj in (None, True, False):
        ctypes.c_ssize_t.from_address(id(obj)).value += IMMORTAL_BOOST
    return True


APPLIED = protect_singletons()
