"""Tracing without arithmetic (core.trace.values) gives exactly the groups of a real-valued trace.

Costly ops return uninitialised tensors of the right shape (cheap ops on them are not computed
either); wherever a value could decide what the trace sees (control flow, an index or mask, a
data-dependent shape, a write into the model), the tracer must fall back to real values. Each
case here is built so that a trace on zeros would take a different path from the real one.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from core.analysis.graph import analyze
from core.trace.shapes import shape_only
from core.trace.tracer import trace_model


def signature(dg):
    """Everything a user sees of the groups, comparable with ==."""
    return [([(m.slot.tensor_name, m.slot.dim, m.slot.role, m.index_map.tolist()) for m in g.members],
             g.prunable.tolist(), g.exact.tolist(), g.blocked_reasons, g.approx_reasons,
             sorted(g.nodes)) for g in dg.groups]


def both(model, x):
    fast = analyze(model, x)
    real = analyze(model, x, values="real")
    assert not real.trace.shape_only
    return fast, real


# -- models whose trace on zeros would differ ----------------------------------------------------

class Branchy(nn.Module):
    """A value decides which layer runs: zeros would take the other branch."""

    def __init__(self):
        super().__init__()
        self.c1, self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.c1(x)
        if y.sum() > 0:  # True for the input used below, False on zeros
            y = y + self.a(y)  # couples a's output with c1's
        return self.b(y)


class Permuted(nn.Module):
    """Channels reordered by an index computed from values (zeros: the identity order)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.c1(x)
        order = y.mean((0, 2, 3)).argsort()
        return self.c2(y) + y[:, order]


class Writes(nn.Module):
    """Writes a computed statistic into its own buffer (a running average)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3)
        self.register_buffer("seen", torch.zeros(8))

    def forward(self, x):
        y = self.c1(x)
        self.seen.copy_(y.mean((0, 2, 3)))
        return y


def _input():
    torch.manual_seed(0)
    return torch.randn(1, 3, 12, 12) + 3.0


def test_value_in_control_flow_falls_back():
    torch.manual_seed(0)
    m = Branchy().eval()
    with torch.no_grad():
        m.c1.bias.fill_(1.0)
        m.c1.weight.abs_()
    fast, real = both(m, _input())
    assert not fast.trace.shape_only
    assert signature(fast) == signature(real)
    assert "a.weight" in {mb.slot.tensor_name for g in fast.groups for mb in g.members}


def test_index_computed_from_values_falls_back():
    torch.manual_seed(0)
    m = Permuted().eval()
    fast, real = both(m, _input())
    assert not fast.trace.shape_only
    assert signature(fast) == signature(real)


def test_write_into_buffer_falls_back_and_stores_real_values():
    torch.manual_seed(0)
    m = Writes().eval()
    x = _input()
    trace_model(m, ((x,), {}))
    with torch.no_grad():
        want = m.c1(x).mean((0, 2, 3))
    assert torch.allclose(m.seen, want)


def test_plain_cnn_takes_the_shape_only_path():
    m = torchvision.models.resnet18(num_classes=10).eval()
    fast, real = both(m, torch.randn(1, 3, 64, 64))
    assert fast.trace.shape_only
    assert signature(fast) == signature(real)


# -- the shape functions against the real ops ----------------------------------------------------

def _conv_cases():
    x2 = torch.randn(2, 8, 13, 11)
    yield F.conv2d, (x2, torch.randn(6, 8, 3, 3)), {}
    yield F.conv2d, (x2, torch.randn(6, 4, 3, 2), torch.randn(6), (2, 1), (1, 2), (2, 1), 2), {}
    yield F.conv2d, (x2, torch.randn(8, 1, 5, 5)), {"padding": "same", "groups": 8}
    yield F.conv2d, (x2, torch.randn(8, 8, 5, 5)), {"padding": "valid", "stride": 3}
    yield F.conv2d, (x2[0], torch.randn(6, 8, 3, 3)), {"stride": 2}  # unbatched
    yield F.conv2d, (x2.contiguous(memory_format=torch.channels_last), torch.randn(6, 8, 1, 1)), {}
    yield F.conv1d, (torch.randn(2, 4, 17), torch.randn(5, 4, 4)), {"stride": 3, "dilation": 2}
    yield F.conv3d, (torch.randn(1, 2, 5, 6, 7), torch.randn(3, 2, 2, 3, 1)), {"padding": 1}
    yield F.linear, (torch.randn(3, 5, 7), torch.randn(4, 7), torch.randn(4)), {}
    yield F.linear, (torch.randn(7), torch.randn(4, 7)), {}
    yield torch.matmul, (torch.randn(2, 1, 3, 4), torch.randn(5, 4, 6)), {}
    yield torch.bmm, (torch.randn(2, 3, 4), torch.randn(2, 4, 6)), {}
    yield torch.mm, (torch.randn(3, 4), torch.randn(4, 6)), {}
    yield F.batch_norm, (x2, torch.randn(8), torch.rand(8) + 1, torch.randn(8), torch.randn(8)), {}
    yield F.batch_norm, (torch.randn(3, 8), torch.randn(8), torch.rand(8) + 1), {}
    yield F.layer_norm, (torch.randn(2, 5, 8), (8,), torch.randn(8), torch.randn(8)), {}
    yield F.layer_norm, (torch.randn(2, 5, 8), (5, 8)), {}
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    yield F.scaled_dot_product_attention, (q, k, v), {}
    yield F.scaled_dot_product_attention, (q, k, v), {"attn_mask": torch.zeros(5, 7)}


def _mha_cases():
    e, heads = 8, 2
    mha = nn.MultiheadAttention(e, heads).eval()
    base = (e, heads, mha.in_proj_weight, mha.in_proj_bias, None, None, False, 0.0,
            mha.out_proj.weight, mha.out_proj.bias)
    q, kv = torch.randn(5, 3, e), torch.randn(7, 3, e)
    yield F.multi_head_attention_forward, (q, kv, kv, *base), {"training": False}
    yield F.multi_head_attention_forward, (q, kv, kv, *base), {"training": False,
                                                                "average_attn_weights": False}
    yield F.multi_head_attention_forward, (q[:, 0], kv[:, 0], kv[:, 0], *base), {
        "training": False, "need_weights": False}


@pytest.mark.parametrize("case", list(_conv_cases()) + list(_mha_cases()),
                         ids=lambda c: c[0].__name__)
def test_shape_functions_match_the_real_ops(case):
    from core.ops.registry import normalise_name
    fn, args, kwargs = case
    got = shape_only(normalise_name(fn), args, kwargs)
    want = fn(*args, **kwargs)
    if isinstance(want, tuple):
        assert [None if t is None else t.shape for t in got] == \
            [None if t is None else t.shape for t in want]
        return
    assert got is not None and got.shape == want.shape and got.dtype == want.dtype
    assert got.is_contiguous(memory_format=torch.channels_last) == \
        want.is_contiguous(memory_format=torch.channels_last)


def test_shape_functions_leave_bad_calls_to_the_real_op():
    from core.ops.registry import normalise_name
    x = torch.randn(1, 8, 5, 5)
    assert shape_only(normalise_name(F.conv2d), (x, torch.randn(4, 3, 3, 3)), {}) is None
    assert shape_only("linear", (torch.randn(2, 3), torch.randn(4, 5)), {}) is None
    assert shape_only("matmul", (torch.randn(2, 3), torch.randn(3, 4).double()), {}) is None
    stats = (torch.zeros(8), torch.ones(8))
    assert shape_only("batch_norm", (x, *stats, None, None, True), {}) is None  # updates stats
    assert shape_only("layer_norm", (torch.randn(2, 5), (4,)), {}) is None


# -- torchvision: the same groups either way -----------------------------------------------------

CHEAP = ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_0", "mnasnet0_5"]
ALL_TV = ["alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s",
          "googlenet", "inception_v3", "maxvit_t", "mobilenet_v2", "mobilenet_v3_large",
          "regnet_x_400mf", "regnet_y_400mf", "resnet50", "resnext50_32x4d", "swin_t",
          "swin_v2_t", "vgg11_bn", "vit_b_16", "wide_resnet50_2"]


def _tv(name):
    kw = {"weights": None, "num_classes": 10}
    if name in ("googlenet", "inception_v3"):
        kw.update(aux_logits=False, init_weights=False)
    size = {"inception_v3": 139, "vit_b_16": 224, "maxvit_t": 224}.get(name, 64)
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(**kw).eval(), torch.randn(1, 3, size, size)


def _same_groups(name):
    model, x = _tv(name)
    fast, real = both(model, x)
    assert fast.trace.shape_only, f"{name}: fell back to real values"
    assert signature(fast) == signature(real)


@pytest.mark.parametrize("name", CHEAP)
def test_torchvision_groups_without_arithmetic(name):
    _same_groups(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_TV)
def test_torchvision_groups_without_arithmetic_all(name):
    _same_groups(name)


# -- meta models (weightless LLM analysis) -------------------------------------------------------

def test_meta_llama_has_the_groups_of_the_real_one():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=100)
    torch.manual_seed(0)
    real = transformers.LlamaForCausalLM(cfg).eval()
    with torch.device("meta"):
        meta = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 100, (1, 6))
    got = analyze(meta, ids.to("meta"))
    assert got.trace.shape_only
    assert signature(got) == signature(analyze(real, ids, values="real"))


@pytest.mark.parametrize("name,args,kwargs", [
    ("mul", (torch.randn(2, 3, 4), 2.0), {}),
    ("add", (torch.randn(2, 3, 4), torch.randn(3, 1)), {"alpha": 2}),
    ("mul", (torch.randn(4, 3, 2).transpose(0, 2), 3), {}),
    ("gelu", (torch.randn(2, 5),), {"approximate": "tanh"}),
    ("to", (torch.randn(2, 5), torch.float16), {}),
])
def test_meta_elementwise_shapes(name, args, kwargs):
    meta = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)
    got = shape_only(name, meta, kwargs)
    want = getattr(torch.Tensor, name)(*meta, **kwargs) if name != "gelu" else F.gelu(*meta, **kwargs)
    assert got.shape == want.shape and got.dtype == want.dtype and got.stride() == want.stride()


@pytest.mark.parametrize("name", ["resnet18", "vit_b_16", "swin_t"])
def test_meta_shapes_mode_gives_torchs_output_shapes(name):
    from core.analysis.probe import meta_copy
    from core.trace.shapes import MetaShapes
    model, x = _tv(name)
    m, xm = meta_copy(model).eval(), x.to("meta")
    with torch.no_grad():
        want = m(xm)
        with MetaShapes():
            got = m(xm)
    assert got.shape == want.shape and got.is_meta


def test_meta_shapes_mode_still_raises_on_a_size_mismatch():
    from core.trace.shapes import MetaShapes
    net = nn.Sequential(nn.Linear(8, 4), nn.Linear(5, 2)).to("meta")
    with pytest.raises(RuntimeError), MetaShapes():
        net(torch.empty(3, 8, device="meta"))


class InplaceActs(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)
        self.acts = nn.Sequential(nn.ReLU(inplace=True), nn.ReLU6(inplace=True), nn.SiLU(True),
                                  nn.Hardswish(True), nn.LeakyReLU(0.1, True), nn.ELU(inplace=True))

    def forward(self, x):
        return self.c2(self.acts(self.c1(x))) + F.relu(self.c2.bias)[None, :, None, None]


def test_inplace_activations_without_values_are_not_computed(monkeypatch):
    calls = []
    for mod, name in ((torch, "relu_"), (torch._C._nn, "hardtanh_"), (torch._C._nn, "silu_")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _f=real, _n=name, **k: calls.append(_n) or _f(*a, **k))
    m = InplaceActs().eval()
    real = analyze(m, _input(), values="real")
    assert sorted(set(calls)) == ["hardtanh_", "relu_", "silu_"]  # the real trace computes them
    calls.clear()
    fast = analyze(m, _input())
    assert fast.trace.shape_only and calls == []
    assert signature(fast) == signature(real)


# -- cheap ops on tensors without values are not computed either ---------------------------------

_CL = torch.randn(2, 6, 5, 4).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("fn,args,kwargs", [
    (torch.mul, (torch.randn(1, 8, 5, 5), torch.randn(1, 8, 1, 1)), {}),
    (torch.add, (torch.randn(2, 3, 4), torch.randn(3, 1)), {"alpha": 2}),
    (torch.add, (torch.randn(8, 1), torch.randn(1, 5)), {}),
    (torch.sub, (torch.randn(2, 3), 1.5), {}),
    (torch.mul, (_CL, _CL * 2), {}),
    (F.relu, (_CL,), {}),
    (F.hardswish, (torch.randn(2, 7),), {}),
    (F.hardtanh, (torch.randn(2, 7), 0.0, 6.0, False), {}),
    (F.leaky_relu, (torch.randn(3, 4),), {"negative_slope": 0.2}),
    (F.gelu, (torch.randn(2, 5),), {"approximate": "tanh"}),
    (torch.sigmoid, (torch.randn(1, 6, 1, 1),), {}),
    (torch.mul, (torch.randn(4, 3, 2).transpose(0, 2), 3), {}),  # strided: left to the real op
    (torch.mul, (_CL, torch.randn(1, 6, 1, 1)), {}),  # mixed layouts: left to the real op
    (torch.add, (torch.randn(2, 3), torch.randn(2, 3).double()), {}),  # promotion: real op
    (F.relu, (torch.randn(2, 3),), {"inplace": True}),  # in place: not this path
    (torch.pow, (2, torch.randn(2, 3)), {}),  # a number first: left to the real op
    (F.adaptive_avg_pool2d, (torch.randn(1, 8, 7, 6), 1), {}),
    (F.adaptive_avg_pool2d, (torch.randn(8, 7, 6), (3, None)), {}),
    (F.adaptive_avg_pool1d, (torch.randn(2, 8, 9), 4), {}),
    (F.adaptive_avg_pool2d, (_CL, 1), {}),  # channels-last: left to the real op
])
def test_fake_cheap_ops_are_laid_out_like_the_real_ones(fn, args, kwargs):
    from core.ops.registry import normalise_name
    from core.trace.shapes import fake_adaptive_avg_pool, fake_elementwise
    name = normalise_name(fn)
    got = fake_elementwise(name, args, kwargs)
    if got is None:
        got = fake_adaptive_avg_pool(name, args, kwargs)
    strided = any(isinstance(a, torch.Tensor) and not a.is_contiguous() and not a.is_contiguous(
        memory_format=torch.channels_last) for a in args)
    mixed = sum(isinstance(a, torch.Tensor) for a in args) > 1 and len(
        {(a.stride(), a.dtype) for a in args if isinstance(a, torch.Tensor)}) > 1 and not all(
        a.is_contiguous() and a.dtype == args[0].dtype for a in args if isinstance(a, torch.Tensor))
    if strided or mixed or kwargs.get("inplace") or not isinstance(args[0], torch.Tensor) or (
            fn is F.adaptive_avg_pool2d and args[0] is _CL):
        assert got is None
        return
    want = fn(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args), **kwargs)
    assert got is not None
    assert (got.shape, got.dtype, got.stride()) == (want.shape, want.dtype, want.stride())


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.fc, self.c2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = F.hardswish(self.c1(x))
        s = torch.sigmoid(self.fc(F.adaptive_avg_pool2d(y, 1)))
        z = torch.sub(torch.add(torch.mul(y, s), y), 1.0)
        z += y  # in place, into a tensor without values
        z.mul_(s)
        return self.c2(z)


def _aten_ops(fn):
    """The aten ops that ran inside ``fn()`` (what was computed, below the torch-function layer)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = fn()
    return out, {e.key for e in prof.key_averages()}


def test_cheap_ops_without_values_are_not_computed():
    m = SqueezeExcite().eval()
    cheap = {"aten::mul", "aten::add", "aten::sub", "aten::sigmoid", "aten::hardswish",
             "aten::adaptive_avg_pool2d", "aten::add_", "aten::mul_"}
    x = _input()
    real, ran = _aten_ops(lambda: analyze(m, x, values="real"))
    assert cheap <= ran  # the real trace computes them
    fast, ran = _aten_ops(lambda: analyze(m, x))
    assert fast.trace.shape_only and not cheap & ran, cheap & ran
    assert signature(fast) == signature(real)
