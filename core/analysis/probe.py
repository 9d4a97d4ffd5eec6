"""Shape probes: find groups whose removal breaks a shape computation in ``forward``.

Code such as ``x.reshape(B, N, 3, heads, C // heads)`` derives sizes from *another* tensor's
channel count; a trace cannot see that arithmetic. So each prunable group is tried once on a
weightless (meta-device) copy of the model: one channel removed, one forward. A group whose probe
raises, or changes an output shape, is blocked with the error as its reason.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from core.errors import Cancelled
from core.trace.inputs import as_example_inputs
from core.prune.apply import PruningPlan, apply_kept
from core.trace.shapes import MetaShapes
from core.trace.tracer import flatten_outputs


def meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """Structure-only copy of ``model``: every parameter and buffer becomes a meta tensor."""
    memo = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _shapes(out):
    return [tuple(t.shape) for t in flatten_outputs(out)]


def _sensitive_groups(dg) -> set:
    """Groups whose channel count Python code may have baked into a size (see AtomTable)."""
    sens = dg.trace.table.shape_sensitive
    if not sens:
        return set()
    classes = np.unique(dg.atom_class[np.concatenate(sens)])
    return {int(g) for g in np.unique(dg.class_group[classes]) if g >= 0}


def probe_groups(model, inputs, dg, progress=None, should_stop=None) -> dict[int, str]:
    """Block (in place, in ``dg``) the groups whose removal breaks forward; returns id -> reason."""
    sensitive = _sensitive_groups(dg)  # once: it scans every shape-read atom
    groups = [g for g in dg.prunable_groups if g.id in sensitive]
    if not groups:
        return {}
    ex = as_example_inputs(inputs).to("meta")
    base = meta_copy(model).eval()
    try:
        with torch.no_grad(), MetaShapes():
            ref = _shapes(ex.call(base))
    except Exception:
        return {}  # forward needs real values (data-dependent control flow): rely on verify
    broken: dict[int, str] = {}
    done = [0]

    def attempt(subset) -> str | None:
        """None if removing one channel of every group in ``subset`` keeps forward working."""
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled while probing groups")
        plan = PruningPlan({g.id: [int(np.nonzero(g.prunable)[0][0])] for g in subset})
        try:
            m = apply_kept(base, plan.kept_indices(dg))
            with torch.no_grad(), MetaShapes():  # shapes only: skip torch's Python meta kernels
                got = _shapes(ex.call(m))
            if got != ref:
                raise RuntimeError(f"output shapes change from {ref} to {got}")
        except Exception as e:  # noqa: BLE001 - any failure means this set is not safe
            msg = str(e).splitlines()[0][:200] if str(e) else ""
            return f"removing a channel breaks forward ({type(e).__name__}: {msg})"
        return None

    def search(subset, depth=0):
        # All groups at once first: a model without such shape arithmetic costs one probe. A
        # failing set is halved once; if failures are still there they are usually many (one per
        # stage or block), so each group of a failing half is then tried on its own.
        err = attempt(subset)
        if err is None:
            done[0] += len(subset)
            if progress is not None:
                progress(done[0], len(groups), "probing groups")
            return
        if len(subset) == 1:
            g = subset[0]
            broken[g.id] = err
            g.prunable[:] = False
            g.blocked_reasons.insert(0, err)
            done[0] += 1
            return
        if depth >= 1 or len(subset) <= 4:
            for g in subset:
                search([g], depth + 1)
            return
        half = len(subset) // 2
        search(subset[:half], depth + 1)
        search(subset[half:], depth + 1)

    if groups:
        search(groups)
    return broken
