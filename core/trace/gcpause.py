"""Pause Python's cyclic garbage collector around bulk work that creates many small objects.

A trace and its group solve allocate tens of thousands of short-lived objects (graph nodes,
label lists, numpy arrays); each allocation burst triggers collections, and a full collection
walks every object torch and the model hold: about 5% of a small model's analysis. Nothing
made during the pause is lost: reference counting still frees what is not cyclic, and the next
collection after it takes the rest.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def gc_paused():
    """Collector off inside the block, back on after it (even on error) if it was on before; a
    nested or concurrent pause leaves it to the outermost one to switch it back on."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
