"""Streamed pruning of a Hugging Face checkpoint larger than memory, on the worker thread: the
GUI's entry to :func:`core.io.hf.stream.stream_prune_hf` (the same function as
``prune hf:DIR --stream``). The window holds the structure only (a meta-device session); the
weights are read tensor by tensor from the shards and the pruned shards are written one by one
into a new folder, with progress per shard and Cancel (nothing is left behind)."""
from __future__ import annotations

import os


def streamable_dir(session) -> str | None:
    """The checkpoint folder of a structure-only (meta) ``hf:`` session whose weights are
    safetensors, i.e. what streamed pruning can read; None otherwise."""
    spec = getattr(session, "spec", "") or ""
    if session is None or not getattr(session, "meta", False) or not spec.startswith("hf:"):
        return None
    from core.io.hf.shards import INDEX, SINGLE
    from core.io.hf.source import hf_local_dir
    d = hf_local_dir(spec[3:])
    if d is None or not any(os.path.isfile(os.path.join(d, f)) for f in (INDEX, SINGLE)):
        return None
    return d


def stream_prune(src: str, out: str, mlp_ratio: float, kv_ratio: float, importance: str = "l2",
                 trust=None, force: bool = False, progress=None, should_stop=None) -> dict:
    """Prune ``src`` into the folder ``out``; returns a summary (sizes before/after, how to
    reload it) for the log."""
    from core.io.hf.stream import StreamSettings, stream_prune_hf
    settings = StreamSettings(mlp_ratio, kv_ratio, importance)
    sp = stream_prune_hf(src, out, settings, trust=trust, force=force, progress=progress,
                         should_stop=should_stop)
    before, after = sp.params()
    return {"out": out, "params": (before, after), "sizes": sp.widths(), "uniform": sp.uniform,
            "shards": len(sp.shards)}
