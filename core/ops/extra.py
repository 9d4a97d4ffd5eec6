"""Extra op semantics: fused multiply-add products and grouped-query attention.

- ``addmm`` / ``baddbmm`` / ``addmv`` / ``addbmm`` / ``addr``: ``beta * input + alpha * (product)``;
  the product is an ordinary contraction (see ``opsem.einsum_semantics``) and ``input`` is added
  with broadcasting. Hugging Face's GPT-2 ``Conv1D`` is ``torch.addmm(bias, x2d, weight)`` with a
  ``(in, out)`` weight: its dim 1 produces channels, dim 0 consumes them.
- ``scaled_dot_product_attention(..., enable_gqa=True)``: query heads ``H = G * r`` share key/value
  head ``h // r``. Pruning keeps the layout consistent by removing whole key/value groups: kv head
  ``g`` goes together with its ``r`` query heads, so ``num_key_value_groups`` stays ``r``.
- gather / take_along_dim / index_select / scatter with index tensors along a dim that carries no
  channels (k-nearest-neighbour gathering in point-cloud networks): channels on the other dims
  pass through.
"""
from __future__ import annotations

import numpy as np
import torch

from core.ops.atoms import Labeling
from core.ops.common import combine
from core.ops.registry import OP_HANDLERS, register_op
from core.ops.layers import sdpa_batch_dims, sdpa_features


def _param_role(ctx, t, role):
    return role


def _vec(ctx, t, d, call, role="pass"):
    return ctx.dim_atoms(t, d % t.ndim, call, role=role)


def _addlike(ctx, call, out_specs, inp, contraction):
    """Generic ``input + product``: ``out_specs`` lists, per output dim, the (tensor, dim, role)
    that produce it; ``contraction`` lists pairs of (tensor, dim, role) that are summed."""
    out = call.out_tensors[0]
    labs = []
    for e, srcs in enumerate(out_specs):
        vecs = [_vec(ctx, t, d, call, role) for t, d, role in srcs]
        if isinstance(inp, torch.Tensor) and inp.ndim > 0:
            d = e - (out.ndim - inp.ndim)
            if d >= 0 and not (inp.shape[d] == 1 and out.shape[e] != 1):
                # the added term (bias) is produced together with the product's outputs
                role = "out" if any(r == "out" for _, _, r in srcs) else "pass"
                vecs.append(_vec(ctx, inp, d, call, role))
        labs.extend(combine(ctx, vecs, e, call))
    for (a, da, ra), (b, db, rb) in contraction:
        ctx.table.join(_vec(ctx, a, da, call, ra), _vec(ctx, b, db, call, rb),
                       ctx.reason(call, "contracted with a tensor that cannot be pruned"))
    ctx.set(out, labs)


@register_op("addmm")
def addmm(ctx, call):
    inp, m1, m2 = call.args[:3]
    _addlike(ctx, call, [[(m1, 0, "pass")], [(m2, 1, "out")]], inp, [((m1, 1, "pass"), (m2, 0, "in"))])


@register_op("baddbmm")
def baddbmm(ctx, call):
    inp, b1, b2 = call.args[:3]
    _addlike(ctx, call, [[(b1, 0, "pass"), (b2, 0, "pass")], [(b1, 1, "pass")], [(b2, 2, "out")]],
             inp, [((b1, 2, "pass"), (b2, 1, "in"))])


@register_op("addbmm")
def addbmm(ctx, call):
    inp, b1, b2 = call.args[:3]
    # the batch dim is summed as well
    _addlike(ctx, call, [[(b1, 1, "pass")], [(b2, 2, "out")]], inp,
             [((b1, 2, "pass"), (b2, 1, "in")), ((b1, 0, "pass"), (b2, 0, "pass"))])


@register_op("addmv")
def addmv(ctx, call):
    inp, mat, vec = call.args[:3]
    _addlike(ctx, call, [[(mat, 0, "out")]], inp, [((mat, 1, "in"), (vec, 0, "pass"))])


@register_op("addr")
def addr(ctx, call):
    inp, v1, v2 = call.args[:3]
    _addlike(ctx, call, [[(v1, 0, "pass")], [(v2, 0, "pass")]], inp, [])


# --------------------------------------------------------------------------------------------
# grouped-query attention through F.scaled_dot_product_attention(enable_gqa=True)

_SDPA = OP_HANDLERS.get("scaled_dot_product_attention")


def _sdpa_arg(call, i, name, default=None):
    if len(call.args) > i:
        return call.args[i]
    return call.kwargs.get(name, default)


@register_op("scaled_dot_product_attention")
def sdpa_gqa(ctx, call):
    q, k, v = call.args[:3]
    if q.ndim < 3 or q.shape[-3] == k.shape[-3] or not _sdpa_arg(call, 7, "enable_gqa", False):
        return _SDPA(ctx, call)
    mask = _sdpa_arg(call, 3, "attn_mask")
    out = call.out_tensors[0]
    nd = out.ndim
    labs = sdpa_batch_dims(ctx, call, (q, k, v, mask), out, nd - 3)  # batch dims before heads
    hq, hk = int(q.shape[-3]), int(k.shape[-3])
    r = hq // hk
    qh, kh, vh = (ctx.dim_atoms(t, t.ndim - 3, call) for t in (q, k, v))
    ctx.table.join(kh, vh, ctx.reason(call, "key and value heads"))
    why = ctx.reason(call, "grouped-query attention: a key/value head with its query heads")
    for g in range(hk):
        grp = np.concatenate([qh[g * r:(g + 1) * r], kh[g:g + 1]])
        if (grp < 0).any():
            ctx.table.block(grp, why)
        ctx.table.join_all(grp)
    if isinstance(mask, torch.Tensor) and mask.ndim >= 3 and mask.shape[-3] > 1:
        ctx.table.join(qh, ctx.dim_atoms(mask, mask.ndim - 3, call), ctx.reason(call, "mask heads"))
    if (qh >= 0).any():
        labs.append(Labeling((nd - 3,), qh))
    sdpa_features(ctx, call, q, k, v, nd, labs)
    ctx.set(out, labs)

