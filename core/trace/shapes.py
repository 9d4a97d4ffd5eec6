"""Output shapes of the costly ops (convolutions, products, attention, norms), read off their
arguments.

A trace needs shapes, not values: the tracer (``core.trace.tracer``) replaces these ops' results by
uninitialised tensors of the right shape and marks them *without values*; reading such a value (``.item()``,
``bool(t)``, an index tensor computed from it) sends the trace back to a run with real values.
Each function returns the output shape, or None when it does not recognise the call (odd dtypes,
mismatched sizes, broadcasting it does not model): the op then simply runs for real, and a real
error keeps its real message. torch's meta kernels would do the same job, but many of them are
Python decompositions that cost more than the arithmetic on small inputs.
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from core.ops.registry import normalise_name
from core.trace.mha_shape import mha_shapes, same_kind as _same_kind


def _arg(args, kwargs, i, name, default=None):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _tuple(v, n):
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(x) for x in v)
    return v * n if len(v) == 1 else v


def _conv_shape_plain(x, w, b, stride, padding, dilation, groups):
    """``conv_shape`` of ``F.conv{1,2,3}d`` as ``nn.Conv*d`` calls it: all arguments by position,
    float tensors of one dtype and device, sizes as int tuples, numeric padding. None: not this
    case (``conv_shape`` decides)."""
    t = torch.Tensor
    if not isinstance(x, t) or not isinstance(w, t) or not (b is None or isinstance(b, t)) or \
            type(stride) is not tuple or type(padding) is not tuple or \
            type(dilation) is not tuple or type(groups) is not int:
        return None
    n = w.ndim - 2
    if n < 1 or x.ndim != n + 2 or len(stride) != n or len(padding) != n or len(dilation) != n:
        return None
    dt, dev = x.dtype, x.device
    if not dt.is_floating_point or w.dtype != dt or w.device != dev or x.layout != torch.strided or \
            w.layout != torch.strided or (b is not None and (b.dtype != dt or b.device != dev or
                                                            b.layout != torch.strided)):
        return None
    xs, ws = x.shape, w.shape
    if groups < 1 or xs[1] != ws[1] * groups or ws[0] % groups or \
            (b is not None and (b.ndim != 1 or b.shape[0] != ws[0])):
        return None
    out = [xs[0], ws[0]]
    for size, k, st, p, d in zip(xs[2:], ws[2:], stride, padding, dilation):
        if type(st) is not int or type(p) is not int or type(d) is not int or st <= 0:
            return None
        o = (size + 2 * p - d * (k - 1) - 1) // st + 1
        if o <= 0:
            return None
        out.append(o)
    return tuple(out)


def conv_shape(args, kwargs):
    if len(args) == 7 and not kwargs:
        out = _conv_shape_plain(*args)
        if out is not None:
            return out
    x, w = args[0], _arg(args, kwargs, 1, "weight")
    b = _arg(args, kwargs, 2, "bias")
    if not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor):
        return None
    n = w.ndim - 2
    groups = int(_arg(args, kwargs, 6, "groups", 1))
    if n < 1 or x.ndim not in (n + 1, n + 2) or not _same_kind(x, w, *([b] if b is not None else [])):
        return None
    if groups < 1 or x.shape[-n - 1] != w.shape[1] * groups or w.shape[0] % groups:
        return None
    if b is not None and (b.ndim != 1 or b.shape[0] != w.shape[0]):
        return None
    stride = _tuple(_arg(args, kwargs, 3, "stride", 1), n)
    dilation = _tuple(_arg(args, kwargs, 5, "dilation", 1), n)
    padding = _arg(args, kwargs, 4, "padding", 0)
    if len(stride) != n or len(dilation) != n:
        return None
    if isinstance(padding, str):
        if padding == "same" and all(s == 1 for s in stride):
            return tuple(x.shape[:-n - 1]) + (w.shape[0],) + tuple(x.shape[-n:])
        if padding != "valid":
            return None
        padding = 0
    padding = _tuple(padding, n)
    if len(padding) != n:
        return None
    spatial = []
    for size, k, s, p, d in zip(x.shape[-n:], w.shape[2:], stride, padding, dilation):
        o = (size + 2 * p - d * (k - 1) - 1) // s + 1
        if o <= 0 or s <= 0:
            return None
        spatial.append(o)
    return tuple(x.shape[:-n - 1]) + (w.shape[0],) + tuple(spatial)


def linear_shape(args, kwargs):
    x, w = args[0], _arg(args, kwargs, 1, "weight")
    b = _arg(args, kwargs, 2, "bias")
    if not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor) or w.ndim != 2 or x.ndim < 1:
        return None
    if not _same_kind(x, w, *([b] if b is not None else [])) or x.shape[-1] != w.shape[1]:
        return None
    if b is not None and tuple(b.shape) not in ((w.shape[0],), ()):
        return None
    return tuple(x.shape[:-1]) + (w.shape[0],)


def matmul_shape(args, kwargs):
    if len(args) < 2:
        return None
    a, b = args[0], args[1]
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.ndim < 2 or b.ndim < 2:
        return None
    if not _same_kind(a, b) or a.shape[-1] != b.shape[-2]:
        return None
    try:
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError:
        return None
    return tuple(batch) + (a.shape[-2], b.shape[-1])


def bmm_shape(args, kwargs):
    if len(args) < 2 or not all(isinstance(t, torch.Tensor) and t.ndim == 3 for t in args[:2]):
        return None
    if args[0].shape[0] != args[1].shape[0]:
        return None
    return matmul_shape(args, kwargs)


def mm_shape(args, kwargs):
    if len(args) < 2 or not all(isinstance(t, torch.Tensor) and t.ndim == 2 for t in args[:2]):
        return None
    return matmul_shape(args, kwargs)


def sdpa_shape(args, kwargs):
    if len(args) < 3:
        return None
    q, k, v = args[:3]
    mask = _arg(args, kwargs, 3, "attn_mask")
    if kwargs.get("enable_gqa") or not all(isinstance(t, torch.Tensor) and t.ndim >= 2
                                           for t in (q, k, v)):
        return None
    if not _same_kind(q, k, v) or not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        return None
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        return None
    if mask is not None:
        full = tuple(q.shape[:-1]) + (k.shape[-2],)
        try:
            if not isinstance(mask, torch.Tensor) or tuple(torch.broadcast_shapes(mask.shape, full)) != full:
                return None
        except RuntimeError:
            return None
    return tuple(q.shape[:-1]) + (v.shape[-1],)


def _batch_norm_plain(x, per):
    """x's shape if ``per`` (mean, var, weight, bias) are None or 1-D of x's channel count, of
    x's float dtype and device, strided; None: the general check decides."""
    dt, dev, ch = x.dtype, x.device, x.shape[1] if x.ndim >= 2 else -1
    if ch < 0 or not dt.is_floating_point or x.layout != torch.strided:
        return None
    for t in per:
        if t is not None and (not isinstance(t, torch.Tensor) or t.dtype != dt or t.device != dev or
                              t.layout != torch.strided or t.ndim != 1 or t.shape[0] != ch):
            return None
    return tuple(x.shape)


def batch_norm_shape(args, kwargs):
    """Inference-mode batch norm (training mode updates running statistics: it must run)."""
    x = args[0]
    if isinstance(x, torch.Tensor):
        if len(args) == 3 and kwargs.get("training") is False:
            # F.batch_norm as nn.BatchNorm*d calls it: torch hands a mode (x, mean, var) and
            # weight, bias, training, momentum, eps by name
            out = _batch_norm_plain(x, (args[1], args[2], kwargs.get("weight"), kwargs.get("bias")))
            if out is not None:
                return out
        elif len(args) >= 6 and not kwargs and args[5] is False:  # all by position
            out = _batch_norm_plain(x, args[1:5])
            if out is not None:
                return out
    if _arg(args, kwargs, 5, "training", False) or not isinstance(x, torch.Tensor) or x.ndim < 2:
        return None
    per = [_arg(args, kwargs, i, n) for i, n in
           enumerate(("running_mean", "running_var", "weight", "bias"), 1)]
    per = [t for t in per if t is not None]
    if not _same_kind(x, *per) or any(tuple(t.shape) != (x.shape[1],) for t in per):
        return None
    return tuple(x.shape)


def layer_norm_shape(args, kwargs):
    x, shape = args[0], _arg(args, kwargs, 1, "normalized_shape")
    w, b = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    if not isinstance(x, torch.Tensor) or shape is None:
        return None
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    per = [t for t in (w, b) if t is not None]
    if not shape or not _same_kind(x, *per) or tuple(x.shape[x.ndim - len(shape):]) != shape or \
            any(tuple(t.shape) != shape for t in per):
        return None
    return tuple(x.shape)


# Element-wise float ops on the meta device: torch's meta kernels for them are Python
# decompositions (about a millisecond each), which dominate the analysis of a meta LLM.
META_ELEMENTWISE = {
    "add", "sub", "mul", "div", "true_divide", "neg", "pow", "rsqrt", "sqrt", "silu", "gelu",
    "relu", "sigmoid", "tanh", "exp", "cos", "sin", "reciprocal",
}


def meta_elementwise(name, args, kwargs):
    """Result of an out-of-place element-wise op whose tensors are all meta, float and of one
    dtype (Python numbers as other operands): same dtype, broadcast shape; None otherwise."""
    if set(kwargs) - {"alpha", "approximate"}:
        return None
    if args and isinstance(args[0], torch.Tensor) and not args[0].is_meta:
        return None  # (the common case off the meta device: no need to look further)
    tensors = []
    for a in args:
        if isinstance(a, torch.Tensor):
            tensors.append(a)
        elif isinstance(a, bool) or not isinstance(a, (int, float)) and not (
                name == "gelu" and isinstance(a, str)):
            return None
    if not tensors or not _same_kind(*tensors) or tensors[0].device.type != "meta":
        return None
    if len(tensors) == 1 or all(t.shape == tensors[0].shape for t in tensors):
        return torch.empty_like(tensors[0])  # the input's layout, as torch keeps it
    try:
        shape = torch.broadcast_shapes(*(t.shape for t in tensors))
    except RuntimeError:
        return None
    return torch.empty(shape, dtype=tensors[0].dtype, device="meta")


# Out-of-place element-wise float ops applied to a tensor without values (core.trace.values):
# the result has none either, so it need not be computed, only laid out as torch would.
FAKE_ELEMENTWISE = META_ELEMENTWISE | {"relu6", "hardswish", "hardsigmoid", "hardtanh", "leaky_relu",
                                       "elu", "mish"}
_NUMBER_KW = {"alpha", "negative_slope", "min_val", "max_val"}


def fake_elementwise(name, args, kwargs):
    """An uninitialised result for ``name(*args, **kwargs)``, an element-wise op in
    ``FAKE_ELEMENTWISE`` on float tensors of one dtype and device (Python numbers as other
    operands, ``inplace=False``), with the layout torch gives it: the inputs' when they all share
    shape and strides, row-major when they are all row-major; None otherwise (run it)."""
    if name not in FAKE_ELEMENTWISE or not args or not isinstance(args[0], torch.Tensor):
        return None  # torch.sub(2.0, x) raises: leave such calls to torch
    for k, v in kwargs.items():
        ok = (k in _NUMBER_KW and isinstance(v, (int, float)) and not isinstance(v, bool)) or \
            (k == "inplace" and v is False) or (k == "approximate" and isinstance(v, str))
        if not ok:
            return None
    tensors = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            tensors.append(a)
        elif a is False and i > 0:
            continue  # inplace=False given by position
        elif isinstance(a, bool) or not isinstance(a, (int, float)) and not (
                name == "gelu" and isinstance(a, str)):
            return None
    if not tensors or not _same_kind(*tensors):
        return None
    t0 = tensors[0]
    if all(t.shape == t0.shape and t.stride() == t0.stride() for t in tensors) and (
            t0.is_contiguous() or t0.is_contiguous(memory_format=torch.channels_last)):
        return torch.empty_like(t0)
    if not all(t.is_contiguous() for t in tensors):
        return None
    shape = _broadcast(tensors)
    return None if shape is None else torch.empty(shape, dtype=t0.dtype, device=t0.device)


def _broadcast(tensors):
    """The broadcast shape of ``tensors``, or None if they do not broadcast (torch's own
    ``broadcast_shapes`` is a Python reference implementation, several times slower)."""
    n = max(t.ndim for t in tensors)
    out = [1] * n
    for t in tensors:
        for i, s in enumerate(t.shape, n - t.ndim):
            if s != 1:
                if out[i] not in (1, s):
                    return None
                out[i] = s
    return tuple(out)


def fake_adaptive_avg_pool(name, args, kwargs):
    """``adaptive_avg_pool{1,2,3}d`` of a row-major float tensor: its output, uninitialised."""
    n = {"adaptive_avg_pool1d": 1, "adaptive_avg_pool2d": 2, "adaptive_avg_pool3d": 3}.get(name)
    if n is None or len(args) + len(kwargs) != 2:
        return None
    x = args[0]
    size = args[1] if len(args) > 1 else kwargs.get("output_size")
    if not isinstance(x, torch.Tensor) or not _same_kind(x) or not x.is_contiguous() or \
            x.ndim not in (n + 1, n + 2):
        return None
    size = (size,) * n if isinstance(size, int) else tuple(size)
    if len(size) != n or any(s is not None and (isinstance(s, bool) or not isinstance(s, int)
                                                or s < 1) for s in size):
        return None
    spatial = tuple(x.shape[-n + i] if s is None else s for i, s in enumerate(size))
    return torch.empty(tuple(x.shape[:-n]) + spatial, dtype=x.dtype, device=x.device)


def meta_to_dtype(args, kwargs):
    """``x.to(dtype)`` of a meta tensor (no device, copy or format change)."""
    x = args[0]
    dtype = args[1] if len(args) == 2 else kwargs.get("dtype") if len(args) == 1 else None
    if not isinstance(x, torch.Tensor) or x.device.type != "meta" or not isinstance(
            dtype, torch.dtype) or set(kwargs) - {"dtype"} or not x.is_floating_point() or \
            not dtype.is_floating_point:
        return None
    return x if x.dtype == dtype else torch.empty_like(x, dtype=dtype)


SHAPE_FUNCTIONS = {
    "batch_norm": batch_norm_shape, "layer_norm": layer_norm_shape,
    "conv1d": conv_shape, "conv2d": conv_shape, "conv3d": conv_shape,
    "linear": linear_shape, "matmul": matmul_shape, "bmm": bmm_shape, "mm": mm_shape,
    "scaled_dot_product_attention": sdpa_shape,
}


def shape_only(name, args, kwargs):
    """An uninitialised tensor shaped like the result of ``name(*args, **kwargs)``, or None (run it for real)."""
    if name == "multi_head_attention_forward":
        shapes = mha_shapes(args, kwargs)
        if shapes is None:
            return None
        like = args[0]
        return tuple(None if sh is None else torch.empty(sh, dtype=like.dtype, device=like.device)
                     for sh in shapes)
    if name in META_ELEMENTWISE:
        return meta_elementwise(name, args, kwargs)
    if name == "to":
        return meta_to_dtype(args, kwargs)
    fn = SHAPE_FUNCTIONS.get(name)
    if fn is None or kwargs.get("out") is not None:
        return None
    shape = fn(args, kwargs)
    if shape is None:
        return None
    like = args[0]
    fmt = torch.contiguous_format
    if name.startswith("conv") and like.ndim == 4 and not like.is_contiguous() and \
            like.is_contiguous(memory_format=torch.channels_last):
        fmt = torch.channels_last
    # uninitialised: nobody reads these numbers (reading one sends the trace to a real run), and
    # zeroing every feature map cost a sixth of a small model's analysis (page faults included)
    if type(like) is torch.Tensor and like.shape == shape:  # (norms: half the cost of empty())
        return torch.empty_like(like, memory_format=fmt)
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


class MetaShapes(TorchFunctionMode):
    """Run a forward on meta tensors with the shape functions above in place of torch's meta
    kernels (Python decompositions for norms and element-wise ops). For weightless forwards that
    only want shapes or errors, e.g. the shape probe: ``with MetaShapes(): model(*meta_inputs)``.
    Calls it does not recognise run as usual, so a size mismatch still raises torch's error."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            out = shape_only(normalise_name(func), args, kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)
