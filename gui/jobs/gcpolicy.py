"""Keep Python's garbage collector off the objects of the loaded model.

A loaded, analysed model is millions of long-lived objects (modules, parameters, fx nodes, the
dependency graph, layout, scene data). CPython's cyclic collector walks all of them on every
full collection, which a load or a prune triggers by allocating; with a large model one walk
held the GIL, and so the GUI thread, for seconds. The model stays until the next one replaces
it, so after a load the live objects are moved out of the collector's reach
(:func:`gc.freeze`, CPython's documented tool for exactly this). When a model is replaced and
something of it is kept by a cycle, they are handed back (:func:`gc.unfreeze`) and collected
once, so nothing frozen outlives the model it belongs to.

A full collection walks every live object: 0.25 s with ResNet-50 loaded, 0.47 s with a
20k-node graph, all of it a frozen window. It is only needed when something of the old model is
kept by a reference cycle. A replaced model, graph and session are normally freed by reference
counting alone (networkx's cached edge views, which point back at their graph, are dropped
first), so the collection runs only when one of them is still alive when the new model is on
screen, and after every :data:`FULL_EVERY` replacements (for the small cycles loads leave).
"""
from __future__ import annotations

import gc
import time
import weakref

# Young collections: a load allocates millions of short-lived objects; collecting the youngest
# generation every 700 allocations is pure overhead there (tensors and modules are freed by
# reference counting, not the cycle collector).
YOUNG_THRESHOLD = 20_000
# replacements between full collections; the frozen set's size would tell when it regrew, but
# gc.get_freeze_count() walks it (76 ms with a 20k-node graph loaded)
FULL_EVERY = 8

_watched: list = []  # weak references to what the last replacement must free
_since_full = 0  # settles since the last full collection


def configure():
    """Once at start-up: fewer young collections (the older generations keep their ratios)."""
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, gc.get_threshold()[0]), g1, g2)


def loaded() -> None:
    """On the load's worker, the collector still paused (the load runs under
    ``core.trace.gcpause.gc_paused``): freeze the new model's objects now. Otherwise the
    collector's first run after the pause finds them all pending and walks every live object
    (0.47 s with a 20k-node graph), on whichever thread allocates next: often the window's."""
    gc.freeze()


def replacing(*objs) -> None:
    """``objs`` (the replaced session, its model and graph) are about to lose their last
    references: watch that they go, and drop networkx's cached views that make a graph a cycle."""
    for o in objs:
        if o is not None:
            _drop_views(o)
            _watched.append(weakref.ref(o))


def _drop_views(o) -> None:
    cached = getattr(o, "__dict__", {})
    for k in [k for k, v in cached.items() if getattr(v, "_graph", None) is o]:
        del cached[k]  # G.edges / G.degree hold G: rebuilt on the next access


def pending() -> bool:
    """Something a replacement named is still alive: a job holds it, or a cycle does (a job
    that used the old graph may have cached its views again: dropped once more first)."""
    for r in _watched:
        o = r()
        if o is not None:
            _drop_views(o)
        del o
    _watched[:] = [r for r in _watched if r() is not None]
    return bool(_watched)


def settle(idle: bool = True) -> float:
    """A model has just replaced the previous one (whose references are already dropped): freeze
    what is alive now. When something :func:`replacing` named is still alive (a cycle, or a job
    still holding it), or every :data:`FULL_EVERY` settles, first give the frozen objects back and collect
    once - unless jobs are running (``idle`` False): one may be what holds it, and walking every
    object would free nothing; the caller tries again once they end (:func:`pending`). Returns
    the seconds it took."""
    global _since_full
    t = time.perf_counter()
    if (pending() and idle) or _since_full >= FULL_EVERY:
        gc.unfreeze()
        gc.collect()
        _watched[:] = [r for r in _watched if r() is not None]  # still held by a running job
        _since_full = 0
    else:
        _since_full += 1
    gc.freeze()
    return time.perf_counter() - t


def release() -> float:
    """No model stays (the window closes): everything frozen is collectable again."""
    t = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    return time.perf_counter() - t
