"""Spatial ops (pooling, resampling: channels pass through) and reductions or normalisations along a
dimension (exact for sums, approximate for statistics, blocking for index results)."""
from __future__ import annotations

import torch

from core.ops.atoms import Labeling
from core.ops.elementwise import elementwise
from core.ops.registry import mark_positions, register_op

SPATIAL = {
    "max_pool1d": 1, "max_pool2d": 2, "max_pool3d": 3, "avg_pool1d": 1, "avg_pool2d": 2,
    "avg_pool3d": 3, "adaptive_avg_pool1d": 1, "adaptive_avg_pool2d": 2, "adaptive_avg_pool3d": 3,
    "adaptive_max_pool1d": 1, "adaptive_max_pool2d": 2, "adaptive_max_pool3d": 3, "lp_pool1d": 1,
    "lp_pool2d": 2, "lp_pool3d": 3, "max_pool1d_with_indices": 1, "max_pool2d_with_indices": 2,
    "max_pool3d_with_indices": 3, "fractional_max_pool2d": 2, "fractional_max_pool3d": 3,
    "adaptive_max_pool1d_with_indices": 1, "adaptive_max_pool2d_with_indices": 2,
    "adaptive_max_pool3d_with_indices": 3, "interpolate": None, "upsample": None,
    "upsample_nearest": None, "upsample_bilinear": None, "grid_sample": None,
    "_max_pool1d": 1, "_max_pool2d": 2, "_max_pool3d": 3,
}


def spatial(ctx, call):
    x = call.in_tensors[0]
    n_sp = SPATIAL[call.name] or max(x.ndim - 2, 1)
    lead = x.ndim - n_sp
    labs = ctx.labels(x)
    keep = []
    for lab in labs:
        if all(d < lead for d in lab.dims):
            keep.append(lab)
        else:
            ctx.table.block(lab.atoms, ctx.reason(call, "channels on a spatial dimension"))
    for o in call.out_tensors:
        if o.ndim == x.ndim:
            ctx.set(o, keep)


for _n in SPATIAL:
    register_op(_n)(spatial)


@register_op("local_response_norm")
def local_response_norm(ctx, call):
    x = call.in_tensors[0]
    for lab in ctx.labels(x):
        if 1 in lab.dims:
            ctx.table.mark_approx(lab.atoms, ctx.reason(call, "normalises across neighbouring channels"))
    ctx.set(call.out_tensors[0], ctx.labels(x))


# --------------------------------------------------------------------------------------------
# reductions and normalisations along a dimension


def _dims_arg(call, ndim, default_all=True):
    d = call.kwargs.get("dim", call.kwargs.get("axis"))
    if d is None and len(call.args) > 1 and not isinstance(call.args[1], torch.Tensor):
        d = call.args[1]
    if d is None:
        return list(range(ndim)) if default_all else None
    if isinstance(d, (list, tuple)):
        return [x % ndim for x in d]
    if isinstance(d, str):
        return None
    return [int(d) % ndim] if ndim else []


_EXACT_REDUCTIONS = {"sum", "nansum"}
_WITH_INDICES = {"max", "min", "cummax", "cummin"}  # (values, indices) when given a dim
_INDEX_REDUCTIONS = {"argmax", "argmin", "topk", "sort", "argsort", "kthvalue", "mode", "msort",
                     "median", "nanmedian"}


@register_op("sum", "nansum", "mean", "nanmean", "amax", "amin", "max", "min", "prod", "std", "var",
             "norm", "logsumexp", "argmax", "argmin", "all", "any", "count_nonzero", "median",
             "nanmedian", "std_mean", "var_mean", "aminmax", "topk", "sort", "argsort", "kthvalue",
             "mode", "msort", "vector_norm", "cummax", "cummin")
def reduction(ctx, call):
    x = call.in_tensors[0]
    if call.name in ("max", "min") and len(call.in_tensors) > 1:
        return elementwise(ctx, call)
    ndim = x.ndim
    if call.name in ("topk", "kthvalue"):
        dims = [int(call.kwargs.get("dim", call.args[2] if len(call.args) > 2 else -1)) % ndim]
        keepdim_shape = True
    elif call.name in ("sort", "argsort", "msort", "cummax", "cummin"):
        dims = _dims_arg(call, ndim, default_all=False) or [ndim - 1]
        keepdim_shape = True
    else:
        dims = _dims_arg(call, ndim)
        keepdim_shape = False
    if dims is None:
        return ctx.block_inputs(call, "named dimensions are not supported")
    index_out = call.name in _WITH_INDICES and len(call.out_tensors) > 1
    keep = []
    for lab in ctx.labels(x):
        hit = [d for d in lab.dims if d in dims]
        if not hit:
            keep.append(lab)
            continue
        why = "its indices along the channel dim become values (removing a channel shifts them)"
        if call.name in _INDEX_REDUCTIONS:
            # an index along channels is a channel *position* used as a value (a router's
            # ``idx == k``, a lookup): every removal shifts the later ones
            ctx.table.block(lab.atoms, ctx.reason(call, why))
        elif index_out:
            # max/min(dim) return (values, indices): the values are a statistic like amax; the
            # indices block the channels only if some later op reads them
            mark_positions(call.out_tensors[1], ctx.table, lab.atoms, f"reads the indices of "
                           f"{ctx.reason(call, why)}")
        if call.name not in _EXACT_REDUCTIONS and call.name not in _INDEX_REDUCTIONS:
            ctx.table.mark_approx(lab.atoms, ctx.reason(call, "statistic over pruned channels"))
        if keepdim_shape and call.name not in _INDEX_REDUCTIONS:
            keep.append(lab)
    for o in call.out_tensors:
        if o.ndim == ndim:
            ctx.set(o, keep)
        else:
            ctx.set(o, [_drop_dims(lab, dims) for lab in keep])


def _drop_dims(lab: Labeling, removed):
    return Labeling(tuple(d - sum(r < d for r in removed) for d in lab.dims), lab.atoms, lab.joint)


@register_op("softmax", "log_softmax", "softmin", "normalize", "cumsum", "cumprod", "logcumsumexp",
             "glu")
def along_dim(ctx, call):
    x = call.in_tensors[0]
    d = call.kwargs.get("dim")
    if d is None:
        d = call.args[1] if len(call.args) > 1 and isinstance(call.args[1], int) else None
    if call.name == "normalize":
        d = call.kwargs.get("dim", call.args[2] if len(call.args) > 2 else 1)
    if call.name == "glu":
        d = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else -1)
    if d is None:
        d = x.ndim - 1
    d = int(d) % max(x.ndim, 1)
    labs = ctx.labels(x)
    for lab in labs:
        if d in lab.dims:
            if call.name == "glu":
                ctx.table.block(lab.atoms, ctx.reason(call, "GLU halves its channel dimension"))
            else:
                ctx.table.mark_approx(lab.atoms, ctx.reason(call, "normalises over pruned channels"))
    out = call.out_tensors[0]
    if out.shape == x.shape:
        ctx.set(out, labs)
