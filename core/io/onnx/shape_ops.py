"""The ONNX shape and data-movement operators (:data:`core.io.onnx.ops.OPS`, continued): shape
arithmetic on Python ints (:class:`~core.io.onnx.ops.Ints`), reshapes, slices, gathers, concat."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.io.onnx.ops import Ints, as_tensor, axis_of, i_of, ints_of, is_int, op, scalar_of

@op("Shape")
def _shape(ins, at):
    shape = list(ins[0].shape)
    return [Ints(i_of(d) for d in shape[at.get("start", 0):at.get("end", len(shape))])]


@op("Size")
def _size(ins, at):
    return [math.prod(ins[0].shape)]


@op("Cast")
def _cast(ins, at):
    x, dtype = ins[0], at["to"]  # a torch dtype (converted when the file is read)
    if is_int(x) and dtype in (torch.int64, torch.int32):
        return [x]
    return [as_tensor(x).to(dtype)]


@op("Reshape")
def _reshape(ins, at):
    x, shape = ins[0], ints_of(ins[1])
    if not at.get("allowzero", 0):
        shape = [x.shape[i] if isinstance(d, int) and d == 0 else d for i, d in enumerate(shape)]
    if is_int(x):
        return [Ints(ints_of(x))]
    return [torch.reshape(x, shape)]


@op("Flatten")
def _flatten(ins, at):
    x = ins[0]
    axis = axis_of(at.get("axis", 1), x.dim())
    if axis == 0:
        return [x.reshape(1, -1)]
    return [torch.flatten(x, axis).flatten(0, axis - 1) if axis > 1 else torch.flatten(x, 1)]


@op("Transpose")
def _transpose(ins, at):
    x = ins[0]
    perm = at.get("perm", list(range(x.dim()))[::-1])
    return [x.permute(*perm)]


@op("Concat")
def _concat(ins, at):
    vals = [v for v in ins if v is not None]
    if all(is_int(v) for v in vals):
        return [Ints(i for v in vals for i in ints_of(v))]
    vals = [as_tensor(v, vals[0]) for v in vals]
    return [torch.cat(vals, dim=at["axis"])]


@op("Split")
def _split(ins, at, n_out=1):
    x = ins[0]
    axis = axis_of(at.get("axis", 0), x.dim())
    sizes = at.get("split")
    if len(ins) > 1 and ins[1] is not None:
        sizes = ints_of(ins[1])
    if sizes is None:
        whole, n = x.shape[axis], at.get("num_outputs", n_out)
        step = -(-whole // n)
        sizes = [min(step, whole - i * step) for i in range(n)]
    return list(torch.split(x, list(sizes), dim=axis))


def _slices(ins):
    starts, ends = ints_of(ins[1]), ints_of(ins[2])
    axes = ints_of(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = ints_of(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    return starts, ends, axes, steps


@op("Slice")
def _slice(ins, at):
    x = ins[0]
    starts, ends, axes, steps = _slices(ins)
    if is_int(x):
        (s, e, st), = zip(starts, ends, steps)
        return [Ints(ints_of(x)[slice(s, e, st)])]
    idx = [slice(None)] * x.dim()
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st < 0:
            raise NotImplementedError("Slice with a negative step")
        idx[axis_of(a, x.dim())] = slice(s, e, st)  # Python's clamping is ONNX's (step > 0)
    return [x[tuple(idx)]]


@op("Gather")
def _gather(ins, at):
    data, idx = ins
    axis = at.get("axis", 0)
    if is_int(data):
        vals = ints_of(data)
        return [vals[idx] if isinstance(idx, int) else Ints(vals[i] for i in ints_of(idx))]
    axis = axis_of(axis, data.dim())
    if isinstance(idx, int):
        return [torch.select(data, axis, idx)]
    idx = as_tensor(idx, data)
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    flat = torch.index_select(data, axis, idx.reshape(-1))
    return [flat.reshape(*data.shape[:axis], *idx.shape, *data.shape[axis + 1:])]


@op("Unsqueeze")
def _unsqueeze(ins, at):
    x = ins[0]
    axes = ints_of(ins[1]) if len(ins) > 1 and ins[1] is not None else list(at["axes"])
    if isinstance(x, (int, torch.SymInt)) and axes in ([0], [-1]):
        return [Ints((x,))]
    x = as_tensor(x)
    rank = x.dim() + len(axes)
    for a in sorted(axis_of(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return [x]


@op("Squeeze")
def _squeeze(ins, at):
    x = ins[0]
    axes = ints_of(ins[1]) if len(ins) > 1 and ins[1] is not None else at.get("axes")
    if isinstance(x, Ints) and len(x) == 1:
        return [x[0]]
    if axes is None:
        return [x.squeeze()]
    return [x.squeeze(tuple(axis_of(a, x.dim()) for a in axes))]


@op("Expand")
def _expand(ins, at):
    x, shape = ins[0], ints_of(ins[1])
    return [x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape)))]


@op("ConstantOfShape")
def _const_of_shape(ins, at):
    value = at.get("value")
    v = value.reshape(-1)[0] if value is not None else torch.tensor(0.0)
    return [torch.full(ints_of(ins[0]), v.item(), dtype=v.dtype)]


@op("Range")
def _range(ins, at):
    a, b, d = (scalar_of(v) for v in ins)
    return [torch.arange(a, b, d)]


@op("Pad")
def _pad(ins, at):
    x = ins[0]
    if at.get("mode", "constant") != "constant" or (len(ins) > 3 and ins[3] is not None):
        raise NotImplementedError("Pad other than constant mode over all axes")
    pads = ints_of(ins[1]) if len(ins) > 1 else list(at["pads"])
    value = scalar_of(ins[2] if len(ins) > 2 else None, at.get("value", 0.0)) or 0.0
    n = x.dim()
    torch_pads = []
    for d in reversed(range(n)):  # F.pad lists the last dim first, begin then end
        torch_pads += [pads[d], pads[d + n]]
    return [F.pad(x, torch_pads, value=value)]
