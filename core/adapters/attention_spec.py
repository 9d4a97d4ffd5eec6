"""Declare an attention module once; get its leaf op handler and its updater from the declaration.

Every head-structured attention adapter follows the same recipe (``core.adapters.heads``): trace
the module as one op, read its q/k/v projection rows and its output projection's columns, couple
them by head (or head dimension) with the per-head parameters, join the input features with the
projections' columns, label the output with the output projection's rows; after pruning, rewrite
the head count (and head width) and switch the module to a pruned subclass whose ``forward`` reads
its sizes from the weights. :class:`AttentionSpec` names the parts that differ between modules and
:func:`register_attention` turns it into the three registrations::

    register_attention(AttentionSpec(
        classes={MyAttention: PrunedMyAttention},  # library class -> subclass with a size-free forward
        op="my_attention",
        qkv=fused("qkv"),                          # or separate("q", "k", "v"), or a reader function
        out="proj",                                # the output projection
        per_head=lambda m: [(m.rel_bias, 0)],      # (tensor, dim) with one entry per head
        head_dim="head_dim"))                      # attribute recomputed as out width // heads

The hooks (``parts``, ``rules``, ``couple``, ``out_rows``, ``module``/``reject``/``feed``,
``update``) are for the few families whose structure is genuinely different: a gate and norms
(timm), rotary embeddings (EVA), talking heads, keys and values of different widths (LeViT), a
functional op instead of a module (``nn.MultiheadAttention``).

The handler reads tensors in a fixed order (q/k/v rows, output columns, per-head parameters, the
coupling, rules, inputs, output rows): slot creation order decides group numbering.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from core.adapters.heads import couple_heads, emit_output, feed_input, proj_cols, proj_rows, switch_class
from core.ops.registry import register_leaf_module, register_op
from core.prune.apply import register_module_updater


class Rows(NamedTuple):
    """What a q/k/v reader returns: (heads, head_dim) atoms of q, k and v, and the weights whose
    input columns (dim 1) read the module's input."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    feeds: list


@dataclass
class HeadParts:
    """Atoms of what else an attention module holds per head or per head dimension."""

    per_head: list = field(default_factory=list)  # (heads,) arrays: a bias table column, a scale
    per_dim: list = field(default_factory=list)  # (head_dim,) arrays shared by all heads (q/k norm)
    also_out: list = field(default_factory=list)  # (heads, head_dim) arrays laid out like the output
    feeds: list = field(default_factory=list)  # more weights reading the input (a gate)
    dim_approx: str | None = None  # why removing head dimensions is approximate, if it is


def fused(attr: str = "qkv", split_bias: bool = False, heads_first=False):
    """q/k/v reader of one projection whose rows are ``[q; k; v]``, each ``[head][dim]``
    (``heads_first``: ``[head][q|k|v][dim]``; a bool or ``m -> bool``). ``split_bias``: timm's
    bias-free projection with separate ``q_bias`` / ``k_bias`` / ``v_bias`` tensors."""

    def read(ctx, call, m, heads):
        lin = getattr(m, attr)
        rows = proj_rows(ctx, call, lin)
        if heads_first(m) if callable(heads_first) else heads_first:
            q, k, v = np.moveaxis(rows.reshape(heads, 3, -1), 1, 0)
        else:
            q, k, v = rows.reshape(3, heads, -1)
        if split_bias:
            for name, r in (("q_bias", q), ("k_bias", k), ("v_bias", v)):
                if (t := getattr(m, name, None)) is not None:
                    ctx.table.join(r.ravel(), ctx.dim_atoms(t, 0, call, role="out"), ctx.reason(call, "bias"))
        return Rows(q, k, v, [lin.weight])

    return read


def separate(*attrs: str):
    """q/k/v reader of three projections (attribute names in q, k, v order)."""

    def read(ctx, call, m, heads):
        lins = [getattr(m, a) for a in attrs]
        q, k, v = (proj_rows(ctx, call, lin).reshape(heads, -1) for lin in lins)
        return Rows(q, k, v, [lin.weight for lin in lins])

    return read


@dataclass(frozen=True)
class AttentionSpec:
    """How one family of attention modules is traced as one op and updated after pruning.

    ``ctx``/``call`` below are a handler's arguments; ``m`` is the module (``module(call)`` for a
    functional op). Hooks are optional; each replaces or extends one step of the generic handler.
    """

    classes: dict  # library class -> its pruned subclass (None: updating attributes suffices)
    op: str  # op name of the leaf (or the functional op, with leaf=False)
    qkv: Callable  # (ctx, call, m, heads) -> Rows: fused(...), separate(...) or a reader
    out: str | Callable = "proj"  # the output projection: attribute name or m -> layer
    heads: str = "num_heads"  # head-count attribute
    head_dim: str | None = None  # attribute recomputed as the output projection's width // heads
    accepts: Callable | None = None  # m -> bool: instances declined are traced through
    per_head: Callable | None = None  # m -> [(tensor or None, dim)] with one entry per head
    dim_approx: str | None = None  # why removing head dimensions is approximate (cosine attention)
    parts: Callable | None = None  # (ctx, call, m, rows) -> HeadParts: gates, norms, ...
    couple: Callable | None = None  # (ctx, call, m, rows, cols, parts): replaces couple_heads
    rules: Callable | None = None  # (ctx, call, m, rows): extra blocks once the heads are coupled
    out_rows: Callable | None = None  # (ctx, call, m) -> atoms of the output's channels
    channels_first: Callable | None = None  # m -> bool: channels on dim 1 (NCHW), not the last
    # a functional op (leaf=False) builds a module-like view of its arguments; reject(m) -> reason
    # blocks its inputs instead; feed(ctx, call, m, feeds) replaces the input joins
    leaf: bool = True
    module: Callable | None = None
    reject: Callable | None = None
    feed: Callable | None = None
    # updater: freeze_scale keeps the softmax scale of the original head width where the library
    # derives it from the (pruned) width; kept_heads(m, virtual) -> count; update(m, virtual) last
    freeze_scale: bool = False
    kept_heads: Callable | None = None
    update: Callable | None = None

    def out_layer(self, m):
        return self.out(m) if callable(self.out) else getattr(m, self.out)


def attention_handler(spec: AttentionSpec):
    """The op handler of a spec: couple q/k/v rows, output columns and per-head parameters by
    head (or head dimension), feed the input, label the output."""

    def handle(ctx, call):
        m = spec.module(call) if spec.module else call.func
        if spec.reject and (why := spec.reject(m)):
            return ctx.block_inputs(call, why)
        rows = spec.qkv(ctx, call, m, getattr(m, spec.heads))
        out = spec.out_layer(m)
        cols = proj_cols(ctx, call, out, rows.v.shape[0])
        listed = spec.per_head(m) if spec.per_head else ()
        per_head = [ctx.dim_atoms(t, d, call, role="in") for t, d in listed if t is not None]
        parts = spec.parts(ctx, call, m, rows) if spec.parts else HeadParts()
        parts.per_head[:0] = per_head
        if spec.couple:
            spec.couple(ctx, call, m, rows, cols, parts)
        else:
            couple_heads(ctx, call, call.scope, rows.q, rows.k, rows.v, cols, per_head=parts.per_head,
                         per_dim=parts.per_dim, also_out=parts.also_out,
                         approx_dim=parts.dim_approx or spec.dim_approx)
        if spec.rules:
            spec.rules(ctx, call, m, rows)
        x = call.args[0] if call.args else None
        dim = 1 if spec.channels_first and spec.channels_first(m) else None
        feeds = rows.feeds + parts.feeds
        if spec.feed:
            spec.feed(ctx, call, m, feeds)
        else:
            for w in feeds:
                feed_input(ctx, call, x, ctx.dim_atoms(w, 1, call, role="in"), dim)
        if call.out_tensors:
            out_rows = spec.out_rows(ctx, call, m) if spec.out_rows else proj_rows(ctx, call, out)
            emit_output(ctx, call.out_tensors[0], out_rows, dim)

    return handle


def _in_width(layer) -> int:
    # the layer's own attribute, not its weight: parents are updated before their children, so it
    # still holds the width before pruning
    return getattr(layer, "in_features", None) or layer.in_channels


def attention_updater(spec: AttentionSpec):
    """The module updater of a spec: head count (and head width) from the pruned tensors and the
    virtual slots, then the switch to the pruned subclass."""

    def update(m, virtual):
        heads = getattr(m, spec.heads)
        if spec.freeze_scale and getattr(m, "scale", None) is None:
            m.scale = (_in_width(spec.out_layer(m)) // heads) ** -0.5
        heads = spec.kept_heads(m, virtual) if spec.kept_heads else virtual.get("num_heads", heads)
        setattr(m, spec.heads, heads)
        if spec.head_dim:
            setattr(m, spec.head_dim, spec.out_layer(m).weight.shape[1] // heads)
        if spec.update:
            spec.update(m, virtual)
        for base, pruned in spec.classes.items():
            if pruned is not None:
                switch_class(m, base, pruned)

    return update


def register_attention(spec: AttentionSpec) -> AttentionSpec:
    """Trace the spec's classes (and their pruned subclasses) as one op, register its handler and
    an updater for each class."""
    if spec.leaf:
        for base, pruned in spec.classes.items():
            for cls in (base, pruned) if pruned is not None else (base,):
                register_leaf_module(cls, spec.op, spec.accepts)
    register_op(spec.op)(attention_handler(spec))
    update = attention_updater(spec)
    for base in spec.classes:
        register_module_updater(base)(update)
    return spec
