"""Plain (4 KiB) pages for numpy's large arrays during analysis.

numpy asks the kernel for transparent huge pages on every large array (``madvise``). When no free
2 MiB page is at hand, the kernel compacts memory inside the page fault, and a process that grows
by a few hundred megabytes of fresh arrays (the atom passes of an LLM's groups: millions of
atoms) then stalls for seconds: the same analysis of an 80-layer Llama took 0.5 s or 2.5 s
depending on the machine's memory state. Plain pages cost more faults but never stall.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager


def _setter():
    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            f = getattr(importlib.import_module(name), "_set_madvise_hugepage", None)
        except ImportError:
            continue
        if f is not None:
            return f
    return None


@contextmanager
def plain_pages():
    """numpy's huge-page requests off inside the block, back to what they were after it (a numpy
    without the switch: nothing changes)."""
    f = _setter()
    was = f(False) if f is not None else None
    try:
        yield
    finally:
        if f is not None:
            f(was)
