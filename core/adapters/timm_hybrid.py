"""Head / head-dimension pruning for timm's hybrid and class-attention modules (see
``core.adapters.timm_vit`` for the approach; ``core.adapters.attention_spec`` for the declarations).

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

from core.adapters.attention_spec import AttentionSpec, Rows, fused, register_attention, separate
from core.adapters.heads import attention_mode, is_linear, proj_rows
from core.prune.apply import register_module_updater


def _all_linear(*names):
    return lambda m: all(is_linear(getattr(m, n)) for n in names)


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


register_attention(AttentionSpec(
    classes={cait.ClassAttn: PrunedClassAttn}, op="timm_class_attention", qkv=separate("q", "k", "v"),
    accepts=_all_linear("q", "k", "v", "proj")))


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


def _talking_qkv(ctx, call, m, heads):
    """q/k heads (``proj_l``'s inputs) and v heads (``proj_w``'s outputs) may differ in count and
    width once pruned: read both off the mixing layers."""
    h_qk, h_v = m.proj_l.weight.shape[1], m.proj_w.weight.shape[0]
    rows = proj_rows(ctx, call, m.qkv)
    d_v = m.proj.weight.shape[1] // h_v
    d_qk = (rows.size - h_v * d_v) // (2 * h_qk)
    q, k, v = np.split(rows, [h_qk * d_qk, 2 * h_qk * d_qk])
    return Rows(q.reshape(h_qk, d_qk), k.reshape(h_qk, d_qk), v.reshape(h_v, d_v), [m.qkv.weight])


def _talking_couple(ctx, call, m, rows, cols, parts):
    """Three independent head sets: query/key heads (q, k rows and ``proj_l``'s input columns),
    mixed heads (``proj_l``'s rows and bias, ``proj_w``'s input columns: a zeroed mixed head
    softmaxes to a uniform row that ``proj_w`` ignores) and value heads (v rows, ``proj_w``'s rows and
    bias, ``proj``'s columns). In head-dimension mode q/k dimensions and v dimensions are two sets
    and the mixed heads stay prunable as whole heads."""
    q, k, v = rows.q, rows.k, rows.v
    (h_qk, d_qk), (h_v, d_v) = q.shape, v.shape
    l_in = ctx.dim_atoms(m.proj_l.weight, 1, call, role="in")
    mixed = [proj_rows(ctx, call, m.proj_l), ctx.dim_atoms(m.proj_w.weight, 1, call, role="in")]
    w_out = proj_rows(ctx, call, m.proj_w)
    slot = ctx.table.virtual_slot(call.scope, "mixed_heads", mixed[0].size).atoms
    for j in range(mixed[0].size):
        ctx.table.join_all(np.array([a[j] for a in mixed] + [slot[j]]))
    if attention_mode(ctx) == "head_dim":
        s_qk = ctx.table.virtual_slot(call.scope, "qk_dim", d_qk).atoms
        for j in range(d_qk):
            ctx.table.join_all(np.concatenate([q[:, j], k[:, j], s_qk[j:j + 1]]))
        s_v = ctx.table.virtual_slot(call.scope, "v_dim", d_v).atoms
        for j in range(d_v):
            ctx.table.join_all(np.concatenate([v[:, j], cols[:, j], s_v[j:j + 1]]))
        ctx.table.block(np.concatenate([l_in, w_out]), ctx.reason(call, "talking heads: head counts "
                                                                       "stay in head-dimension mode"))
    else:
        s_qk = ctx.table.virtual_slot(call.scope, "num_heads", h_qk).atoms
        s_v = ctx.table.virtual_slot(call.scope, "v_heads", h_v).atoms
        for h in range(h_qk):
            ctx.table.join_all(np.concatenate([q[h], k[h], l_in[h:h + 1], s_qk[h:h + 1]]))
        for h in range(h_v):
            ctx.table.join_all(np.concatenate([v[h], cols[h], w_out[h:h + 1], s_v[h:h + 1]]))


register_attention(AttentionSpec(
    classes={cait.TalkingHeadAttn: PrunedTalkingHeadAttn}, op="timm_talking_head_attention",
    qkv=_talking_qkv, couple=_talking_couple, accepts=_all_linear("qkv", "proj", "proj_l", "proj_w")))


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


register_attention(AttentionSpec(
    classes={xcit.XCA: PrunedXCA, edgenext.CrossCovarianceAttn: PrunedCrossCovarianceAttn},
    op="timm_xca_attention", qkv=fused("qkv"), accepts=_all_linear("qkv", "proj"),
    per_head=lambda m: [(m.temperature, 0)],
    dim_approx="cross-covariance attention: the softmax runs over the head dimension"))


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


def _key_value_accepts(m) -> bool:
    if isinstance(m, efficientformer.Attention):
        return is_linear(m.qkv) and is_linear(m.proj)
    ok = not m.use_conv and isinstance(getattr(m.proj, "ln", None), levit.LinearNorm)
    if isinstance(m, levit.AttentionDownsample):
        return ok and isinstance(m.kv, levit.LinearNorm) and isinstance(getattr(m.q, "ln", None),
                                                                        levit.LinearNorm)
    return ok and isinstance(m.qkv, levit.LinearNorm)


def _linear_norm_rows(ctx, call, ln):
    rows = ctx.dim_atoms(ln.linear.weight, 0, call, role="out")
    for t in (ln.bn.weight, ln.bn.bias, ln.bn.running_mean, ln.bn.running_var):
        if t is not None:
            ctx.table.join(rows, ctx.dim_atoms(t, 0, call, role="pass"), ctx.reason(call, "batch norm"))
    return rows


def _key_value_qkv(ctx, call, m, heads):
    """Per head: ``key_dim`` query and key rows, ``val_dim`` value rows (LeViT's behind a
    BatchNorm; its downsampling attention projects k/v and q separately)."""
    kd = m.key_dim
    if isinstance(m, efficientformer.Attention):
        rows, feeds = proj_rows(ctx, call, m.qkv).reshape(heads, -1), [m.qkv.weight]
    elif isinstance(m, levit.AttentionDownsample):
        kv = _linear_norm_rows(ctx, call, m.kv).reshape(heads, -1)
        q = _linear_norm_rows(ctx, call, m.q.ln).reshape(heads, kd)
        return Rows(q, kv[:, :kd], kv[:, kd:], [m.kv.linear.weight, m.q.ln.linear.weight])
    else:
        rows, feeds = _linear_norm_rows(ctx, call, m.qkv).reshape(heads, -1), [m.qkv.linear.weight]
    return Rows(rows[:, :kd], rows[:, kd:2 * kd], rows[:, 2 * kd:], feeds)


def _key_value_couple(ctx, call, m, rows, cols, parts):
    """Heads: q, k, v rows, output columns and attention bias row. Head dimensions: key
    dimensions and value dimensions are two sets."""
    q, k, v = rows.q, rows.k, rows.v
    if attention_mode(ctx) == "head_dim":
        s_k = ctx.table.virtual_slot(call.scope, "key_dim", q.shape[1]).atoms
        s_v = ctx.table.virtual_slot(call.scope, "val_dim", v.shape[1]).atoms
        for j in range(q.shape[1]):
            ctx.table.join_all(np.concatenate([q[:, j], k[:, j], s_k[j:j + 1]]))
        for j in range(v.shape[1]):
            ctx.table.join_all(np.concatenate([v[:, j], cols[:, j], s_v[j:j + 1]]))
    else:
        bias = parts.per_head[0]
        slot = ctx.table.virtual_slot(call.scope, "num_heads", q.shape[0]).atoms
        for h in range(q.shape[0]):
            ctx.table.join_all(np.concatenate([q[h], k[h], v[h], cols[h], bias[h:h + 1], slot[h:h + 1]]))


def _key_value_out(m):
    return m.proj if isinstance(m, efficientformer.Attention) else m.proj.ln.linear


def _key_value_out_rows(ctx, call, m):
    if isinstance(m, efficientformer.Attention):
        return proj_rows(ctx, call, m.proj)
    return _linear_norm_rows(ctx, call, m.proj.ln)  # LeViT: the projection's BatchNorm follows


def _key_value_update(m, virtual):
    m.key_dim = virtual.get("key_dim", m.key_dim)
    m.key_attn_dim = m.key_dim * m.num_heads
    m.val_attn_dim = m.val_dim * m.num_heads
    m.attention_bias_cache = {}  # filled from the unpruned biases in eval mode


register_attention(AttentionSpec(
    classes={levit.Attention: PrunedLevitAttention, levit.AttentionDownsample: None,
             efficientformer.Attention: None},
    op="timm_key_value_attention", qkv=_key_value_qkv, accepts=_key_value_accepts,
    out=_key_value_out, out_rows=_key_value_out_rows,
    per_head=lambda m: [(m.attention_biases, 0)], couple=_key_value_couple,
    head_dim="val_dim", update=_key_value_update))


# ---- other timm layers with channel-sized attributes -------------------------------------------


@register_module_updater(metaformer.Scale)
def _metaformer_scale_update(m, virtual):
    # forward is x * self.scale.view(self.shape), with shape (dim, 1, 1) or (dim,)
    m.shape = (m.scale.shape[0],) + tuple(m.shape[1:])
