"""``x[idx] = y``: an in-place write. ``Tensor.__setitem__`` returns None, so the tracer records it
with ``x`` as the output (see ``_Tracer.__torch_function__``) and this handler says how channels
flow into ``x``."""
from __future__ import annotations

import dataclasses

import torch
from torch.utils._pytree import tree_flatten  # noqa: PLC2701 (torch's pytree: no public alias)

from core.ops.movement import data_movement
from core.ops.registry import register_op
from core.ops.replay import replay


def _setitem_replay(x, y, idx=None):
    x = x.clone()
    x[idx] = y
    return x


@register_op("setitem")
def setitem(ctx, call):
    """Positions written from ``y`` carry ``y``'s channels, so channel c of ``x`` and of ``y``
    meet in one dim and are joined. An index that picks fixed channels of ``x`` blocks them (as
    ``x[idx]`` would); a constant written over whole channels is harmless, a constant *tensor*
    aligned with channels blocks them (its width cannot shrink)."""
    x, idx = call.args[0], call.args[1]
    y = call.args[2] if len(call.args) > 2 else call.kwargs.get("value")
    if not ctx.labels(x) and not (isinstance(y, torch.Tensor) and ctx.labels(y)):
        return
    idx_leaves = [t for t in tree_flatten(idx)[0] if isinstance(t, torch.Tensor)]
    if any(ctx.labels(t) for t in idx_leaves):
        ctx.block_inputs(call, "indices computed from pruned channels")
        return
    # the written region is read like x[idx]: fixed channel positions or slice bounds block
    if ctx.labels(x):
        with torch.no_grad():
            region = x[idx]
        data_movement(ctx, dataclasses.replace(
            call, name="getitem", func=torch.Tensor.__getitem__, args=(x, idx), kwargs={},
            in_tensors=[x, *idx_leaves], out_tensors=[region]))
    if not isinstance(y, torch.Tensor) or (y.numel() == 1 and not ctx.labels(y)):
        y = 0.0  # a constant written over positions: it carries no channel
    results = replay(_setitem_replay, (x, y), {"idx": idx}, ctx.labels, ctx.table,
                     ctx.reason(call, ""))
    if results:
        ctx.set(x, results[0])
