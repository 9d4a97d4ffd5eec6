"""Head / head-dimension pruning for more timm attention modules (found by ``benchmarks/bench_timm.py``):
the ViT-family ones. ``core.adapters.timm_hybrid`` has the hybrid/class-attention ones.

Like timm's ``Attention`` (``core.adapters.timm_attention``), these modules reshape with ``self.num_heads``,
``C // num_heads`` or the *input* width ``C`` (``x.transpose(1, 2).reshape(B, N, C)``), which ties
the residual stream to the attention width and hides both from a trace. Each is declared as an
``AttentionSpec`` (``core.adapters.attention_spec``): traced as one op and, once pruned, switched to
a subclass (same parameters, same state-dict keys) whose ``forward`` reads the widths from its
weights and keeps the original softmax scale, so pruning whole heads, or the same dimensions of
every head, stays exact.

- ``EvaAttention`` (EVA, EVA-02 and the models built on it): fused or separate q/k/v, ``q_bias`` /
  ``k_bias`` / ``v_bias``, rotary embeddings, q/k norms, output norm, gate. Rotary embeddings are
  computed outside the module for the original head width, so with them head-*dimension* pruning
  is blocked (whole heads are fine: the rotation is the same in every head).
- BEiT ``Attention``: relative position bias table (a column per head). A bias *shared* by every
  block (``use_shared_rel_pos_bias``) is passed as a keyword the leaf op does not see: whole heads
  are blocked then (head dimensions stay prunable).
- Swin-V2 ``WindowAttention`` (cosine attention): per-head ``logit_scale`` and continuous position
  bias MLP output; head dimensions are approximate (``F.normalize`` over them).
- MaxViT / CoAtNet ``AttentionCl`` and ``Attention2d`` (channels-last and NCHW), with ``RelPosBias``,
  ``RelPosBiasTf`` or ``RelPosMlp`` per-head biases; head-first or qkv-first layouts.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import apply_rot_embed_cat
from timm.layers import pos_embed_rel
from timm.models import beit, eva, maxxvit
from timm.models import swin_transformer_v2 as swinv2

from core.adapters.attention_spec import AttentionSpec, fused, register_attention, separate
from core.adapters.heads import attention_mode, is_linear
from core.adapters.timm_attention import attend, gate_and_norms, norms_known
from core.prune.apply import register_module_updater


def _fused_heads(m, x):
    """(q, k, v), each (batch, heads, tokens, head_dim), of timm's fused qkv with optional separate
    q/k/v biases, as its modules compute it."""
    b, n, _ = x.shape
    bias = None if getattr(m, "q_bias", None) is None else torch.cat((m.q_bias, m.k_bias, m.v_bias))
    if bias is None:
        qkv = m.qkv(x)
    elif getattr(m, "qkv_bias_separate", False):
        qkv = m.qkv(x) + bias
    else:
        qkv = F.linear(x, m.qkv.weight, bias)
    return qkv.reshape(b, n, 3, m.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


TIMM_QKV = fused("qkv", split_bias=True)


# ---- EVA -------------------------------------------------------------------------------------


class PrunedEvaAttention(eva.EvaAttention):
    """``EvaAttention`` after head / head-dimension pruning (original ``scale`` kept)."""

    def forward(self, x, rope=None, attn_mask=None, is_causal=False):
        b, n, _ = x.shape
        if self.qkv is not None:
            q, k, v = _fused_heads(self, x)
        else:
            q, k, v = (p(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)
                       for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            npt, half = self.num_prefix_tokens, getattr(self, "rotate_half", False)
            q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], 2).type_as(v)
            k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], 2).type_as(v)
        return attend(self, x, q, k, v, attn_mask, is_causal)


def _eva_accepts(m) -> bool:
    projs = [m.qkv] if m.qkv is not None else [m.q_proj, m.k_proj, m.v_proj]
    return (all(is_linear(p) for p in projs) and is_linear(m.proj)
            and (m.gate is None or is_linear(m.gate)) and norms_known(m))


_EVA_SEPARATE = separate("q_proj", "k_proj", "v_proj")


def _eva_qkv(ctx, call, m, heads):
    return (TIMM_QKV if m.qkv is not None else _EVA_SEPARATE)(ctx, call, m, heads)


def _rope_rule(ctx, call, m, rows):
    if attention_mode(ctx) == "head_dim" and getattr(ctx.root, "rope", True) is not None:
        ctx.table.block(np.concatenate([rows.q.ravel(), rows.k.ravel()]), ctx.reason(
            call, "rotary embeddings are computed outside the module for the original head width"))


register_attention(AttentionSpec(
    classes={eva.EvaAttention: PrunedEvaAttention}, op="timm_eva_attention", qkv=_eva_qkv,
    accepts=_eva_accepts, parts=gate_and_norms, rules=_rope_rule, head_dim="head_dim"))


# ---- BEiT ------------------------------------------------------------------------------------


class PrunedBeitAttention(beit.Attention):
    """BEiT ``Attention`` after head / head-dimension pruning (original ``scale`` kept)."""

    def forward(self, x, shared_rel_pos_bias=None):
        b, n, _ = x.shape
        q, k, v = _fused_heads(self, x)
        bias = shared_rel_pos_bias
        if self.relative_position_bias_table is not None:
            bias = self._get_rel_pos_bias() + (bias if bias is not None else 0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, -1)))


def _qkv_proj_linear(m) -> bool:
    return is_linear(m.qkv) and is_linear(m.proj)


def _shared_bias_rule(ctx, call, m, rows):
    if attention_mode(ctx) == "heads" and getattr(ctx.root, "rel_pos_bias", True) is not None:
        ctx.table.block(rows.q.ravel(), ctx.reason(
            call, "a relative position bias shared by all blocks has one column per head"))


register_attention(AttentionSpec(
    classes={beit.Attention: PrunedBeitAttention}, op="timm_beit_attention", qkv=TIMM_QKV,
    accepts=_qkv_proj_linear, per_head=lambda m: [(m.relative_position_bias_table, 1)],
    rules=_shared_bias_rule))


# ---- Swin-V2 ---------------------------------------------------------------------------------


class PrunedWindowAttentionV2(swinv2.WindowAttention):
    """timm Swin-V2 ``WindowAttention`` after head / head-dimension pruning."""

    def forward(self, x, mask=None):
        b, n, _ = x.shape
        q, k, v = _fused_heads(self, x)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(1.0 / 0.01)).exp()
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        area = self.window_size[0] * self.window_size[1]
        bias = table[self.relative_position_index.view(-1)].view(area, area, -1).permute(2, 0, 1)
        attn = attn + 16 * torch.sigmoid(bias).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(-1, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0))
            attn = attn.view(-1, self.num_heads, n, n)
        attn = self.attn_drop(self.softmax(attn))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1)))


register_attention(AttentionSpec(
    classes={swinv2.WindowAttention: PrunedWindowAttentionV2}, op="timm_swinv2_attention",
    qkv=TIMM_QKV, accepts=lambda m: _qkv_proj_linear(m) and is_linear(m.cpb_mlp[-1]),
    per_head=lambda m: [(m.cpb_mlp[-1].weight, 0), (m.logit_scale, 0), (m.cpb_mlp[-1].bias, 0)],
    dim_approx="cosine attention normalises q and k over the head dimension"))


# ---- MaxViT / CoAtNet (maxxvit) --------------------------------------------------------------

_REL_POS = (pos_embed_rel.RelPosBias, pos_embed_rel.RelPosBiasTf, pos_embed_rel.RelPosMlp)


def _rel_pos_params(m):
    """Per-head tensors of a maxxvit relative position module: a bias table (a column or a row
    per head) or the last layer of a bias MLP."""
    rel = m.rel_pos
    if type(rel) is pos_embed_rel.RelPosBias:
        return [(rel.relative_position_bias_table, 1)]
    if type(rel) is pos_embed_rel.RelPosBiasTf:
        return [(rel.relative_position_bias_table, 0)]
    if type(rel) is pos_embed_rel.RelPosMlp:
        return [(rel.mlp.fc2.weight, 0), (rel.mlp.fc2.bias, 0)]
    return []


def _maxxvit_sdpa(m, q, k, v, shared_rel_pos):
    bias = m.rel_pos.get_bias() if m.rel_pos is not None else shared_rel_pos
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=m.scale,
                                          dropout_p=m.attn_drop.p if m.training else 0.0)


class PrunedAttentionCl(maxxvit.AttentionCl):
    """Channels-last MaxViT attention after head / head-dimension pruning."""

    def forward(self, x, shared_rel_pos=None):
        b, keep = x.shape[0], x.shape[:-1]
        if self.head_first:
            q, k, v = self.qkv(x).view(b, -1, self.num_heads, self.dim_head * 3).transpose(1, 2).chunk(3, dim=3)
        else:
            q, k, v = self.qkv(x).reshape(b, -1, 3, self.num_heads, self.dim_head).transpose(1, 3).unbind(2)
        y = _maxxvit_sdpa(self, q, k, v, shared_rel_pos)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(keep + (-1,))))


class PrunedAttention2d(maxxvit.Attention2d):
    """NCHW CoAtNet / MaxViT attention after head / head-dimension pruning."""

    def forward(self, x, shared_rel_pos=None):
        b, _, h, w = x.shape
        if self.head_first:
            q, k, v = self.qkv(x).view(b, self.num_heads, self.dim_head * 3, -1).chunk(3, dim=2)
        else:
            q, k, v = self.qkv(x).reshape(b, 3, self.num_heads, self.dim_head, -1).unbind(1)
        t = [z.transpose(-1, -2) for z in (q, k, v)]
        y = _maxxvit_sdpa(self, *t, shared_rel_pos).transpose(-1, -2).reshape(b, -1, h, w)
        return self.proj_drop(self.proj(y))


def _conv(m) -> bool:
    return isinstance(m.qkv, nn.Conv2d)


def _maxxvit_accepts(m) -> bool:
    conv = type(m) in (maxxvit.Attention2d, PrunedAttention2d)
    kind = nn.Conv2d if conv else nn.Linear
    ok = isinstance(m.qkv, kind) and isinstance(m.proj, kind)
    if conv:
        ok = ok and all(c.kernel_size == (1, 1) and c.groups == 1 for c in (m.qkv, m.proj))
    rel = m.rel_pos
    return ok and (rel is None or type(rel) in _REL_POS) and (
        type(rel) is not pos_embed_rel.RelPosMlp or is_linear(rel.mlp.fc2))


register_attention(AttentionSpec(
    classes={maxxvit.AttentionCl: PrunedAttentionCl, maxxvit.Attention2d: PrunedAttention2d},
    op="timm_maxxvit_attention", qkv=fused("qkv", heads_first=lambda m: m.head_first),
    accepts=_maxxvit_accepts, per_head=_rel_pos_params, channels_first=_conv, head_dim="dim_head"))


@register_module_updater(pos_embed_rel.RelPosBias)
def _rel_pos_bias_update(m, virtual):
    m.bias_shape = tuple(m.bias_shape[:-1]) + (m.relative_position_bias_table.shape[-1],)


@register_module_updater(pos_embed_rel.RelPosBiasTf)
def _rel_pos_tf_update(m, virtual):
    m.num_heads = m.relative_position_bias_table.shape[0]
    m.bias_shape = (m.num_heads,) + tuple(m.bias_shape[1:])


@register_module_updater(pos_embed_rel.RelPosMlp)
def _rel_pos_mlp_update(m, virtual):
    # parents are updated first: read the head count off the (already sliced) last layer
    m.num_heads = m.mlp.fc2.weight.shape[0]
    m.bias_shape = tuple(m.bias_shape[:-1]) + (m.num_heads,)
