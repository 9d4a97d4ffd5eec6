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
from core.adapters.attention_spec import AttentionSpec, HeadParts, fused, register_attention
from core.adapters.heads import norm_weights, proj_rows

TimmAttention = timm.layers.Attention


def attend(m, x, q, k, v, attn_mask=None, is_causal=False):
    """What timm's ``Attention`` and ``EvaAttention`` do once q, k and v are ready (normed,
    rotated), with the widths read off the tensors: fused attention at the original scale, output
    norm, gate, output projection."""
    y = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, is_causal=is_causal,
        dropout_p=m.attn_drop.p if m.training else 0.0, scale=m.scale)
    b, n = x.shape[:2]
    y = m.norm(y.transpose(1, 2).reshape(b, n, -1))
    if getattr(m, "gate", None) is not None:
        y = y * m.gate(x).sigmoid()
    return m.proj_drop(m.proj(y))


class PrunedTimmAttention(TimmAttention):
    """timm ``Attention`` after head / head-dimension pruning."""

    def forward(self, x, attn_mask=None, is_causal=False):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        return attend(self, x, self.q_norm(q), self.k_norm(k), v, attn_mask, is_causal and attn_mask is None)


def gate_and_norms(ctx, call, m, rows) -> HeadParts:
    """timm's optional gate (a linear of the input, one row per attention channel), output norm
    (``scale_norm``: per channel, but normalising across all heads) and q/k norms (per head
    dimension, shared by every head)."""
    heads = rows.q.shape[0]
    parts = HeadParts()
    gate = getattr(m, "gate", None)
    if gate is not None:
        parts.also_out.append(proj_rows(ctx, call, gate).reshape(heads, -1))
        parts.feeds.append(gate.weight)
    norm = norm_weights(m.norm)
    parts.also_out += [ctx.dim_atoms(t, 0, call, role="in").reshape(heads, -1) for t in norm]
    if norm:
        ctx.table.mark_approx(np.concatenate([rows.q.ravel(), rows.k.ravel(), rows.v.ravel()]), ctx.reason(
            call, "the output norm (scale_norm) normalises across all heads"))
    parts.per_dim = [ctx.dim_atoms(t, 0, call, role="in") for n in ("q_norm", "k_norm")
                     for t in norm_weights(getattr(m, n))]
    if parts.per_dim:
        parts.dim_approx = "q/k norms normalise over the head dimension"
    return parts


def norms_known(m) -> bool:
    return all(norm_weights(getattr(m, n)) is not None for n in ("q_norm", "k_norm", "norm"))


def _accepts(m) -> bool:
    """The layouts handled here; anything else is traced through (and may stay blocked)."""
    ok = (isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "proj", None), nn.Linear)
          and isinstance(getattr(m, "num_heads", None), int) and isinstance(getattr(m, "head_dim", None), int)
          and m.qkv.out_features == 3 * m.num_heads * m.head_dim
          and m.proj.in_features == m.num_heads * m.head_dim)
    gate = getattr(m, "gate", None)
    return ok and (gate is None or isinstance(gate, nn.Linear)) and norms_known(m)


def _attn_dim(m, virtual):
    if hasattr(m, "attn_dim"):
        m.attn_dim = m.num_heads * m.head_dim


register_attention(AttentionSpec(
    classes={TimmAttention: PrunedTimmAttention}, op="timm_attention", qkv=fused("qkv"),
    accepts=_accepts, parts=gate_and_norms, head_dim="head_dim", update=_attn_dim))
