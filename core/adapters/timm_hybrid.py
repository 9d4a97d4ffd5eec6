"""Head / head-dimension pruning for timm's hybrid and class-attention modules (see
``core.adapters.timm_vit`` for the approach and the shared helpers).

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

import numpy as np
import torch.nn.functional as F

from timm.models import cait, edgenext, efficientformer, levit, metaformer, xcit

from core.adapters.heads import (proj_rows, proj_cols, is_linear, mark_dims_approx, attention_mode, couple_heads, emit_output, feed_input, qkv_rows,
                              switch_class)
from core.ops.atoms import Labeling
from core.ops.registry import register_leaf_module, register_op
from core.prune.apply import register_module_updater

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
    return all(is_linear(getattr(m, n)) for n in ("q", "k", "v", "proj"))


for _cls in (cait.ClassAttn, PrunedClassAttn):
    register_leaf_module(_cls, "timm_class_attention", _class_attn_accepts)


@register_op("timm_class_attention")
def _class_attn_op(ctx, call):
    m, x = call.func, call.args[0]
    heads = m.num_heads
    q, k, v = (proj_rows(ctx, call, p).reshape(heads, -1) for p in (m.q, m.k, m.v))
    couple_heads(ctx, call, call.scope, q, k, v, proj_cols(ctx, call, m.proj, heads))
    for p in (m.q, m.k, m.v):
        feed_input(ctx, call, x, ctx.dim_atoms(p.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


@register_module_updater(cait.ClassAttn)
def _class_attn_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    switch_class(m, cait.ClassAttn, PrunedClassAttn)


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
    return all(is_linear(getattr(m, n)) for n in ("qkv", "proj", "proj_l", "proj_w"))


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
    rows = proj_rows(ctx, call, m.qkv)
    d_v = m.proj.weight.shape[1] // h_v
    d_qk = (rows.size - h_v * d_v) // (2 * h_qk)
    q = rows[:h_qk * d_qk].reshape(h_qk, d_qk)
    k = rows[h_qk * d_qk:2 * h_qk * d_qk].reshape(h_qk, d_qk)
    v = rows[2 * h_qk * d_qk:].reshape(h_v, d_v)
    cols = proj_cols(ctx, call, m.proj, h_v)
    l_in = ctx.dim_atoms(m.proj_l.weight, 1, call, role="in")
    mixed = [proj_rows(ctx, call, m.proj_l), ctx.dim_atoms(m.proj_w.weight, 1, call, role="in")]
    w_out = proj_rows(ctx, call, m.proj_w)
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
    switch_class(m, cait.TalkingHeadAttn, PrunedTalkingHeadAttn)


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
    return is_linear(m.qkv) and is_linear(m.proj)


for _base, _pruned in _XCA.items():
    for _cls in (_base, _pruned):
        register_leaf_module(_cls, "timm_xca_attention", _xca_accepts)


@register_op("timm_xca_attention")
def _xca_op(ctx, call):
    m, x = call.func, call.args[0]
    heads = m.num_heads
    q, k, v = qkv_rows(ctx, call, m.qkv.weight, m.qkv.bias, heads)
    per_head = [ctx.dim_atoms(m.temperature, 0, call, role="in")]
    couple_heads(ctx, call, call.scope, q, k, v, proj_cols(ctx, call, m.proj, heads), per_head=per_head)
    mark_dims_approx(ctx, call, q, k, "cross-covariance attention: the softmax runs over the "
                                       "head dimension")
    feed_input(ctx, call, x, ctx.dim_atoms(m.qkv.weight, 1, call, role="in"))
    emit_output(ctx, call, call.out_tensors[0], m.proj.weight, m.proj.bias)


def _xca_update(m, virtual):
    m.num_heads = virtual.get("num_heads", m.num_heads)
    for base, pruned in _XCA.items():
        switch_class(m, base, pruned)


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
    return is_linear(m.qkv) and is_linear(m.proj)


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
        rows = proj_rows(ctx, call, m.qkv).reshape(heads, 2 * kd + vd)
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
    switch_class(m, levit.Attention, PrunedLevitAttention)


for _cls in (levit.Attention, levit.AttentionDownsample, efficientformer.Attention):
    register_module_updater(_cls)(_key_value_update)


# ---- other timm layers with channel-sized attributes -------------------------------------------


@register_module_updater(metaformer.Scale)
def _metaformer_scale_update(m, virtual):
    # forward is x * self.scale.view(self.shape), with shape (dim, 1, 1) or (dim,)
    m.shape = (m.scale.shape[0],) + tuple(m.shape[1:])
