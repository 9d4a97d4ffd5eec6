"""Data movement (view, cat, split, indexing, shuffles): channel maps are derived by replaying the op
on tensors of index numbers (``core.ops.replay``), with fast paths for common cases
(``core.ops.fast``)."""
from __future__ import annotations

import torch

from core.ops.fast import FAST_PATHS
from core.ops.registry import register_op
from core.ops.replay import dynamic_dims, head_attrs, replay

DATA_MOVEMENT = [
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "swapaxes", "swapdims",
    "movedim", "moveaxis", "t", "T", "mT", "H", "mH", "squeeze", "unsqueeze", "expand", "expand_as",
    "repeat", "tile", "repeat_interleave", "cat", "concat", "concatenate", "stack", "hstack", "vstack",
    "dstack", "split", "split_with_sizes", "tensor_split", "chunk", "unbind", "getitem", "narrow",
    "select", "index_select", "roll", "flip", "fliplr", "flipud", "rot90", "pixel_unshuffle",
    "view_as", "reshape_as", "unfold", "pad",
    "take_along_dim", "gather", "diagonal", "atleast_1d", "atleast_2d", "atleast_3d", "ravel",
    "broadcast_to", "masked_select", "index", "squeeze_", "unsqueeze_", "t_", "transpose_",
    "constant_pad_nd", "tril", "triu", "alias", "narrow_copy", "split_copy", "unsafe_split",
    "unsafe_chunk", "hsplit", "vsplit", "dsplit", "unflatten_dense_tensors", "nonzero_static",
]


# Ops whose pieces are sized from the input (chunk(2) halves whatever it gets): after pruning the
# pieces must still line up, so position j of every piece is removed together.
PROPORTIONAL_SPLITS = {"chunk", "unsafe_chunk", "split", "unsafe_split", "tensor_split", "hsplit",
                       "vsplit", "dsplit"}


@register_op(*DATA_MOVEMENT)
def data_movement(ctx, call, channel_dims=None):
    if not call.out_tensors:
        return
    if any(not t.is_floating_point() and ctx.labels(t) for t in call.in_tensors):
        ctx.block_inputs(call, "indices computed from pruned channels")
        return
    if not any(ctx.labels(t) for t in call.in_tensors if t.is_floating_point()):
        return
    _block_fixed_index(ctx, call)
    fast = FAST_PATHS.get(call.name)
    results = fast(ctx, call) if fast is not None else None
    if results is None:
        results = replay(call.func, call.args, call.kwargs, ctx.labels, ctx.table,
                         ctx.reason(call, ""), channel_dims, head_attrs(ctx))
    if results is None:
        return
    for o, labs in zip(call.out_tensors, results):
        ctx.set(o, labs)
    if call.name in _EXPLICIT_SIZES:
        _mark_explicit_sizes(ctx, call, results)
    if call.name in PROPORTIONAL_SPLITS:
        if _equal_pieces(call):
            _join_pieces(ctx, call, results)
        else:
            # constant sections, or pieces whose sizes and count depend on the exact channel
            # count (chunk(2) of 7): no removal keeps the pieces as they were
            x = call.in_tensors[0]
            d = call.kwargs.get("dim", call.args[2] if len(call.args) > 2 else 0)
            if isinstance(d, int) and x.ndim:
                for lab in ctx.labels(x):
                    if d % x.ndim in lab.dims:
                        ctx.table.block(lab.atoms, ctx.reason(call, "split into pieces of fixed or "
                                                                    "uneven size along channels"))


def _indexed_dims(call) -> list[int]:
    """Input dims that a constant integer index tensor (or list) selects along."""
    x = call.args[0] if call.args else None
    if not isinstance(x, torch.Tensor):
        return []
    if call.name in ("index_select", "gather", "take_along_dim"):
        d = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim")
        return [d % x.ndim] if isinstance(d, int) and x.ndim else []
    if call.name != "getitem" or len(call.args) < 2:
        return []
    idx = call.args[1] if isinstance(call.args[1], tuple) else (call.args[1],)
    dims, d = [], 0
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    for i in idx:
        if i is None:
            continue
        if i is Ellipsis:
            d += x.ndim - n_real
            continue
        if isinstance(i, list) or (isinstance(i, torch.Tensor) and not i.is_floating_point()
                                   and i.dtype != torch.bool):
            dims.append(d)
        d += 1
    return dims


def _block_fixed_index(ctx, call):
    """An index tensor fixed at trace time that selects along a channel dim names channel
    positions: after pruning they would point at other channels (or past the end)."""
    dims = _indexed_dims(call)
    if not dims:
        return
    x = call.args[0]
    for lab in ctx.labels(x):
        if any(d in lab.dims for d in dims):
            ctx.table.block(lab.atoms, ctx.reason(
                call, "a fixed index tensor selects channels (their positions change after pruning)"))


_EXPLICIT_SIZES = {"view", "reshape", "expand", "broadcast_to", "unflatten"}


def _mark_explicit_sizes(ctx, call, results):
    """A labelled output dim whose size is written in the call (not -1) may be a constant."""
    out = call.out_tensors[0]
    dyn = dynamic_dims(call.func, call.args, call.kwargs, out)
    if call.name in ("expand", "broadcast_to"):
        shape = [a for a in call.args[1:] if isinstance(a, int)]
        if len(call.args) == 2 and isinstance(call.args[1], (tuple, list, torch.Size)):
            shape = list(call.args[1])
        dyn = {i + out.ndim - len(shape) for i, v in enumerate(shape) if v == -1}
    for labs in results[:1]:
        for lab in labs:
            if any(d not in dyn for d in lab.dims):
                ctx.table.shape_sensitive.append(lab.atoms[lab.atoms >= 0])


def _equal_pieces(call):
    shapes = {tuple(o.shape) for o in call.out_tensors}
    if len(shapes) != 1:
        return False
    if call.name in ("chunk", "unsafe_chunk"):  # chunk(4) of 6 gives 3 pieces: not proportional
        n = call.args[1] if len(call.args) > 1 else call.kwargs.get("chunks")
        return len(call.out_tensors) == n
    if call.name in ("split", "unsafe_split"):
        size = call.args[1] if len(call.args) > 1 else call.kwargs.get("split_size_or_sections",
                                                                          call.kwargs.get("split_size"))
        return isinstance(size, int)
    if call.name == "tensor_split":
        sec = call.args[1] if len(call.args) > 1 else call.kwargs.get("sections")
        return isinstance(sec, int)
    return True


def _join_pieces(ctx, call, results):
    first = results[0]
    for labs in results[1:]:
        for a, b in zip(first, labs):
            if a.dims == b.dims and a.atoms.shape == b.atoms.shape:
                ctx.table.join(a.atoms, b.atoms, ctx.reason(call, "equal pieces"))


@register_op("channel_shuffle", "native_channel_shuffle")
def channel_shuffle(ctx, call):
    # C = groups x (C / groups) with a fixed group count: channel j of every group goes together
    x = call.in_tensors[0]
    g = int(call.args[1] if len(call.args) > 1 else call.kwargs["groups"])
    x_c = ctx.dim_atoms(x, 1, call)
    cols = x_c.reshape(g, -1)
    for row in cols[1:]:
        ctx.table.join(cols[0], row, ctx.reason(call, "channel shuffle"))
    data_movement(ctx, call)


@register_op("pixel_shuffle")
def pixel_shuffle(ctx, call):
    # each output channel gathers r*r input channels spread over space: those are coupled
    x = call.in_tensors[0]
    data_movement(ctx, call, channel_dims=set(range(x.ndim - 2)))
