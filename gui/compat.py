"""Work around a PySide6 refcount bug on Python < 3.12.

PySide6 6.12 (at least) drops one reference to ``None`` on every call of a C++ method returning
void (QPainter.setPen, QPointF.setX, ...). On Python 3.12+ None is immortal and nothing happens;
on 3.11 None's refcount (~5k at start) reaches zero after a few thousand such calls and the
interpreter aborts ("none_dealloc: deallocating None") - painting a large graph does that in
one frame. When the leak is detected, None's refcount is raised far out of reach, which is what
3.12 does anyway (None is never freed).
"""
from __future__ import annotations

import ctypes
import sys


def guard_none_refcount() -> bool:
    """Returns True when the leak was found and neutralised."""
    if sys.version_info >= (3, 12):
        return False
    from PySide6.QtCore import QPointF
    p = QPointF()
    before = sys.getrefcount(None)
    for _ in range(64):
        p.setX(0.0)
    if before - sys.getrefcount(None) < 32:
        return False
    ctypes.c_ssize_t.from_address(id(None)).value += 1 << 40  # ob_refcnt is a PyObject's first field
    return True


LEAK_GUARDED = guard_none_refcount()
