"""Head / head-dimension pruning for more timm attention modules (found by ``benchmarks/bench_timm.py``):
the ViT-family ones. ``core.adapters.timm_hybrid`` has the hybrid/class-attention ones.

Like timm's ``Attention`` (``core.adapters.timm_attention``), these modules reshape with ``self.num_heads``,
``C // num_heads`` or the *input* width ``C`` (``x.transpose(1, 2).reshape(B, N, C)``), which ties
the residual stream to the attention width and hides both from a trace. Each is traced as one op
(``core.adapters.heads``); once pruned it switches to a subclass (same parameters, same
state-dict keys) whose ``forward`` reads the widths from its weights and keeps the original softmax
scale, so pruning whole heads, or the same dimensions of every head, stays exact.

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

from core.adapters.heads import (norm_weights, proj_rows, proj_cols, is_linear, mark_dims_approx, attention_mode, couple_heads, emit_output, feed_input, qkv_rows,
                              switch_class)
from core.ops.atoms import Labeling
from core.ops.registry import register_leaf_module, register_op
from core.prune.apply import register_module_updater

# ---- shared pieces ---------------------------------------------------------------------------



def _split_biases(ctx, call, m, q, k, v):
    """``q_bias`` / ``k_bias`` (a buffer of zeros) / ``v_bias`` of a bias-free fused qkv."""
    for name, rows in (("q_bias", q), ("k_bias", k), ("v_bias", v)):
        t = getattr(m, name, None)
        if t is not None:
            ctx.table.join(rows.ravel(), ctx.dim_atoms(t, 0, call, role="out"), ctx.reason(call, "bias"))


def _fused_bias(m):
    return None if getattr(m, "q_bias", None) is None else torch.cat((m.q_bias, m.k_bias, m.v_bias))


def _fused_qkv(m, x):
    """timm's fused qkv with separate q/k/v biases, as its modules compute it."""
    bias = _fused_bias(m)
    if bias is None:
        return m.qkv(x)
    if getattr(m, "qkv_bias_separate", False):
        return m.qkv(x) + bias
    return F.linear(x, m.qkv.weight, bias)


def _fused_heads(m, x):
    """(q, k, v), each (batch, heads, tokens, head_dim), from a fused qkv of a (b, n, c) input."""
    b, n, _ = x.shape
    return _fused_qkv(m, x).reshape(b, n, 3, m.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)





# ---- EVA -------------------------------------------------------------------------------------


class PrunedEvaAttention(eva.EvaAttention):
    """``EvaAttention`` after head / head-dimension pruning (original ``scale`` kept)."""

    def forward(self, x, rope=None, attn_mask=None, is_causal=False):
        b, n, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
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
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal,
            dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        y = self.norm(y.transpose(1, 2).reshape(b, n, -1))
        if gate is not None:
            y = y * gate
        return self.proj_drop(self.proj(y))


def _eva_accepts(m) -> bool:
    projs = [m.qkv] if m.qkv is not None else [m.q_proj, m.k_proj, m.v_proj]
    return (all(is_linear(p) for p in projs) and is_linear(m.proj)
            and (m.gate is None or is_linear(m.gate))
            and all(norm_weights(getattr(m, n)) is not None for n in ("q_norm", "k_norm", "norm")))


for _cls in (eva.EvaAttention, PrunedEvaAttention):
    register_leaf_module(_cls, "timm_eva_attention", _eva_accepts)


@register_op("timm_eva_attention")
def _eva_op(ctx, call):
    m, x = call.func, call.args[0]
    heads = m.num_heads
    if m.qkv is not None:
        q, k, v = qkv_rows(ctx, call, m.qkv.weight, m.qkv.bias, heads)
        _split_biases(ctx, call, m, q, k, v)
        ins = [m.qkv]
    else:
        q, k, v = (proj_rows(ctx, call, p).reshape(heads, -1) for p in (m.q_proj, m.k_proj, m.v_proj))
        ins = [m.q_proj, m.k_proj, m.v_proj]
    also = []
    if m.gate is not None:
        also.append(proj_rows(ctx, call, m.gate).reshape(heads, -1))
        ins.append(m.gate)
    norm = norm_weights(m.norm)
    for t in norm:
        also.append(ctx.dim_atoms(t, 0, call, role="in").reshape(heads, -1))
    if norm:
        ctx.table.mark_approx(np.concatenate([q.ravel(), k.ravel(), v.ravel()]), ctx.reason(
            call, "the output norm (scale_norm) normalises across all heads"))
    per_dim = [ctx.dim_atoms(t, 0, call, role="in") for n in ("q_norm", "k_norm")
               for t in norm_weights(getattr(m, n))]
    couple_heads(ctx, call, call.scope, q, k, v, proj_cols(ctx, call, m.proj, heads), per_dim=per_dim,
                 also_out=also, approx_dim="q/k norms normalise over the head dimension")
    if attention_mode(ctx) == "head_dim" and getattr(ctx.root, "rope", True) is not None:
        ctx.table.block(np.concatenate([q.ravel(), k.ravel()]), ctx.reason(
            call, "rotary embeddings are computed outside the module for the original head width"))
    for p in ins:
        feed_input(ctx, call, x, ctx.dim_atoms(p.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


@register_module_updater(eva.EvaAttention)
def _eva_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    m.head_dim = m.proj.weight.shape[1] // m.num_heads
    switch_class(m, eva.EvaAttention, PrunedEvaAttention)


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


def _beit_accepts(m) -> bool:
    return is_linear(m.qkv) and is_linear(m.proj)


for _cls in (beit.Attention, PrunedBeitAttention):
    register_leaf_module(_cls, "timm_beit_attention", _beit_accepts)


@register_op("timm_beit_attention")
def _beit_op(ctx, call):
    m, x = call.func, call.args[0]
    heads = m.num_heads
    q, k, v = qkv_rows(ctx, call, m.qkv.weight, m.qkv.bias, heads)
    _split_biases(ctx, call, m, q, k, v)
    per_head = []
    if m.relative_position_bias_table is not None:
        per_head.append(ctx.dim_atoms(m.relative_position_bias_table, 1, call, role="in"))
    couple_heads(ctx, call, call.scope, q, k, v, proj_cols(ctx, call, m.proj, heads), per_head=per_head)
    if attention_mode(ctx) == "heads" and getattr(ctx.root, "rel_pos_bias", True) is not None:
        ctx.table.block(q.ravel(), ctx.reason(
            call, "a relative position bias shared by all blocks has one column per head"))
    feed_input(ctx, call, x, ctx.dim_atoms(m.qkv.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


@register_module_updater(beit.Attention)
def _beit_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    switch_class(m, beit.Attention, PrunedBeitAttention)


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


def _swinv2_accepts(m) -> bool:
    return is_linear(m.qkv) and is_linear(m.proj) and is_linear(m.cpb_mlp[-1])


for _cls in (swinv2.WindowAttention, PrunedWindowAttentionV2):
    register_leaf_module(_cls, "timm_swinv2_attention", _swinv2_accepts)


@register_op("timm_swinv2_attention")
def _swinv2_op(ctx, call):
    m, x = call.func, call.args[0]
    heads = m.num_heads
    q, k, v = qkv_rows(ctx, call, m.qkv.weight, m.qkv.bias, heads)
    _split_biases(ctx, call, m, q, k, v)
    last = m.cpb_mlp[-1]
    per_head = [ctx.dim_atoms(last.weight, 0, call, role="in"),
                ctx.dim_atoms(m.logit_scale, 0, call, role="in")]
    if last.bias is not None:
        per_head.append(ctx.dim_atoms(last.bias, 0, call, role="in"))
    couple_heads(ctx, call, call.scope, q, k, v, proj_cols(ctx, call, m.proj, heads), per_head=per_head)
    mark_dims_approx(ctx, call, q, k, "cosine attention normalises q and k over the head dimension")
    feed_input(ctx, call, x, ctx.dim_atoms(m.qkv.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


@register_module_updater(swinv2.WindowAttention)
def _swinv2_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    switch_class(m, swinv2.WindowAttention, PrunedWindowAttentionV2)


# ---- MaxViT / CoAtNet (maxxvit) --------------------------------------------------------------

_REL_POS = (pos_embed_rel.RelPosBias, pos_embed_rel.RelPosBiasTf, pos_embed_rel.RelPosMlp)


def _rel_pos_heads(ctx, call, rel):
    """Per-head parameters of a maxxvit relative position module (None: unknown kind)."""
    if rel is None:
        return []
    if type(rel) is pos_embed_rel.RelPosBias:
        return [ctx.dim_atoms(rel.relative_position_bias_table, 1, call, role="in")]
    if type(rel) is pos_embed_rel.RelPosBiasTf:
        return [ctx.dim_atoms(rel.relative_position_bias_table, 0, call, role="in")]
    if type(rel) is pos_embed_rel.RelPosMlp and is_linear(rel.mlp.fc2):
        fc2 = rel.mlp.fc2
        out = [ctx.dim_atoms(fc2.weight, 0, call, role="in")]
        if fc2.bias is not None:
            out.append(ctx.dim_atoms(fc2.bias, 0, call, role="in"))
        return out
    return None


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


def _maxxvit_accepts(m) -> bool:
    conv = type(m) in (maxxvit.Attention2d, PrunedAttention2d)
    kind = nn.Conv2d if conv else nn.Linear
    ok = isinstance(m.qkv, kind) and isinstance(m.proj, kind)
    if conv:
        ok = ok and all(c.kernel_size == (1, 1) and c.groups == 1 for c in (m.qkv, m.proj))
    return ok and (m.rel_pos is None or type(m.rel_pos) in _REL_POS)


for _cls in (maxxvit.AttentionCl, PrunedAttentionCl, maxxvit.Attention2d, PrunedAttention2d):
    register_leaf_module(_cls, "timm_maxxvit_attention", _maxxvit_accepts)


@register_op("timm_maxxvit_attention")
def _maxxvit_op(ctx, call):
    m, x = call.func, call.args[0]
    heads = m.num_heads
    rows = proj_rows(ctx, call, m.qkv)
    if m.head_first:  # (heads, q|k|v, dim) rows
        q, k, v = np.moveaxis(rows.reshape(heads, 3, -1), 1, 0)
    else:
        q, k, v = rows.reshape(3, heads, -1)
    per_head = _rel_pos_heads(ctx, call, m.rel_pos)
    couple_heads(ctx, call, call.scope, q, k, v, proj_cols(ctx, call, m.proj, heads), per_head=per_head)
    conv = isinstance(m.qkv, nn.Conv2d)
    cd = 1 if conv else x.ndim - 1
    for lab in ctx.labels(x):
        if lab.dims != (cd,):
            ctx.table.block(lab.atoms, ctx.reason(call, "channels on a dim the attention module "
                                                        "treats as tokens"))
    ctx.table.join(ctx.dim_atoms(x, cd, call), ctx.dim_atoms(m.qkv.weight, 1, call, role="in"),
                   ctx.reason(call, "attention input features"))
    out = call.out_tensors[0]
    out_rows = proj_rows(ctx, call, m.proj)
    ctx.set(out, [Labeling((1 if conv else out.ndim - 1,), out_rows)])


def _maxxvit_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    m.dim_head = m.qkv.weight.shape[0] // (3 * m.num_heads)
    switch_class(m, maxxvit.AttentionCl, PrunedAttentionCl)
    switch_class(m, maxxvit.Attention2d, PrunedAttention2d)


for _cls in (maxxvit.AttentionCl, maxxvit.Attention2d):
    register_module_updater(_cls)(_maxxvit_update)


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
