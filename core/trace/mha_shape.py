"""Output shapes of ``F.multi_head_attention_forward`` read off its arguments (see
``core.trace.shapes``, which uses it; kept apart to keep that file short)."""
from __future__ import annotations

import torch


def same_kind(*ts):
    """Float tensors of one dtype and device, strided."""
    t0 = ts[0]
    return all(isinstance(t, torch.Tensor) and t.dtype == t0.dtype and t.device == t0.device
               and t.is_floating_point() and t.layout == torch.strided for t in ts)


_MHA = ("query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight",
        "in_proj_bias", "bias_k", "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight",
        "out_proj_bias", "training", "key_padding_mask", "need_weights", "attn_mask",
        "use_separate_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "static_k",
        "static_v", "average_attn_weights", "is_causal")
_MHA_DEFAULTS = {"training": True, "need_weights": True, "use_separate_proj_weight": False,
                 "average_attn_weights": True, "is_causal": False}


def mha_shapes(args, kwargs):
    """``F.multi_head_attention_forward`` -> (output shape, attention weights shape or None), for
    the plain case (packed or separate projections, no added key/value bias, no masks)."""
    a = {n: (args[i] if i < len(args) else kwargs.get(n, _MHA_DEFAULTS.get(n)))
         for i, n in enumerate(_MHA)}
    q, k, v, w_out = a["query"], a["key"], a["value"], a["out_proj_weight"]
    if any(a[n] is not None for n in ("bias_k", "bias_v", "key_padding_mask", "attn_mask",
                                      "static_k", "static_v")) or a["add_zero_attn"] or \
            a["is_causal"]:
        return None
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v, w_out)) or not same_kind(q, k, v, w_out):
        return None
    heads, e = int(a["num_heads"]), int(a["embed_dim_to_check"])
    if q.ndim not in (2, 3) or k.ndim != q.ndim or v.ndim != q.ndim or q.shape[-1] != e or \
            heads < 1 or e % heads or k.shape[:-1] != v.shape[:-1] or q.shape[1:-1] != k.shape[1:-1]:
        return None
    if a["use_separate_proj_weight"]:
        ws = (a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"])
        if not all(isinstance(t, torch.Tensor) and t.ndim == 2 for t in ws) or \
                tuple(ws[0].shape) != (e, e) or ws[1].shape[1] != k.shape[-1] or \
                ws[2].shape[1] != v.shape[-1] or ws[1].shape[0] != e or ws[2].shape[0] != e:
            return None
    else:
        w = a["in_proj_weight"]
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != (3 * e, e) or \
                k.shape[-1] != e or v.shape[-1] != e:
            return None
    if tuple(w_out.shape) != (e, e):
        return None
    out = tuple(q.shape[:-1]) + (e,)
    if not a["need_weights"]:
        return out, None
    lq, s = q.shape[0], k.shape[0]
    batch = () if q.ndim == 2 else (q.shape[1],)
    return out, batch + (() if a["average_attn_weights"] else (heads,)) + (lq, s)
