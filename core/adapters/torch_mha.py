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
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.adapters.attention_spec import AttentionSpec, fused, register_attention

_MHA_SIG = inspect.signature(F.multi_head_attention_forward)


@dataclass
class _MhaArgs:
    """The functional op's arguments, shaped like a module for the spec (``in_proj``, ``out_proj``)."""

    in_proj: SimpleNamespace
    out_proj: SimpleNamespace
    num_heads: int
    inputs: list  # query, key and value, each once
    args: dict


def _mha_args(call) -> _MhaArgs:
    a = _MHA_SIG.bind(*call.args, **call.kwargs).arguments
    inputs = []
    for t in (a["query"], a["key"], a["value"]):
        if not any(t is s for s in inputs):
            inputs.append(t)
    return _MhaArgs(SimpleNamespace(weight=a["in_proj_weight"], bias=a.get("in_proj_bias")),
                    SimpleNamespace(weight=a["out_proj_weight"], bias=a.get("out_proj_bias")),
                    int(a["num_heads"]), inputs, a)


def _unsupported(m: _MhaArgs) -> str | None:
    a = m.args
    if (a.get("use_separate_proj_weight") or a.get("bias_k") is not None or a.get("add_zero_attn")
            or a.get("static_k") is not None or a.get("static_v") is not None or m.in_proj.weight is None):
        return "attention with separate projections, bias_k/v or zero attention is not supported"
    return None


def _feed(ctx, call, m: _MhaArgs, feeds):
    # the packed projection reads the same features from query, key and value
    w_cols = ctx.dim_atoms(feeds[0], 1, call, role="in")
    for t in m.inputs:
        ctx.table.join(ctx.dim_atoms(t, t.ndim - 1, call), w_cols,
                       ctx.reason(call, "attention input features that cannot be pruned"))


def _returned_weights(ctx, call, m: _MhaArgs, rows):
    qkv = np.concatenate([rows.q.ravel(), rows.k.ravel(), rows.v.ravel()])
    if len(call.out_tensors) > 1 and not m.args.get("average_attn_weights", True):
        # per-head weights are returned: their head dimension would shrink
        ctx.table.block(qkv, ctx.reason(call, "per-head attention weights are returned"))
    elif len(call.out_tensors) > 1:
        ctx.table.mark_approx(qkv, ctx.reason(call, "returned attention weights average the heads"))


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


def _kept_heads(m, virtual):
    # heads follow the packed rows: a pruned module is traced through (its heads are the inferred
    # dim of a view), so a later round changes the rows without a virtual slot
    return m.in_proj_weight.shape[0] // 3 // virtual.get("head_dim", m.head_dim)


def _stream(m, virtual):
    m.embed_dim = m.kdim = m.vdim = m.in_proj_weight.shape[1]
    m._qkv_same_embed_dim = True


register_attention(AttentionSpec(
    classes={nn.MultiheadAttention: PrunedMultiheadAttention}, op="multi_head_attention_forward",
    leaf=False, module=_mha_args, reject=_unsupported, qkv=fused("in_proj"), out="out_proj",
    feed=_feed, rules=_returned_weights, freeze_scale=True, kept_heads=_kept_heads,
    head_dim="head_dim", update=_stream))
