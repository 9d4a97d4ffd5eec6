"""torch_geometric layers: channel-sized attributes refreshed after pruning.

The op semantics of message passing live in ``opsem_scatter``; what a PyG layer needs after its
tensors were sliced is its size attributes (``GATConv`` reshapes with ``view(-1, heads,
out_channels)``). torch_geometric is never imported here: one updater matches any module whose
class comes from it, by module name, so models built without it cost nothing.
"""
from __future__ import annotations

from core.prune.apply import register_module_updater


class _FromTorchGeometric(type):
    def __instancecheck__(cls, m):
        return type(m).__module__.startswith("torch_geometric.")


class TorchGeometricModule(metaclass=_FromTorchGeometric):
    """``isinstance(m, TorchGeometricModule)``: ``m``'s class is defined in torch_geometric."""


def _weight(lin):
    w = getattr(lin, "weight", None) if lin is not None else None
    if w is None or type(w).__name__.startswith("Uninitialized") or w.ndim != 2:
        return None
    return w


def _in(*lins):
    """in_channels from the input width of each given linear (an int when they agree)."""
    ws = [_weight(lin) for lin in lins if lin is not None]
    if not ws or any(w is None for w in ws):
        return None
    sizes = tuple(int(w.shape[1]) for w in ws)
    return sizes[0] if len(set(sizes)) == 1 else sizes


@register_module_updater(TorchGeometricModule)
def sync_pyg(m, virtual):
    name = type(m).__name__
    if name == "Linear":
        w = _weight(m)
        if w is not None:
            m.out_channels, m.in_channels = int(w.shape[0]), int(w.shape[1])
        return
    new_in = new_out = None
    if name in ("GATConv", "GATv2Conv"):
        new_out = int(m.att_src.shape[-1]) if name == "GATConv" else int(m.att.shape[-1])
        lin = getattr(m, "lin", None)
        if lin is not None:
            new_in = _in(lin)
        elif name == "GATConv":
            new_in = _in(m.lin_src, m.lin_dst)
        else:
            new_in = _in(m.lin_l, m.lin_r)
    elif name == "GCNConv":
        w = _weight(m.lin)
        new_in, new_out = _in(m.lin), (int(w.shape[0]) if w is not None else None)
    elif name == "SAGEConv":
        w = _weight(m.lin_l)
        new_out = int(w.shape[0]) if w is not None else None
        first = m.lin if getattr(m, "project", False) else m.lin_l
        new_in = _in(first, m.lin_r) if getattr(m, "root_weight", False) else _in(first)
    if new_out is not None:
        m.out_channels = new_out
    if new_in is not None:
        m.in_channels = new_in if isinstance(m.in_channels, int) or isinstance(new_in, tuple) \
            else (new_in, new_in)
