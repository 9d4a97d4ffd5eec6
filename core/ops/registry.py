"""How channels flow through each op: the single registry of op semantics.

Every intercepted torch function is looked up here by its normalised name (``Tensor.__iadd__`` ->
``add_`` -> ``add``). A handler receives the trace context and the call, couples or blocks atoms and
sets the labelings of the outputs. Names not in the registry are *unknown*: their labelled inputs
are blocked and reported by name, never assumed to be element-wise.

Custom functions are described with :func:`register_op`.
"""
from __future__ import annotations

import weakref
from typing import Callable


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
    key = (type(module), len(LEAF_MODULES))  # entries are only ever added; asked per module call
    entry = _LEAF_CACHE.get(key, _LEAF_CACHE)
    if entry is _LEAF_CACHE:
        entry = _LEAF_CACHE[key] = next((e for e in LEAF_MODULES if e[0] is key[0]), None)
    if entry is None:
        return None
    _, name, accepts = entry
    return name if accepts is None or accepts(module) else None


_LEAF_CACHE: dict = {}



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
    if h is not None and POSITIONS:
        return _reading_positions(h)
    return h


# Integer tensors whose values are channel *positions* (the indices ``max(x, dim)`` returns along a
# channel dim): id -> (weakref, atom table, atoms, reason). They carry no channels themselves, but
# any op that reads them turns positions into values, which pruning would shift: the channels are
# blocked then. Indices nobody reads (``x.max(1)[0]``) are freed at once and block nothing.
POSITIONS: dict[int, tuple] = {}


def mark_positions(t, table, atoms, reason: str) -> None:
    key = id(t)
    POSITIONS[key] = (weakref.ref(t, lambda _r, k=key: POSITIONS.pop(k, None)), table, atoms, reason)


def _reading_positions(h):
    def run(ctx, call):
        for t in call.in_tensors:
            e = POSITIONS.get(id(t))
            if e is not None and e[0]() is t and e[1] is ctx.table:
                ctx.table.block(e[2], ctx.reason(call, e[3]))
        return h(ctx, call)
    return run
