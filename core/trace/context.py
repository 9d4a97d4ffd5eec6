"""What op handlers see during a trace: the :class:`Call`, the tensors' channel labels and the
:class:`HandlerContext` wrapped around them.

:class:`TensorLabels` is the bookkeeping half of the tracer (``core.trace.tracer`` adds the
interception): which atoms every live tensor carries along which dims, and the atoms of every
parameter dimension (its *slot*). Handlers read labels with ``labels`` / ``dim_atoms``, write them
with ``set`` and record couplings on ``table``.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import tree_flatten  # noqa: PLC2701 (torch's pytree: no public alias)

from core.ops.atoms import NO_ATOM, AtomTable, Labeling


@dataclass(slots=True)  # one per recorded call
class Call:
    """One recorded call: a torch function, or a leaf module traced as one op (``func`` is then
    the module and ``args`` its positional inputs)."""

    name: str
    func: Any
    args: tuple
    kwargs: dict
    in_tensors: list
    out_tensors: list
    node: int
    scope: str  # the innermost module running the call ("" at the top level)


def tensors_of(obj) -> list:
    """The tensors in ``obj`` (nested tuples, lists and dicts of arguments or outputs), in
    torch pytree order; other containers go through torch's pytree. The tracer calls this for
    every op, and pytree's generality costs more than the op handlers on small models."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    out: list = []
    _collect(obj, out)
    return out


_LEAVES = {int, float, bool, str, type(None), slice, type(Ellipsis), torch.dtype, torch.device,
           torch.memory_format, torch.layout, torch.Size}


def _collect(obj, out):
    t = type(obj)
    if t is tuple or t is list or t is dict:
        for o in obj.values() if t is dict else obj:
            if isinstance(o, torch.Tensor):
                out.append(o)
            elif type(o) not in _LEAVES:
                _collect(o, out)
    elif isinstance(obj, torch.Tensor):
        out.append(obj)
    else:  # namedtuples, OrderedDicts, registered output classes: what torch's pytree says
        out.extend(o for o in tree_flatten(obj)[0] if isinstance(o, torch.Tensor))


def call_tensors(args: tuple, kwargs: dict) -> list:
    """``tensors_of((args, kwargs))`` for a call's arguments, with the common shapes (tensors,
    numbers, tuples of numbers such as a conv's stride) handled in line rather than by recursion."""
    out: list = []
    tensor = torch.Tensor
    for o in args:
        if isinstance(o, tensor):
            out.append(o)
        elif type(o) in _LEAVES:
            continue
        elif type(o) is tuple and all(type(v) is int for v in o):
            continue
        else:
            _collect(o, out)
    if kwargs:
        _collect(kwargs, out)
    return out


_MODULE = torch.nn.Module


def named_tensors(model: torch.nn.Module):
    """({id(tensor): (qualified name, is buffer)}, {id(module): name}, {name: module}) as
    ``named_parameters``, ``named_buffers`` and ``named_modules`` give them (first name of a shared
    tensor or module), in one walk of the module tree: three walks cost a millisecond on a small
    model, as much as tracing a dozen ops."""
    cls = type(model)
    if cls.named_modules is not _MODULE.named_modules or \
            cls.named_parameters is not _MODULE.named_parameters or \
            cls.named_buffers is not _MODULE.named_buffers:  # overridden: ask the model itself
        names = {id(p): (n, False) for n, p in model.named_parameters()}
        for n, b in model.named_buffers():
            names.setdefault(id(b), (n, True))
        by_name = dict(model.named_modules())
        return names, {id(m): n for n, m in by_name.items()}, by_name
    names, by_name, buffers = {}, {}, []
    walk = _walk(model)
    for mname, mod in model.named_modules() if walk is None else walk:
        by_name[mname] = mod
        pre = mname + "." if mname else ""
        params, bufs = mod._parameters, mod._buffers
        if params:  # (most modules hold none: activations, containers)
            for k, p in params.items():
                if p is not None:
                    i = id(p)
                    if i not in names:
                        names[i] = (pre + k, False)
        if bufs:
            for k, b in bufs.items():
                if b is not None:
                    buffers.append((pre + k, b))
    for n, b in buffers:
        names.setdefault(id(b), (n, True))
    return names, {id(m): n for n, m in by_name.items()}, by_name


_PLAIN_WALK: dict[type, bool] = {}


def _walk(model) -> list | None:
    """``list(model.named_modules())`` by an explicit stack, the same modules in the same order
    (a nested generator per level costs more than the loop); None when a module's class changes
    how that walk or module identity works (then ask ``named_modules`` itself)."""
    out, seen, stack = [], set(), [("", model)]
    while stack:
        prefix, mod = stack.pop()
        cls = type(mod)
        ok = _PLAIN_WALK.get(cls)
        if ok is None:
            ok = _PLAIN_WALK[cls] = (cls.named_modules is _MODULE.named_modules and
                                     cls.__hash__ is object.__hash__ and cls.__eq__ is object.__eq__)
        if not ok:
            return None
        if mod in seen:  # (identity: the class keeps object's hash and equality)
            continue
        seen.add(mod)
        out.append((prefix, mod))
        kids = mod._modules
        if kids:
            pre = prefix + "." if prefix else ""
            children = [(pre + n, c) for n, c in kids.items() if c is not None]
            children.reverse()
            stack.extend(children)
    return out


class TensorLabels:
    """Channel labels of the tensors of one trace, keyed by ``id`` and checked by weak reference
    (an id may be reused once a tensor dies)."""

    def __init__(self, model: torch.nn.Module):
        self.table = AtomTable()
        # id(parameter or buffer) -> (qualified name, is buffer); module names both ways
        self.names, self.modules, self.modules_by_name = named_tensors(model)
        self.info: dict[int, tuple] = {}  # id(tensor) -> (weakref, labelings, node)
        self.param_labels: dict[int, list] = {}
        self.node_atoms: dict[int, list] = {}
        self.current_node = None  # graph node of the call being handled

    def lookup(self, t):
        """(weakref, labelings, producing node) of a tensor seen in this trace, or None."""
        rec = self.info.get(id(t))
        if rec is not None and rec[0]() is t:
            return rec
        return None

    def labels(self, t) -> list[Labeling]:
        if not isinstance(t, torch.Tensor):
            return []
        rec = self.lookup(t)
        if rec is not None:
            return rec[1]
        if id(t) in self.names:  # a bare parameter or buffer used directly in forward
            labs = self.param_labels.get(id(t))
            if labs is None:
                labs = [Labeling((d,), self.table.slot(t, d, self.names, "pass").atoms)
                        for d in range(t.ndim) if t.shape[d] > 1]
                self.param_labels[id(t)] = labs
            return labs
        return []

    def dim_atoms(self, t, d: int, call: Call, role: str = "pass") -> np.ndarray:
        """Atoms of tensor t along dim d (-1 where none)."""
        if not isinstance(t, torch.Tensor):
            return np.full(t.shape[d], NO_ATOM, dtype=np.int64)
        if id(t) in self.names and self.lookup(t) is None:
            atoms = self.table.slot(t, d, self.names, role).atoms
            if self.current_node is not None:
                self.node_atoms.setdefault(self.current_node, []).append(atoms)
            return atoms
        for lab in self.labels(t):
            if d in lab.dims:
                if len(lab.dims) == 1:
                    if role == "out":  # a weight derived from parameters (chunk, transpose, ...)
                        self.table.producers.append(lab.atoms[lab.atoms >= 0])
                    return lab.atoms
                self.table.block(lab.atoms, self.reason(
                    call, f"channels split across dims {lab.dims} by {lab.joint} reach this op"))
        return np.full(int(t.shape[d]), NO_ATOM, dtype=np.int64)

    def set(self, t, labs: list[Labeling]):
        if not isinstance(t, torch.Tensor):
            return
        has = self.table.has_atoms
        labs = [lab for lab in labs if has(lab.atoms)]
        info, cur = self.info, self.current_node
        rec = info.get(id(t))
        node = rec[2] if rec is not None and rec[0]() is t else cur
        info[id(t)] = (weakref.ref(t), labs, node)
        if labs and cur is not None:
            seen = self.node_atoms.get(cur)
            if seen is None:
                seen = self.node_atoms[cur] = []
            for lab in labs:
                seen.append(lab.atoms if lab.atoms.ndim == 1 else lab.atoms.ravel())

    def reason(self, call: Call, text: str) -> str:
        where = f"{call.name}" + (f" in {call.scope}" if call.scope else "")
        return f"{where}: {text}" if text else where

    def block_inputs(self, call: Call, text: str):
        for t in call.in_tensors:
            if id(t) in self.names and self.lookup(t) is None:
                continue  # a parameter the op consumes: it simply never becomes prunable
            for lab in self.labels(t):
                self.table.block(lab.atoms, self.reason(call, text))


class HandlerContext:
    """The context handed to op handlers: the tracer, with in-place inputs' labels preserved (an
    in-place op returns its input, whose labels the tracer has already reset for the output)."""

    _HEAD_ATTRS = ("num_heads", "n_heads", "n_head", "num_attention_heads", "num_key_value_heads")

    def __init__(self, tracer, prev):
        self.tracer = tracer
        self.table = tracer.table
        self._prev = prev
        self.root = tracer.root  # the traced model (family handlers look at its type/attributes)
        if not prev:  # nothing modified in place: the tracer's own answers, one call less each
            self.labels = tracer.labels
            self.dim_atoms = tracer.dim_atoms

    @property
    def options(self):  # read through: the tracer shares one context, made before options are set
        return self.tracer.options

    def labels(self, t):
        if isinstance(t, torch.Tensor) and id(t) in self._prev:
            return self._prev[id(t)]
        return self.tracer.labels(t)

    def dim_atoms(self, t, d, call, role="pass"):
        if isinstance(t, torch.Tensor) and id(t) in self._prev:
            for lab in self._prev[id(t)]:
                if lab.dims == (d,):
                    return lab.atoms
            return np.full(int(t.shape[d]), NO_ATOM, dtype=np.int64)
        return self.tracer.dim_atoms(t, d, call, role)

    def set(self, t, labs):
        self.tracer.set(t, labs)

    def is_bare_param(self, t) -> bool:
        """A parameter or buffer used directly (not an activation): ``dim_atoms`` gives its slots."""
        tr = self.tracer
        return isinstance(t, torch.Tensor) and id(t) not in self._prev and id(t) in tr.names and \
            tr.lookup(t) is None

    def reason(self, call, text):
        return self.tracer.reason(call, text)

    def head_counts(self) -> set:
        """Head counts the running module keeps as attributes (heads mode only): a reshape that
        splits channels into one of them shrinks that dim (see replay.prefer_heads)."""
        t = self.tracer
        if self.options.get("attention", "heads") != "heads" or not t.scope:
            return set()
        mod = t.module_named(t.scope[-1])
        return {v for a in self._HEAD_ATTRS
                if isinstance(v := getattr(mod, a, None), int) and not isinstance(v, bool) and v > 1}

    def block_inputs(self, call, text):
        t = self.tracer
        for x in call.in_tensors:
            if id(x) in t.names and t.lookup(x) is None:
                continue
            for lab in self.labels(x):
                self.table.block(lab.atoms, self.reason(call, text))
