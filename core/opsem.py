"""How channels flow through each op: the single registry of op semantics.

Every intercepted torch function is looked up here by its normalised name (``Tensor.__iadd__`` ->
``add_`` -> ``add``). A handler receives the trace context and the call, couples or blocks atoms and
sets the labelings of the outputs. Names not in the registry are *unknown*: their labelled inputs
are blocked and reported by name, never assumed to be element-wise.

Custom functions are described with :func:`register_op`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .atoms import NO_ATOM, Labeling
from .opsem_fast import FAST_PATHS
from .replay import replay

OP_HANDLERS: dict[str, Callable] = {}
# Ops that never carry channels into their outputs (shape queries, RNG, ...): ignored silently.
IGNORED = {
    "size", "dim", "shape", "dtype", "device", "numel", "len", "is_floating_point", "is_complex",
    "item", "tolist", "bool", "format", "repr", "is_contiguous", "requires_grad", "stride",
    "data_ptr", "element_size", "nelement", "ndim", "ndimension", "grad_fn", "is_cuda", "layout",
    "get_device", "storage_offset", "is_leaf", "names", "float_power", "index", "int", "hash",
    "requires_grad_", "retain_grad", "register_hook", "is_meta", "is_sparse", "is_quantized",
    "untyped_storage", "storage", "dim_order", "is_nested", "output_nr", "_version", "_base",
    "is_inference", "has_names", "is_mkldnn", "is_set_to", "is_same_size", "is_nonzero",
    "record_stream", "grad", "iter", "contains", "eq_", "array", "reduce_ex", "deepcopy",
    "setstate", "getstate", "dlpack", "dlpack_device", "cpu_", "new_empty",
}


def register_op(*names: str):
    """Decorator: ``handler(ctx, call)`` describes how channels flow through the named ops."""

    def deco(fn):
        for n in names:
            OP_HANDLERS[n] = fn
        return fn

    return deco


# Modules traced as one op: their forward reads channel counts from attributes in ways a trace
# cannot follow (``C // num_heads``), so a handler states their channel semantics directly and a
# module updater rewrites them after pruning. (class, op name, accepts(module) -> bool)
LEAF_MODULES: list[tuple[type, str, object]] = []


def register_leaf_module(module_type: type, op_name: str, accepts=None):
    """Trace instances of ``module_type`` as a single op ``op_name`` (register its handler with
    ``register_op(op_name)``); ``accepts(module)`` may decline an instance, which is then traced
    through like any other module."""
    LEAF_MODULES.insert(0, (module_type, op_name, accepts))


def leaf_op(module) -> str | None:
    """The op name ``module`` is traced as, or None. Only the exact registered class matches: a
    user's subclass may have its own ``forward``."""
    for typ, name, accepts in LEAF_MODULES:
        if type(module) is typ:
            return name if accepts is None or accepts(module) else None
    return None


def load_optional_families() -> None:
    """Register the handlers of optional libraries the process has imported (timm)."""
    import sys
    from . import opsem_more  # noqa: F401  (ops found by the timm sweep)
    if "timm" in sys.modules:
        from . import attention_timm  # noqa: F401


def normalise_name(func) -> str:
    n = getattr(func, "__name__", None) or str(func)
    if n == "__get__":
        n = getattr(getattr(func, "__self__", None), "__name__", n)
    if n.startswith("__") and n.endswith("__"):
        core = n[2:-2]
        if core.startswith("i") and core[1:] in _INPLACE_DUNDERS:
            return core[1:] + "_"
        if core.startswith("r") and core[1:] in _REFLECTED:
            return "r" + core[1:] if core[1:] in ("sub", "truediv", "floordiv", "pow", "matmul") \
                else core[1:]
        return core
    return n


_INPLACE_DUNDERS = {"add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
                    "xor", "lshift", "rshift", "div"}
_REFLECTED = {"add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
              "div"}


def lookup(name: str):
    h = OP_HANDLERS.get(name)
    if h is None and name.endswith("_") and not name.startswith("_"):
        h = OP_HANDLERS.get(name[:-1])  # in-place variant
    return h


# --------------------------------------------------------------------------------------------
# element-wise ops: broadcasting decides which positions are coupled


ELEMENTWISE = [
    "add", "sub", "rsub", "mul", "div", "true_divide", "truediv", "rtruediv", "floor_divide",
    "floordiv", "rfloordiv", "mod", "remainder", "fmod", "neg", "negative", "pos", "positive", "abs",
    "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid", "tanh",
    "hardtanh", "hardswish", "hardsigmoid", "softplus", "softsign", "logsigmoid", "tanhshrink",
    "threshold", "hardshrink", "softshrink", "rrelu", "glu_", "exp", "exp2", "expm1", "log", "log2",
    "log10", "log1p", "sqrt", "rsqrt", "pow", "rpow", "square", "clamp", "clip", "clamp_min",
    "clamp_max", "maximum", "minimum", "fmax", "fmin", "where", "dropout", "dropout1d", "dropout2d",
    "dropout3d", "alpha_dropout", "feature_alpha_dropout", "erf", "erfc", "erfinv", "sin", "cos",
    "tan", "asin", "acos", "atan", "sinh", "cosh", "atan2", "reciprocal", "sign", "sgn", "floor",
    "ceil", "round", "trunc", "frac", "float", "half", "double", "bfloat16", "to", "type", "type_as",
    "clone", "detach", "contiguous", "masked_fill", "lerp", "addcmul", "addcdiv", "eq", "ne", "lt",
    "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "logical_xor", "and", "or", "xor",
    "invert", "bitwise_not", "isnan", "isinf", "isfinite", "nan_to_num", "copysign", "sigmoid_",
    "zeros_like", "ones_like", "full_like", "empty_like", "rand_like", "randn_like", "cpu", "cuda",
    "requires_grad_", "xlogy", "hypot", "logit", "erfcx", "sinc", "square_", "heaviside",
    "nextafter", "copy", "fill", "zero", "bernoulli", "native_dropout", "mvlgamma", "digamma",
    "lgamma", "deg2rad", "rad2deg", "angle", "conj", "real", "imag", "relu_", "polar",
]


_FIRST_ONLY = {"fill", "zero", "to", "type_as", "type", "cpu", "cuda", "float", "half", "double",
               "bfloat16", "contiguous", "clone", "detach", "zeros_like", "ones_like", "full_like",
               "empty_like", "rand_like", "randn_like"}


@register_op(*ELEMENTWISE)
def elementwise(ctx, call):
    if not call.out_tensors:
        return
    inputs = [t for t in call.in_tensors if t.ndim > 0 or t.numel() > 1]
    if call.name in _FIRST_ONLY:
        inputs = inputs[:1]  # x.fill_(v), x.to(other), x.type_as(other): only x carries channels
    for out in call.out_tensors:
        if len(inputs) == 1 and tuple(inputs[0].shape) == tuple(out.shape):
            ctx.set(out, ctx.labels(inputs[0]))  # joint labelings pass through unchanged
            continue
        labs = []
        for e in range(out.ndim):
            vecs = []
            for t in inputs:
                d = e - (out.ndim - t.ndim)
                if d < 0 or (t.shape[d] == 1 and out.shape[e] != 1):
                    continue  # broadcast: not coupled with the channels it is spread over
                vecs.append(ctx.dim_atoms(t, d, call))
            labs.extend(_combine(ctx, vecs, e, call))
        ctx.set(out, labs)


def _combine(ctx, vecs, e, call):
    if not vecs:
        return []
    acc = vecs[0]
    fixed = acc < 0
    for v in vecs[1:]:
        ctx.table.join(acc, v, ctx.reason(call, "element-wise with a tensor that cannot be pruned"))
        fixed |= v < 0
        acc = np.where(acc >= 0, acc, v)
    # a position aligned with an operand that cannot shrink is fixed: its atoms are blocked by the
    # join above, and carrying them further would only repeat that
    acc = np.where(fixed, NO_ATOM, acc)
    return [Labeling((e,), acc)] if (acc >= 0).any() else []


# Tensors created from scratch by a method of another tensor (x.new_zeros(3, 4)): their sizes are
# given explicitly, so they carry no channels and couple nothing by themselves.
@register_op("new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros", "ones", "full",
             "empty", "arange", "eye", "tensor", "as_tensor", "randn", "rand", "randint", "linspace")
def constant(ctx, call):
    return None


# --------------------------------------------------------------------------------------------
# data movement: maps derived by replaying the op (see replay.py)

DATA_MOVEMENT = [
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "swapaxes", "swapdims",
    "movedim", "moveaxis", "t", "T", "mT", "H", "mH", "squeeze", "unsqueeze", "expand", "expand_as",
    "repeat", "tile", "repeat_interleave", "cat", "concat", "concatenate", "stack", "hstack", "vstack",
    "dstack", "split", "split_with_sizes", "tensor_split", "chunk", "unbind", "getitem", "narrow",
    "select", "index_select", "roll", "flip", "fliplr", "flipud", "rot90", "pixel_unshuffle",
    "view_as", "reshape_as", "unfold", "pad",
    "take_along_dim", "gather", "diagonal", "atleast_1d", "atleast_2d", "atleast_3d", "ravel",
    "broadcast_to", "masked_select", "index", "squeeze_", "unsqueeze_", "t_", "transpose_",
    "constant_pad_nd", "tril", "triu", "alias", "narrow_copy", "split_copy", "unsafe_split",
    "unsafe_chunk", "hsplit", "vsplit", "dsplit", "unflatten_dense_tensors", "nonzero_static",
]


# Ops whose pieces are sized from the input (chunk(2) halves whatever it gets): after pruning the
# pieces must still line up, so position j of every piece is removed together.
PROPORTIONAL_SPLITS = {"chunk", "unsafe_chunk", "split", "unsafe_split", "tensor_split", "hsplit",
                       "vsplit", "dsplit"}


@register_op(*DATA_MOVEMENT)
def data_movement(ctx, call, channel_dims=None):
    if not call.out_tensors:
        return
    if any(not t.is_floating_point() and ctx.labels(t) for t in call.in_tensors):
        ctx.block_inputs(call, "indices computed from pruned channels")
        return
    if not any(ctx.labels(t) for t in call.in_tensors if t.is_floating_point()):
        return
    _block_fixed_index(ctx, call)
    fast = FAST_PATHS.get(call.name)
    results = fast(ctx, call) if fast is not None else None
    if results is None:
        results = replay(call.func, call.args, call.kwargs, ctx.labels, ctx.table,
                         ctx.reason(call, ""), channel_dims, ctx.head_counts())
    if results is None:
        return
    for o, labs in zip(call.out_tensors, results):
        ctx.set(o, labs)
    if call.name in _EXPLICIT_SIZES:
        _mark_explicit_sizes(ctx, call, results)
    if call.name in PROPORTIONAL_SPLITS:
        if _equal_pieces(call):
            _join_pieces(ctx, call, results)
        else:
            # constant sections, or pieces whose sizes and count depend on the exact channel
            # count (chunk(2) of 7): no removal keeps the pieces as they were
            x = call.in_tensors[0]
            d = call.kwargs.get("dim", call.args[2] if len(call.args) > 2 else 0)
            if isinstance(d, int) and x.ndim:
                for lab in ctx.labels(x):
                    if d % x.ndim in lab.dims:
                        ctx.table.block(lab.atoms, ctx.reason(call, "split into pieces of fixed or "
                                                                    "uneven size along channels"))


def _indexed_dims(call) -> list[int]:
    """Input dims that a constant integer index tensor (or list) selects along."""
    x = call.args[0] if call.args else None
    if not isinstance(x, torch.Tensor):
        return []
    if call.name in ("index_select", "gather", "take_along_dim"):
        d = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim")
        return [d % x.ndim] if isinstance(d, int) and x.ndim else []
    if call.name != "getitem" or len(call.args) < 2:
        return []
    idx = call.args[1] if isinstance(call.args[1], tuple) else (call.args[1],)
    dims, d = [], 0
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    for i in idx:
        if i is None:
            continue
        if i is Ellipsis:
            d += x.ndim - n_real
            continue
        if isinstance(i, list) or (isinstance(i, torch.Tensor) and not i.is_floating_point()
                                   and i.dtype != torch.bool):
            dims.append(d)
        d += 1
    return dims


def _block_fixed_index(ctx, call):
    """An index tensor fixed at trace time that selects along a channel dim names channel
    positions: after pruning they would point at other channels (or past the end)."""
    dims = _indexed_dims(call)
    if not dims:
        return
    x = call.args[0]
    for lab in ctx.labels(x):
        if any(d in lab.dims for d in dims):
            ctx.table.block(lab.atoms, ctx.reason(
                call, "a fixed index tensor selects channels (their positions change after pruning)"))


_EXPLICIT_SIZES = {"view", "reshape", "expand", "broadcast_to", "unflatten"}


def _mark_explicit_sizes(ctx, call, results):
    """A labelled output dim whose size is written in the call (not -1) may be a constant."""
    from .replay import dynamic_dims

    out = call.out_tensors[0]
    dyn = dynamic_dims(call.func, call.args, call.kwargs, out)
    if call.name in ("expand", "broadcast_to"):
        shape = [a for a in call.args[1:] if isinstance(a, int)]
        if len(call.args) == 2 and isinstance(call.args[1], (tuple, list, torch.Size)):
            shape = list(call.args[1])
        dyn = {i + out.ndim - len(shape) for i, v in enumerate(shape) if v == -1}
    for labs in results[:1]:
        for lab in labs:
            if any(d not in dyn for d in lab.dims):
                ctx.table.shape_sensitive.append(lab.atoms[lab.atoms >= 0])


def _equal_pieces(call):
    shapes = {tuple(o.shape) for o in call.out_tensors}
    if len(shapes) != 1:
        return False
    if call.name in ("chunk", "unsafe_chunk"):  # chunk(4) of 6 gives 3 pieces: not proportional
        n = call.args[1] if len(call.args) > 1 else call.kwargs.get("chunks")
        return len(call.out_tensors) == n
    if call.name in ("split", "unsafe_split"):
        size = call.args[1] if len(call.args) > 1 else call.kwargs.get("split_size_or_sections",
                                                                          call.kwargs.get("split_size"))
        return isinstance(size, int)
    if call.name == "tensor_split":
        sec = call.args[1] if len(call.args) > 1 else call.kwargs.get("sections")
        return isinstance(sec, int)
    return True


def _join_pieces(ctx, call, results):
    first = results[0]
    for labs in results[1:]:
        for a, b in zip(first, labs):
            if a.dims == b.dims and a.atoms.shape == b.atoms.shape:
                ctx.table.join(a.atoms, b.atoms, ctx.reason(call, "equal pieces"))


@register_op("channel_shuffle", "native_channel_shuffle")
def channel_shuffle(ctx, call):
    # C = groups x (C / groups) with a fixed group count: channel j of every group goes together
    x = call.in_tensors[0]
    g = int(call.args[1] if len(call.args) > 1 else call.kwargs["groups"])
    x_c = ctx.dim_atoms(x, 1, call)
    cols = x_c.reshape(g, -1)
    for row in cols[1:]:
        ctx.table.join(cols[0], row, ctx.reason(call, "channel shuffle"))
    data_movement(ctx, call)


@register_op("pixel_shuffle")
def pixel_shuffle(ctx, call):
    # each output channel gathers r*r input channels spread over space: those are coupled
    x = call.in_tensors[0]
    data_movement(ctx, call, channel_dims=set(range(x.ndim - 2)))


# --------------------------------------------------------------------------------------------
# spatial ops: channels pass through, spatial positions are mixed


SPATIAL = {
    "max_pool1d": 1, "max_pool2d": 2, "max_pool3d": 3, "avg_pool1d": 1, "avg_pool2d": 2,
    "avg_pool3d": 3, "adaptive_avg_pool1d": 1, "adaptive_avg_pool2d": 2, "adaptive_avg_pool3d": 3,
    "adaptive_max_pool1d": 1, "adaptive_max_pool2d": 2, "adaptive_max_pool3d": 3, "lp_pool1d": 1,
    "lp_pool2d": 2, "lp_pool3d": 3, "max_pool1d_with_indices": 1, "max_pool2d_with_indices": 2,
    "max_pool3d_with_indices": 3, "fractional_max_pool2d": 2, "fractional_max_pool3d": 3,
    "adaptive_max_pool1d_with_indices": 1, "adaptive_max_pool2d_with_indices": 2,
    "adaptive_max_pool3d_with_indices": 3, "interpolate": None, "upsample": None,
    "upsample_nearest": None, "upsample_bilinear": None, "grid_sample": None,
    "_max_pool1d": 1, "_max_pool2d": 2, "_max_pool3d": 3,
}


def spatial(ctx, call):
    x = call.in_tensors[0]
    n_sp = SPATIAL[call.name] or max(x.ndim - 2, 1)
    lead = x.ndim - n_sp
    labs = ctx.labels(x)
    keep = []
    for lab in labs:
        if all(d < lead for d in lab.dims):
            keep.append(lab)
        else:
            ctx.table.block(lab.atoms, ctx.reason(call, "channels on a spatial dimension"))
    for o in call.out_tensors:
        if o.ndim == x.ndim:
            ctx.set(o, keep)


for _n in SPATIAL:
    register_op(_n)(spatial)


@register_op("local_response_norm")
def local_response_norm(ctx, call):
    x = call.in_tensors[0]
    for lab in ctx.labels(x):
        if 1 in lab.dims:
            ctx.table.mark_approx(lab.atoms, ctx.reason(call, "normalises across neighbouring channels"))
    ctx.set(call.out_tensors[0], ctx.labels(x))


# --------------------------------------------------------------------------------------------
# reductions and normalisations along a dimension


def _dims_arg(call, ndim, default_all=True):
    d = call.kwargs.get("dim", call.kwargs.get("axis"))
    if d is None and len(call.args) > 1 and not isinstance(call.args[1], torch.Tensor):
        d = call.args[1]
    if d is None:
        return list(range(ndim)) if default_all else None
    if isinstance(d, (list, tuple)):
        return [x % ndim for x in d]
    if isinstance(d, str):
        return None
    return [int(d) % ndim] if ndim else []


_EXACT_REDUCTIONS = {"sum", "nansum"}
_INDEX_REDUCTIONS = {"argmax", "argmin", "topk", "sort", "argsort", "kthvalue", "mode", "msort",
                     "median", "nanmedian"}


@register_op("sum", "nansum", "mean", "nanmean", "amax", "amin", "max", "min", "prod", "std", "var",
             "norm", "logsumexp", "argmax", "argmin", "all", "any", "count_nonzero", "median",
             "nanmedian", "std_mean", "var_mean", "aminmax", "topk", "sort", "argsort", "kthvalue",
             "mode", "msort", "vector_norm", "cummax", "cummin")
def reduction(ctx, call):
    x = call.in_tensors[0]
    if call.name in ("max", "min") and len(call.in_tensors) > 1:
        return elementwise(ctx, call)
    ndim = x.ndim
    if call.name in ("topk", "kthvalue"):
        dims = [int(call.kwargs.get("dim", call.args[2] if len(call.args) > 2 else -1)) % ndim]
        keepdim_shape = True
    elif call.name in ("sort", "argsort", "msort", "cummax", "cummin"):
        dims = _dims_arg(call, ndim, default_all=False) or [ndim - 1]
        keepdim_shape = True
    else:
        dims = _dims_arg(call, ndim)
        keepdim_shape = False
    if dims is None:
        return ctx.block_inputs(call, "named dimensions are not supported")
    keep = []
    for lab in ctx.labels(x):
        hit = [d for d in lab.dims if d in dims]
        if not hit:
            keep.append(lab)
            continue
        if call.name in _INDEX_REDUCTIONS:
            ctx.table.block(lab.atoms, ctx.reason(call, "result depends on channel positions"))
        elif call.name not in _EXACT_REDUCTIONS:
            ctx.table.mark_approx(lab.atoms, ctx.reason(call, "statistic over pruned channels"))
        if keepdim_shape and call.name not in _INDEX_REDUCTIONS:
            keep.append(lab)
    for o in call.out_tensors:
        if o.ndim == ndim:
            ctx.set(o, keep)
        else:
            ctx.set(o, [_drop_dims(lab, dims) for lab in keep])


def _drop_dims(lab: Labeling, removed):
    return Labeling(tuple(d - sum(r < d for r in removed) for d in lab.dims), lab.atoms, lab.joint)


@register_op("softmax", "log_softmax", "softmin", "normalize", "cumsum", "cumprod", "logcumsumexp",
             "glu")
def along_dim(ctx, call):
    x = call.in_tensors[0]
    d = call.kwargs.get("dim")
    if d is None:
        d = call.args[1] if len(call.args) > 1 and isinstance(call.args[1], int) else None
    if call.name == "normalize":
        d = call.kwargs.get("dim", call.args[2] if len(call.args) > 2 else 1)
    if call.name == "glu":
        d = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else -1)
    if d is None:
        d = x.ndim - 1
    d = int(d) % max(x.ndim, 1)
    labs = ctx.labels(x)
    for lab in labs:
        if d in lab.dims:
            if call.name == "glu":
                ctx.table.block(lab.atoms, ctx.reason(call, "GLU halves its channel dimension"))
            else:
                ctx.table.mark_approx(lab.atoms, ctx.reason(call, "normalises over pruned channels"))
    out = call.out_tensors[0]
    if out.shape == x.shape:
        ctx.set(out, labs)


# --------------------------------------------------------------------------------------------
# contractions


def einsum_semantics(ctx, call, spec: str, operands, out, exact_contraction=True, note=""):
    """Generic rule for products: a letter kept in the output aligns its positions across operands,
    a summed letter couples the contracted positions (exact: a zeroed slice contributes zero)."""
    ins, out_spec = spec.split("->")
    in_specs = ins.split(",")
    size = {}
    for t, s in zip(operands, in_specs):
        for d, ch in enumerate(s):
            size[ch] = max(size.get(ch, 1), int(t.shape[d]))
    letters = {}
    for t, s in zip(operands, in_specs):
        for d, ch in enumerate(s):
            if t.shape[d] == 1 and size[ch] > 1:
                continue  # broadcast
            letters.setdefault(ch, []).append(ctx.dim_atoms(t, d, call))
    labs = []
    for ch, vecs in letters.items():
        if ch in out_spec:
            labs.extend(_combine(ctx, vecs, out_spec.index(ch), call))
        else:
            acc = vecs[0]
            if len(vecs) == 1:
                if (acc >= 0).any():
                    ctx.table.mark_approx(acc, ctx.reason(call, "sum over pruned channels"))
                continue
            for v in vecs[1:]:
                ctx.table.join(acc, v, ctx.reason(call, "contracted with a tensor that cannot be pruned"))
            if not exact_contraction:
                ctx.table.mark_approx(np.concatenate(vecs), ctx.reason(call, note))
    ctx.set(out, labs)


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _matmul_spec(a_nd, b_nd):
    if a_nd == 1 and b_nd == 1:
        return "k,k->"
    if a_nd == 1:
        batch = _LETTERS[: b_nd - 2]
        return f"k,{batch}km->{batch}m"
    if b_nd == 1:
        batch = _LETTERS[: a_nd - 2]
        return f"{batch}nk,k->{batch}n"
    nb = max(a_nd, b_nd) - 2
    batch = _LETTERS[:nb]
    return f"{batch[nb - (a_nd - 2):]}nk,{batch[nb - (b_nd - 2):]}km->{batch}nm"


@register_op("matmul", "mm", "bmm", "rmatmul", "inner_", "dot", "vdot", "mv")
def matmul(ctx, call):
    a, b = call.in_tensors[:2]
    if call.name == "rmatmul":
        a, b = b, a
    einsum_semantics(ctx, call, _matmul_spec(a.ndim, b.ndim), [a, b], call.out_tensors[0])


@register_op("einsum")
def einsum(ctx, call):
    eq = call.args[0] if isinstance(call.args[0], str) else call.kwargs.get("equation")
    ops = call.in_tensors
    if "..." in eq or "->" not in eq:
        return ctx.block_inputs(call, "einsum with ellipsis or implicit output")
    einsum_semantics(ctx, call, eq.replace(" ", ""), ops, call.out_tensors[0])


@register_op("linear")
def linear(ctx, call):
    x, w = call.args[0], call.args[1] if len(call.args) > 1 else call.kwargs["weight"]
    b = call.args[2] if len(call.args) > 2 else call.kwargs.get("bias")
    out = call.out_tensors[0]
    w_out = ctx.dim_atoms(w, 0, call, role="out")
    w_in = ctx.dim_atoms(w, 1, call, role="in")
    ctx.table.join(ctx.dim_atoms(x, x.ndim - 1, call), w_in,
                   ctx.reason(call, "input features that cannot be pruned"))
    if b is not None:
        ctx.table.join(w_out, ctx.dim_atoms(b, 0, call, role="out"), ctx.reason(call, "bias"))
    labs = [lab for lab in _lead_labels(ctx, x, call, x.ndim - 1)]
    if (w_out >= 0).any():
        labs.append(Labeling((out.ndim - 1,), w_out))
    ctx.set(out, labs)


def _lead_labels(ctx, x, call, last):
    """Labelings of x on dims before ``last``, which a layer passes through unchanged."""
    keep = []
    for lab in ctx.labels(x):
        if all(d < last for d in lab.dims):
            keep.append(lab)
    return keep


@register_op("bilinear")
def bilinear(ctx, call):
    ctx.block_inputs(call, "bilinear layers are not supported")
