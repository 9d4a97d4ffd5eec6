"""Fast paths for data-movement ops: the same channel maps the replay derives, read off the op's
arguments for the common cases (one labelled dim that the op keeps intact, a concat along it, a
basic index), so large feature maps are not replayed. Each returns None when it does not apply,
and the caller falls back to the replay.
"""
from __future__ import annotations

import numpy as np
import torch

from core.ops.atoms import NO_ATOM, Labeling


def _fast_cat(ctx, call):
    """cat of single-dim labelings, without materialising index tensors of the feature maps:
    along the concatenated dim the labels concatenate; along another dim the inputs' labels are
    aligned position by position (what the replay derives in both cases). An input may carry
    labels on several dims (a ``(1, tokens, C)`` parameter such as ViT register tokens, expanded):
    each dim is mapped on its own, and an input not labelled on a dim is fixed along it."""
    tensors = call.args[0] if call.args else call.kwargs.get("tensors")
    dim = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not tensors:
        return None
    # cat skips 1-D empty tensors (a KV cache's first update: cat([empty, k], dim=-2))
    tensors = [t for t in tensors if not (isinstance(t, torch.Tensor) and t.shape == (0,))] \
        or tensors
    nd = tensors[0].ndim
    dim = dim % nd
    per = []
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.ndim != nd or not t.is_floating_point():
            return None
        labs = ctx.labels(t)
        if any(len(lab.dims) > 1 for lab in labs) or len({lab.dims for lab in labs}) != len(labs):
            return None
        per.append({lab.dims[0]: lab.atoms for lab in labs})
    out = []
    for e in sorted({d for p in per for d in p}):
        parts = [p.get(e, np.full(t.shape[e], NO_ATOM, dtype=np.int64)) for t, p in zip(tensors, per)]
        if e == dim:
            out.append(Labeling((dim,), np.concatenate(parts)))
            continue
        acc = parts[0]
        for v in parts[1:]:
            ctx.table.join(acc, v, ctx.reason(call, "channels aligned with a tensor that cannot be pruned"))
            acc = np.where((acc >= 0) & (v >= 0), acc, NO_ATOM)
        out.append(Labeling((e,), acc))
    return [out] if out else None


def _single_dim_input(ctx, call):
    x = call.args[0] if call.args else None
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return None
    if any(ctx.labels(t) for t in call.in_tensors if t is not x):
        return None
    labs = ctx.labels(x)
    if len(labs) != 1 or len(labs[0].dims) != 1:
        return None
    return x, labs[0]


def _fast_reshape(ctx, call):
    """view/reshape/flatten/unflatten of one labelled dim of size C, read off the shapes:
    kept (same prefix and size), split into contiguous dims whose product is C (heads x
    head_dim), or merged with the dims after it (flatten of C x H x W)."""
    from core.ops.replay import (collapse_split, dynamic_dims, head_attrs, prefer_channel_first,
                                 prefer_heads, tie_head_attr)

    got = _single_dim_input(ctx, call)
    if got is None or len(call.out_tensors) != 1:
        return None
    x, lab = got
    out = call.out_tensors[0]
    d = lab.dims[0]
    c = x.shape[d]
    prefix = int(np.prod(x.shape[:d]))
    acc, e = 1, 0
    while e < out.ndim and acc < prefix:
        acc *= out.shape[e]
        e += 1
    if acc != prefix or e == out.ndim:
        return None  # the channel dim merges with dims before it: leave it to the replay
    if out.shape[e] == c:
        return [[Labeling((e,), lab.atoms)]]
    if out.shape[e] < c:  # split: out[e:f] multiply to C
        f, size = e, 1
        while f < out.ndim and size < c:
            size *= out.shape[f]
            f += 1
        if size != c:
            return None
        atoms = lab.atoms.reshape(out.shape[e:f])
        split = Labeling(tuple(range(e, f)), atoms, joint=ctx.reason(call, ""))
        dyn = dynamic_dims(call.func, call.args, call.kwargs, out)
        heads = head_attrs(ctx)
        dyn, attr = prefer_heads(dyn, split, out.shape, heads)
        dyn = prefer_channel_first(dyn, split, out.shape)
        lab = collapse_split(split, ctx.table, ctx.reason(call, ""), dyn)
        if attr is not None:
            tie_head_attr(ctx.table, heads, attr, lab.atoms, ctx.reason(call, ""))
        return [[lab]]
    suffix = x.shape[d + 1:]
    rest, k = out.shape[e] // c, d + 1
    if out.shape[e] % c or int(np.prod(suffix)) % rest:
        return None
    size = 1
    while size < rest and k < x.ndim:
        size *= x.shape[k]
        k += 1
    if size != rest:
        return None
    return [[Labeling((e,), np.repeat(lab.atoms, rest))]]  # channel-major merge: each repeated


def _fast_permute(ctx, call):
    got = _single_dim_input(ctx, call)
    if got is None:
        return None
    x, lab = got
    d, nd = lab.dims[0], x.ndim
    if call.name == "permute":
        perm = call.args[1:] if len(call.args) > 2 or (len(call.args) == 2 and isinstance(
            call.args[1], int)) else (call.args[1] if len(call.args) > 1 else call.kwargs.get("dims"))
        perm = [int(p) % nd for p in perm]
        return [[Labeling((perm.index(d),), lab.atoms)]]
    if call.name in ("transpose", "swapaxes", "swapdims"):
        a = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim0")
        b = call.args[2] if len(call.args) > 2 else call.kwargs.get("dim1")
        a, b = int(a) % nd, int(b) % nd
        return [[Labeling(({a: b, b: a}.get(d, d),), lab.atoms)]]
    return None


def _fast_other_dims(dims_arg_index, dims_kw):
    """roll/flip that do not touch the labelled dim leave its labels in place."""
    def fast(ctx, call):
        got = _single_dim_input(ctx, call)
        if got is None:
            return None
        x, lab = got
        dims = call.args[dims_arg_index] if len(call.args) > dims_arg_index else call.kwargs.get(dims_kw)
        if dims is None:
            return None
        dims = [dims] if isinstance(dims, int) else list(dims)
        if lab.dims[0] in [int(v) % x.ndim for v in dims]:
            return None
        return [[Labeling(lab.dims, lab.atoms)]]
    return fast


def _fast_pad(ctx, call):
    got = _single_dim_input(ctx, call)
    if got is None:
        return None
    x, lab = got
    pad = call.args[1] if len(call.args) > 1 else call.kwargs.get("pad")
    touched = {x.ndim - 1 - i // 2 for i, p in enumerate(pad) if p}
    if lab.dims[0] in touched:
        return None
    return [[Labeling(lab.dims, lab.atoms)]]


def _fast_unsqueeze(ctx, call):
    """A new size-1 dim: labelled dims at or after it move up by one."""
    x = call.args[0] if call.args else None
    d = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim")
    if not isinstance(x, torch.Tensor) or not isinstance(d, int) or len(call.out_tensors) != 1 \
            or any(ctx.labels(t) for t in call.in_tensors if t is not x):
        return None
    labs = ctx.labels(x)
    if any(len(lab.dims) > 1 for lab in labs):  # the replay also merges split channel dims
        return None
    d %= x.ndim + 1
    return [[Labeling((lab.dims[0] + (lab.dims[0] >= d),), lab.atoms) for lab in labs]]


def _fast_contiguous(ctx, call):
    got = _single_dim_input(ctx, call)
    if got is None:
        return None
    return [[Labeling(got[1].dims, got[1].atoms)]]


def _basic_index(idx, ndim):
    """Expand a basic index (ints, slices, None, Ellipsis) to a list; None if advanced."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    if any(not (isinstance(i, (int, slice)) or i is None or i is Ellipsis) or isinstance(i, bool)
           for i in idx):
        return None
    consuming = sum(1 for i in idx if i is not None and i is not Ellipsis)
    out = []
    for i in idx:
        if i is Ellipsis:
            out.extend([slice(None)] * (ndim - consuming))
        else:
            out.append(i)
    out.extend([slice(None)] * (ndim - sum(1 for i in out if i is not None)))
    return out


def _sliced_atoms(ctx, call, atoms, axis, sl, size, innermost):
    """Atoms kept by a constant slice of a channel dim. The code keeps its constant bounds after
    pruning, so channels whose removal would shift what the slice selects are blocked."""
    start, stop, step = sl.indices(size)
    kept = np.take(atoms, np.arange(start, stop, step), axis=axis)
    if innermost and (start, stop, step) != (0, size, 1):
        # positions before the start always shift it; a fixed end (< size) or a step makes every
        # position up to the end significant
        fixed_end = stop if (sl.stop is not None and stop < size) or step != 1 else start
        ctx.table.block(np.take(atoms, np.arange(0, max(start, fixed_end)), axis=axis),
                        ctx.reason(call, "constant slice bounds on a channel dim"))
    return kept


def _fast_getitem(ctx, call):
    x = call.args[0]
    if not isinstance(x, torch.Tensor) or len(call.out_tensors) != 1:
        return None
    idx = _basic_index(call.args[1], x.ndim)
    if idx is None:
        return None
    # where every input dim goes in the output (None: removed by an int index)
    where, o = {}, 0
    d = 0
    for i in idx:
        if i is None:
            o += 1
            continue
        where[d] = None if isinstance(i, int) else o
        o += 0 if isinstance(i, int) else 1
        d += 1
    consume = [i for i in idx if i is not None]
    out_labs = []
    for lab in ctx.labels(x):
        atoms, dims = lab.atoms, []
        for k, dim in reversed(list(enumerate(lab.dims))):
            i = consume[dim]
            innermost = k == len(lab.dims) - 1
            if isinstance(i, int):
                if innermost:
                    ctx.table.block(atoms, ctx.reason(call, "a fixed channel is selected"))
                    atoms = None
                    break
                atoms = np.take(atoms, i % x.shape[dim], axis=k)
            else:
                atoms = _sliced_atoms(ctx, call, atoms, k, i, x.shape[dim], innermost)
                dims.insert(0, where[dim])
        if atoms is None or not dims:
            continue
        out_labs.append(Labeling(tuple(dims), atoms, lab.joint if len(dims) > 1 else None))
    return [out_labs]


def _fast_narrow(ctx, call):
    x = call.args[0]
    got = _single_dim_input(ctx, call)
    if got is None:
        return None
    _, lab = got
    dim = int(call.args[1] if len(call.args) > 1 else call.kwargs["dim"]) % x.ndim
    start = int(call.args[2] if len(call.args) > 2 else call.kwargs["start"])
    length = int(call.args[3] if len(call.args) > 3 else call.kwargs["length"])
    if dim != lab.dims[0]:
        return [[Labeling(lab.dims, lab.atoms)]]
    return [[Labeling(lab.dims, _sliced_atoms(ctx, call, lab.atoms, 0, slice(start, start + length),
                                             x.shape[dim], True))]]


FAST_PATHS = {
    "getitem": _fast_getitem, "narrow": _fast_narrow,
    "cat": _fast_cat, "concat": _fast_cat, "concatenate": _fast_cat,
    "view": _fast_reshape, "reshape": _fast_reshape, "flatten": _fast_reshape,
    "unflatten": _fast_reshape,
    "permute": _fast_permute, "transpose": _fast_permute, "swapaxes": _fast_permute,
    "swapdims": _fast_permute,
    "roll": _fast_other_dims(2, "dims"), "flip": _fast_other_dims(1, "dims"),
    "pad": _fast_pad, "constant_pad_nd": _fast_pad, "contiguous": _fast_contiguous,
    "unsqueeze": _fast_unsqueeze,
}
