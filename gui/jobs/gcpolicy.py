"""Keep Python's garbage collector off the objects of the loaded model.

A loaded, analysed model is millions of long-lived objects (modules, parameters, fx nodes, the
dependency graph, layout, scene data). CPython's cyclic collector walks all of them on every
full collection, which a load or a prune triggers by allocating; with a large model one walk
held the GIL, and so the GUI thread, for seconds. The model stays until the next one replaces
it, so after a load the live objects are moved out of the collector's reach
(:func:`gc.freeze`, CPython's documented tool for exactly this), and when a model is replaced
they are handed back (:func:`gc.unfreeze`) and collected once, so the old model's cycles are
still freed: nothing frozen outlives the model it belongs to.
"""
from __future__ import annotations

import gc
import time

# Young collections: a load allocates millions of short-lived objects; collecting the youngest
# generation every 700 allocations is pure overhead there (tensors and modules are freed by
# reference counting, not the cycle collector).
YOUNG_THRESHOLD = 20_000


def configure():
    """Once at start-up: fewer young collections (the older generations keep their ratios)."""
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, gc.get_threshold()[0]), g1, g2)


def settle() -> float:
    """A model has just replaced the previous one (whose references are already dropped):
    give the frozen objects back, collect once (the old model's cycles go), then freeze what
    is alive now. Returns the seconds it took."""
    t = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - t


def release() -> float:
    """No model stays (the window closes): everything frozen is collectable again."""
    t = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    return time.perf_counter() - t
