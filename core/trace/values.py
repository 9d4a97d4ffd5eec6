"""Tracing without arithmetic: costly ops return uninitialised tensors of the right shape, and every tensor computed
from such a result is marked *without values*.

Channel coupling depends on shapes and on which ops run, not on numbers. Numbers matter only
where Python reads them (``if x.sum() > 0``, ``.item()``, a size taken from a tensor) or where they
become indices, masks or data-dependent shapes. All of those are caught here: reading a value of a
tensor without values, handing one of integer/bool type to any op, or writing one into a parameter
or buffer raises :class:`NeedsValues` (and sets ``needed``, in case the model's own code catches
it), and the tracer starts again with real values. So a trace takes this path only when it cannot
change the result.
"""
from __future__ import annotations

import weakref

import torch

from core.trace.context import call_tensors, tensors_of

from core.trace.shapes import fake_adaptive_avg_pool, fake_elementwise, shape_only

# ops whose result is a Python value (or a shape) computed from the tensor's numbers
VALUE_READS = {
    "item", "tolist", "bool", "int", "float", "complex", "index", "numpy", "array", "equal",
    "allclose", "is_nonzero", "nonzero", "nonzero_static", "argwhere", "unique",
    "unique_consecutive", "masked_select", "bincount", "histc", "repeat_interleave", "format",
    "repr", "contains", "multinomial",
}
# shape and metadata queries: no values involved, nothing to mark
METADATA = {
    "size", "dim", "shape", "dtype", "device", "numel", "len", "is_floating_point", "is_complex",
    "is_contiguous", "requires_grad", "stride", "element_size", "nelement", "ndim", "ndimension",
    "grad_fn", "is_cuda", "layout", "get_device", "storage_offset", "is_leaf", "names", "is_meta",
    "is_sparse", "is_quantized", "dim_order", "is_nested", "is_inference", "has_names",
    "is_mkldnn", "is_same_size", "data_ptr", "untyped_storage",
}
# results that do not depend on their input's numbers, only on its shape
# in-place element-wise activations: on a tensor without values they change nothing that matters
# (its numbers are never read), so they are not computed; value: position of ``inplace``
INPLACE_ACTIVATIONS = {"relu": 1, "relu6": 1, "silu": 1, "hardswish": 1, "hardsigmoid": 1,
                       "mish": 1, "selu": 1, "hardtanh": 3, "leaky_relu": 2, "elu": 2, "celu": 2}
_INPLACE_ARITHMETIC = {"add_", "sub_", "mul_", "div_", "true_divide_"}
SHAPE_FACTORIES = {
    "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros_like", "ones_like",
    "full_like", "empty_like",
}


class NeedsValues(RuntimeError):
    """A value of a tensor computed without arithmetic was needed."""


class ShapeOnly:
    """The tracer's value policy: which tensors hold no real numbers, and when that matters."""

    def __init__(self, names: dict):
        self.names = names  # id -> qualified name of the model's parameters and buffers
        self._fake: dict[int, weakref.ref] = {}
        self.needed: str | None = None  # why real values were needed (first reason)
        self.skipped = 0  # costly ops not computed

    def is_fake(self, t) -> bool:
        r = self._fake.get(id(t))
        return r is not None and r() is t

    def _need(self, why: str):
        self.needed = self.needed or why
        raise NeedsValues(why)

    def _mark(self, out):
        for o in tensors_of(out):
            if not o.is_meta:  # meta tensors have no values to lose: reading them fails anyway
                self._fake[id(o)] = weakref.ref(o)

    def _inplace_activation(self, name, args, kwargs) -> bool:
        pos = INPLACE_ACTIVATIONS.get(name)
        if pos is None or not args:
            return False
        inplace = args[pos] if len(args) > pos else kwargs.get("inplace", False)
        if inplace is not True or not self.is_fake(args[0]) or \
                not args[0].is_floating_point() or id(args[0]) in self.names:
            return False  # (inplace first: most calls are not)
        return not any(isinstance(a, torch.Tensor) for a in args[1:]) and \
            not any(isinstance(v, torch.Tensor) for v in kwargs.values())

    def _inplace_arithmetic(self, name, args, kwargs) -> bool:
        """``x += y`` (``add_``, ``sub_``, ``mul_``, ``div_``) into a tensor without values, with
        operands torch accepts as they are (same dtype, broadcast to x's shape, no partial overlap
        with x): x still has no values afterwards, so nothing is computed."""
        if name not in _INPLACE_ARITHMETIC or not args or not self.is_fake(args[0]) or \
                set(kwargs) - {"alpha"} or id(args[0]) in self.names:
            return False
        x = args[0]
        if not (x.is_floating_point() and (x.is_contiguous() or x.is_contiguous(
                memory_format=torch.channels_last))):
            return False
        for a in list(args[1:]) + list(kwargs.values()):
            if isinstance(a, torch.Tensor):
                if a is not x and (a.dtype != x.dtype or a.device != x.device or
                                   a.layout != torch.strided or a.ndim > x.ndim or
                                   any(s not in (1, xs) for s, xs in zip(
                                       reversed(a.shape), reversed(x.shape))) or
                                   a.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()):
                    return False
            elif isinstance(a, bool) or not isinstance(a, (int, float)):
                return False
        return True

    def wants_tensors(self, name) -> bool:
        """Whether :meth:`run` looks at the call's tensors (then the caller may pass them)."""
        return bool(self._fake) and name not in METADATA

    def run(self, name, func, args, kwargs, flat=None):
        if name in METADATA:
            return func(*args, **kwargs)
        marks = self._fake
        fake = []
        if marks:
            if flat is None:
                flat = call_tensors(args, kwargs)
            for t in flat:  # (is_fake, inlined: this runs for every op)
                r = marks.get(id(t))
                if r is not None and r() is t:
                    fake.append(t)
        if fake:
            if name in VALUE_READS:
                self._need(f"'{name}' reads a value")
            for t in fake:
                if not (t.dtype.is_floating_point or t.dtype.is_complex):
                    self._need(f"'{name}' takes an integer or boolean tensor computed from values")
            if (name.endswith("_") or name == "setitem" or "out" in kwargs) and any(
                    id(t) in self.names for t in flat):
                self._need(f"'{name}' writes into a parameter or buffer")
            if (name in INPLACE_ACTIVATIONS and self._inplace_activation(name, args, kwargs)) or \
                    (name in _INPLACE_ARITHMETIC and self._inplace_arithmetic(name, args, kwargs)):
                self.skipped += 1
                return args[0]
            out = shape_only(name, args, kwargs)
            if out is None:  # the result of cheap ops on tensors without values has none either
                out = fake_elementwise(name, args, kwargs)
            if out is None:
                out = fake_adaptive_avg_pool(name, args, kwargs)
            if out is not None:
                self.skipped += 1
                self._mark(out)
                return out
            out = func(*args, **kwargs)
            if name not in SHAPE_FACTORIES:
                self._mark(out)
                if name == "setitem" and args and isinstance(args[0], torch.Tensor):
                    self._mark(args[0])  # x[i] = y: x now holds numbers it does not have
            return out
        out = shape_only(name, args, kwargs)
        if out is None:
            return func(*args, **kwargs)
        self.skipped += 1
        self._mark(out)
        return out
