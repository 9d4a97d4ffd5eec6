"""Helpers shared by op-semantics modules."""
from __future__ import annotations

import numpy as np

from core.ops.atoms import NO_ATOM, Labeling


def combine(ctx, vecs, e, call):
    if not vecs:
        return []
    table = ctx.table
    why = ctx.reason(call, "element-wise with a tensor that cannot be pruned")
    acc = first = vecs[0]
    if first.size and all(table.has_all_atoms(v) for v in vecs):  # (a slot's: an id check)
        for v in vecs[1:]:  # every position labelled: position i of each with the first's
            table.join(first, v, why)
        return [Labeling((e,), first)]
    fixed = acc < 0
    for v in vecs[1:]:
        table.join(acc, v, why)
        fixed |= v < 0
        acc = np.where(acc >= 0, acc, v)
    if first.size and not fixed.any():  # every position labelled: the first operand's array
        return [Labeling((e,), first)]  # itself (later joins of it with a slot's are cheap)
    # a position aligned with an operand that cannot shrink is fixed: its atoms are blocked by the
    # join above, and carrying them further would only repeat that
    acc = np.where(fixed, NO_ATOM, acc)
    return [Labeling((e,), acc)] if (acc >= 0).any() else []



def lead_labels(ctx, x, call, last):
    """Labelings of x on dims before ``last``, which a layer passes through unchanged."""
    keep = []
    for lab in ctx.labels(x):
        if all(d < last for d in lab.dims):
            keep.append(lab)
    return keep



def arg(call, i, name, default=None):
    if len(call.args) > i:
        return call.args[i]
    return call.kwargs.get(name, default)

