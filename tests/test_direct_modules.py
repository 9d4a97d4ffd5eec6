"""Modules traced without running forward (core.trace.direct) hand the tracer the very call their
forward makes, and the trace cannot tell the difference."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import core.trace.direct as direct
from core.analysis.graph import analyze
from core.trace import tracer as tracer_mod


def conv(cls, n, **kw):
    return lambda: (cls(4, 6, 3, **kw), torch.randn((1, 4) + (7,) * n))


CASES = {
    "conv1d": conv(nn.Conv1d, 1),
    "conv2d": conv(nn.Conv2d, 2, stride=2, padding=(1, 0), dilation=2, groups=2, bias=False),
    "conv2d_same": conv(nn.Conv2d, 2, padding="same"),
    "conv2d_valid": conv(nn.Conv2d, 2, padding="valid"),
    "conv3d": conv(nn.Conv3d, 3, groups=2),
    "conv2d_unbatched": lambda: (nn.Conv2d(4, 6, 3), torch.randn(4, 7, 7)),
    "bn1d": lambda: (nn.BatchNorm1d(4).eval(), torch.randn(2, 4)),
    "bn1d_seq": lambda: (nn.BatchNorm1d(4).eval(), torch.randn(2, 4, 5)),
    "bn2d": lambda: (nn.BatchNorm2d(4).eval(), torch.randn(2, 4, 3, 3)),
    "bn2d_no_affine": lambda: (nn.BatchNorm2d(4, affine=False).eval(), torch.randn(2, 4, 3, 3)),
    "bn2d_untracked": lambda: (nn.BatchNorm2d(4, track_running_stats=False).eval(),
                               torch.randn(2, 4, 3, 3)),
    "bn2d_momentum_none": lambda: (nn.BatchNorm2d(4, momentum=None, eps=1e-3).eval(),
                                   torch.randn(2, 4, 3, 3)),
    "bn3d": lambda: (nn.BatchNorm3d(4).eval(), torch.randn(2, 4, 3, 3, 3)),
    "relu": lambda: (nn.ReLU(), torch.randn(2, 3)),
    "relu_inplace": lambda: (nn.ReLU(inplace=True), torch.randn(2, 3)),
    "hardswish_inplace": lambda: (nn.Hardswish(inplace=True), torch.randn(2, 3)),
    "hardsigmoid": lambda: (nn.Hardsigmoid(), torch.randn(2, 3)),
    "silu_inplace": lambda: (nn.SiLU(inplace=True), torch.randn(2, 3)),
    "linear": lambda: (nn.Linear(3, 2), torch.randn(5, 3)),
    "linear_no_bias": lambda: (nn.Linear(3, 2, bias=False), torch.randn(5, 3)),
    "pool": lambda: (nn.AdaptiveAvgPool2d((None, 2)), torch.randn(1, 2, 4, 4)),
    "pool_int": lambda: (nn.AdaptiveAvgPool2d(1), torch.randn(1, 2, 4, 4)),
    "dropout": lambda: (nn.Dropout(0.3, inplace=True).eval(), torch.randn(2, 3)),
}


def same(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("case", sorted(CASES))
def test_direct_call_is_the_call_forward_makes(case):
    mod, x = CASES[case]()
    spec = direct.direct_spec(mod)
    assert spec is not None
    rec = direct.CallRecorder()
    with torch.no_grad(), rec:
        mod(x)
    calls = [c for c in rec.calls if c[0].__name__ not in ("dim", "size")]
    want = spec(mod, x)
    assert len(calls) == 1
    assert calls[0][0] is want[0] and same(calls[0][1], want[1]) and same(calls[0][2], want[2])


@pytest.mark.parametrize("mod, x", [
    (nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), torch.randn(1, 4, 5, 5)),
    (nn.BatchNorm2d(4).train(), torch.randn(2, 4, 3, 3)),
    (nn.BatchNorm2d(4).eval(), torch.randn(2, 4, 3)),  # wrong rank: forward raises its own error
])
def test_other_configurations_run_forward(mod, x):
    assert direct.direct_spec(mod)(mod, x) is None


class MyConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


def test_subclasses_and_replaced_forwards_run_forward():
    assert direct.direct_spec(MyConv(2, 2, 1)) is None
    m = nn.ReLU()
    m.forward = lambda x: x + 1
    assert direct.direct_spec(m) is None


def test_a_forward_that_differs_is_not_taken(monkeypatch):
    spec, example = direct.SPECS[nn.ReLU]
    monkeypatch.setitem(direct.SPECS, nn.ReLU, (lambda mod, x: (torch.relu, (x,), {}), example))
    monkeypatch.setattr(direct, "_VERIFIED", {})
    assert not direct.verified(nn.ReLU)
    assert direct.direct_spec(nn.ReLU()) is None


def test_checks_draw_no_random_numbers(monkeypatch):
    monkeypatch.setattr(direct, "_VERIFIED", {})
    state = torch.random.get_rng_state()
    assert all(direct.verified(c) for c in direct.SPECS)
    assert torch.equal(state, torch.random.get_rng_state())


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.a1 = nn.Hardswish(inplace=True)
        self.c2 = MyConv(8, 8, 3, groups=8, padding=1)
        self.b2 = nn.BatchNorm2d(8, affine=False)
        self.a2 = nn.ReLU()
        self.c3 = nn.Conv2d(8, 8, 1)
        self.c3.forward = lambda x: nn.Conv2d.forward(self.c3, x) + 1
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), nn.SiLU(),
                                nn.Conv2d(4, 8, 1), nn.Hardsigmoid())
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = self.a1(self.b1(self.c1(x)))
        y = self.a2(self.b2(self.c2(y)))
        y = self.c3(y) * self.se(y)
        return self.fc(self.drop(self.pool(y).flatten(1)))


def digest(dg):
    g = dg.trace.graph
    return ([(n, sorted((k, repr(v)) for k, v in d.items())) for n, d in g.nodes(data=True)],
            sorted(g.edges(data="shape")),
            [([(m.slot.tensor_name, m.slot.dim, m.slot.role, m.index_map.tolist()) for m in gr.members],
              gr.prunable.tolist(), gr.exact.tolist(), gr.blocked_reasons, gr.approx_reasons,
              sorted(gr.nodes)) for gr in dg.groups],
            [(s.tensor_name, s.dim, s.role, s.start, s.size) for s in dg.trace.table.slots])


@pytest.mark.parametrize("values", ["auto", "real"])
def test_trace_is_the_same_with_and_without_direct_calls(values, monkeypatch):
    torch.manual_seed(0)
    net, x = Net().train(), torch.randn(2, 3, 9, 9)
    fast = analyze(net, x, values=values)
    assert net.training  # modes restored
    monkeypatch.setattr(tracer_mod._Tracer, "direct", lambda self, mod: None)
    slow = analyze(net, x, values=values)
    assert digest(fast) == digest(slow)
    assert fast.trace.shape_only == slow.trace.shape_only == (values == "auto")


def test_direct_calls_are_taken(monkeypatch):
    taken = []
    orig = tracer_mod._Tracer.handle_call

    def spy(self, name, func, args, kwargs):
        taken.append(name)
        return orig(self, name, func, args, kwargs)
    monkeypatch.setattr(tracer_mod._Tracer, "handle_call", spy)
    assert direct.verified(nn.BatchNorm2d)  # (the check runs forward once)
    dims = []
    real = nn.BatchNorm2d._check_input_dim
    monkeypatch.setattr(nn.BatchNorm2d, "_check_input_dim", lambda self, x: dims.append(1) or real(self, x))
    analyze(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()), torch.randn(1, 3, 5, 5))
    assert taken == ["conv2d", "batch_norm", "relu"]
    assert not dims  # BatchNorm's forward (which checks the input's rank) did not run


class Shared(nn.Module):
    """A module and a parameter reachable under two names, empty slots, a nested buffer."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = self.a
        self.c = nn.Sequential(self.a, nn.BatchNorm1d(2), nn.ReLU())
        self.d = None
        self.register_buffer("z", None)
        self.w = self.a.weight


@pytest.mark.parametrize("make", [Shared, Net, lambda: __import__("torchvision").models.mobilenet_v3_small()])
def test_named_tensors_walk_is_torchs(make):
    """The tracer's one-walk names are the first names torch's own walks give, in their order."""
    from core.trace.context import named_tensors
    model = make()
    names, modules, by_name = named_tensors(model)
    want = {id(p): (n, False) for n, p in model.named_parameters()}
    for n, b in model.named_buffers():
        want.setdefault(id(b), (n, True))
    assert list(names.items()) == list(want.items())
    assert list(by_name.items()) == list(model.named_modules())
    assert modules == {id(m): n for n, m in model.named_modules()}


def test_a_class_registered_as_leaf_module_is_traced_as_one(monkeypatch):
    """A leaf module's registration wins over its direct call; calls inside a leaf run as usual."""
    from core.ops import registry

    class Block(nn.Module):  # a leaf whose forward calls a direct module
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x)

    seen = []

    def handler(ctx, call):
        seen.append((call.name, call.scope))
        ctx.set(call.out_tensors[0], ctx.labels(call.args[0]))

    monkeypatch.setattr(registry, "LEAF_MODULES", [(nn.Linear, "my_linear", None),
                                                   (Block, "my_block", None)] + registry.LEAF_MODULES)
    monkeypatch.setattr(registry, "_LEAF_CACHE", {})
    monkeypatch.setitem(registry.OP_HANDLERS, "my_linear", handler)
    monkeypatch.setitem(registry.OP_HANDLERS, "my_block", handler)
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), Block(), nn.ReLU())
    dg = analyze(net, torch.randn(2, 4))
    assert seen == [("my_linear", "0"), ("my_block", "2")]
    assert [op for _, op in dg.graph.nodes(data="op")] == ["input", "my_linear", "relu", "my_block",
                                                            "relu", "output"]
