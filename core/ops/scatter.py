"""Channel semantics of scatter / index-add ops (message passing in graph networks).

``dest.scatter_add_(dim, index, src)``, ``dest.index_add_(dim, index, src)``, ``scatter_reduce``,
``index_copy``, ``index_fill``, ``index_reduce`` and ``index_put`` move whole *rows* of ``src``
into ``dest``: along the indexed dim positions are routed by the index, along every other dim
position ``j`` of the output only ever receives position ``j`` of ``src`` and of ``dest``. So:

- a channel dim that is not indexed maps 1:1 from ``src`` (and ``dest``) to the output; those
  positions are coupled, and removing one of them is exact for every reduction (sum, mean,
  amax/amin, prod, copy): the kept columns see exactly the values they saw before;
- channels on the indexed dim are blocked (their position *is* the routing);
- an index computed from pruned channels blocks them (as for ``gather``);
- ``dest`` usually is a buffer created in ``forward`` (``src.new_zeros(size)`` in
  torch_geometric, ``torch.zeros(N, C)`` by hand): it carries no channels and its size is taken
  to follow ``src`` (the channel atoms are marked shape-sensitive so a shape probe checks it);
  a ``dest`` that carries no channels and was *not* created in forward (a model input, the
  output of an op on fixed channels) cannot shrink, and blocks the channels of ``src``;
- the scatter family's ``index`` has the shape of ``src``; along a channel dim it must be an
  expanded view (stride 0, ``index.view(-1, 1).expand_as(src)``), which follows ``src`` after
  pruning; an index materialised along channels keeps its size and blocks them.

``gather`` and ``index_select`` are plain data movement (see ``opsem.DATA_MOVEMENT``).

``x.expand_as(other)``: a dim that ``x`` broadcasts (size 1 or missing) takes its size from
``other``, so it carries ``other``'s channels there (every position holds the same value). This is
how ``scatter(reduce="mean")`` divides by ``count.view(-1, 1).expand_as(out)``; without it the
expanded counts would look like a fixed-size tensor and block the channels they divide.
"""
from __future__ import annotations

import weakref

import torch

from core.ops.atoms import Labeling
from core.ops.common import combine
from core.ops.registry import OP_HANDLERS, register_op

# --------------------------------------------------------------------------------------------
# tensors created in forward from explicit sizes (x.new_zeros(size), torch.zeros(...) & co.)

_FRESH_OPS = ("new_zeros", "new_ones", "new_full", "full")  # (torch.zeros: untraced; new_empty: IGNORED)
_FRESH: dict[int, weakref.ref] = {}


def _remember_fresh(prev):
    def handler(ctx, call):
        if len(_FRESH) > 4096:  # forget tensors that no longer exist
            for k in [k for k, r in _FRESH.items() if r() is None]:
                del _FRESH[k]
        for o in call.out_tensors:
            _FRESH[id(o)] = weakref.ref(o)
        return prev(ctx, call) if prev is not None else None
    return handler


for _n in _FRESH_OPS:
    register_op(_n)(_remember_fresh(OP_HANDLERS.get(_n)))


def _created_in_forward(ctx, call, t) -> bool:
    """``t`` is a fresh buffer made in forward (its size written by the code), not a model input,
    a parameter or the output of another op."""
    r = _FRESH.get(id(t))
    if r is not None and r() is t:
        return True
    tracer = getattr(ctx, "tracer", None)
    lookup = getattr(tracer, "lookup", None)
    graph = getattr(tracer, "graph", None)
    names = getattr(tracer, "names", None)
    if lookup is None or graph is None or names is None or id(t) in names:
        return False  # a parameter or buffer (or a tracer this code does not know)
    if not any(o is t for o in call.out_tensors):
        return lookup(t) is None  # never seen by the trace: made from constants only
    # in place: the tracer has already re-recorded t as this call's output; t was untracked if
    # every producer feeding this call is accounted for by the other inputs
    others = set()
    for x in call.in_tensors:
        if x is not t:
            rec = lookup(x)
            if rec is not None and rec[2] is not None:
                others.add(rec[2])
    return set(graph.predecessors(call.node)) <= others


# --------------------------------------------------------------------------------------------
# the rule


def _arg(call, i, name, default=None):
    if len(call.args) > i:
        return call.args[i]
    return call.kwargs.get(name, default)


def _rows_moved(ctx, call, dest, dim, src, index=None):
    """Output labelings of ``dest.<op>(dim, index, src)`` where only dim ``dim`` is routed.

    ``src`` is None for a scalar fill; ``index`` is given for the scatter family, whose index
    has the shape of ``src`` (the index family's is 1-D along ``dim``)."""
    if any(not t.is_floating_point() and ctx.labels(t) for t in call.in_tensors):
        ctx.block_inputs(call, "indices computed from pruned channels")
        return None
    nd = dest.ndim
    if nd == 0:
        return []
    dim %= nd
    if isinstance(src, torch.Tensor) and src.ndim != nd:
        src = None if src.numel() == 1 else src  # a scalar tensor value: nothing to align
        if src is not None:
            ctx.block_inputs(call, "source and destination ranks differ")
            return None
    fresh = None
    labs = []
    for e in range(nd):
        vd = ctx.dim_atoms(dest, e, call)
        vs = ctx.dim_atoms(src, e, call) if src is not None else None
        has = (vd >= 0).any() or (vs is not None and (vs >= 0).any())
        if not has:
            continue
        if e == dim:
            for v in (vd, vs):
                if v is not None:
                    ctx.table.block(v, ctx.reason(call, "channels on the indexed dim (rows are "
                                                        "routed by the index)"))
            continue
        if vs is not None and src.shape[e] != dest.shape[e]:
            why = "source and destination differ in size along channels"
        elif vs is not None and index is not None and not _index_follows(index, src, e):
            why = "the index has a fixed size along channels"
        else:
            fresh = _align(ctx, call, dest, vd, vs, e, labs, fresh)
            continue
        for v in (vd, vs):
            ctx.table.block(v, ctx.reason(call, why))
        fresh = _align(ctx, call, dest, vd, vs, e, labs, fresh)
    return labs


def _align(ctx, call, dest, vd, vs, e, labs, fresh):
    """Couple dest and src positions along dim ``e`` and label the output with them."""
    vecs = [vd]
    if vs is not None:
        if not (vd >= 0).any() and (vs >= 0).any():
            if fresh is None:
                fresh = _created_in_forward(ctx, call, dest)
            if not fresh:
                ctx.table.block(vs, ctx.reason(call, "the destination cannot shrink (it carries no "
                                                     "channels and was not created in forward)"))
                return fresh
            ctx.table.shape_sensitive.append(vs[vs >= 0])  # its size is taken to follow src
            vecs = []
        vecs.append(vs)
    # joins dest and src positions; a position where one side cannot shrink is blocked
    labs.extend(combine(ctx, vecs, e, call))
    return fresh


def _index_follows(index, src, e) -> bool:
    """The scatter index along channel dim ``e`` is a broadcast view that follows ``src``."""
    if index.ndim != src.ndim or index.shape[e] != src.shape[e]:
        return False
    try:
        return index.shape[e] == 1 or index.stride(e) == 0
    except RuntimeError:  # no strides (sparse layouts)
        return False


def _finish(ctx, call, labs):
    if labs is None:
        return
    for o in call.out_tensors:
        if o.is_floating_point() or o.is_complex():
            ctx.set(o, labs)


@register_op("scatter", "scatter_add", "scatter_reduce")
def scatter(ctx, call):
    """``dest.scatter*(dim, index, src | value, ...)``."""
    dest, dim, index = call.args[0], _arg(call, 1, "dim"), _arg(call, 2, "index")
    src = _arg(call, 3, "src", call.kwargs.get("value"))
    if not isinstance(index, torch.Tensor) or not isinstance(dim, int):
        return ctx.block_inputs(call, "unsupported scatter signature")
    src = src if isinstance(src, torch.Tensor) else None
    _finish(ctx, call, _rows_moved(ctx, call, dest, dim, src, index))


@register_op("index_add", "index_copy", "index_fill", "index_reduce")
def index_rows(ctx, call):
    """``dest.index_*(dim, index, source | value, ...)`` with a 1-D index along ``dim``."""
    dest, dim = call.args[0], _arg(call, 1, "dim")
    src = _arg(call, 3, "source", call.kwargs.get("value"))
    if not isinstance(dim, int):
        return ctx.block_inputs(call, "named dimensions are not supported")
    src = src if isinstance(src, torch.Tensor) else None
    _finish(ctx, call, _rows_moved(ctx, call, dest, dim, src))


@register_op("index_put")
def index_put(ctx, call):
    """``dest.index_put_((i0, i1, ...), values, accumulate)``: index tensors route the leading dims,
    the trailing dims of ``values`` (aligned from the right, broadcast allowed) map 1:1."""
    dest, indices = call.args[0], _arg(call, 1, "indices")
    values = _arg(call, 2, "values")
    if any(not t.is_floating_point() and ctx.labels(t) for t in call.in_tensors):
        return ctx.block_inputs(call, "indices computed from pruned channels")
    if not isinstance(indices, (tuple, list)) or any(
            not isinstance(i, torch.Tensor) for i in indices):
        return ctx.block_inputs(call, "index_put with None entries is not supported")
    routed = sum(i.ndim if i.dtype == torch.bool else 1 for i in indices)
    nd = dest.ndim
    labs, fresh = [], None
    for e in range(nd):
        vd = ctx.dim_atoms(dest, e, call)
        vd_has = (vd >= 0).any()
        vdim = values.ndim - (nd - e) if isinstance(values, torch.Tensor) else -1
        vs = None
        if e >= routed and vdim >= 0 and values.shape[vdim] != 1:
            vs = ctx.dim_atoms(values, vdim, call)
        elif e < routed and vdim >= 0:  # values aligned with a routed dim: block its channels
            ctx.table.block(ctx.dim_atoms(values, vdim, call),
                            ctx.reason(call, "channels on an indexed dim"))
        if e < routed:
            ctx.table.block(vd, ctx.reason(call, "channels on an indexed dim"))
            continue
        if not vd_has and (vs is None or not (vs >= 0).any()):
            continue
        fresh = _align(ctx, call, dest, vd, vs, e, labs, fresh)
    _finish(ctx, call, labs)



# --------------------------------------------------------------------------------------------
# expand_as: broadcast dims follow the target's size, hence its channels

_EXPAND_AS = OP_HANDLERS.get("expand_as")


@register_op("expand_as")
def expand_as(ctx, call):
    if _EXPAND_AS is not None:
        _EXPAND_AS(ctx, call)
    x, other = call.args[0], _arg(call, 1, "other")
    out = call.out_tensors[0] if call.out_tensors else None
    if out is None or not isinstance(other, torch.Tensor) or not out.is_floating_point():
        return  # an integer index expanded like src carries no channels (see _index_follows)
    labs = list(ctx.labels(out))
    taken = {d for lab in labs for d in lab.dims}
    added = False
    for lab in ctx.labels(other):
        if len(lab.dims) != 1 or lab.dims[0] in taken:
            continue
        e = lab.dims[0]
        d = e - (out.ndim - x.ndim)
        if d >= 0 and x.shape[d] != 1:
            continue
        labs.append(Labeling((e,), lab.atoms))
        taken.add(e)
        added = True
    if added:
        ctx.set(out, labs)
