"""Common torch modules traced without running their ``forward``.

The forward of ``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.ReLU``... makes exactly one functional
call (``F.conv2d(x, self.weight, ...)``); tracing runs the module's Python, torch's dispatch of
that call into the tracer's mode, and only then the tracer. For these classes the tracer is handed
the very call (same function object, same arguments, same keyword dict) the forward would have
made, which is all it records: the graph, the labels and the values policy cannot tell the two
apart. Cost: a third of a small CNN's trace.

Only the exact classes qualify (a subclass may have its own forward), in the configurations
written out below (anything else - training mode, a padding mode, an extra argument - runs the
real forward), and a class is used only after a check, once per process, that its real forward
makes the call written here (``verified``): a torch version whose forward differs falls back.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from core.ops.registry import normalise_name

_CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
_BN_DIMS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}


def _conv(mod, x):
    if mod.padding_mode != "zeros":
        return None
    return _CONV[type(mod)], (x, mod.weight, mod.bias, mod.stride, mod.padding, mod.dilation,
                              mod.groups), {}


def _batch_norm(mod, x):
    if mod.training or x.ndim not in _BN_DIMS[type(mod)]:
        return None  # training: statistics update; a wrong rank: forward raises its own error
    mean, var = mod.running_mean, mod.running_var
    m = mod.momentum
    return F.batch_norm, (x, mean, var), {
        "weight": mod.weight, "bias": mod.bias, "training": mean is None and var is None,
        "momentum": 0.0 if m is None else m, "eps": mod.eps}


def _inplace(fn):
    return lambda mod, x: (fn, (x,), {"inplace": mod.inplace})


def _linear(mod, x):
    return F.linear, (x, mod.weight, mod.bias), {}


def _adaptive_avg_pool2d(mod, x):
    return F.adaptive_avg_pool2d, (x, mod.output_size), {}


def _dropout(mod, x):
    return F.dropout, (x,), {"p": mod.p, "training": mod.training, "inplace": mod.inplace}


def _meta(make, *shape):
    """A module and an input on the meta device: building them draws no random numbers."""
    return lambda: (make(), torch.empty(shape, device="meta"))


# class -> (the call its forward makes on input x, or None: run forward; a small example)
SPECS = {
    nn.Conv1d: (_conv, _meta(lambda: nn.Conv1d(4, 6, 3, padding=1, groups=2, device="meta"), 1, 4, 5)),
    nn.Conv2d: (_conv, _meta(lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2, device="meta"), 1, 4, 5, 5)),
    nn.Conv3d: (_conv, _meta(lambda: nn.Conv3d(4, 6, 3, padding=1, groups=2, device="meta"), 1, 4, 5, 5, 5)),
    nn.BatchNorm1d: (_batch_norm, _meta(lambda: nn.BatchNorm1d(4, device="meta").eval(), 2, 4)),
    nn.BatchNorm2d: (_batch_norm, _meta(lambda: nn.BatchNorm2d(4, device="meta").eval(), 2, 4, 3, 3)),
    nn.BatchNorm3d: (_batch_norm, _meta(lambda: nn.BatchNorm3d(4, device="meta").eval(), 2, 4, 3, 3, 3)),
    nn.ReLU: (_inplace(F.relu), _meta(nn.ReLU, 2, 3)),
    nn.Hardswish: (_inplace(F.hardswish), _meta(nn.Hardswish, 2, 3)),
    nn.Hardsigmoid: (_inplace(F.hardsigmoid), _meta(nn.Hardsigmoid, 2, 3)),
    nn.SiLU: (_inplace(F.silu), _meta(nn.SiLU, 2, 3)),
    nn.Linear: (_linear, _meta(lambda: nn.Linear(3, 2, device="meta"), 2, 3)),
    nn.AdaptiveAvgPool2d: (_adaptive_avg_pool2d, _meta(lambda: nn.AdaptiveAvgPool2d((1, 2)), 1, 2, 4, 4)),
    nn.Dropout: (_dropout, _meta(lambda: nn.Dropout(0.2).eval(), 2, 3)),
}

_VERIFIED: dict[type, tuple] = {}  # class -> (its forward when checked, whether it passed)


class CallRecorder(TorchFunctionMode):
    """Records every torch function call made under it (``calls``: func, args, kwargs) and runs
    it: how a forward's calls are compared with the one written in ``SPECS``."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args, kwargs or {}))
        return func(*args, **(kwargs or {}))


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def _check(cls) -> bool:
    """Whether ``cls``'s real forward makes the call ``SPECS`` writes (shape queries aside)."""
    spec, example = SPECS[cls]
    try:
        mod, x = example()
        want = spec(mod, x)
        rec = CallRecorder()
        with torch.no_grad(), rec:
            mod(x)
    except Exception:  # noqa: BLE001 - whatever went wrong, this class is not taken directly
        return False
    calls = [c for c in rec.calls if getattr(c[0], "__name__", "") not in ("dim", "size")]
    return want is not None and len(calls) == 1 and calls[0][0] is want[0] and \
        _same(calls[0][1], want[1]) and _same(calls[0][2], want[2])


def _forwards(cls):
    return cls.forward, getattr(cls, "_conv_forward", None)


def verified(cls) -> bool:
    """Whether ``cls`` may be traced directly (checked once per process, again if its forward
    is replaced)."""
    v = _VERIFIED.get(cls)
    if v is None or v[0] != _forwards(cls):
        v = _VERIFIED[cls] = (_forwards(cls), cls in SPECS and _check(cls))
    return v[1]


def direct_spec(mod):
    """``spec(mod, x) -> (func, args, kwargs) | None`` for ``mod`` (its class exactly, forward
    untouched, verified), or None."""
    cls = type(mod)
    entry = SPECS.get(cls)
    if entry is None or "forward" in mod.__dict__ or not verified(cls):
        return None
    return entry[0]


_pop_mode = torch._C._pop_torch_function_stack  # what torch's dispatch does around a mode's call
_push_mode = torch._C._push_on_torch_function_stack


def direct_runner(tracer, spec):
    """``run(mod, args, kwargs)`` for the module wrappers (``core.trace.scopes``): the call
    ``spec`` writes, handed to ``tracer.handle_call`` as torch's dispatch would hand it to the mode
    (with the mode off), or ``NotImplemented`` (run forward)."""
    tensor, pop, push, names = torch.Tensor, _pop_mode, _push_mode, {}

    def run(mod, args, kwargs):
        if tracer._busy or kwargs or len(args) != 1 or type(args[0]) is not tensor:
            return NotImplemented  # (inside a leaf module: its calls are not recorded one by one)
        mode = pop()
        try:
            if mode is not tracer:  # a mode of the model's own above the tracer: torch decides
                return NotImplemented
            call = spec(mod, args[0])  # (reads x.ndim: with the mode off, as forward's would not)
            if call is None:
                return NotImplemented
            func = call[0]
            name = names.get(func)
            if name is None:
                name = names[func] = normalise_name(func)
            return tracer.handle_call(name, func, call[1], call[2])
        finally:
            push(mode)
    return run
