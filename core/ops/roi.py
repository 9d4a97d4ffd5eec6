"""Channel semantics of torchvision's region ops: ``roi_align``, ``roi_pool``, ``ps_roi_align``,
``ps_roi_pool`` (as called through ``torch.ops.torchvision.*``, which is what the trace sees).

``roi_align(input (N, C, H, W), rois (K, 5), spatial_scale, pooled_h, pooled_w, ...)`` pools every
channel separately over each region: output ``(K, C, pooled_h, pooled_w)``, channel ``c`` of the
output only ever reads channel ``c`` of the input. So input dim 1 maps 1:1 to output dim 1 and a
removed channel is exactly a removed output channel (``roi_pool`` likewise; its second output is
an integer argmax that carries no channels).

The position-sensitive variants split the input channels into ``C_out x pooled_h x pooled_w``:
output channel ``c`` at bin ``(i, j)`` reads input channel ``(c * pooled_h + i) * pooled_w + j``,
and ``C_out`` is computed from the input's channel count. So the ``pooled_h * pooled_w`` input
channels of one output channel go together (they are coupled) and the output carries one atom per
block.

What cannot shrink: channels on the batch dim of ``input`` (each roi picks its image by the index
in ``rois[:, 0]``) or on its spatial dims (they are sampled bilinearly at data-dependent places),
and anything labelled in ``rois`` (box coordinates are read as values); those are blocked.

``MultiScaleRoIAlign`` (the box, mask and keypoint poolers of Faster/Mask/Keypoint R-CNN) pools
each box from one FPN level and merges the levels into a fresh tensor with an item assignment
(``result[idx_in_level] = roi_align(level, ...)``). A trace does not see that assignment (it
returns nothing), so the pooled channels would not reach the heads. The module is therefore traced
as one op (``opsem.register_leaf_module``): the channel dims of the levels it reads are coupled
(output channel ``c`` holds channel ``c`` of whichever level a box came from) and map 1:1 to the
output's dim 1. Its output channel count follows its inputs (``x_filtered[0].shape[1]``), so the
pruned module needs no update. A subclass (traced through, as leaf modules match the exact class)
over several levels blocks its levels' channels with that reason instead.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops.poolers import MultiScaleRoIAlign

from core.ops.atoms import Labeling
from core.ops.registry import register_leaf_module, register_op

ROI_OPS = ("roi_align", "roi_pool")
PS_ROI_OPS = ("ps_roi_align", "ps_roi_pool")


def _pooled(call):
    """(pooled_h, pooled_w) of a ``torch.ops.torchvision`` call: ``(input, rois, spatial_scale,
    pooled_height, pooled_width, ...)``."""
    h = call.args[3] if len(call.args) > 3 else call.kwargs.get("pooled_height")
    w = call.args[4] if len(call.args) > 4 else call.kwargs.get("pooled_width")
    return int(h), int(w)


def _input_channels(ctx, call):
    """Atoms of the input's channel dim; blocks what is not on it and everything in ``rois``.
    None (inputs blocked) when the input is not batched (N, C, H, W) features."""
    x = call.args[0] if call.args else call.kwargs.get("input")
    rois = call.args[1] if len(call.args) > 1 else call.kwargs.get("rois")
    if x is None or x.ndim != 4 or not call.out_tensors or call.out_tensors[0].ndim != 4:
        ctx.block_inputs(call, "expected (N, C, H, W) features")
        return None
    for lab in ctx.labels(rois):
        ctx.table.block(lab.atoms, ctx.reason(call, "box coordinates are read as values"))
    for lab in ctx.labels(x):
        if lab.dims != (1,):
            ctx.table.block(lab.atoms, ctx.reason(
                call, "channels on the batch or spatial dims of pooled regions"))
    return ctx.dim_atoms(x, 1, call)


@register_op(*ROI_OPS)
def roi_pooling(ctx, call):
    x_c = _input_channels(ctx, call)
    if x_c is None:
        return
    if _in_multilevel_pooler(ctx, call):
        ctx.table.block(x_c, ctx.reason(
            call, "MultiScaleRoIAlign merges its levels with an item assignment "
                  "(result[idx] = ...) the trace cannot see"))
        return
    out = call.out_tensors[0]
    if (x_c >= 0).any() and out.shape[1] == x_c.size:
        ctx.set(out, [Labeling((1,), x_c)])


@register_op(*PS_ROI_OPS)
def ps_roi_pooling(ctx, call):
    x_c = _input_channels(ctx, call)
    if x_c is None:
        return
    ph, pw = _pooled(call)
    out = call.out_tensors[0]
    bins = ph * pw
    if x_c.size % bins or out.shape[1] != x_c.size // bins:
        ctx.table.block(x_c, ctx.reason(call, "channels are not a whole number of bin blocks"))
        return
    blocks = x_c.reshape(-1, bins)  # row c: the input channels of output channel c
    for j in range(1, bins):
        ctx.table.join(blocks[:, 0], blocks[:, j], ctx.reason(call, "position-sensitive bins"))
    rep = np.where((blocks >= 0).all(axis=1), blocks[:, 0], -1)
    if (rep >= 0).any():
        ctx.set(out, [Labeling((1,), rep)])


def _in_multilevel_pooler(ctx, call) -> bool:
    """The op runs inside a MultiScaleRoIAlign over several levels that is traced through."""
    root = getattr(ctx, "root", None)
    if root is None or not call.scope:
        return False
    try:
        mod = root.get_submodule(call.scope)
    except AttributeError:
        return False
    return isinstance(mod, MultiScaleRoIAlign) and len(mod.featmap_names) > 1


MULTISCALE_ROI_ALIGN = "multiscale_roi_align"


@register_op(MULTISCALE_ROI_ALIGN)
def multiscale_roi_align(ctx, call):
    """``MultiScaleRoIAlign(x: {name: (N, C, H, W)}, boxes: [(K_i, 4)], image_shapes)``, one op."""
    mod = call.func
    x = call.args[0] if call.args else {}
    boxes = call.args[1] if len(call.args) > 1 else []
    for t in boxes if isinstance(boxes, (list, tuple)) else [boxes]:
        for lab in ctx.labels(t) if isinstance(t, torch.Tensor) else []:
            ctx.table.block(lab.atoms, ctx.reason(call, "box coordinates are read as values"))
    levels = [v for k, v in x.items() if k in mod.featmap_names] if isinstance(x, dict) else []
    out = call.out_tensors[0]
    if not levels or any(v.ndim != 4 for v in levels) or out.ndim != 4:
        return ctx.block_inputs(call, "expected feature maps (N, C, H, W) by name")
    chans = []
    for v in levels:
        for lab in ctx.labels(v):
            if lab.dims != (1,):
                ctx.table.block(lab.atoms, ctx.reason(
                    call, "channels on the batch or spatial dims of pooled regions"))
        chans.append(ctx.dim_atoms(v, 1, call))
    if len({c.size for c in chans}) != 1 or out.shape[1] != chans[0].size:
        return ctx.block_inputs(call, "levels with different channel counts")
    acc = chans[0]
    fixed = acc < 0
    for c in chans[1:]:  # every box reads channel c of one level into output channel c
        ctx.table.join(acc, c, ctx.reason(call, "pyramid levels pooled into one tensor"))
        fixed |= c < 0
        acc = np.where(acc >= 0, acc, c)
    acc = np.where(fixed, -1, acc)
    if (acc >= 0).any():
        ctx.set(out, [Labeling((1,), acc)])


register_leaf_module(MultiScaleRoIAlign, MULTISCALE_ROI_ALIGN)
