"""Channel semantics of the parameterised layer ops (conv, norms, embedding, attention).

Layers are handled at the functional level (``F.conv2d(x, weight, ...)``), so a module such as
``nn.Conv2d`` and hand-written code calling ``F.conv2d`` with its own ``nn.Parameter`` are the same
thing to the engine. Parameters become *slots* whose atoms are coupled here.
"""
from __future__ import annotations

import numpy as np

from core.ops.atoms import Labeling
import torch

from core.ops.common import arg, combine, lead_labels
from core.ops.registry import register_op



def _channel_dim(x, weight_ndim):
    # batched input has one more dim than the unbatched (C, *spatial) layout
    return 1 if x.ndim == weight_ndim else 0


@register_op("conv1d", "conv2d", "conv3d")
def conv(ctx, call):
    x, w, b = call.args[0], arg(call, 1, "weight"), arg(call, 2, "bias")
    groups = int(arg(call, 6, "groups", 1))
    out = call.out_tensors[0]
    cd = _channel_dim(x, w.ndim)
    _block_spatial(ctx, call, x, cd)
    w_out = ctx.dim_atoms(w, 0, call, role="out")
    x_in = ctx.dim_atoms(x, cd, call)
    if groups == 1:
        ctx.table.join(x_in, ctx.dim_atoms(w, 1, call, role="in"),
                       ctx.reason(call, "input channels that cannot be pruned"))
    else:
        _couple_groups(ctx, call, x_in, w_out, groups)
    if b is not None:
        ctx.table.join(w_out, ctx.dim_atoms(b, 0, call, role="out"), ctx.reason(call, "bias"))
    labs = [lab for lab in lead_labels(ctx, x, call, cd)]
    labs.append(Labeling((cd,), w_out))
    ctx.set(out, labs)


@register_op("conv_tbc")
def conv_tbc(ctx, call):
    """1-D conv in (time, batch, channel) layout with weight (kernel, in, out): not conv1d's."""
    x, w, b = call.args[0], arg(call, 1, "weight"), arg(call, 2, "bias")
    for lab in ctx.labels(x):
        if 0 in lab.dims:
            ctx.table.block(lab.atoms, ctx.reason(call, "channels on the time dimension"))
    w_out = ctx.dim_atoms(w, 2, call, role="out")
    ctx.table.join(ctx.dim_atoms(x, 2, call), ctx.dim_atoms(w, 1, call, role="in"),
                   ctx.reason(call, "input channels that cannot be pruned"))
    if b is not None:
        ctx.table.join(w_out, ctx.dim_atoms(b, 0, call, role="out"), ctx.reason(call, "bias"))
    labs = [lab for lab in ctx.labels(x) if lab.dims == (1,)]
    ctx.set(call.out_tensors[0], labs + [Labeling((2,), w_out)])


def _couple_groups(ctx, call, x_in, out_atoms, groups):
    """Grouped/depthwise conv: input group i only feeds output group i. Whole groups are removed
    (their inputs and outputs together), which keeps every group the same size."""
    if not ctx.table.has_all_atoms(x_in):
        ctx.table.block(out_atoms, ctx.reason(call, "grouped conv on channels that cannot be pruned"))
        ctx.table.block(x_in, ctx.reason(call, "grouped conv"))
        return
    if groups == x_in.size == out_atoms.size:  # depthwise: input i with output i (most often two
        ctx.table.join(x_in, out_atoms, "depthwise conv")  # whole slots: one pair, no rows)
        return
    ctx.table.join_rows(np.concatenate([x_in.reshape(groups, -1), out_atoms.reshape(groups, -1)],
                                       axis=1))


def _block_spatial(ctx, call, x, cd):
    for lab in ctx.labels(x):
        if any(d > cd for d in lab.dims):
            ctx.table.block(lab.atoms, ctx.reason(call, "channels on a spatial dimension"))


@register_op("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def conv_transpose(ctx, call):
    x, w, b = call.args[0], arg(call, 1, "weight"), arg(call, 2, "bias")
    groups = int(arg(call, 6, "groups", 1))
    out = call.out_tensors[0]
    cd = _channel_dim(x, w.ndim)
    _block_spatial(ctx, call, x, cd)
    x_in = ctx.dim_atoms(x, cd, call)
    if groups == 1:
        w_out = ctx.dim_atoms(w, 1, call, role="out")
        ctx.table.join(x_in, ctx.dim_atoms(w, 0, call, role="in"),
                       ctx.reason(call, "input channels that cannot be pruned"))
        if b is not None:
            ctx.table.join(w_out, ctx.dim_atoms(b, 0, call, role="out"), ctx.reason(call, "bias"))
        labs = lead_labels(ctx, x, call, cd) + [Labeling((cd,), w_out)]
    else:
        # weight is (in, out/groups, k): weight dim 1 is shared by all groups, so only whole groups
        # go (input group i with output group i). Output channels of group i are labelled with an
        # atom of input group i: they are all removed together anyway.
        w_in = ctx.dim_atoms(w, 0, call, role="pass")
        ctx.table.join(x_in, w_in, ctx.reason(call, "input channels that cannot be pruned"))
        per_out = w.shape[1]
        groups_in = w_in.reshape(groups, -1)
        ctx.table.join_rows(groups_in)
        out_atoms = np.repeat(groups_in[:, 0], per_out)
        if (w_in < 0).any():
            out_atoms = np.full(out_atoms.shape, -1, dtype=np.int64)
        if b is not None:
            ctx.table.join(out_atoms, ctx.dim_atoms(b, 0, call, role="pass"), ctx.reason(call, "bias"))
        labs = lead_labels(ctx, x, call, cd) + [Labeling((cd,), out_atoms)]
    ctx.set(out, labs)


def per_channel(ctx, call, x, cd, tensors, role="pass"):
    """Params/buffers of shape (C,) follow the input's channel dim ``cd`` (BatchNorm & co)."""
    x_c = ctx.dim_atoms(x, cd, call)
    c, why, join, dim_atoms = x.shape[cd], None, ctx.table.join, ctx.dim_atoms
    for t in tensors:
        if t is not None and hasattr(t, "shape") and t.ndim == 1 and t.shape[0] == c:
            if why is None:  # (one text for all of them: made once)
                why = ctx.reason(call, "per-channel parameters on channels that cannot be pruned")
            join(x_c, dim_atoms(t, 0, call, role=role), why)
    return x_c


@register_op("batch_norm", "instance_norm")
def batch_norm(ctx, call):
    x = call.args[0]
    names = ("running_mean", "running_var", "weight", "bias") if call.name == "batch_norm" else \
        ("running_mean", "running_var", "weight", "bias")
    idx = (1, 2, 3, 4)
    tensors = [arg(call, i, n) for i, n in zip(idx, names)]
    cd = 1 if x.ndim > 1 else 0
    per_channel(ctx, call, x, cd, tensors)
    ctx.set(call.out_tensors[0], ctx.labels(x))


@register_op("group_norm")
def group_norm(ctx, call):
    x = call.args[0]
    g = int(arg(call, 1, "num_groups"))
    x_c = per_channel(ctx, call, x, 1, [arg(call, 2, "weight"), arg(call, 3, "bias")])
    if arg(call, 2, "weight") is None and call.scope:  # num_channels is only in the module
        ctx.table.join(x_c, ctx.table.virtual_slot(call.scope, "num_channels", x.shape[1]).atoms,
                       ctx.reason(call, "channels that cannot be pruned"))
    if (x_c >= 0).any():
        rows = x_c.reshape(g, -1)  # statistics are per group: remove whole groups
        mixed = (rows < 0).any(axis=1)
        if mixed.any():
            ctx.table.block(rows[mixed], ctx.reason(call, "norm group mixes prunable and fixed channels"))
        ctx.table.join_rows(rows)
    ctx.set(call.out_tensors[0], ctx.labels(x))


@register_op("layer_norm", "rms_norm")
def layer_norm(ctx, call):
    x = call.args[0]
    shape = tuple(arg(call, 1, "normalized_shape"))
    w = arg(call, 2, "weight")
    b = arg(call, 3, "bias") if call.name == "layer_norm" else None
    first = x.ndim - len(shape)
    for k in range(len(shape)):
        d = first + k
        x_c = ctx.dim_atoms(x, d, call)
        for t in (w, b):
            if t is not None:
                ctx.table.join(x_c, ctx.dim_atoms(t, k, call, role="pass"),
                               ctx.reason(call, "normalised dims that cannot be pruned"))
        if w is None and call.scope:  # normalized_shape lives only in the module
            ctx.table.join(x_c, ctx.table.virtual_slot(call.scope, f"normalized_shape.{k}",
                                                       x.shape[d]).atoms,
                           ctx.reason(call, "normalised dims that cannot be pruned"))
        if (x_c >= 0).any():
            ctx.table.mark_approx(x_c, ctx.reason(
                call, "normalisation statistics are computed over the pruned channels"))
    ctx.set(call.out_tensors[0], ctx.labels(x))


@register_op("prelu")
def prelu(ctx, call):
    x, w = call.args[0], arg(call, 1, "weight")
    if w.numel() > 1:
        per_channel(ctx, call, x, 1 if x.ndim > 1 else 0, [w])
    ctx.set(call.out_tensors[0], ctx.labels(x))


@register_op("embedding")
def embedding(ctx, call):
    idx, w = call.args[0], arg(call, 1, "weight")
    out = call.out_tensors[0]
    w_out = ctx.dim_atoms(w, 1, call, role="out")
    if ctx.labels(idx):
        ctx.block_inputs(call, "indices computed from pruned channels")
    ctx.set(out, [Labeling((out.ndim - 1,), w_out)])


@register_op("scaled_dot_product_attention")
def sdpa(ctx, call):
    q, k, v = call.args[:3]
    mask = call.args[3] if len(call.args) > 3 else call.kwargs.get("attn_mask")
    out = call.out_tensors[0]
    nd = out.ndim
    # batch dims (batch, heads): aligned across q, k, v and a mask, with broadcasting
    labs = sdpa_batch_dims(ctx, call, (q, k, v, mask), out, nd - 2)
    sdpa_features(ctx, call, q, k, v, nd, labs)
    ctx.set(out, labs)


def sdpa_batch_dims(ctx, call, tensors, out, n):
    """Labelings of the first ``n`` output dims, aligned across ``tensors`` with broadcasting."""

    nd = out.ndim
    labs = []
    for e in range(n):
        vecs = []
        for t in tensors:
            if not isinstance(t, torch.Tensor):
                continue
            d = e - (nd - t.ndim)
            if d < 0 or (t.shape[d] == 1 and out.shape[e] != 1):
                continue
            vecs.append(ctx.dim_atoms(t, d, call))
        labs.extend(combine(ctx, vecs, e, call))
    return labs


def sdpa_features(ctx, call, q, k, v, nd, labs):
    """The last two dims of attention: q/k features are contracted (approximate: the scale
    depends on their count), keys align with values, queries and value features pass through."""
    qe, ke = ctx.dim_atoms(q, q.ndim - 1, call), ctx.dim_atoms(k, k.ndim - 1, call)
    ctx.table.join(qe, ke, ctx.reason(call, "query/key features"))
    ctx.table.mark_approx(np.concatenate([qe, ke]), ctx.reason(
        call, "attention scale 1/sqrt(head_dim) changes with the pruned dims"))
    ctx.table.join(ctx.dim_atoms(k, k.ndim - 2, call), ctx.dim_atoms(v, v.ndim - 2, call),
                   ctx.reason(call, "keys and values"))
    ql, ve = ctx.dim_atoms(q, q.ndim - 2, call), ctx.dim_atoms(v, v.ndim - 1, call)
    for d, vec in ((nd - 2, ql), (nd - 1, ve)):
        if (vec >= 0).any():
            labs.append(Labeling((d,), vec))
