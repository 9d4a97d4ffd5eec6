"""Head and head-dimension pruning for torchvision's Swin (v1, v2) and MaxViT attention.

Both compute their head width from another tensor's channel count (``C // num_heads``, a final
``reshape(..., C)``) or from ``self.head_dim``, so they are traced as one op (see
``core.attention_heads``) and, once pruned, switched to a subclass — same parameters, same
state-dict keys — whose ``forward`` infers the widths from its weights and keeps the original
softmax scale.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.models import maxvit, swin_transformer as swin, vision_transformer as tv_vit

from .attention_heads import couple_heads, emit_output, feed_input, qkv_rows
from .opsem import register_leaf_module, register_op
from .prune import register_module_updater

# ---- Swin ------------------------------------------------------------------------------------


def _shift_mask(hp, wp, window, shift, like) -> torch.Tensor:
    """Additive mask (windows, N, N) that keeps shifted windows from mixing wrapped regions."""

    def regions(n, w, s):
        r = torch.zeros(n, dtype=torch.long)
        for i, sl in enumerate((slice(0, -w), slice(-w, -s), slice(-s, None))):
            r[sl] = i  # the same three bands torchvision labels (later bands win)
        return r

    lab = regions(hp, window[0], shift[0])[:, None] * 3 + regions(wp, window[1], shift[1])[None, :]
    nh, nw = hp // window[0], wp // window[1]
    lab = lab.view(nh, window[0], nw, window[1]).transpose(1, 2).reshape(nh * nw, -1)
    differ = lab[:, None, :] != lab[:, :, None]
    return torch.zeros(differ.shape, dtype=like.dtype).masked_fill(differ, -100.0).to(like.device)


def window_attention(m, x: torch.Tensor, rel_bias: torch.Tensor, logit_scale=None) -> torch.Tensor:
    """Shifted-window attention with widths read from the weights (any heads, any head size)."""
    b, h, w, c = x.shape
    wh, ww = m.window_size
    pad_b, pad_r = (-h) % wh, (-w) % ww
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = h + pad_b, w + pad_r
    shift = (m.shift_size[0] if wh < hp else 0, m.shift_size[1] if ww < wp else 0)
    if any(shift):
        x = torch.roll(x, (-shift[0], -shift[1]), (1, 2))
    nh, nw = hp // wh, wp // ww
    win = x.reshape(b, nh, wh, nw, ww, c).transpose(2, 3).reshape(b * nh * nw, wh * ww, c)
    bias = m.qkv.bias
    if logit_scale is not None and bias is not None:  # v2 uses no key bias
        third = bias.numel() // 3
        bias = torch.cat([bias[:third], torch.zeros_like(bias[third:2 * third]), bias[2 * third:]])
    q, k, v = F.linear(win, m.qkv.weight, bias).unflatten(-1, (3, m.num_heads, -1)).permute(2, 0, 3, 1, 4)
    if logit_scale is not None:  # v2: cosine attention with a learned per-head temperature
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * m.scale) @ k.transpose(-2, -1)
    attn = attn + rel_bias
    n = wh * ww
    if any(shift):
        mask = _shift_mask(hp, wp, m.window_size, shift, attn)
        attn = (attn.view(b, nh * nw, m.num_heads, n, n) + mask[None, :, None]).view(-1, m.num_heads, n, n)
    attn = F.dropout(attn.softmax(-1), m.attention_dropout, m.training)
    y = (attn @ v).transpose(1, 2).reshape(b * nh * nw, n, -1)
    y = F.dropout(F.linear(y, m.proj.weight, m.proj.bias), m.dropout, m.training)
    y = y.view(b, nh, nw, wh, ww, -1).transpose(2, 3).reshape(b, hp, wp, -1)
    if any(shift):
        y = torch.roll(y, shift, (1, 2))
    return y[:, :h, :w].contiguous()


class PrunedShiftedWindowAttention(swin.ShiftedWindowAttention):
    """``ShiftedWindowAttention`` after head / head-dimension pruning (``scale`` kept)."""

    def forward(self, x):
        return window_attention(self, x, self.get_relative_position_bias())


class PrunedShiftedWindowAttentionV2(swin.ShiftedWindowAttentionV2):
    """``ShiftedWindowAttentionV2`` after head / head-dimension pruning."""

    def forward(self, x):
        return window_attention(self, x, self.get_relative_position_bias(), self.logit_scale)


_SWIN = (swin.ShiftedWindowAttention, PrunedShiftedWindowAttention,
         swin.ShiftedWindowAttentionV2, PrunedShiftedWindowAttentionV2)
for _cls in _SWIN:
    register_leaf_module(_cls, "swin_window_attention")


@register_op("swin_window_attention")
def _swin_op(ctx, call):
    m, x = call.func, call.args[0]
    heads = m.num_heads
    q, k, v = qkv_rows(ctx, call, m.qkv.weight, m.qkv.bias, heads)
    cols = ctx.dim_atoms(m.proj.weight, 1, call, role="in").reshape(heads, -1)
    if isinstance(m, swin.ShiftedWindowAttentionV2):
        per_head = [ctx.dim_atoms(m.cpb_mlp[-1].weight, 0, call, role="in"),
                    ctx.dim_atoms(m.logit_scale, 0, call, role="in")]
    else:
        per_head = [ctx.dim_atoms(m.relative_position_bias_table, 1, call, role="in")]
    couple_heads(ctx, call, call.scope, q, k, v, cols, per_head=per_head)
    feed_input(ctx, call, x, ctx.dim_atoms(m.qkv.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


@register_module_updater(swin.ShiftedWindowAttention)
def _swin_update(m, virtual):
    # Updaters run parents first, so m.proj.in_features is still the original attention width.
    if not hasattr(m, "scale"):
        m.scale = (m.proj.in_features // m.num_heads) ** -0.5
    m.num_heads = virtual.get("num_heads", m.num_heads)
    v2 = isinstance(m, swin.ShiftedWindowAttentionV2)
    m.__class__ = PrunedShiftedWindowAttentionV2 if v2 else PrunedShiftedWindowAttention


# ---- MaxViT ----------------------------------------------------------------------------------


class PrunedRelativePositionalMultiHeadAttention(maxvit.RelativePositionalMultiHeadAttention):
    """MaxViT attention after head / head-dimension pruning (its ``scale_factor`` is kept)."""

    def forward(self, x):
        b, g, p, _ = x.shape
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.n_heads, -1)).permute(3, 0, 1, 4, 2, 5)
        attn = q @ (k * self.scale_factor).transpose(-2, -1) + self.get_relative_positional_bias()
        out = (attn.softmax(-1) @ v).transpose(2, 3).reshape(b, g, p, -1)
        return self.merge(out)


for _cls in (maxvit.RelativePositionalMultiHeadAttention, PrunedRelativePositionalMultiHeadAttention):
    register_leaf_module(_cls, "maxvit_attention")


@register_op("maxvit_attention")
def _maxvit_op(ctx, call):
    m, x = call.func, call.args[0]
    q, k, v = qkv_rows(ctx, call, m.to_qkv.weight, m.to_qkv.bias, m.n_heads)
    cols = ctx.dim_atoms(m.merge.weight, 1, call, role="in").reshape(m.n_heads, -1)
    per_head = [ctx.dim_atoms(m.relative_position_bias_table, 1, call, role="in")]
    couple_heads(ctx, call, call.scope, q, k, v, cols, per_head=per_head)
    feed_input(ctx, call, x, ctx.dim_atoms(m.to_qkv.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.merge.weight, m.merge.bias)


@register_module_updater(maxvit.RelativePositionalMultiHeadAttention)
def _maxvit_update(m, virtual):
    m.n_heads = virtual.get("num_heads", m.n_heads)
    m.head_dim = m.merge.weight.shape[1] // m.n_heads
    m.__class__ = PrunedRelativePositionalMultiHeadAttention


# ---- torchvision ViT -------------------------------------------------------------------------


@register_module_updater(tv_vit.VisionTransformer)
def _vit_update(m, virtual):
    # _process_input reshapes the patch embedding with self.hidden_dim
    m.hidden_dim = m.conv_proj.weight.shape[0]
