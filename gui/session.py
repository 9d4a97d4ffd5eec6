"""What the window holds (original model, graph, result) and the worker-side steps that fill it.

These functions run on worker threads: they call core/ and prepare view data (layout, table rows)
so the GUI thread only builds widgets.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

from core import pipeline
from core.inputs import make_inputs

from . import model_io
from .graph_layout import Layout, layout
from .group_panel import group_rows


@dataclass
class Session:
    spec: str
    model: object  # the original model: never modified
    inputs: object
    dg: object
    cost: object
    layout: Layout
    rows: list
    node_groups: dict  # node -> [group ids], precomputed once (dg.groups_of_node scans all groups)
    seconds: dict = field(default_factory=dict)
    result: object = None  # the latest PruneResult (its .model is the pruned copy)


def load_and_analyse(spec: str, shape: str, dtype: str = "float32", trust: bool = False, model=None,
                     aspect: float = 1.8, progress=None, should_stop=None) -> Session:
    secs = {}
    t = time.perf_counter()
    if progress:
        progress("load", 0, 1, f"loading {spec}")
    if model is None:
        model = model_io.load_model(spec, trust=trust)
    model.eval()
    inputs = make_inputs(shape, dtype)
    secs["load"] = time.perf_counter() - t
    t = time.perf_counter()
    dg = pipeline.analyze_model(model, inputs, progress=progress, should_stop=should_stop)
    secs["analyse"] = time.perf_counter() - t
    t = time.perf_counter()
    lay = layout(dg.graph, aspect=aspect, progress=progress, should_stop=should_stop)
    secs["layout"] = time.perf_counter() - t
    if progress:
        progress("cost", 0, 1, "counting FLOPs")
    t = time.perf_counter()
    cost = pipeline.cost_model(dg, model, inputs)
    rows = group_rows(dg, model)
    secs["cost"] = time.perf_counter() - t
    node_groups: dict = {}
    for g in dg.groups:
        for n in g.nodes:
            node_groups.setdefault(n, []).append(g.id)
    return Session(spec, model, inputs, dg, cost, lay, rows, node_groups, secs)


def prune(session: Session, settings, device: str = "cpu", latency_runs: int = 10,
          progress=None, should_stop=None):
    model, inputs = session.model, session.inputs
    if device != "cpu":  # work on a device copy; the original stays where it is
        dev = pipeline.device_of(device)
        model, inputs = copy.deepcopy(model).to(dev), inputs.to(dev)
    return pipeline.prune_model(model, inputs, session.dg, settings, latency_runs=latency_runs,
                                progress=progress, should_stop=should_stop)


def removed_fractions(session: Session, result) -> dict:
    """Per graph node: the fraction of its channels removed (layers by their output channels,
    other nodes by the most-pruned group they carry)."""
    dg = session.dg
    by_group = {g.id: len(result.plan.removed.get(g.id, ())) / max(g.n_channels, 1) for g in dg.groups}
    out = {}
    for n, d in dg.graph.nodes(data=True):
        ch = result.channels.get(d.get("module"))
        if ch:
            out[n] = 1 - ch[1] / max(ch[0], 1)
        elif n in session.node_groups:
            out[n] = max(by_group[g] for g in session.node_groups[n])
    return out
