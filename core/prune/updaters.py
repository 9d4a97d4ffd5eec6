"""Module updaters for torch's own layers: after their tensors were sliced, channel-sized
attributes (``out_channels``, ``groups``, ``num_features``, ``normalized_shape``...) follow."""
from __future__ import annotations

from torch import nn

from core.prune.apply import register_module_updater


@register_module_updater(nn.modules.conv._ConvNd)
def _conv(m, virtual):
    w = m.weight
    if m.transposed:
        if m.groups > 1:  # whole groups were removed
            m.groups = w.shape[0] // (m.in_channels // m.groups)
        m.in_channels = w.shape[0]
        m.out_channels = w.shape[1] * m.groups
    else:
        if m.groups > 1:  # whole groups were removed: channels per group are unchanged
            per_group = m.out_channels // m.groups
            m.groups = w.shape[0] // per_group
        m.out_channels = w.shape[0]
        m.in_channels = w.shape[1] * m.groups


@register_module_updater(nn.Linear)
def _linear(m, virtual):
    m.out_features, m.in_features = m.weight.shape


@register_module_updater(nn.modules.batchnorm._NormBase)
def _bn(m, virtual):
    t = m.weight if m.weight is not None else m.running_mean
    if t is not None:
        m.num_features = t.shape[0]


@register_module_updater(nn.GroupNorm)
def _gn(m, virtual):
    c = m.weight.shape[0] if m.weight is not None else virtual.get("num_channels", m.num_channels)
    per_group = m.num_channels // m.num_groups
    m.num_groups = c // per_group
    m.num_channels = c


@register_module_updater(nn.LayerNorm)
def _ln(m, virtual):
    if m.weight is not None:
        m.normalized_shape = tuple(m.weight.shape)
    else:
        m.normalized_shape = tuple(virtual.get(f"normalized_shape.{k}", s)
                                   for k, s in enumerate(m.normalized_shape))


@register_module_updater(nn.PReLU)
def _prelu(m, virtual):
    m.num_parameters = m.weight.numel()


@register_module_updater(nn.Embedding)
def _emb(m, virtual):
    m.num_embeddings, m.embedding_dim = m.weight.shape


@register_module_updater(nn.Unflatten)
def _unflatten(m, virtual):
    # the leading size is a channel count when channels were unflattened into blocks (ops.replay)
    n = virtual.get("heads:unflattened_size")
    if n is not None:
        m.unflattened_size = (n, *tuple(m.unflattened_size)[1:])
