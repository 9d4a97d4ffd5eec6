"""Trace a model into a dependency graph by running it once with example inputs.

A ``TorchFunctionMode`` sees every torch function the real ``forward`` calls (so Python control
flow, dataclass outputs and meta tensors all work), and global module hooks record which module is
running so nodes can be collapsed by hierarchy. Each call becomes a graph node and is handed to the
handler registered for its name (``core.ops.registry``); handlers see it through a
``HandlerContext`` (``core.trace.context``, which also holds the tensors' channel labels).

Who calls what::

    trace_model(model, (args, kwargs))
    ├─ pre(mod)            module pre-hook: push the scope; a leaf module (register_leaf_module)
    │                      starts: the calls inside it run but are not recorded
    ├─ model(*args)        nn.Conv2d, nn.BatchNorm2d, ... (core.trace.direct): their forward's
    │   │                  one functional call goes straight to handle_call, forward is not run
    │   └─ every torch function f ──> _Tracer.__torch_function__(f, types, args, kwargs)
    │       ├─ out = f(*args, **kwargs)       the real computation, always
    │       ├─ size / shape reads             _shape_read: those channels are shape-sensitive
    │       └─ _record(name, f, args, out)    a graph node and a Call
    │           └─ handler(HandlerContext, call)   register_op(name); none: block_inputs
    │               reads ctx.labels / ctx.dim_atoms, writes ctx.set and ctx.table.join / block
    ├─ post(mod, out)      module post-hook: a leaf ends -> record_leaf -> _record(op, mod, ...)
    │                      -> its handler, as above; pop the scope
    └─ flatten_outputs(out)  output nodes; the output's channels are blocked
    => Trace(graph, table, node_atoms, unknown_ops, output_atoms, seconds)

The extension points are the registries, not subclasses of the tracer. A handler that watches
every ``relu`` and then defers to the registered one::

    >>> import torch
    >>> from core import families
    >>> from core.ops.registry import lookup, register_op
    >>> from core.trace.tracer import trace_model
    >>> families.load()
    >>> relu, seen = lookup("relu"), []
    >>> def spy(ctx, call):
    ...     seen.append((call.name, call.scope, tuple(call.out_tensors[0].shape)))
    ...     relu(ctx, call)
    >>> _ = register_op("relu")(spy)
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> trace = trace_model(net, ((torch.randn(1, 4),), {}))
    >>> _ = register_op("relu")(relu)
    >>> seen
    [('relu', '1', (1, 8))]
    >>> [op for _, op in trace.graph.nodes(data="op")]
    ['input', 'linear', 'relu', 'linear', 'output']
"""
from __future__ import annotations

import dataclasses
import time
import weakref
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from core import families
from core.errors import Cancelled, TraceError
from core.ops.atoms import AtomTable
from core.ops.registry import IGNORED, leaf_op, lookup, normalise_name
from core.trace.context import Call, HandlerContext, TensorLabels, call_tensors, tensors_of
from core.trace.direct import direct_runner, direct_spec
from core.trace.scopes import wrap_module_calls
from core.trace.values import ShapeOnly

_SHAPE_READS = {"size", "shape", "numel", "nelement", "len"}


@dataclass
class Trace:
    """Raw result of tracing: the graph, the atom table and per-node atom samples."""

    graph: nx.DiGraph
    table: AtomTable
    node_atoms: dict  # node id -> list of atom arrays touched by the node's outputs/params
    unknown_ops: dict  # op name -> list of node ids where it blocked channels
    output_atoms: np.ndarray
    seconds: float
    shape_only: bool = False  # costly ops were not computed (core.trace.values)


class _Tracer(TensorLabels, TorchFunctionMode):
    """Intercepts torch functions (``TorchFunctionMode``) and records each as a graph node whose
    handler updates the labels (``TensorLabels``)."""

    def __init__(self, model: torch.nn.Module):
        TensorLabels.__init__(self, model)
        TorchFunctionMode.__init__(self)
        self.root = model  # family handlers (core/adapters/hf.py) look at the traced model's type
        self.scope: list[str] = []
        self.graph = nx.DiGraph()
        self.unknown: dict[str, list] = {}
        self._busy = False
        self.leaf = None  # (module, op name, args) of the leaf module now running
        # labelled tensors the running leaf module reads besides its positional inputs and its own
        # parameters (keyword arguments such as a shared relative position bias, attributes)
        self.leaf_extra: dict[int, torch.Tensor] = {}
        self.options = {}  # analysis options handlers may read (e.g. attention="head_dim")
        self.should_stop = None  # polled every 16 nodes: cancel
        self.values = None  # a ShapeOnly when costly ops are not computed (see core.trace.values)
        self._context = HandlerContext(self, {})
        self._direct_runs = {}  # class -> its direct run or None (see direct)

    def module_named(self, name: str):
        return self.modules_by_name.get(name)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.handle_call(normalise_name(func), func, args, kwargs or {})

    def handle_call(self, name, func, args, kwargs):
        """One torch call (``name``: normalised), with the mode off: run it, record it."""
        in_tensors = None
        if self.values is not None:
            if self.values.wants_tensors(name):  # the same list serves the record below
                in_tensors = call_tensors(args, kwargs)
            out = self.values.run(name, func, args, kwargs, in_tensors)
        else:
            out = func(*args, **kwargs)
        if self._busy:
            if self.leaf is not None:
                self._leaf_read(args, kwargs)
            return out
        if name in IGNORED:
            if name in _SHAPE_READS and args and isinstance(args[0], torch.Tensor):
                self._shape_read(name, args)
            return out
        out_tensors = tensors_of(out)
        if name == "setitem" and args and isinstance(args[0], torch.Tensor):
            out_tensors = [args[0]]  # x[idx] = y returns None but changes x in place
        if not out_tensors:
            return out
        if in_tensors is None:
            in_tensors = call_tensors(args, kwargs)
        # each input's record (None: not from this trace), looked up once for the whole call
        info, names = self.info, self.names
        recs = []
        known = False
        for t in in_tensors:
            rec = info.get(id(t))
            if rec is not None and rec[0]() is not t:
                rec = None
            recs.append(rec)
            known = known or rec is not None or id(t) in names
        if not known:
            return out  # a constant created in forward: it carries no channels
        self._busy = True
        try:
            self._record(name, func, args, kwargs, in_tensors, out_tensors, recs=recs)
        finally:
            self._busy = False
        return out

    def direct(self, mod):
        """For ``wrap_module_calls``: a module whose forward is one known functional call
        (``core.trace.direct``) hands that call straight to the tracer."""
        if "forward" in mod.__dict__:
            return None
        cls = type(mod)
        run = self._direct_runs.get(cls, False)  # (per class: asked for every module)
        if run is False:
            spec = direct_spec(mod)
            run = self._direct_runs[cls] = None if spec is None else direct_runner(self, spec)
        return run

    def _shape_read(self, name, args):
        """Python read the size of labelled dims: that number may end up in a reshape."""
        t = args[0]
        rec = self.lookup(t)
        if rec is None or not rec[1]:
            return
        dim = args[1] if name == "size" and len(args) > 1 and isinstance(args[1], int) else None
        if name == "len":
            dim = 0
        for lab in rec[1]:
            if dim is None or dim % max(t.ndim, 1) in lab.dims:
                self.table.shape_sensitive.append(lab.atoms[lab.atoms >= 0])

    def _leaf_read(self, args, kwargs):
        """Note labelled tensors the running leaf module reads that its handler is not given."""
        mod, _, largs = self.leaf
        own = {id(t) for t in tensors_of(largs)}
        for t in call_tensors(args, kwargs):
            if id(t) in own or id(t) in self.leaf_extra:
                continue
            rec = self.lookup(t)
            if rec is not None and rec[1]:
                self.leaf_extra[id(t)] = t

    def record_leaf(self, mod, op, args, out):
        """One node for a whole leaf module: its inputs and parameters in, its outputs out."""
        extra, self.leaf_extra = list(self.leaf_extra.values()), {}
        out_tensors = tensors_of(out)
        if not out_tensors:
            return
        in_tensors = tensors_of(args)
        in_tensors += [p for p in mod.parameters() if id(p) in self.names]
        self._busy = True
        try:
            self._record(op, mod, tuple(args), {}, in_tensors, out_tensors,
                         module=self.modules.get(id(mod)))
            self.graph.nodes[self.graph.number_of_nodes() - 1]["leaf"] = True
            if extra:
                self._leaf_extra_inputs(mod, op, extra)
        finally:
            self._busy = False

    def _leaf_extra_inputs(self, mod, op, extra):
        """A leaf handler only sees positional inputs: channels of anything else the module read
        (a keyword argument) cannot be followed and are blocked, and the module's own channels are
        left to the shape probe, which blocks those whose removal no longer fits that tensor."""
        name = self.modules.get(id(mod), "")
        why = (f"{op} in {name}: read by the module besides its positional inputs (a keyword "
               f"argument?); its channels cannot be followed")
        for t in extra:
            for lab in self.labels(t):
                self.table.block(lab.atoms, why)
        for p in mod.parameters():
            for d in range(p.ndim):
                slot = self.table._slot_by_key.get((id(p), d))
                if slot is not None:
                    self.table.shape_sensitive.append(slot.atoms)

    def _record(self, name, func, args, kwargs, in_tensors, out_tensors, module=None, recs=None):
        node = self.graph.number_of_nodes()
        if self.should_stop is not None and node % 16 == 0 and self.should_stop():
            raise Cancelled("cancelled while tracing")  # unwinds the user's forward; hooks are removed
        scope = self.scope[-1] if self.scope else ""
        if recs is None:
            recs = [self.lookup(t) for t in in_tensors]
        names = self.names
        params = [names[id(t)][0] for t, rec in zip(in_tensors, recs)
                  if rec is None and id(t) in names]
        if module is None:
            module = params[0].rpartition(".")[0] if params else ""
        graph = self.graph
        graph.add_node(node, op=name, module=module, scope=scope, params=params,
                       label=module or name, kind="layer" if params else "op",
                       shape=[tuple(o.shape) for o in out_tensors])
        for t, rec in zip(in_tensors, recs):
            if rec is not None and rec[2] is not None:
                graph.add_edge(rec[2], node, shape=tuple(t.shape))
        call = Call(name, func, args, kwargs, in_tensors, out_tensors, node, scope)
        self.current_node = node
        # in-place ops return their input: keep its labels visible to the handler
        prev = None
        for o in out_tensors:
            for t in in_tensors:
                if o is t:
                    if prev is None:
                        prev = {}
                    prev[id(o)] = self.labels(o)
                    break
        info = self.info
        for o in out_tensors:  # default: the output carries no channels until the handler says so
            info[id(o)] = (weakref.ref(o), [], node)
        handler = lookup(name)
        if handler is None:
            blocked_before = len(self.table.blocked)
            self.block_inputs(call, f"unknown op '{name}' (its channel semantics are not registered)")
            self.graph.nodes[node]["unknown"] = True
            if len(self.table.blocked) > blocked_before:
                self.unknown.setdefault(name, []).append(node)
        else:
            # in-place ops return their input: read its labels before they are reset
            # one shared context serves every call that modifies no input in place
            handler(HandlerContext(self, prev) if prev else self._context, call)
        self.current_node = None


def flatten_outputs(out) -> list[torch.Tensor]:
    """Tensors of a model output: tensor, tuple/list/dict, dataclass or Hugging Face output."""
    if isinstance(out, torch.Tensor):
        return [out]
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return [t for f in dataclasses.fields(out) for t in flatten_outputs(getattr(out, f.name))]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    return []


def run_model(model, inputs):
    args, kwargs = inputs
    return model(*args, **kwargs)


def trace_model(model: torch.nn.Module, inputs, should_stop=None, options=None,
                values: str = "auto") -> Trace:
    """Run ``model`` once on ``inputs`` = (args, kwargs) and build its dependency graph.

    The model is put in eval mode for the run (so BatchNorm statistics are not updated) and every
    module's mode is restored afterwards; no parameter or buffer is modified.

    ``values="auto"`` first runs without computing convolutions and products (their results are
    uninitialised tensors of the right shape, see ``core.trace.values``); if the model needs
    their values (a value read, an index or mask computed from them) or fails, it runs again
    with real values.
    ``values="real"`` computes everything.
    """
    t0 = time.perf_counter()
    families.load()
    if values == "auto":
        try:
            tracer, out_atoms = _trace_once(model, inputs, should_stop, options, shape_only=True)
        except Cancelled:
            raise
        except Exception:  # noqa: BLE001 - NeedsValues, or arithmetic without values failed: real run
            tracer = None
        if tracer is not None and tracer.values.needed is None:
            return _result(tracer, out_atoms, t0)
    tracer, out_atoms = _trace_once(model, inputs, should_stop, options, shape_only=False)
    return _result(tracer, out_atoms, t0)


def _result(tracer, out_atoms, t0) -> Trace:
    return Trace(tracer.graph, tracer.table, tracer.node_atoms, tracer.unknown,
                 np.concatenate(out_atoms) if out_atoms else np.zeros(0, np.int64),
                 time.perf_counter() - t0, tracer.values is not None)


def _trace_once(model, inputs, should_stop, options, shape_only: bool):
    tracer = _Tracer(model)
    modes = {m: m.training for m in tracer.modules_by_name.values()}
    tracer.should_stop = should_stop
    tracer.options = dict(options or {})
    if shape_only:
        tracer.values = ShapeOnly(tracer.names)
    hooks = []

    def pre(mod, args):
        name = tracer.modules.get(id(mod))
        if name is not None:
            tracer.scope.append(name)
            if tracer.leaf is None and not tracer._busy:
                op = leaf_op(mod)
                if op is not None:  # its inner ops are not recorded; post() records one node
                    tracer.leaf = (mod, op, args)
                    tracer._busy = True

    def post(mod, _args, out):
        if tracer.leaf is not None and tracer.leaf[0] is mod:
            _, op, args = tracer.leaf
            tracer.leaf = None
            tracer._busy = False
            if out is not None:
                tracer.record_leaf(mod, op, args, out)
        if tracer.modules.get(id(mod)) is not None and tracer.scope:
            tracer.scope.pop()

    unwrap = wrap_module_calls(tracer.modules_by_name.values(), pre, post, tracer.direct)
    if unwrap is None:  # (a module with hooks of its own: see core.trace.scopes)
        hooks.append(torch.nn.modules.module.register_module_forward_pre_hook(pre))
        hooks.append(torch.nn.modules.module.register_module_forward_hook(post, always_call=True))
    in_node = None
    try:
        if any(modes.values()):  # eval() walks every module: not when all already are
            model.eval()
        args, kwargs = inputs
        graph = tracer.graph
        leaves = call_tensors(args, kwargs)
        for i, t in enumerate(leaves):
            in_node = graph.number_of_nodes()
            graph.add_node(in_node, op="input", module="", scope="", params=[], label=f"input {i}",
                           kind="input", shape=[tuple(t.shape)])
            tracer.info[id(t)] = (weakref.ref(t), [], in_node)
        with torch.no_grad(), tracer:
            out = model(*args, **kwargs)
        outs = flatten_outputs(out)
        if not outs:
            raise TraceError(f"the model returned {type(out).__name__}, which holds no tensor")
        out_atoms = []
        for i, t in enumerate(outs):
            node = graph.number_of_nodes()
            graph.add_node(node, op="output", module="", scope="", params=[], label=f"output {i}",
                           kind="output", shape=[tuple(t.shape)])
            rec = tracer.lookup(t)
            if rec is not None and rec[2] is not None:
                graph.add_edge(rec[2], node, shape=tuple(t.shape))
            for lab in tracer.labels(t) if rec is not None else []:
                out_atoms.append(lab.atoms.ravel())
                tracer.table.block(lab.atoms, f"output {i} of the model (its shape must not change)")
    finally:
        # the shared handler context points back at the tracer: a cycle that would keep the model
        # and graph alive until a full collection (the window frees models by reference counts)
        tracer._context = None
        tracer._direct_runs = {}  # (the same for the direct runners: closures over the tracer)
        for h in hooks:
            h.remove()
        if unwrap is not None:
            unwrap()
        for m, mode in modes.items():
            if m.training != mode:  # Module.__setattr__ is slow: only where eval() changed it
                m.training = mode
    return tracer, out_atoms
