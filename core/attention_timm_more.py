"""Head / head-dimension pruning for more timm attention modules (found by ``benchmarks/bench_timm.py``).

Like timm's ``Attention`` (``core.attention_timm``), these modules reshape with ``self.num_heads``,
``C // num_heads`` or the *input* width ``C`` (``x.transpose(1, 2).reshape(B, N, C)``), which ties
the residual stream to the attention width and hides both from a trace. Each is traced as one op
(``core.attention_heads``); once pruned it switches to a subclass (same parameters, same
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
- CaiT ``ClassAttn`` (also XCiT's class attention) and ``TalkingHeadAttn``, whose heads are mixed by
  two ``num_heads x num_heads`` linears: the query/key heads, the mixed heads and the value heads
  are three independent sets, each prunable exactly.
- XCiT ``XCA`` and EdgeNeXt ``CrossCovarianceAttn`` (attention across the channels of each head,
  per-head temperature): whole heads exact, head dimensions approximate (the softmax runs over them).
- LeViT ``Attention`` / ``AttentionDownsample`` (linear mode) and EfficientFormer ``Attention``: keys
  and values of different widths per head (LeViT's behind a BatchNorm), per-head attention biases.

Also here: timm layers outside attention whose channel-sized attributes must follow pruning
(MetaFormer's ``Scale``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import apply_rot_embed_cat
from timm.layers import pos_embed_rel
from timm.models import beit, cait, edgenext, efficientformer, eva, levit, maxxvit, metaformer, xcit
from timm.models import swin_transformer_v2 as swinv2

from .attention_heads import attention_mode, couple_heads, emit_output, feed_input, qkv_rows
from .atoms import Labeling
from .attention_timm import _norm_weights
from .opsem import register_leaf_module, register_op
from .prune import register_module_updater

# ---- shared pieces ---------------------------------------------------------------------------


def _rows(ctx, call, lin, bias=None):
    """Atoms of a projection's output rows, joined with its bias (``lin.bias`` or ``bias``)."""
    rows = ctx.dim_atoms(lin.weight, 0, call, role="out")
    b = bias if bias is not None else getattr(lin, "bias", None)
    if b is not None:
        ctx.table.join(rows, ctx.dim_atoms(b, 0, call, role="out"), ctx.reason(call, "bias"))
    return rows


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


def _cols(ctx, call, lin, heads):
    """(heads, head_dim) atoms of an output projection's input columns."""
    return ctx.dim_atoms(lin.weight, 1, call, role="in").reshape(heads, -1)


def _linear(m) -> bool:
    return isinstance(m, nn.Linear)


def _root(ctx):
    t = getattr(ctx, "_t", None)
    return getattr(t, "root", None)


def _mark_dims_approx(ctx, call, q, k, why):
    if attention_mode(ctx) == "head_dim":
        ctx.table.mark_approx(np.concatenate([q.ravel(), k.ravel()]), ctx.reason(call, why))


def _switch(m, base, pruned):
    if type(m) in (base, pruned):
        m.__class__ = pruned


# ---- EVA -------------------------------------------------------------------------------------


class PrunedEvaAttention(eva.EvaAttention):
    """``EvaAttention`` after head / head-dimension pruning (original ``scale`` kept)."""

    def forward(self, x, rope=None, attn_mask=None, is_causal=False):
        b, n, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        if self.qkv is not None:
            q, k, v = _fused_qkv(self, x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
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
    return (all(_linear(p) for p in projs) and _linear(m.proj)
            and (m.gate is None or _linear(m.gate))
            and all(_norm_weights(getattr(m, n)) is not None for n in ("q_norm", "k_norm", "norm")))


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
        q, k, v = (_rows(ctx, call, p).reshape(heads, -1) for p in (m.q_proj, m.k_proj, m.v_proj))
        ins = [m.q_proj, m.k_proj, m.v_proj]
    also = []
    if m.gate is not None:
        also.append(_rows(ctx, call, m.gate).reshape(heads, -1))
        ins.append(m.gate)
    norm = _norm_weights(m.norm)
    for t in norm:
        also.append(ctx.dim_atoms(t, 0, call, role="in").reshape(heads, -1))
    if norm:
        ctx.table.mark_approx(np.concatenate([q.ravel(), k.ravel(), v.ravel()]), ctx.reason(
            call, "the output norm (scale_norm) normalises across all heads"))
    per_dim = [ctx.dim_atoms(t, 0, call, role="in") for n in ("q_norm", "k_norm")
               for t in _norm_weights(getattr(m, n))]
    couple_heads(ctx, call, call.scope, q, k, v, _cols(ctx, call, m.proj, heads), per_dim=per_dim,
                 also_out=also, approx_dim="q/k norms normalise over the head dimension")
    if attention_mode(ctx) == "head_dim" and getattr(_root(ctx), "rope", True) is not None:
        ctx.table.block(np.concatenate([q.ravel(), k.ravel()]), ctx.reason(
            call, "rotary embeddings are computed outside the module for the original head width"))
    for p in ins:
        feed_input(ctx, call, x, ctx.dim_atoms(p.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


@register_module_updater(eva.EvaAttention)
def _eva_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    m.head_dim = m.proj.weight.shape[1] // m.num_heads
    _switch(m, eva.EvaAttention, PrunedEvaAttention)


# ---- BEiT ------------------------------------------------------------------------------------


class PrunedBeitAttention(beit.Attention):
    """BEiT ``Attention`` after head / head-dimension pruning (original ``scale`` kept)."""

    def forward(self, x, shared_rel_pos_bias=None):
        b, n, _ = x.shape
        q, k, v = _fused_qkv(self, x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = shared_rel_pos_bias
        if self.relative_position_bias_table is not None:
            bias = self._get_rel_pos_bias() + (bias if bias is not None else 0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, -1)))


def _beit_accepts(m) -> bool:
    return _linear(m.qkv) and _linear(m.proj)


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
    couple_heads(ctx, call, call.scope, q, k, v, _cols(ctx, call, m.proj, heads), per_head=per_head)
    if attention_mode(ctx) == "heads" and getattr(_root(ctx), "rel_pos_bias", True) is not None:
        ctx.table.block(q.ravel(), ctx.reason(
            call, "a relative position bias shared by all blocks has one column per head"))
    feed_input(ctx, call, x, ctx.dim_atoms(m.qkv.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


@register_module_updater(beit.Attention)
def _beit_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    _switch(m, beit.Attention, PrunedBeitAttention)


# ---- Swin-V2 ---------------------------------------------------------------------------------


class PrunedWindowAttentionV2(swinv2.WindowAttention):
    """timm Swin-V2 ``WindowAttention`` after head / head-dimension pruning."""

    def forward(self, x, mask=None):
        b, n, _ = x.shape
        q, k, v = _fused_qkv(self, x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
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
    return _linear(m.qkv) and _linear(m.proj) and _linear(m.cpb_mlp[-1])


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
    couple_heads(ctx, call, call.scope, q, k, v, _cols(ctx, call, m.proj, heads), per_head=per_head)
    _mark_dims_approx(ctx, call, q, k, "cosine attention normalises q and k over the head dimension")
    feed_input(ctx, call, x, ctx.dim_atoms(m.qkv.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


@register_module_updater(swinv2.WindowAttention)
def _swinv2_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    _switch(m, swinv2.WindowAttention, PrunedWindowAttentionV2)


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
    if type(rel) is pos_embed_rel.RelPosMlp and _linear(rel.mlp.fc2):
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
    rows = _rows(ctx, call, m.qkv)
    if m.head_first:  # (heads, q|k|v, dim) rows
        q, k, v = np.moveaxis(rows.reshape(heads, 3, -1), 1, 0)
    else:
        q, k, v = rows.reshape(3, heads, -1)
    per_head = _rel_pos_heads(ctx, call, m.rel_pos)
    couple_heads(ctx, call, call.scope, q, k, v, _cols(ctx, call, m.proj, heads), per_head=per_head)
    conv = isinstance(m.qkv, nn.Conv2d)
    cd = 1 if conv else x.ndim - 1
    for lab in ctx.labels(x):
        if lab.dims != (cd,):
            ctx.table.block(lab.atoms, ctx.reason(call, "channels on a dim the attention module "
                                                        "treats as tokens"))
    ctx.table.join(ctx.dim_atoms(x, cd, call), ctx.dim_atoms(m.qkv.weight, 1, call, role="in"),
                   ctx.reason(call, "attention input features"))
    out = call.out_tensors[0]
    out_rows = _rows(ctx, call, m.proj)
    ctx.set(out, [Labeling((1 if conv else out.ndim - 1,), out_rows)])


def _maxxvit_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    m.dim_head = m.qkv.weight.shape[0] // (3 * m.num_heads)
    _switch(m, maxxvit.AttentionCl, PrunedAttentionCl)
    _switch(m, maxxvit.Attention2d, PrunedAttention2d)


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


# ---- CaiT / XCiT class attention ---------------------------------------------------------------


class PrunedClassAttn(cait.ClassAttn):
    """CaiT / XCiT class attention after head / head-dimension pruning."""

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x[:, :1]).reshape(b, 1, self.num_heads, -1).transpose(1, 2)
        k = self.k(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)
        v = self.v(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, scale=self.scale,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, 1, -1)))


def _class_attn_accepts(m) -> bool:
    return all(_linear(getattr(m, n)) for n in ("q", "k", "v", "proj"))


for _cls in (cait.ClassAttn, PrunedClassAttn):
    register_leaf_module(_cls, "timm_class_attention", _class_attn_accepts)


@register_op("timm_class_attention")
def _class_attn_op(ctx, call):
    m, x = call.func, call.args[0]
    heads = m.num_heads
    q, k, v = (_rows(ctx, call, p).reshape(heads, -1) for p in (m.q, m.k, m.v))
    couple_heads(ctx, call, call.scope, q, k, v, _cols(ctx, call, m.proj, heads))
    for p in (m.q, m.k, m.v):
        feed_input(ctx, call, x, ctx.dim_atoms(p.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


@register_module_updater(cait.ClassAttn)
def _class_attn_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    _switch(m, cait.ClassAttn, PrunedClassAttn)


# ---- CaiT talking-heads attention --------------------------------------------------------------


class PrunedTalkingHeadAttn(cait.TalkingHeadAttn):
    """``TalkingHeadAttn`` after pruning: query/key heads, mixed heads and value heads (and their
    widths) are read off ``proj_l`` / ``proj_w`` and ``proj``; the original scale is kept."""

    def forward(self, x):
        b, n, _ = x.shape
        h_qk, h_v = self.proj_l.weight.shape[1], self.proj_w.weight.shape[0]
        d_v = self.proj.weight.shape[1] // h_v
        d_qk = (self.qkv.weight.shape[0] - h_v * d_v) // (2 * h_qk)
        q, k, v = self.qkv(x).split([h_qk * d_qk, h_qk * d_qk, h_v * d_v], dim=-1)
        q = q.reshape(b, n, h_qk, d_qk).transpose(1, 2) * self.scale
        k = k.reshape(b, n, h_qk, d_qk).transpose(1, 2)
        v = v.reshape(b, n, h_v, d_v).transpose(1, 2)
        attn = self.proj_l((q @ k.transpose(-2, -1)).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        attn = self.proj_w(attn.softmax(dim=-1).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj_drop(self.proj(y))


def _talking_accepts(m) -> bool:
    return all(_linear(getattr(m, n)) for n in ("qkv", "proj", "proj_l", "proj_w"))


for _cls in (cait.TalkingHeadAttn, PrunedTalkingHeadAttn):
    register_leaf_module(_cls, "timm_talking_head_attention", _talking_accepts)


@register_op("timm_talking_head_attention")
def _talking_op(ctx, call):
    """Three independent head sets: query/key heads (q, k rows and ``proj_l``'s input columns),
    mixed heads (``proj_l``'s rows and bias, ``proj_w``'s input columns: a zeroed mixed head
    softmaxes to a uniform row that ``proj_w`` ignores) and value heads (v rows, ``proj_w``'s rows and
    bias, ``proj``'s columns). In head-dimension mode q/k dimensions and v dimensions are two sets
    and the mixed heads stay prunable as whole heads."""
    m, x = call.func, call.args[0]
    h_qk, h_v = m.proj_l.weight.shape[1], m.proj_w.weight.shape[0]
    rows = _rows(ctx, call, m.qkv)
    d_v = m.proj.weight.shape[1] // h_v
    d_qk = (rows.size - h_v * d_v) // (2 * h_qk)
    q = rows[:h_qk * d_qk].reshape(h_qk, d_qk)
    k = rows[h_qk * d_qk:2 * h_qk * d_qk].reshape(h_qk, d_qk)
    v = rows[2 * h_qk * d_qk:].reshape(h_v, d_v)
    cols = _cols(ctx, call, m.proj, h_v)
    l_in = ctx.dim_atoms(m.proj_l.weight, 1, call, role="in")
    mixed = [_rows(ctx, call, m.proj_l), ctx.dim_atoms(m.proj_w.weight, 1, call, role="in")]
    w_out = _rows(ctx, call, m.proj_w)
    name = call.scope
    slot = ctx.table.virtual_slot(name, "mixed_heads", mixed[0].size).atoms
    for j in range(mixed[0].size):
        ctx.table.join_all(np.array([a[j] for a in mixed] + [slot[j]]))
    if attention_mode(ctx) == "head_dim":
        for j in range(d_qk):
            ctx.table.join_all(np.concatenate([q[:, j], k[:, j],
                                               ctx.table.virtual_slot(name, "qk_dim", d_qk).atoms[j:j + 1]]))
        for j in range(d_v):
            ctx.table.join_all(np.concatenate([v[:, j], cols[:, j],
                                               ctx.table.virtual_slot(name, "v_dim", d_v).atoms[j:j + 1]]))
        ctx.table.block(np.concatenate([l_in, w_out]), ctx.reason(call, "talking heads: head counts "
                                                                       "stay in head-dimension mode"))
    else:
        s_qk = ctx.table.virtual_slot(name, "num_heads", h_qk).atoms
        s_v = ctx.table.virtual_slot(name, "v_heads", h_v).atoms
        for h in range(h_qk):
            ctx.table.join_all(np.concatenate([q[h], k[h], l_in[h:h + 1], s_qk[h:h + 1]]))
        for h in range(h_v):
            ctx.table.join_all(np.concatenate([v[h], cols[h], w_out[h:h + 1], s_v[h:h + 1]]))
    feed_input(ctx, call, x, ctx.dim_atoms(m.qkv.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


@register_module_updater(cait.TalkingHeadAttn)
def _talking_update(m, virtual):
    m.num_heads = m.proj_l.weight.shape[1]
    _switch(m, cait.TalkingHeadAttn, PrunedTalkingHeadAttn)


# ---- XCiT / EdgeNeXt cross-covariance attention ------------------------------------------------


def _xca_forward(self, x):
    b, n, _ = x.shape
    q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 4, 1).unbind(0)
    attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * self.temperature
    attn = self.attn_drop(attn.softmax(dim=-1))
    return self.proj_drop(self.proj((attn @ v).permute(0, 3, 1, 2).reshape(b, n, -1)))


class PrunedXCA(xcit.XCA):
    """XCiT cross-covariance attention after head / head-dimension pruning."""

    forward = _xca_forward


class PrunedCrossCovarianceAttn(edgenext.CrossCovarianceAttn):
    """EdgeNeXt cross-covariance attention after head / head-dimension pruning."""

    forward = _xca_forward


_XCA = {xcit.XCA: PrunedXCA, edgenext.CrossCovarianceAttn: PrunedCrossCovarianceAttn}


def _xca_accepts(m) -> bool:
    return _linear(m.qkv) and _linear(m.proj)


for _base, _pruned in _XCA.items():
    for _cls in (_base, _pruned):
        register_leaf_module(_cls, "timm_xca_attention", _xca_accepts)


@register_op("timm_xca_attention")
def _xca_op(ctx, call):
    m, x = call.func, call.args[0]
    heads = m.num_heads
    q, k, v = qkv_rows(ctx, call, m.qkv.weight, m.qkv.bias, heads)
    per_head = [ctx.dim_atoms(m.temperature, 0, call, role="in")]
    couple_heads(ctx, call, call.scope, q, k, v, _cols(ctx, call, m.proj, heads), per_head=per_head)
    _mark_dims_approx(ctx, call, q, k, "cross-covariance attention: the softmax runs over the "
                                       "head dimension")
    feed_input(ctx, call, x, ctx.dim_atoms(m.qkv.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


def _xca_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    for base, pruned in _XCA.items():
        _switch(m, base, pruned)


for _base in _XCA:
    register_module_updater(_base)(_xca_update)


# ---- LeViT / EfficientFormer ----------------------------------------------------------------


class PrunedLevitAttention(levit.Attention):
    """LeViT attention (linear mode) after head / head-dimension pruning (the per-device bias
    cache is not used: it would hold the unpruned biases)."""

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, self.num_heads, -1).split(
            [self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = q.transpose(1, 2) @ k.permute(0, 2, 3, 1) * self.scale
        attn = (attn + self.attention_biases[:, self.attention_bias_idxs]).softmax(dim=-1)
        y = (attn @ v.transpose(1, 2)).transpose(1, 2).reshape(b, n, -1)
        return self.proj(y)


def _levit_accepts(m) -> bool:
    ok = not m.use_conv and isinstance(getattr(m.proj, "ln", None), levit.LinearNorm)
    if isinstance(m, levit.AttentionDownsample):
        return ok and isinstance(m.kv, levit.LinearNorm) and isinstance(getattr(m.q, "ln", None),
                                                                        levit.LinearNorm)
    return ok and isinstance(m.qkv, levit.LinearNorm)


def _efficientformer_accepts(m) -> bool:
    return _linear(m.qkv) and _linear(m.proj)


for _cls in (levit.Attention, PrunedLevitAttention, levit.AttentionDownsample):
    register_leaf_module(_cls, "timm_key_value_attention", _levit_accepts)
register_leaf_module(efficientformer.Attention, "timm_key_value_attention", _efficientformer_accepts)


def _linear_norm_rows(ctx, call, ln):
    rows = ctx.dim_atoms(ln.linear.weight, 0, call, role="out")
    for t in (ln.bn.weight, ln.bn.bias, ln.bn.running_mean, ln.bn.running_var):
        if t is not None:
            ctx.table.join(rows, ctx.dim_atoms(t, 0, call, role="pass"), ctx.reason(call, "batch norm"))
    return rows


@register_op("timm_key_value_attention")
def _key_value_op(ctx, call):
    """Attention whose heads have keys of ``key_dim`` and values of ``val_dim`` (``attn_ratio``)
    and a learned bias per head and position: LeViT (``Attention``, ``AttentionDownsample``, with
    BatchNorm'd projections) and EfficientFormer. In head-dimension mode key dimensions and value
    dimensions are two sets."""
    m, x = call.func, call.args[0]
    heads, kd, vd = m.num_heads, m.key_dim, m.val_dim
    if isinstance(m, efficientformer.Attention):
        rows = _rows(ctx, call, m.qkv).reshape(heads, 2 * kd + vd)
        q, k, v = rows[:, :kd], rows[:, kd:2 * kd], rows[:, 2 * kd:]
        feeds, proj = [m.qkv.weight], m.proj
    elif isinstance(m, levit.AttentionDownsample):
        kv = _linear_norm_rows(ctx, call, m.kv).reshape(heads, kd + vd)
        k, v = kv[:, :kd], kv[:, kd:]
        q = _linear_norm_rows(ctx, call, m.q.ln).reshape(heads, kd)
        feeds, proj = [m.kv.linear.weight, m.q.ln.linear.weight], m.proj.ln.linear
    else:
        rows = _linear_norm_rows(ctx, call, m.qkv).reshape(heads, 2 * kd + vd)
        q, k, v = rows[:, :kd], rows[:, kd:2 * kd], rows[:, 2 * kd:]
        feeds, proj = [m.qkv.linear.weight], m.proj.ln.linear
    cols = ctx.dim_atoms(proj.weight, 1, call, role="in").reshape(heads, vd)
    bias = ctx.dim_atoms(m.attention_biases, 0, call, role="in")
    name = call.scope
    if attention_mode(ctx) == "head_dim":
        s_k = ctx.table.virtual_slot(name, "key_dim", kd).atoms
        s_v = ctx.table.virtual_slot(name, "val_dim", vd).atoms
        for j in range(kd):
            ctx.table.join_all(np.concatenate([q[:, j], k[:, j], s_k[j:j + 1]]))
        for j in range(vd):
            ctx.table.join_all(np.concatenate([v[:, j], cols[:, j], s_v[j:j + 1]]))
    else:
        slot = ctx.table.virtual_slot(name, "num_heads", heads).atoms
        for h in range(heads):
            ctx.table.join_all(np.concatenate([q[h], k[h], v[h], cols[h], bias[h:h + 1], slot[h:h + 1]]))
    for w in feeds:
        feed_input(ctx, call, x, ctx.dim_atoms(w, 1, call, role="in"))
    out = call.out_tensors[0]
    if isinstance(m, efficientformer.Attention):
        emit_output(ctx, call, out, m.proj.weight, m.proj.bias)
    else:
        ctx.set(out, [Labeling((out.ndim - 1,), _linear_norm_rows(ctx, call, m.proj.ln))])


def _key_value_update(m, virtual):
    proj = m.proj if isinstance(m, efficientformer.Attention) else m.proj.ln.linear
    m.num_heads = m.attention_biases.shape[0]
    m.key_dim = virtual.get("key_dim", m.key_dim)
    m.val_dim = proj.weight.shape[1] // m.num_heads
    m.key_attn_dim = m.key_dim * m.num_heads
    m.val_attn_dim = m.val_dim * m.num_heads
    m.attention_bias_cache = {}  # filled from the unpruned biases in eval mode
    _switch(m, levit.Attention, PrunedLevitAttention)


for _cls in (levit.Attention, levit.AttentionDownsample, efficientformer.Attention):
    register_module_updater(_cls)(_key_value_update)


# ---- other timm layers with channel-sized attributes -------------------------------------------


@register_module_updater(metaformer.Scale)
def _metaformer_scale_update(m, virtual):
    # forward is x * self.scale.view(self.shape), with shape (dim, 1, 1) or (dim,)
    m.shape = (m.scale.shape[0],) + tuple(m.shape[1:])
