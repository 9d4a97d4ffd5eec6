"""Head and head-dimension pruning for torchvision's Swin (v1, v2, 3-D video) and MaxViT attention.

Both compute their head width from another tensor's channel count (``C // num_heads``, a final
``reshape(..., C)``) or from ``self.head_dim``, so they are traced as one op (see
``core.adapters.heads``) and, once pruned, switched to a subclass — same parameters, same
state-dict keys — whose ``forward`` infers the widths from its weights and keeps the original
softmax scale.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.models import maxvit, swin_transformer as swin, vision_transformer as tv_vit
from torchvision.models.video import mvit, swin_transformer as swin3d

from core.adapters.attention_spec import AttentionSpec, fused, register_attention
from core.prune.apply import register_module_updater

# ---- Swin ------------------------------------------------------------------------------------


def _partition(size, window):
    """View shape and permutation that turn (B, *size, C) into (B, *windows, *window, C)."""
    nd = len(size)
    view = [n for s, w in zip(size, window) for n in (s // w, w)]
    perm = [0] + [1 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)] + [2 * nd + 1]
    return view, perm


def _shift_mask(size, window, shift, like) -> torch.Tensor:
    """Additive mask (windows, N, N) that keeps shifted windows from mixing wrapped regions."""
    lab = torch.zeros(size, dtype=torch.long)
    for d, (n, w, s) in enumerate(zip(size, window, shift)):
        band = torch.zeros(n, dtype=torch.long)
        for i, sl in enumerate((slice(0, -w), slice(-w, -s), slice(-s, None))):
            band[sl] = i  # the three bands torchvision labels, later bands winning
        lab = lab * 3 + band.view([-1 if k == d else 1 for k in range(len(size))])
    view, perm = _partition(size, window)
    lab = lab.view(view).permute([p - 1 for p in perm[1:-1]]).reshape(-1, math.prod(window))
    differ = lab[:, None, :] != lab[:, :, None]
    return torch.zeros(differ.shape, dtype=like.dtype).masked_fill(differ, -100.0).to(like.device)


def window_attention(m, x: torch.Tensor, rel_bias: torch.Tensor, window, shift,
                     logit_scale=None) -> torch.Tensor:
    """(Shifted-)window attention over (B, *spatial, C), 2-D or 3-D, with the widths read from
    the weights (any number of heads, any head size)."""
    b, *size, c = x.shape
    pads = [(-s) % w for s, w in zip(size, window)]
    x = F.pad(x, [0, 0] + [v for p in reversed(pads) for v in (0, p)])
    padded = [s + p for s, p in zip(size, pads)]
    shift = [s if w < n else 0 for s, w, n in zip(shift, window, padded)]
    dims = tuple(range(1, len(size) + 1))
    if any(shift):
        x = torch.roll(x, [-s for s in shift], dims)
    view, perm = _partition(padded, window)
    n = math.prod(window)
    win = x.reshape(b, *view, c).permute(perm).reshape(-1, n, c)
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
    if any(shift):
        mask = _shift_mask(padded, window, shift, attn)
        attn = (attn.view(b, -1, m.num_heads, n, n) + mask[None, :, None]).view(-1, m.num_heads, n, n)
    attn = F.dropout(attn.softmax(-1), m.attention_dropout, m.training)
    y = (attn @ v).transpose(1, 2).reshape(-1, n, attn.shape[1] * v.shape[-1])
    y = F.dropout(F.linear(y, m.proj.weight, m.proj.bias), m.dropout, m.training)
    windows = [p // w for p, w in zip(padded, window)]
    inverse = sorted(range(len(perm)), key=perm.__getitem__)
    y = y.view(b, *windows, *window, -1).permute(inverse).reshape(b, *padded, -1)
    if any(shift):
        y = torch.roll(y, shift, dims)
    return y[(slice(None), *(slice(0, s) for s in size))].contiguous()


class PrunedShiftedWindowAttention(swin.ShiftedWindowAttention):
    """``ShiftedWindowAttention`` after head / head-dimension pruning (``scale`` kept)."""

    def forward(self, x):
        return window_attention(self, x, self.get_relative_position_bias(), self.window_size,
                                self.shift_size)


class PrunedShiftedWindowAttentionV2(swin.ShiftedWindowAttentionV2):
    """``ShiftedWindowAttentionV2`` after head / head-dimension pruning."""

    def forward(self, x):
        return window_attention(self, x, self.get_relative_position_bias(), self.window_size,
                                self.shift_size, self.logit_scale)


class PrunedShiftedWindowAttention3d(swin3d.ShiftedWindowAttention3d):
    """Video Swin (Swin3D) attention after head / head-dimension pruning."""

    def forward(self, x):
        window, shift = swin3d._get_window_and_shift_size(
            list(self.shift_size), list(x.shape[1:4]), list(self.window_size))
        return window_attention(self, x, self.get_relative_position_bias(window), window, shift)


def _swin_per_head(m):
    if isinstance(m, swin.ShiftedWindowAttentionV2):  # continuous position bias, cosine temperature
        return [(m.cpb_mlp[-1].weight, 0), (m.logit_scale, 0)]
    return [(m.relative_position_bias_table, 1)]


# the library derives the softmax scale from the (pruned) width: freeze_scale keeps the original
register_attention(AttentionSpec(
    classes={swin.ShiftedWindowAttention: PrunedShiftedWindowAttention,
             swin.ShiftedWindowAttentionV2: PrunedShiftedWindowAttentionV2,
             swin3d.ShiftedWindowAttention3d: PrunedShiftedWindowAttention3d},
    op="swin_window_attention", qkv=fused("qkv"), per_head=_swin_per_head, freeze_scale=True))


# ---- MaxViT ----------------------------------------------------------------------------------


class PrunedRelativePositionalMultiHeadAttention(maxvit.RelativePositionalMultiHeadAttention):
    """MaxViT attention after head / head-dimension pruning (its ``scale_factor`` is kept)."""

    def forward(self, x):
        b, g, p, _ = x.shape
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.n_heads, -1)).permute(3, 0, 1, 4, 2, 5)
        attn = q @ (k * self.scale_factor).transpose(-2, -1) + self.get_relative_positional_bias()
        out = (attn.softmax(-1) @ v).transpose(2, 3).reshape(b, g, p, -1)
        return self.merge(out)


register_attention(AttentionSpec(
    classes={maxvit.RelativePositionalMultiHeadAttention: PrunedRelativePositionalMultiHeadAttention},
    op="maxvit_attention", qkv=fused("to_qkv"), out="merge", heads="n_heads", head_dim="head_dim",
    per_head=lambda m: [(m.relative_position_bias_table, 1)]))


# ---- torchvision ViT -------------------------------------------------------------------------


@register_module_updater(tv_vit.VisionTransformer)
def _vit_update(m, virtual):
    # _process_input reshapes the patch embedding with self.hidden_dim
    m.hidden_dim = m.conv_proj.weight.shape[0]


# ---- MViT (video) ----------------------------------------------------------------------------


@register_module_updater(mvit.MultiscaleAttention)
def _mvit_update(m, virtual):
    # forward reshapes with self.num_heads / self.output_dim; its pooling layers work per head
    # dimension, so heads (the dim sized like num_heads, see replay.prefer_heads) are what shrink
    m.output_dim = m.project[0].weight.shape[1]
    m.num_heads = m.output_dim // m.head_dim
