"""Module scopes from per-instance call wrappers (core.trace.scopes) match global hooks exactly,
and the wrappers never outlive the trace."""
import pytest
import torch
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention

from core import families
from core.trace.scopes import wrap_module_calls
from core.trace.tracer import trace_model


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.attn = ShiftedWindowAttention(8, [2, 2], [1, 1], 2)  # traced as a leaf module

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return x + self.attn(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), Block(), Block(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4)).eval()


def _nodes(trace):
    return [(d["op"], d["module"], d["scope"], d.get("leaf", False))
            for _, d in trace.graph.nodes(data=True)]


def _leftovers(model):
    return [n for n, m in model.named_modules() if "_call_impl" in m.__dict__]


def test_wrapped_scopes_equal_global_hook_scopes():
    families.load()
    net, x = _net(), torch.randn(1, 3, 6, 6)
    wrapped = trace_model(net, ((x,), {}))
    assert not _leftovers(net)
    # any global hook makes the tracer fall back to global hooks of its own
    h = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        assert wrap_module_calls(net.modules(), lambda *a: None, lambda *a: None) is None
        hooked = trace_model(net, ((x,), {}))
    finally:
        h.remove()
    assert _nodes(wrapped) == _nodes(hooked)
    assert any(leaf for *_, leaf in _nodes(wrapped))  # the attention ran as one leaf node
    assert len(set(scope for _, _, scope, _ in _nodes(wrapped))) > 3


def test_a_module_with_its_own_hooks_is_traced_with_global_hooks():
    net = _net()
    h = net[1].bn.register_forward_pre_hook(lambda m, a: (a[0] * 1.0,))
    try:
        assert wrap_module_calls(net.modules(), lambda *a: None, lambda *a: None) is None
        trace_model(net, ((torch.randn(1, 3, 6, 6),), {}))
    finally:
        h.remove()
    assert not _leftovers(net)


def test_wrappers_removed_when_forward_raises():
    net = _net()
    with pytest.raises(Exception):
        trace_model(net, ((torch.randn(1, 5, 6, 6),), {}))  # wrong channel count
    assert not _leftovers(net)
    assert net(torch.randn(1, 3, 6, 6)).shape == (1, 4)  # and the model still runs as before
