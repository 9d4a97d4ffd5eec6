"""Element-wise ops: broadcasting decides which positions are coupled; a broadcast operand is not
coupled to the channels it is spread over."""
from __future__ import annotations

from core.ops.common import combine
from core.ops.registry import register_op

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
        # output dims no input labels: combining their all-unlabelled positions does nothing
        live = set()
        for t in inputs:
            shift = out.ndim - t.ndim
            if ctx.is_bare_param(t):  # every dim may become a slot
                live.update(range(shift, out.ndim))
            else:
                live.update(d + shift for lab in ctx.labels(t) for d in lab.dims)
        labs = []
        for e in sorted(live):
            vecs = []
            for t in inputs:
                d = e - (out.ndim - t.ndim)
                if d < 0 or (t.shape[d] == 1 and out.shape[e] != 1):
                    continue  # broadcast: not coupled with the channels it is spread over
                vecs.append(ctx.dim_atoms(t, d, call))
            labs.extend(combine(ctx, vecs, e, call))
        ctx.set(out, labs)



# Tensors created from scratch by a method of another tensor (x.new_zeros(3, 4)), or from a traced
# scalar (torch.full(size, x.mean())): their sizes are given explicitly, so they carry no channels
# and couple nothing by themselves. (torch.zeros(3, 4) and the like take no tensor at all: the
# tracer never sees them, so they need no entry.)
@register_op("new_zeros", "new_ones", "new_full", "new_tensor", "full", "arange",
             "tensor", "as_tensor")
def constant(ctx, call):
    return None
