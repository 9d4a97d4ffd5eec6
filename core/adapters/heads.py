"""Head-structured attention traced as one op: couple projections by head or by head dimension.

Vision attention modules (torchvision Swin/MaxViT, timm) compute sizes such as ``C // num_heads``
or read ``self.head_dim`` inside ``forward``, which a trace cannot follow. They are therefore traced
as *leaf modules* (``register_leaf_module``): a handler states their channel semantics with
:func:`couple_heads`, and after pruning an updater rewrites the attributes and switches the module to
a pruned subclass whose ``forward`` infers its sizes from the weights. Adapters declare both with an
``AttentionSpec`` (``core.adapters.attention_spec``); this module holds the atom-level pieces.

Two structures are offered (analysis option ``attention``):

- ``"heads"`` (default): head h = its q, k and v rows, the output projection's columns of that head
  and every per-head parameter (relative position bias column, logit scale). Removing a head whose
  slices are zero is exact: its scores are uniform, its values zero, its output columns zero.
- ``"head_dim"``: dimension j of every head = row j of q, k and v in all heads plus the matching
  output columns; every head keeps the same width. Exact too, because the pruned module keeps the
  *original* softmax scale (``1/sqrt(original head_dim)``) instead of recomputing it from the
  smaller width; a normalisation over the head dimension (timm ``qk_norm``) makes it approximate.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from core.ops.atoms import Labeling

MODES = ("heads", "head_dim")


def attention_mode(ctx) -> str:
    return (getattr(ctx, "options", None) or {}).get("attention", "heads")


def couple_heads(ctx, call, module_name: str, q, k, v, out_cols, per_head=(), per_dim=(),
                 approx_dim: str | None = None, also_out=()) -> None:
    """Join the atoms of one attention module by head or by head dimension.

    ``q``, ``k``, ``v``: (heads, head_dim) atoms of the projection rows; ``out_cols``: (heads,
    head_dim) atoms of the output projection's columns; ``also_out``: more arrays laid out like the
    attention output (a gate's rows, a norm's weight); ``per_head``: (heads,) atom arrays of
    per-head parameters; ``per_dim``: (head_dim,) atom arrays of parameters shared by all heads (a
    q/k norm). ``approx_dim`` says why removing head dimensions is approximate (a normalisation or
    a softmax over them), if it is. A virtual slot per module (``num_heads`` / ``head_dim``)
    carries the kept count to the module's updater.
    """
    heads, dim = q.shape
    outs = [out_cols, *also_out]
    if attention_mode(ctx) == "head_dim":
        slot = ctx.table.virtual_slot(module_name, "head_dim", dim).atoms
        for j in range(dim):
            parts = [q[:, j], k[:, j], v[:, j], slot[j:j + 1]] + [o[:, j] for o in outs]
            parts += [p[j:j + 1] for p in per_dim]
            ctx.table.join_all(np.concatenate(parts))
        if approx_dim:
            ctx.table.mark_approx(np.concatenate([q.ravel(), k.ravel()]), ctx.reason(call, approx_dim))
        return
    slot = ctx.table.virtual_slot(module_name, "num_heads", heads).atoms
    for h in range(heads):
        parts = [q[h], k[h], v[h], slot[h:h + 1]] + [o[h] for o in outs]
        parts += [p[h:h + 1] for p in per_head]
        ctx.table.join_all(np.concatenate(parts))


def switch_class(m, base: type, pruned: type) -> None:
    """Switch an attention module of exactly ``base`` (or already ``pruned``) to its pruned
    subclass. A user's subclass keeps its own class and ``forward``: it was traced through, not as
    one op, and its sizes come from the updated attributes."""
    if type(m) in (base, pruned):
        m.__class__ = pruned


def feed_input(ctx, call, x, weight_cols, dim: int | None = None) -> None:
    """The module reads ``x``'s channel dim (``dim``, default the last) through a projection's
    columns; other labelled dims of ``x`` cannot be followed through the leaf and are blocked."""
    dim = x.ndim - 1 if dim is None else dim
    for lab in ctx.labels(x):
        if lab.dims != (dim,):
            ctx.table.block(lab.atoms, ctx.reason(call, "channels on a dim the attention module "
                                                  "treats as tokens"))
    ctx.table.join(ctx.dim_atoms(x, dim, call), weight_cols,
                   ctx.reason(call, "attention input features"))


def emit_output(ctx, out, rows, dim: int | None = None) -> None:
    """The output's channel dim (``dim``, default the last) is the output projection's ``rows``."""
    ctx.set(out, [Labeling((out.ndim - 1 if dim is None else dim,), rows)])


def norm_weights(mod):
    """1-D affine tensors of a normalisation layer (none for ``nn.Identity``), or None if unknown."""
    if isinstance(mod, nn.Identity):
        return []
    ts = [t for t in (getattr(mod, "weight", None), getattr(mod, "bias", None)) if t is not None]
    return ts if all(t.ndim == 1 for t in ts) else None


def proj_rows(ctx, call, lin):
    """Atoms of a projection's output rows, joined with its bias."""
    rows = ctx.dim_atoms(lin.weight, 0, call, role="out")
    b = getattr(lin, "bias", None)
    if b is not None:
        ctx.table.join(rows, ctx.dim_atoms(b, 0, call, role="out"), ctx.reason(call, "bias"))
    return rows


def proj_cols(ctx, call, lin, heads):
    """(heads, head_dim) atoms of an output projection's input columns."""
    return ctx.dim_atoms(lin.weight, 1, call, role="in").reshape(heads, -1)


def is_linear(m) -> bool:
    return isinstance(m, nn.Linear)
