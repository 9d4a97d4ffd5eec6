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

from .errors import Cancelled
from .inputs import as_example_inputs
from .prune import PruningPlan, apply_kept
from .tracer import flatten_outputs


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


def probe_groups(model, inputs, dg, progress=None, should_stop=None) -> dict[int, str]:
    """Block (in place, in ``dg``) the groups whose removal breaks forward; returns id -> reason."""
    ex = as_example_inputs(inputs).to("meta")
    base = meta_copy(model).eval()
    try:
        with torch.no_grad():
            ref = _shapes(ex.call(base))
    except Exception:
        return {}  # forward needs real values (data-dependent control flow): rely on verify
    broken = {}
    groups = dg.prunable_groups
    for i, g in enumerate(groups):
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled while probing groups")
        if progress is not None:
            progress(i, len(groups), f"probing group {g.id} ({g.root})")
        first = int(np.nonzero(g.prunable)[0][0])
        plan = PruningPlan({g.id: [first]})
        try:
            m = apply_kept(base, plan.kept_indices(dg))
            with torch.no_grad():
                got = _shapes(ex.call(m))
            if got != ref:
                raise RuntimeError(f"output shapes change from {ref} to {got}")
        except Exception as e:  # noqa: BLE001 - any failure means this group is not safe
            msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            reason = f"removing a channel breaks forward ({type(e).__name__}: {msg})"
            broken[g.id] = reason
            g.prunable[:] = False
            g.blocked_reasons.insert(0, reason)
    return broken
