"""The dependency graph of a model: traced ops (networkx) plus the coupled groups."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import torch

from core.errors import Cancelled, TraceError
from core.analysis.groups import Group, build_groups
from core.trace.gcpause import gc_paused
from core.trace.hugepages import plain_pages
from core.trace.inputs import ExampleInputs, as_example_inputs
from core.adapters.heads import MODES
from core.trace.tracer import Trace, trace_model


@dataclass
class DependencyGraph:
    graph: nx.DiGraph  # nodes: traced ops/layers; edges: tensors (attr "shape")
    groups: list[Group]
    trace: Trace
    atom_class: np.ndarray
    class_group: np.ndarray
    seconds: dict
    options: dict = field(default_factory=dict)  # analysis options (attention structure)

    @property
    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.is_prunable]

    @property
    def blocked_ops(self) -> dict[str, list[str]]:
        """Unknown ops that stopped pruning, with where they were called."""
        return {name: sorted({self.graph.nodes[n]["scope"] or "<root>" for n in nodes})
                for name, nodes in self.trace.unknown_ops.items()}

    def groups_of_node(self, node: int) -> list[int]:
        return [g.id for g in self.groups if node in g.nodes]

    def groups_of_module(self, module: str) -> list[Group]:
        return [g for g in self.groups if module in g.layers]

    def node_of_module(self, module: str) -> list[int]:
        return [n for n, d in self.graph.nodes(data=True) if d["module"] == module]

    def to_json(self) -> dict:
        g = self.graph
        return {
            "nodes": [{"id": n, **{k: (list(v) if isinstance(v, tuple) else v)
                                   for k, v in d.items()}} for n, d in g.nodes(data=True)],
            "edges": [{"src": a, "dst": b, "shape": list(d.get("shape", ()))}
                      for a, b, d in g.edges(data=True)],
            "groups": [grp.to_json() for grp in self.groups],
            "blocked_ops": self.blocked_ops,
            "seconds": self.seconds,
        }


def analyze(model: torch.nn.Module, inputs, should_stop=None, options=None,
            values: str = "auto") -> DependencyGraph:
    """Trace ``model`` with example ``inputs`` and derive its coupled groups.

    ``options``: ``{"attention": "heads" | "head_dim"}`` — whether attention layers that support
    both are pruned by whole heads (default) or by dimensions inside every head."""
    ex: ExampleInputs = as_example_inputs(inputs)
    mode = (options or {}).get("attention", "heads")
    if mode not in MODES:
        raise ValueError(f"attention pruning must be one of {', '.join(MODES)}, not {mode!r}")
    with gc_paused(), plain_pages():
        try:
            trace = trace_model(model, (ex.args, ex.kwargs), should_stop=should_stop,
                                options=options, values=values)
        except (TraceError, Cancelled):
            raise
        except Exception as e:  # the user's forward failed: say so with the original message
            raise TraceError(f"the model's forward failed on the example inputs "
                             f"({ex.describe()}): {type(e).__name__}: {e}") from e
        t0 = time.perf_counter()
        groups, cls, cg = build_groups(trace)
    return DependencyGraph(trace.graph, groups, trace, cls, cg,
                           {"trace": trace.seconds, "groups": time.perf_counter() - t0},
                           {"attention": mode})
