"""Multi-head attention: head pruning for ``nn.MultiheadAttention``.

``F.multi_head_attention_forward`` is traced as one op. Its heads are the channels of a group:
head h is the q, k and v rows ``h*d:(h+1)*d`` of the packed input projection together with the
same columns of the output projection. Removing a head whose slices are zero changes nothing (its
scores are uniform, its values zero, its output columns zero), so head pruning is exact. The
residual stream (the projections' outer dims) is pruned like any linear layer.

``nn.MultiheadAttention`` itself insists that the query width equals its inner width; a pruned
module is therefore switched to :class:`PrunedMultiheadAttention`, a subclass (same parameters,
same state-dict keys) whose forward allows any number of heads and any stream width.
"""
from __future__ import annotations

import inspect
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.ops.atoms import Labeling
from core.adapters.heads import couple_heads, switch_class
from core.ops.registry import register_op
from core.prune.apply import register_module_updater

_MHA_SIG = inspect.signature(F.multi_head_attention_forward)


@register_op("multi_head_attention_forward")
def multi_head_attention(ctx, call):
    a = _MHA_SIG.bind(*call.args, **call.kwargs).arguments
    q, k, v = a["query"], a["key"], a["value"]
    w_in, b_in = a["in_proj_weight"], a.get("in_proj_bias")
    w_out, b_out = a["out_proj_weight"], a.get("out_proj_bias")
    if (a.get("use_separate_proj_weight") or a.get("bias_k") is not None or a.get("add_zero_attn")
            or a.get("static_k") is not None or a.get("static_v") is not None or w_in is None):
        return ctx.block_inputs(call, "attention with separate projections, bias_k/v or zero "
                                "attention is not supported")
    heads = int(a["num_heads"])
    inner = w_in.shape[0] // 3
    d = inner // heads
    rows = ctx.dim_atoms(w_in, 0, call, role="out")
    cols = ctx.dim_atoms(w_out, 1, call, role="in")
    q_rows, k_rows, v_rows = rows.reshape(3, heads, d)
    couple_heads(ctx, call, call.scope, q_rows, k_rows, v_rows, cols.reshape(heads, d))
    if b_in is not None:
        ctx.table.join(rows, ctx.dim_atoms(b_in, 0, call, role="out"), ctx.reason(call, "bias"))
    w_cols = ctx.dim_atoms(w_in, 1, call, role="in")
    seen = []
    for t in (q, k, v):  # the packed projection reads the same features from q, k and v
        if any(t is s for s in seen):
            continue
        seen.append(t)
        ctx.table.join(ctx.dim_atoms(t, t.ndim - 1, call), w_cols,
                       ctx.reason(call, "attention input features that cannot be pruned"))
    out_rows = ctx.dim_atoms(w_out, 0, call, role="out")
    if b_out is not None:
        ctx.table.join(out_rows, ctx.dim_atoms(b_out, 0, call, role="out"), ctx.reason(call, "bias"))
    outs = call.out_tensors
    if outs:
        ctx.set(outs[0], [Labeling((outs[0].ndim - 1,), out_rows)])
    if len(outs) > 1 and not a.get("average_attn_weights", True):
        # per-head weights are returned: their head dimension would shrink
        ctx.table.block(rows, ctx.reason(call, "per-head attention weights are returned"))
    elif len(outs) > 1:
        ctx.table.mark_approx(rows, ctx.reason(call, "returned attention weights average the heads"))


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` after head or stream pruning (packed projections only)."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
        n, length, s = query.shape[0], query.shape[1], key.shape[1]
        # heads are inferred (-1): a later pruning round may remove more of them
        q = F.linear(query, wq, bq).view(n, length, -1, self.head_dim).transpose(1, 2)
        k = F.linear(key, wk, bk).view(n, s, -1, self.head_dim).transpose(1, 2)
        v = F.linear(value, wv, bv).view(n, s, -1, self.head_dim).transpose(1, 2)
        mask = _additive_mask(attn_mask, key_padding_mask, q)
        p = self.dropout if self.training else 0.0
        # the scale of the original head width: head-dimension pruning stays exact
        scale = getattr(self, "scale", None) or 1 / math.sqrt(self.head_dim)
        if need_weights:
            scores = q @ k.transpose(-2, -1) * scale
            if mask is not None:
                scores = scores + mask
            elif is_causal:
                scores = scores.masked_fill(torch.ones(length, s, dtype=torch.bool,
                                                       device=q.device).triu(1), float("-inf"))
            attn = F.dropout(scores.softmax(-1), p, self.training)
            out = attn @ v
            weights = attn.mean(1) if average_attn_weights else attn
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                 is_causal=is_causal and mask is None, scale=scale)
            weights = None
        out = F.linear(out.transpose(1, 2).reshape(n, length, -1), self.out_proj.weight,
                       self.out_proj.bias)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1)
            weights = weights.squeeze(0) if weights is not None else None
        return out, weights


def _additive_mask(attn_mask, key_padding_mask, q):
    mask = None
    if attn_mask is not None:
        if attn_mask.dim() == 3:
            raise RuntimeError("a per-head 3-D attn_mask does not fit a head-pruned attention; "
                               "pass a 2-D mask")
        mask = _to_additive(attn_mask, q.dtype)
    if key_padding_mask is not None:
        kpm = _to_additive(key_padding_mask, q.dtype)[:, None, None, :]
        mask = kpm if mask is None else mask + kpm
    return mask


def _to_additive(m, dtype):
    if m.dtype == torch.bool:
        return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf"))
    return m.to(dtype)


@register_module_updater(nn.MultiheadAttention)
def _mha(m, virtual):
    if getattr(m, "scale", None) is None:
        m.scale = m.head_dim ** -0.5  # still the original width here
    inner = m.in_proj_weight.shape[0] // 3
    m.head_dim = virtual.get("head_dim", m.head_dim)
    m.num_heads = inner // m.head_dim
    m.embed_dim = m.kdim = m.vdim = m.in_proj_weight.shape[1]
    m._qkv_same_embed_dim = True
    switch_class(m, nn.MultiheadAttention, PrunedMultiheadAttention)
