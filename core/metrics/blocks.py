"""Per-block latency of the original and the pruned model: where the time goes, before and after.

The blocks are the ones the graph opens with (:func:`graph_blocks`: ResNet-50's stem, layer1…4 and
head; a Llama's embeddings, its N decoder layers, final norm and head). Each is timed inside a
whole forward pass by a forward pre-hook (start) and forward hook (end) on its module; the two
models run interleaved (A, B, A, B, …) after warm-up, with a fixed thread count, as
:mod:`core.metrics.timing` times whole models, and every block gets its median and quartiles.

What the figures include: the hooks' own cost (a few microseconds per block and call) and, on the
CPU, whatever else the process does meanwhile. Blocks do not cover the whole model (loose
functional ops between them are in no block), so block times need not add up to the model's.
CUDA: events recorded in the hooks, read after the forward pass synchronises (no sync inside it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from core.analysis.hierarchy import ROOT, SMALL_GRAPH, Hierarchy
from core.errors import Cancelled
from core.metrics.timing import Timing, device_of_model, eval_no_grad, fixed_threads, timing_of
from core.trace.inputs import as_example_inputs

NOTE = ("each block timed inside the whole forward pass by forward hooks (their overhead included); "
        "ops outside every block are in none, so block times need not add up to the model's")


@dataclass(frozen=True)
class BlockSpec:
    """A timed block: from the forward pre-hook of module ``first`` to the forward hook of module
    ``last`` (the same module for a module block; the first and last layer of a run of loose
    layers such as ResNet's stem)."""
    name: str
    first: str
    last: str


@dataclass
class BlockTiming:
    name: str
    before: Timing | None  # the original's runs (None: the block never ran there)
    after: Timing | None  # the pruned model's runs (None: not timed or never ran)
    calls: int = 1  # times the block ran in one forward pass (their times are summed)

    def to_json(self) -> dict:
        return {"name": self.name, "calls": self.calls,
                "before": self.before.to_json() if self.before else None,
                "after": self.after.to_json() if self.after else None}


@dataclass
class BlockLatency:
    blocks: list = field(default_factory=list)  # BlockTiming, in graph order
    device: str = "cpu"
    threads: int = 1
    runs: int = 0  # timed forward passes of each model
    stop: str = ""  # "max runs" or "budget"
    note: str = NOTE

    def to_json(self) -> dict:
        return {"device": self.device, "threads": self.threads, "runs": self.runs,
                "stop": self.stop, "note": self.note, "blocks": [b.to_json() for b in self.blocks]}


def graph_blocks(graph, model: nn.Module) -> list[BlockSpec]:
    """The items the graph view opens with (:class:`core.analysis.hierarchy.Hierarchy`, automatic
    expansion; a small graph: its top-level blocks) that can be timed: collapsed blocks, and loose
    layers (a Llama's embeddings) once each. Functional ops outside any module are not timed."""
    h = Hierarchy(graph)
    expanded = h.auto_expanded() if h.blocks[ROOT].size > SMALL_GRAPH else set()
    items, _ = h.visible(expanded)
    names = {n for n, _ in model.named_modules() if n}
    out, seen = [], set()
    for it in items:
        if isinstance(it, str):
            if not h.blocks[it].synthetic and it in names:
                out.append(BlockSpec(it, it, it))
                continue
            under = sorted(h.nodes_under(it), key=h.order.__getitem__)
            # the module each op ran in (ReLU and pooling modules record their scope, not "module")
            mods = [m for m in (_module_of(graph.nodes[n]) for n in under) if m in names]
            if mods:
                out.append(BlockSpec(it, mods[0], mods[-1]))
        else:
            m = _module_of(graph.nodes[it])
            # an op an opened block runs itself (ViT's encoder adding positions) is not that block
            if m in names and m not in h.blocks and m not in seen:  # a layer called twice: one row
                seen.add(m)
                out.append(BlockSpec(m, m, m))
    return out


def _module_of(data: dict) -> str:
    return data.get("module") or data.get("scope") or ""


class _Hooks:
    """Forward hooks on one model's blocks that collect, per forward pass, each block's intervals
    as (start, end) stamps; removed by :meth:`remove` (always, in a ``finally``)."""

    def __init__(self, model: nn.Module, specs: list, stamp):
        self.stamp = stamp
        self.handles: list = []
        self.open: list = [[] for _ in specs]
        self.spans: list = [[] for _ in specs]
        try:
            for i, s in enumerate(specs):
                try:
                    first, last = model.get_submodule(s.first), model.get_submodule(s.last)
                except AttributeError:
                    continue  # not in this model: the block gets no samples here
                self.handles.append(first.register_forward_pre_hook(self._pre(i)))
                self.handles.append(last.register_forward_hook(self._post(i)))
        except BaseException:
            self.remove()
            raise

    def _pre(self, i):
        def pre(_mod, _args):
            self.open[i].append(self.stamp())
        return pre

    def _post(self, i):
        def post(_mod, _args, _out):
            if self.open[i]:
                self.spans[i].append((self.open[i].pop(), self.stamp()))
        return post

    def reset(self):
        for i in range(len(self.spans)):
            self.open[i].clear()
            self.spans[i].clear()

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _stamps(device: torch.device, clock):
    """``(stamp, ms_between, sync)``: CUDA events recorded in the stream (read once the pass has
    synchronised), else ``clock()`` seconds."""
    if device.type == "cuda":
        def stamp():
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return stamp, lambda a, b: float(a.elapsed_time(b)), lambda: torch.cuda.synchronize(device)
    return clock, lambda a, b: (b - a) * 1000.0, lambda: None


def block_latency(a: nn.Module, b: nn.Module | None, inputs, blocks: list, threads: int | None = None,
                  warmup: int = 1, min_pairs: int = 3, max_pairs: int = 10, budget_s: float = 2.0,
                  progress=None, should_stop=None, clock=time.perf_counter) -> BlockLatency | None:
    """Time ``blocks`` (:class:`BlockSpec`) of ``a`` (the original) and ``b`` (the pruned copy,
    same module names; None: ``a`` alone), the two forward passes alternating A, B, A, B after
    ``warmup`` passes of each, until ``max_pairs`` pairs are in or ``budget_s`` seconds (of
    ``clock``) of timed passes have passed after at least ``min_pairs`` - or, for a slow model,
    three budgets in all (warm-up included) after at least one pair. ``should_stop()`` is asked
    before every pass: it may raise, or return True to cancel (:class:`core.errors.Cancelled`).
    The hooks are removed however it ends. None on the meta device or without blocks."""
    ex = as_example_inputs(inputs)
    dev = device_of_model(a)
    if dev.type == "meta" or not blocks:
        return None
    stamp, ms_between, sync = _stamps(dev, clock)
    models = [m for m in (a, b) if m is not None]

    def check():
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled by the user")
    hooks: list = []
    try:
        with fixed_threads(threads) as n_threads, eval_no_grad(*models):
            hooks.extend(_Hooks(m, blocks, stamp) for m in models)
            t_start = clock()
            for m in models:
                for _ in range(warmup):
                    check()
                    t = clock()
                    ex.call(m)
                    if clock() - t > 0.2 * budget_s:
                        break  # a slow model: the budget is for the timed passes
            samples = [[[] for _ in blocks] for _ in models]  # model -> block -> ms per pass
            calls = [0] * len(blocks)
            t0, stop, pairs = clock(), "max runs", 0
            for i in range(max_pairs):
                for k, m in enumerate(models):  # A then B: the alternation is the point
                    check()
                    hooks[k].reset()
                    ex.call(m)
                    sync()
                    for j, spans in enumerate(hooks[k].spans):
                        if spans:
                            samples[k][j].append(sum(ms_between(s, e) for s, e in spans))
                            if k == 0:
                                calls[j] = len(spans)
                pairs = i + 1
                if progress is not None:
                    progress(pairs, max_pairs, f"timing {len(blocks)} blocks of "
                             f"{'both models' if b is not None else 'the model'} interleaved: "
                             f"{pairs} run{'s' * (pairs > 1)}")
                now = clock()
                if (pairs >= min_pairs and now - t0 > budget_s) or now - t_start > 3 * budget_s:
                    stop = "budget"
                    break
    finally:
        for h in hooks:
            h.remove()

    def timing(xs):
        return timing_of(xs, n_threads, str(dev), stop) if xs else None
    out = [BlockTiming(s.name, timing(samples[0][j]), timing(samples[1][j]) if b is not None else None,
                       calls[j] or 1)
           for j, s in enumerate(blocks) if samples[0][j] or (b is not None and samples[1][j])]
    return BlockLatency(out, str(dev), n_threads, pairs, stop)


def measure_blocks(original: nn.Module, pruned: nn.Module | None, inputs, graph, threads=None,
                   max_pairs: int = 10, budget_s: float = 2.0, progress=None,
                   should_stop=None) -> tuple[BlockLatency | None, list[str]]:
    """``(BlockLatency or None, warnings)``: :func:`block_latency` of the blocks the graph (the
    original's trace) opens with. A secondary figure: one that cannot be taken is a warning, not
    a failed prune (cancelling still cancels)."""
    try:
        return block_latency(original, pruned, inputs, graph_blocks(graph, original), threads=threads,
                             max_pairs=max(3, max_pairs), budget_s=budget_s, progress=progress,
                             should_stop=should_stop), []
    except Cancelled:
        raise
    except Exception as e:  # noqa: BLE001 - the pruned model is right whatever this says
        return None, [f"per-block latency could not be measured: {e}"[:300]]
