"""Random networks for property-based fuzzing of the pruning engine (issue 6).

A network is generated as a readable :class:`NetSpec` (inputs, a list of ops, outputs) and built as
an ``nn.Module`` (:class:`FuzzNet`) that interprets the spec, so a failing hypothesis example prints
something like::

    NetSpec(
      inputs: x0: img(c=3, h=6, w=6)
      v1 = conv(x0, out=8, k=3, stride=1, groups=1, bias=True)      # img(c=8, h=6, w=6)
      v2 = add(v1, v1)                                             # img(c=8, h=6, w=6)
      outputs: v2
    )

Shapes stay consistent by construction: every value carries its kind and shape while generating,
and an op is only offered where it applies. Value kinds:

- ``img``  (N, C, H, W)  — conv / norms / pooling / shuffles / ...
- ``vec``  (N, F)        — linear, BatchNorm1d, LayerNorm, ...
- ``nhwc`` (N, H, W, C)  — a permuted image: linear and LayerNorm over channels, then permuted back

:func:`check_property` is the property itself (shared by tests/test_fuzz.py, the regression tests
and benchmarks/fuzz_long.py).
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from fuzz_bounds import check_approximate  # noqa: E402
from helpers import _state, assert_unchanged, kept_params_equal, randomize  # noqa: E402

from core.plan.criteria import CRITERIA  # noqa: E402
from core.trace.inputs import as_example_inputs  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.planner import PlanSettings, _n_remove  # noqa: E402
from core.trace.tracer import flatten_outputs  # noqa: E402

MAX_C = 32  # channel cap of any generated value (generated layers choose 2-16)
MAX_HW = 16
MAX_F = 512
BATCH = 2

# ops left out of generation (comma-separated names, e.g. FUZZ_EXCLUDE_OPS=chunk to look past a known
# bug family in the long run)
EXCLUDE = set(filter(None, os.environ.get("FUZZ_EXCLUDE_OPS", "").split(",")))

ACTS = ("relu", "gelu", "sigmoid", "tanh", "silu", "leaky_relu", "hardswish")


# ------------------------------------------------------------------------------------------------
# the spec


@dataclass(frozen=True)
class Val:
    kind: str  # img | vec | nhwc
    shape: tuple  # without the batch dim: img (C, H, W), vec (F,), nhwc (H, W, C)

    @property
    def c(self):
        return self.shape[-1] if self.kind == "nhwc" else self.shape[0]

    def __repr__(self):
        if self.kind == "img":
            return "img(c=%d, h=%d, w=%d)" % self.shape
        if self.kind == "vec":
            return "vec(f=%d)" % self.shape
        return "nhwc(h=%d, w=%d, c=%d)" % self.shape


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple  # value indices
    params: tuple = ()  # ((key, value), ...), readable and hashable

    @property
    def p(self):
        return dict(self.params)


@dataclass
class NetSpec:
    inputs: list  # [Val]
    ops: list = field(default_factory=list)  # [Op]
    vals: list = field(default_factory=list)  # [Val] for each op's result
    outputs: list = field(default_factory=list)  # value indices

    def all_vals(self):
        return list(self.inputs) + list(self.vals)

    def vname(self, i):
        return f"x{i}" if i < len(self.inputs) else f"v{i}"

    def __repr__(self):
        lines = ["NetSpec("]
        lines.append("  inputs: " + ", ".join(f"{self.vname(i)}: {v!r}" for i, v in enumerate(self.inputs)))
        for k, (op, v) in enumerate(zip(self.ops, self.vals)):
            i = len(self.inputs) + k
            args = [self.vname(a) for a in op.args] + [f"{a}={b!r}" for a, b in op.params]
            s = f"  {self.vname(i)} = {op.name}({', '.join(args)})"
            lines.append(f"{s:<68} # {v!r}")
        lines.append("  outputs: " + ", ".join(self.vname(i) for i in self.outputs))
        lines.append(")")
        return "\n".join(lines)

    __str__ = __repr__

    def _repr_pretty_(self, p, cycle):  # hypothesis prints falsifying examples with this
        p.text(repr(self))

    def make_inputs(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(BATCH, *v.shape, generator=g) for v in self.inputs)


# ------------------------------------------------------------------------------------------------
# the module that interprets a spec


def _conv_out(h, k, s, p):
    return (h + 2 * p - k) // s + 1


class FuzzNet(nn.Module):
    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleDict()
        vals = spec.all_vals()
        for k, op in enumerate(spec.ops):
            m = self._module(op, vals[op.args[0]], spec.vals[k])
            if m is not None:
                self.layers[f"op{len(spec.inputs) + k}"] = m

    def extra_repr(self):
        return "\n" + repr(self.spec)

    @staticmethod
    def _module(op, x: Val, y: Val):
        p = op.p
        if op.name == "conv":
            return nn.Conv2d(x.c, p["out"], p["k"], stride=p["stride"], padding=p["k"] // 2,
                             groups=p["groups"], bias=p["bias"])
        if op.name == "conv_t":
            if p["k"] == 2:
                return nn.ConvTranspose2d(x.c, p["out"], 2, stride=2, groups=p["groups"], bias=p["bias"])
            return nn.ConvTranspose2d(x.c, p["out"], 3, stride=1, padding=1, groups=p["groups"],
                                      bias=p["bias"])
        if op.name == "linear":
            return nn.Linear(x.c, p["out"], bias=p["bias"])
        if op.name == "bn":
            return nn.BatchNorm2d(x.c) if x.kind == "img" else nn.BatchNorm1d(x.c)
        if op.name == "gn":
            return nn.GroupNorm(p["groups"], x.c)
        if op.name == "inorm":
            return nn.InstanceNorm2d(x.c, affine=p["affine"])
        if op.name == "ln":
            shape = list(x.shape) if p.get("over") == "chw" else [x.c]
            return nn.LayerNorm(shape, elementwise_affine=p["affine"])
        if op.name == "channel_shuffle":
            return nn.ChannelShuffle(p["groups"])
        if op.name == "pixel_shuffle":
            return nn.PixelShuffle(2)
        if op.name == "pixel_unshuffle":
            return nn.PixelUnshuffle(2)
        return None

    def values(self, *xs):
        """Every value of the spec (inputs, then one per op)."""
        spec = self.spec
        vals = list(xs)
        for k, op in enumerate(spec.ops):
            i = len(spec.inputs) + k
            m = self.layers[f"op{i}"] if f"op{i}" in self.layers else None
            vals.append(_apply(op, [vals[a] for a in op.args], m, spec.vals[k]))
        return vals

    def forward(self, *xs):
        vals = self.values(*xs)
        outs = [vals[i] for i in self.spec.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _act(name, x):
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.1)
    return getattr(F, name)(x)


def _apply(op, xs, m, y: Val):
    p = op.p
    n = op.name
    x = xs[0]
    if m is not None:
        return m(x)
    if n == "act":
        return _act(p["fn"], x)
    if n == "add":
        return x + xs[1]
    if n == "mul":
        return x * xs[1]
    if n == "scale":  # img * vec[:, :, None, None] (squeeze-excitation style)
        return x * torch.sigmoid(xs[1])[:, :, None, None]
    if n == "cat":
        return torch.cat(xs, dim=1 if y.kind != "nhwc" else -1)
    if n == "chunk":
        return torch.chunk(x, p["n"], dim=1)[p["i"]]
    if n == "split":
        return torch.split(x, list(p["sizes"]), dim=1)[p["i"]]
    if n == "slice":
        return x[:, p["start"]:p["stop"]:p["step"]]
    if n == "flatten":
        return torch.flatten(x, 1)
    if n == "gap":
        return x.mean(dim=(2, 3))
    if n == "adaptive_pool":
        return F.adaptive_avg_pool2d(x, 1).view(x.shape[0], -1)
    if n == "to_img":
        return x.reshape(x.shape[0], *y.shape)
    if n == "to_nhwc":
        return x.permute(0, 2, 3, 1)
    if n == "to_nchw":
        return x.permute(0, 3, 1, 2)
    if n == "maxpool":
        return F.max_pool2d(x, p["k"], stride=p["k"] if p["k"] == 2 else 1, padding=0 if p["k"] == 2 else 1)
    if n == "avgpool":
        return F.avg_pool2d(x, p["k"], stride=p["k"] if p["k"] == 2 else 1, padding=0 if p["k"] == 2 else 1)
    if n == "upsample":
        if p["mode"] == "nearest":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    if n == "fn_channel_shuffle":
        return F.channel_shuffle(x, p["groups"])
    raise ValueError(f"unknown fuzz op {n}")


def build(spec: NetSpec, seed: int = 0) -> nn.Module:
    """The network of ``spec`` with random non-trivial weights, in eval mode."""
    torch.manual_seed(seed)
    m = FuzzNet(spec)
    randomize(m, seed)
    return m.eval()


# ------------------------------------------------------------------------------------------------
# generation

def _divisors(n, lo=2):
    return [d for d in range(lo, n + 1) if n % d == 0]


@st.composite
def ops_for(draw, spec: NetSpec, src: int):
    """One op applicable to value ``src`` (an Op and its result Val), or None."""
    vals = spec.all_vals()
    x = vals[src]
    chans = sorted({v.c for v in vals})

    def out_ch():
        return draw(st.one_of(st.integers(2, 16), st.sampled_from(chans)).filter(lambda c: 2 <= c <= 16))

    def mk(name, args, y, **params):
        if name in EXCLUDE:
            return None
        return Op(name, tuple(args), tuple(params.items())), y

    if x.kind == "img":
        C, H, W = x.shape
        # parameterised layers weigh more, so most networks have something to prune
        names = ["act", "conv", "bn", "add", "cat", "conv", "conv_t", "gn", "inorm", "ln", "mul",
                 "conv", "chunk", "split", "slice", "gap", "flatten", "to_nhwc", "conv",
                 "channel_shuffle", "pixel_shuffle", "pixel_unshuffle", "maxpool", "avgpool",
                 "upsample", "adaptive_pool", "scale", "conv_t", "bn", "conv", "conv", "conv",
                 "conv", "conv_t", "add", "cat"]
        name = draw(st.sampled_from(names))
        if name == "act":
            return mk("act", [src], x, fn=draw(st.sampled_from(ACTS)))
        if name == "conv":
            kind = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
            k = draw(st.sampled_from([1, 3]))
            stride = draw(st.sampled_from([1, 2])) if min(H, W) >= 4 else 1
            bias = draw(st.booleans())
            if kind == "depthwise":
                mult = draw(st.sampled_from([1, 2]))
                out, groups = C * mult, C
                if out > MAX_C:
                    out = C
            else:
                out = out_ch()
                groups = 1
                if kind == "grouped":
                    common = [d for d in _divisors(math.gcd(C, out)) if d < max(C, out)]
                    if not common:
                        return None
                    groups = draw(st.sampled_from(common))
            y = Val("img", (out, _conv_out(H, k, stride, k // 2), _conv_out(W, k, stride, k // 2)))
            return mk("conv", [src], y, out=out, k=k, stride=stride, groups=groups, bias=bias)
        if name == "conv_t":
            k = draw(st.sampled_from([3, 2])) if max(H, W) * 2 <= MAX_HW else 3
            out = out_ch()
            groups = 1
            if draw(st.booleans()):
                common = [d for d in _divisors(math.gcd(C, out))]
                if common:
                    groups = draw(st.sampled_from(common))
            y = Val("img", (out, H * 2, W * 2) if k == 2 else (out, H, W))
            return mk("conv_t", [src], y, out=out, k=k, groups=groups, bias=draw(st.booleans()))
        if name == "bn":
            return mk("bn", [src], x)
        if name == "gn":
            return mk("gn", [src], x, groups=draw(st.sampled_from(_divisors(C, 1))))
        if name == "inorm":
            if H * W == 1:  # instance statistics need more than one spatial element
                return None
            return mk("inorm", [src], x, affine=draw(st.booleans()))
        if name == "ln":
            return mk("ln", [src], x, over="chw", affine=draw(st.booleans()))
        if name in ("add", "mul"):
            cands = [i for i, v in enumerate(vals) if v == x]
            return mk(name, [src, draw(st.sampled_from(cands))], x)
        if name == "cat":
            cands = [i for i, v in enumerate(vals) if v.kind == "img" and v.shape[1:] == (H, W)]
            others = draw(st.lists(st.sampled_from(cands), min_size=1, max_size=2))
            c = C + sum(vals[i].c for i in others)
            if c > MAX_C:
                return None
            return mk("cat", [src, *others], Val("img", (c, H, W)))
        if name == "chunk":
            if C < 2:
                return None
            nn_ = draw(st.integers(2, min(4, C)))
            pieces = torch.chunk(torch.zeros(C), nn_)
            i = draw(st.integers(0, len(pieces) - 1))
            return mk("chunk", [src], Val("img", (len(pieces[i]), H, W)), n=nn_, i=i)
        if name == "split":
            if C < 2:
                return None
            cut = sorted(draw(st.sets(st.integers(1, C - 1), min_size=1, max_size=min(3, C - 1))))
            sizes = tuple(b - a for a, b in zip([0, *cut], [*cut, C]))
            i = draw(st.integers(0, len(sizes) - 1))
            return mk("split", [src], Val("img", (sizes[i], H, W)), sizes=sizes, i=i)
        if name == "slice":
            if C < 2:
                return None
            start = draw(st.integers(0, C - 1))
            stop = draw(st.integers(start + 1, C))
            step = draw(st.sampled_from([1, 2]))
            n = len(range(start, stop, step))
            return mk("slice", [src], Val("img", (n, H, W)), start=start, stop=stop, step=step)
        if name == "gap":
            return mk("gap", [src], Val("vec", (C,)))
        if name == "adaptive_pool":
            return mk("adaptive_pool", [src], Val("vec", (C,)))
        if name == "flatten":
            if C * H * W > MAX_F:
                return None
            return mk("flatten", [src], Val("vec", (C * H * W,)))
        if name == "to_nhwc":
            return mk("to_nhwc", [src], Val("nhwc", (H, W, C)))
        if name == "channel_shuffle":
            ds = [d for d in _divisors(C) if d < C]
            if not ds:
                return None
            fn = draw(st.sampled_from(["channel_shuffle", "fn_channel_shuffle"]))
            return mk(fn, [src], x, groups=draw(st.sampled_from(ds)))
        if name == "pixel_shuffle":
            if C % 4:
                return None
            return mk("pixel_shuffle", [src], Val("img", (C // 4, H * 2, W * 2)))
        if name == "pixel_unshuffle":
            if H % 2 or W % 2 or C * 4 > MAX_C:
                return None
            return mk("pixel_unshuffle", [src], Val("img", (C * 4, H // 2, W // 2)))
        if name in ("maxpool", "avgpool"):
            k = draw(st.sampled_from([2, 3])) if min(H, W) >= 2 else 3
            y = Val("img", (C, H // 2, W // 2)) if k == 2 else x
            return mk(name, [src], y, k=k)
        if name == "upsample":
            if max(H, W) * 2 > MAX_HW:
                return None
            return mk("upsample", [src], Val("img", (C, H * 2, W * 2)),
                      mode=draw(st.sampled_from(["nearest", "bilinear"])))
        if name == "scale":
            cands = [i for i, v in enumerate(vals) if v.kind == "vec" and v.shape == (C,)]
            if not cands:
                return None
            return mk("scale", [src, draw(st.sampled_from(cands))], x)
    if x.kind == "vec":
        (Fd,) = x.shape
        name = draw(st.sampled_from(["act", "linear", "bn", "add", "cat", "ln", "mul", "chunk",
                                     "slice", "to_img", "linear", "linear", "linear"]))
        if name == "act":
            return mk("act", [src], x, fn=draw(st.sampled_from(ACTS)))
        if name == "linear":
            return mk("linear", [src], Val("vec", (out := out_ch(),)), out=out, bias=draw(st.booleans()))
        if name == "bn":
            return mk("bn", [src], x)
        if name == "ln":
            return mk("ln", [src], x, over="last", affine=draw(st.booleans()))
        if name in ("add", "mul"):
            cands = [i for i, v in enumerate(vals) if v == x]
            return mk(name, [src, draw(st.sampled_from(cands))], x)
        if name == "cat":
            cands = [i for i, v in enumerate(vals) if v.kind == "vec"]
            o = draw(st.sampled_from(cands))
            if Fd + vals[o].c > MAX_F:
                return None
            return mk("cat", [src, o], Val("vec", (Fd + vals[o].c,)))
        if name == "chunk":
            if Fd < 2:
                return None
            nn_ = draw(st.integers(2, min(4, Fd)))
            pieces = torch.chunk(torch.zeros(Fd), nn_)
            i = draw(st.integers(0, len(pieces) - 1))
            return mk("chunk", [src], Val("vec", (len(pieces[i]),)), n=nn_, i=i)
        if name == "slice":
            if Fd < 2:
                return None
            start = draw(st.integers(0, Fd - 1))
            stop = draw(st.integers(start + 1, Fd))
            return mk("slice", [src], Val("vec", (len(range(start, stop)),)), start=start, stop=stop,
                      step=1)
        if name == "to_img":
            hw = draw(st.sampled_from([s for s in (1, 2) if Fd % (s * s) == 0 and Fd // (s * s) <= MAX_C]
                                      or [0]))
            if hw == 0:
                return None
            return mk("to_img", [src], Val("img", (Fd // (hw * hw), hw, hw)))
    if x.kind == "nhwc":
        H, W, C = x.shape
        name = draw(st.sampled_from(["to_nchw", "linear", "ln", "act", "add", "linear", "to_nchw"]))
        if name == "to_nchw":
            return mk("to_nchw", [src], Val("img", (C, H, W)))
        if name == "linear":
            out = out_ch()
            return mk("linear", [src], Val("nhwc", (H, W, out)), out=out, bias=draw(st.booleans()))
        if name == "ln":
            return mk("ln", [src], x, over="last", affine=draw(st.booleans()))
        if name == "act":
            return mk("act", [src], x, fn=draw(st.sampled_from(ACTS)))
        if name == "add":
            cands = [i for i, v in enumerate(vals) if v == x]
            return mk("add", [src, draw(st.sampled_from(cands))], x)
    return None


@st.composite
def net_specs(draw, max_ops: int = 10, min_ops: int = 1):
    """A random :class:`NetSpec`: 1-2 inputs, ``min_ops``-``max_ops`` op draws, 1-3 outputs."""
    inputs = [Val("img", (draw(st.integers(2, 8)), draw(st.integers(4, 8)), draw(st.integers(4, 8))))]
    if draw(st.booleans()):
        if draw(st.booleans()):
            inputs.append(Val("img", (draw(st.integers(2, 8)), *inputs[0].shape[1:])))
        else:
            inputs.append(Val("vec", (draw(st.integers(2, 16)),)))
    spec = NetSpec(inputs)
    n_ops = draw(st.integers(min_ops, max_ops))
    for _ in range(n_ops):
        n = len(spec.all_vals())
        # mostly extend the last value (deep chains, so groups sit between two layers),
        # sometimes branch from any earlier value
        src = n - 1 if draw(st.integers(0, 3)) < 3 else n - 1 - draw(st.integers(0, n - 1))
        r = draw(ops_for(spec, src))
        if r is None:
            continue
        op, y = r
        spec.ops.append(op)
        spec.vals.append(y)
    n = len(spec.all_vals())
    if n == len(inputs):  # nothing generated: a single conv
        spec.ops.append(Op("conv", (0,), (("out", 4), ("k", 3), ("stride", 1), ("groups", 1),
                                          ("bias", True))))
        spec.vals.append(Val("img", (4, *inputs[0].shape[1:])))
        n += 1
    # the last value is an output; values nothing consumes (branch ends) may be outputs too
    used = {a for op in spec.ops for a in op.args}
    ends = [i for i in range(len(inputs), n - 1) if i not in used]
    extra = draw(st.lists(st.sampled_from(ends[::-1]), max_size=2, unique=True)) if ends else []
    spec.outputs = [n - 1, *extra]
    return spec


@st.composite
def cases(draw, max_ops: int = 10, criteria=tuple(CRITERIA), min_ops: int = 1):
    """(spec, ratio, criterion, global_ranking, seed)."""
    spec = draw(net_specs(max_ops, min_ops))
    ratio = draw(st.floats(0.1, 0.8, allow_nan=False))
    criterion = draw(st.sampled_from(criteria))
    global_ranking = draw(st.booleans())
    seed = draw(st.integers(0, 2 ** 16))
    return spec, round(ratio, 3), criterion, global_ranking, seed


# ------------------------------------------------------------------------------------------------
# the property


def _outputs(model, args):
    with torch.no_grad():
        return flatten_outputs(model(*args))


def check_property(model: nn.Module, inputs: tuple, ratio: float, criterion: str,
                   global_ranking: bool = False, seed: int = 0, tol: float = 1e-4,
                   value_from_shape: frozenset = frozenset()):
    """Prune ``model`` (latency off, verify on) and check the fuzzing property; returns the result.

    The pruned model runs with the original's output shapes, the oracle passes (exactly where the
    engine calls the plan exact, within :func:`approximate_bound` where it does not), no group is
    excluded by the oracle's mismatch diagnosis (that would be a coupling bug the diagnosis
    absorbed) except those whose root is in ``value_from_shape`` (models built on purpose to
    compute a value from a channel count; the generator makes none), every kept parameter is the
    original's at the kept indices, the original is unchanged, and something is removed whenever
    some prunable group allows it.
    """
    ex = as_example_inputs(tuple(inputs))
    state = _state(model)
    y0 = _outputs(model, inputs)
    dg = analyze_model(model, ex, probe=True)
    assert_unchanged(model, state)
    settings = PlanSettings(ratio=ratio, importance=criterion, global_ranking=global_ranking, seed=seed)
    calibration = (lambda: (tuple(inputs), None)) if criterion == "taylor" else None
    res = prune_model(model, ex, dg, settings, latency=False, verify=True, calibration=calibration)
    assert_unchanged(model, state)

    y1 = _outputs(res.model, inputs)
    assert [tuple(t.shape) for t in y0] == [tuple(t.shape) for t in y1], (
        f"output shapes changed: {[tuple(t.shape) for t in y0]} -> {[tuple(t.shape) for t in y1]}")
    rep = res.verify
    assert rep is not None and rep.passed and rep.shapes_equal, rep and rep.message
    absorbed = {root: why for root, why in res.excluded.items() if root not in value_from_shape}
    assert not absorbed, (f"the oracle's mismatch diagnosis excluded groups {sorted(absorbed)} "
                          f"(the engine coupled them wrongly): {absorbed}")
    if rep.expected_exact:
        assert rep.max_rel_diff < tol, (f"oracle mismatch: max relative difference "
                                        f"{rep.max_rel_diff:.3g} (abs {rep.max_abs_diff:.3g})")
    else:
        check_approximate(rep)

    kept_params_equal(model, res.model, res.kept)

    if not global_ranking:
        can = [g.id for g in dg.prunable_groups
               if _n_remove(g, int(math.floor(ratio * g.n_prunable + 1e-9)), 1, 0.95) > 0]
        if can:
            assert res.plan.n_removed > 0, (
                f"nothing removed although groups {can} allow it at ratio {ratio}")
    if res.plan.n_removed == 0:
        tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        for n, dims in res.kept.items():
            for d, k in dims.items():
                assert len(k) == tensors[n].shape[d], f"an empty plan shrank {n}"
    return dg, res


def run_case(spec: NetSpec, ratio: float, criterion: str, global_ranking: bool = False,
             seed: int = 0):
    model = build(spec, seed)
    return check_property(model, spec.make_inputs(seed), ratio, criterion, global_ranking, seed)
