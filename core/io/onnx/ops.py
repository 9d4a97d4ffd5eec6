"""The ONNX operators the importer (:mod:`core.io.onnx.importer`) runs without weights, each as plain
torch calls the tracer understands.

Shape arithmetic (``Shape -> Gather -> Concat -> Reshape``, as exporters write for a dynamic batch)
runs on Python ints (:class:`Ints`, a 1-D int64 value; a 0-D one is a plain ``int``), so a reshape
reaches torch as ``x.reshape(b, -1)`` with ``b`` read from ``x.shape`` - what a PyTorch author
writes. An op missing from :data:`OPS` is refused when the file is read (never guessed).

Each entry is ``fn(inputs, attrs) -> list of outputs``; ``inputs`` holds tensors, ints, Ints or
None (an omitted optional input); ``attrs`` the node's attributes as Python values.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from core.errors import LoadError


class UnsupportedOnnxOp(LoadError):
    """An ONNX operator (or a form of one) the importer does not know: one line names it."""


class Ints(tuple):
    """A 1-D int64 ONNX value computed in Python (a shape or a list of indices)."""


def is_int(v) -> bool:
    return isinstance(v, (int, Ints, torch.SymInt)) and not isinstance(v, bool)


def i_of(v):
    """An int; a symbolic size (torch.export with a dynamic batch) stays symbolic."""
    return v if isinstance(v, torch.SymInt) else int(v)


def ints_of(v) -> list:
    """A shape-like input as a list of ints."""
    if isinstance(v, torch.Tensor):
        return [int(i) for i in v.reshape(-1).tolist()]
    return [i_of(v)] if isinstance(v, (int, torch.SymInt)) else [i_of(i) for i in v]


def _trunc_div(a, b):
    if isinstance(a, torch.SymInt) or isinstance(b, torch.SymInt):
        return a // b  # sizes divided by a positive constant: floor is truncation
    return int(a / b)


def as_tensor(v, like=None):
    if isinstance(v, torch.Tensor):
        return v
    dev = like.device if isinstance(like, torch.Tensor) else None
    return torch.tensor(list(v) if isinstance(v, Ints) else v, dtype=torch.int64, device=dev)


def axis_of(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def scalar_of(v, default=None):
    """An optional scalar input (Clip's min/max) as a Python number."""
    if v is None:
        return default
    return v.reshape(-1)[0].item() if isinstance(v, torch.Tensor) else v


OPS: dict = {}


def op(*names):
    def deco(fn):
        for n in names:
            OPS[n] = fn
        return fn
    return deco


# ----------------------------------------------------------------------------- element-wise

_UNARY = {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp,
          "Log": torch.log, "Sqrt": torch.sqrt, "Erf": torch.erf, "Abs": torch.abs,
          "Neg": torch.neg, "Reciprocal": torch.reciprocal, "Floor": torch.floor,
          "Ceil": torch.ceil, "Sin": torch.sin, "Cos": torch.cos, "Not": torch.logical_not,
          "HardSwish": F.hardswish, "Softplus": F.softplus, "Sign": torch.sign}


def _unary(name):
    fn = _UNARY[name]
    return lambda ins, at: [fn(ins[0])]


for _n in _UNARY:
    OPS[_n] = _unary(_n)


@op("Identity", "Dropout")
def _identity(ins, at):
    return [ins[0]]  # inference: Dropout passes its input through


_INT_BIN = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
            "Div": _trunc_div, "Mod": lambda a, b: a % b,
            "Equal": lambda a, b: int(a == b)}
_BIN = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div, "Pow": torch.pow,
        "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt, "And": torch.logical_and,
        "Or": torch.logical_or, "LessOrEqual": torch.le, "GreaterOrEqual": torch.ge}


def _int_binary(name, a, b):
    f = _INT_BIN[name]
    if not isinstance(a, Ints) and not isinstance(b, Ints):
        return f(a, b)
    la, lb = ints_of(a), ints_of(b)
    n = max(len(la), len(lb))
    la, lb = la * n if len(la) == 1 else la, lb * n if len(lb) == 1 else lb
    return Ints(f(x, y) for x, y in zip(la, lb))


def _binary(name):
    def run(ins, at):
        a, b = ins
        if is_int(a) and is_int(b) and name in _INT_BIN:
            return [_int_binary(name, a, b)]
        if name == "Div" and not (isinstance(a, torch.Tensor) and a.is_floating_point()):
            a, b = as_tensor(a, b), as_tensor(b, a)
            return [torch.div(a, b, rounding_mode="trunc")]  # integer Div truncates
        return [_BIN[name](as_tensor(a, b), as_tensor(b, a))]
    return run


for _n in _BIN:
    OPS[_n] = _binary(_n)


@op("Mod")
def _mod(ins, at):
    a, b = ins
    if is_int(a) and is_int(b) and not at.get("fmod", 0):
        return [_int_binary("Mod", a, b)]
    return [torch.fmod(a, b) if at.get("fmod", 0) else torch.remainder(a, b)]


def _variadic_of(name):
    fn = {"Max": torch.maximum, "Min": torch.minimum, "Sum": torch.add, "Mean": torch.add}[name]

    def run(ins, at):
        out = ins[0]
        for t in ins[1:]:
            out = fn(out, t)
        return [out / len(ins) if name == "Mean" else out]
    return run


for _n in ("Max", "Min", "Sum", "Mean"):
    OPS[_n] = _variadic_of(_n)


@op("Where")
def _where(ins, at):
    return [torch.where(ins[0], ins[1], ins[2])]


@op("LeakyRelu")
def _leaky(ins, at):
    return [F.leaky_relu(ins[0], at.get("alpha", 0.01))]


@op("Elu")
def _elu(ins, at):
    return [F.elu(ins[0], at.get("alpha", 1.0))]


@op("HardSigmoid")
def _hardsigmoid(ins, at):
    a, b = at.get("alpha", 0.2), at.get("beta", 0.5)
    return [torch.clamp(ins[0] * a + b, 0.0, 1.0)]


@op("Gelu")
def _gelu(ins, at):
    return [F.gelu(ins[0], approximate=at.get("approximate", "none"))]


@op("Clip")
def _clip(ins, at):
    x = ins[0]
    lo = scalar_of(ins[1] if len(ins) > 1 else None, at.get("min"))
    hi = scalar_of(ins[2] if len(ins) > 2 else None, at.get("max"))
    if lo == 0 and hi == 6:
        return [F.relu6(x)]
    return [torch.clamp(x, lo, hi)]


def _softmax_of(log: bool):
    fn = F.log_softmax if log else F.softmax

    def run(ins, at):
        x, opset = ins[0], at.get("_opset", 13)
        axis = axis_of(at.get("axis", -1 if opset >= 13 else 1), x.dim())
        if opset < 13 and axis != x.dim() - 1:  # before opset 13: over the flattened tail
            return [fn(x.flatten(axis), dim=axis).reshape(x.shape)]
        return [fn(x, dim=axis)]
    return run


OPS["Softmax"], OPS["LogSoftmax"] = _softmax_of(False), _softmax_of(True)


@op("MatMul")
def _matmul(ins, at):
    return [torch.matmul(ins[0], ins[1])]


@op("Gemm")
def _gemm(ins, at):
    a, b = ins[0], ins[1]
    a = a.t() if at.get("transA", 0) else a
    b = b.t() if at.get("transB", 0) else b
    y = torch.matmul(a, b)
    if at.get("alpha", 1.0) != 1.0:
        y = y * at["alpha"]
    if len(ins) > 2 and ins[2] is not None:
        c = ins[2] * at["beta"] if at.get("beta", 1.0) != 1.0 else ins[2]
        y = y + c
    return [y]


# ----------------------------------------------------------------------------- pooling, reductions

def _pool_args(at, n):
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise NotImplementedError(f"auto_pad={at['auto_pad']}")
    pads = at.get("pads", [0] * 2 * n)
    if at.get("_op") == "AveragePool" and any(d != 1 for d in at.get("dilations", [])):
        raise NotImplementedError(f"dilations {list(at['dilations'])}")
    if list(pads[:n]) != list(pads[n:]):
        raise NotImplementedError(f"asymmetric pads {list(pads)}")
    return (list(at["kernel_shape"]), list(at.get("strides", [1] * n)), list(pads[:n]),
            bool(at.get("ceil_mode", 0)))


@op("MaxPool")
def _maxpool(ins, at):
    x = ins[0]
    n = x.dim() - 2
    k, s, p, ceil = _pool_args(at, n)
    fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
    return [fn(x, k, s, p, list(at.get("dilations", [1] * n)), ceil_mode=ceil)]


@op("AveragePool")
def _avgpool(ins, at):
    x = ins[0]
    n = x.dim() - 2
    k, s, p, ceil = _pool_args(at, n)
    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
    return [fn(x, k, s, p, ceil_mode=ceil, count_include_pad=bool(at.get("count_include_pad", 0)))]


@op("GlobalAveragePool")
def _gap(ins, at):
    x = ins[0]
    fn = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[x.dim() - 3]
    return [fn(x, 1)]


@op("GlobalMaxPool")
def _gmp(ins, at):
    x = ins[0]
    return [torch.amax(x, dim=list(range(2, x.dim())), keepdim=True)]


_REDUCE = {"ReduceMean": torch.mean, "ReduceSum": torch.sum, "ReduceMax": torch.amax,
           "ReduceMin": torch.amin}


def _reduce_of(name):
    fn = _REDUCE[name]

    def run(ins, at):
        x = ins[0]
        axes = at.get("axes")
        if len(ins) > 1 and ins[1] is not None:
            axes = ints_of(ins[1])
        keep = bool(at.get("keepdims", 1))
        if not axes:
            if at.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.dim()))
        return [fn(x, dim=[axis_of(a, x.dim()) for a in axes], keepdim=keep)]
    return run


for _n in _REDUCE:
    OPS[_n] = _reduce_of(_n)
