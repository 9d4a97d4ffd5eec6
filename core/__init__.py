"""PruneStudio's engine: structural pruning of any PyTorch model (DepGraph).

The pipeline, one package per stage (docs/ARCHITECTURE.md has the picture):

    io (load)  ->  trace  ->  ops (channel semantics)  ->  analysis (coupled groups, shape probe)
           ->  plan (importance, targets)  ->  prune (slice, verify)  ->  metrics  ->  io (export)

``adapters`` describe model families (attention, Hugging Face, RNNs, graph layers) to the ops
and prune registries; ``train`` adds sparse learning and fine-tuning; ``cli`` runs it all headless.

The names below are the public API. They are imported on first use, so ``import core`` (and the
CLI's ``--help``) stays cheap.
"""
from __future__ import annotations

import importlib

_PUBLIC = {
    "analyze_model": "core.pipeline", "prune_model": "core.pipeline", "cost_model": "core.pipeline",
    "estimate": "core.pipeline", "device_of": "core.pipeline", "PruneResult": "core.pipeline",
    "PlanSettings": "core.plan.planner", "make_plan": "core.plan.planner",
    "CRITERIA": "core.plan.criteria", "Criterion": "core.plan.criteria",
    "group_scores": "core.plan.criteria",
    "DependencyGraph": "core.analysis.graph", "Group": "core.analysis.groups",
    "PruningPlan": "core.prune.apply", "apply_kept": "core.prune.apply",
    "register_module_updater": "core.prune.apply", "verify_plan": "core.prune.verify",
    "register_op": "core.ops.registry", "register_leaf_module": "core.ops.registry",
    "make_inputs": "core.trace.inputs", "ExampleInputs": "core.trace.inputs",
    "measure": "core.metrics", "count_flops": "core.metrics", "count_params": "core.metrics",
    "load_model": "core.io.sources", "load_inputs": "core.io.inputs", "EXPORTERS": "core.io.exporters",
    "SOURCES": "core.io.sources", "what_would_run": "core.io.sources",
    "TrustPolicy": "core.io.trust", "UntrustedCodeError": "core.io.trust",
    "PruneStudioError": "core.errors", "Cancelled": "core.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return __all__
