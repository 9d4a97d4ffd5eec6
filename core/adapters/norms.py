"""More op semantics, found by the timm sweep (``benchmarks/bench_timm.py``).

- ``group_norm`` with a single group (timm's ``GroupNorm1``: PoolFormer, ConvNeXt-style
  ``norm_layer=GroupNorm1``) normalises over all channels and space at once, like a LayerNorm over
  ``(C, H, W)``. The general rule (remove whole groups, exact) would couple every channel into one
  unremovable group; here each channel is prunable on its own and flagged approximate, as for
  LayerNorm. ``num_groups`` stays 1 after pruning (the generic GroupNorm updater would compute
  ``C' // C = 0`` groups).

Registered after the generic GroupNorm rule, which it wraps (``core.families``).
"""
from __future__ import annotations

from torch import nn

from core import families
from core.ops.registry import OP_HANDLERS, register_op
from core.ops.common import arg
from core.ops.layers import per_channel
from core.prune.apply import MODULE_UPDATERS, register_module_updater

families.load_before(__name__)  # the handlers and updaters this module wraps

_group_norm_groups = OP_HANDLERS["group_norm"]


@register_op("group_norm")
def group_norm_one_group(ctx, call):
    if int(arg(call, 1, "num_groups")) != 1:
        return _group_norm_groups(ctx, call)
    x = call.args[0]
    x_c = per_channel(ctx, call, x, 1, [arg(call, 2, "weight"), arg(call, 3, "bias")])
    if arg(call, 2, "weight") is None and call.scope:  # num_channels is only in the module
        ctx.table.join(x_c, ctx.table.virtual_slot(call.scope, "num_channels", x.shape[1]).atoms,
                       ctx.reason(call, "channels that cannot be pruned"))
    if (x_c >= 0).any():
        ctx.table.mark_approx(x_c, ctx.reason(
            call, "a single norm group: statistics are computed over the pruned channels"))
    ctx.set(call.out_tensors[0], ctx.labels(x))


_generic_gn_updater = next(fn for typ, fn in MODULE_UPDATERS if typ is nn.GroupNorm)


@register_module_updater(nn.GroupNorm)
def _group_norm_update(m, virtual):
    if m.num_groups != 1:
        return _generic_gn_updater(m, virtual)
    m.num_channels = m.weight.shape[0] if m.weight is not None else \
        virtual.get("num_channels", m.num_channels)
