"""Head and head-dimension pruning for timm's ``Attention`` (ViT, DeiT, and the models built on it).

Loaded only once timm is imported (``core.families``). timm reshapes with
``self.num_heads`` / ``self.head_dim`` / ``self.attn_dim``, and its fused path lets
``scaled_dot_product_attention`` derive the scale from the (pruned) head width; the module is
therefore traced as one op and, once pruned, switched to :class:`PrunedTimmAttention`, which infers
the widths from its weights and keeps the original ``scale``.
"""
from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import nn

import timm.layers
from core.adapters.heads import couple_heads, emit_output, feed_input, norm_weights, qkv_rows, switch_class
from core.ops.registry import register_leaf_module, register_op
from core.prune.apply import register_module_updater

TimmAttention = timm.layers.Attention


class PrunedTimmAttention(TimmAttention):
    """timm ``Attention`` after head / head-dimension pruning."""

    def forward(self, x, attn_mask=None, is_causal=False):
        b, n, _ = x.shape
        gate = getattr(self, "gate", None)
        gate = gate(x).sigmoid() if gate is not None else None
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal and attn_mask is None,
            dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        y = self.norm(y.transpose(1, 2).reshape(b, n, -1))
        if gate is not None:
            y = y * gate
        return self.proj_drop(self.proj(y))



def _accepts(m) -> bool:
    """The layouts handled here; anything else is traced through (and may stay blocked)."""
    ok = (isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "proj", None), nn.Linear)
          and isinstance(getattr(m, "num_heads", None), int) and isinstance(getattr(m, "head_dim", None), int)
          and m.qkv.out_features == 3 * m.num_heads * m.head_dim
          and m.proj.in_features == m.num_heads * m.head_dim)
    gate = getattr(m, "gate", None)
    return ok and (gate is None or isinstance(gate, nn.Linear)) and all(
        norm_weights(getattr(m, n, nn.Identity())) is not None for n in ("q_norm", "k_norm", "norm"))


for _cls in (TimmAttention, PrunedTimmAttention):
    register_leaf_module(_cls, "timm_attention", _accepts)


@register_op("timm_attention")
def _timm_op(ctx, call):
    m, x = call.func, call.args[0]
    heads = m.num_heads
    q, k, v = qkv_rows(ctx, call, m.qkv.weight, m.qkv.bias, heads)
    cols = ctx.dim_atoms(m.proj.weight, 1, call, role="in").reshape(heads, -1)
    also = []
    gate = getattr(m, "gate", None)
    if gate is not None:
        also.append(ctx.dim_atoms(gate.weight, 0, call, role="in").reshape(heads, -1))
        if gate.bias is not None:
            also.append(ctx.dim_atoms(gate.bias, 0, call, role="in").reshape(heads, -1))
    norm = norm_weights(m.norm)
    for t in norm:
        also.append(ctx.dim_atoms(t, 0, call, role="in").reshape(heads, -1))
    if norm:
        ctx.table.mark_approx(np.concatenate([q.ravel(), k.ravel(), v.ravel()]), ctx.reason(
            call, "the output norm (scale_norm) normalises across all heads"))
    per_dim = [ctx.dim_atoms(t, 0, call, role="in") for n in ("q_norm", "k_norm")
               for t in norm_weights(getattr(m, n))]
    couple_heads(ctx, call, call.scope, q, k, v, cols, per_dim=per_dim, also_out=also,
                 approx_dim="q/k norms normalise over the head dimension")
    feed_input(ctx, call, x, ctx.dim_atoms(m.qkv.weight, 1, call, role="in"))
    if gate is not None:
        feed_input(ctx, call, x, ctx.dim_atoms(gate.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


@register_module_updater(TimmAttention)
def _timm_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    m.head_dim = m.proj.weight.shape[1] // m.num_heads
    if hasattr(m, "attn_dim"):
        m.attn_dim = m.num_heads * m.head_dim
    switch_class(m, TimmAttention, PrunedTimmAttention)




