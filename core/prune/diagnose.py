"""Find the groups behind an oracle mismatch, so a plan can go ahead without them.

A plan the engine declares exact must reproduce the zeroed original. When it does not, the usual
cause is a value the forward computes from a channel count (``corr / sqrt(C)`` in RAFT, a
normalisation by ``x.shape[1]``), which no trace can see. Bisection over the plan's groups (one
oracle run per step) names the groups whose removal alone changes the output; the pipeline then
excludes them — reported with their names, never silently — and plans again.
"""
from __future__ import annotations

from core.errors import Cancelled
from core.prune.apply import PruningPlan
from core.prune.verify import verify_plan

REASON = ("removing its channels changed the model's output beyond rounding, or broke its "
          "forward, in the oracle (the forward probably computes a value or an index from this "
          "channel count)")


def mismatching_groups(model, inputs, dg, plan, tolerance: float = 1e-4, should_stop=None,
                       progress=None) -> dict[int, str] | None:
    """Group id -> oracle message for the groups whose removal alone breaks the oracle, or None
    when the mismatch only appears with several groups together (nothing to single out)."""
    ids = sorted(g for g, ch in plan.removed.items() if ch)
    found: dict[int, str] = {}
    steps = [0]

    def failing(subset):
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled while locating the mismatch")
        steps[0] += 1
        if progress is not None:
            progress("diagnose", steps[0], 2 * len(ids), "locating the groups that change the output")
        rep = verify_plan(model, inputs, dg, PruningPlan({g: plan.removed[g] for g in subset}),
                          tolerance=tolerance, check_bounds=False)
        return None if rep.passed else rep.message

    def search(subset, known_bad: str | None = None):
        msg = known_bad if known_bad is not None else failing(subset)
        if msg is None:
            return
        if len(subset) == 1:
            found[subset[0]] = msg
            return
        half = len(subset) // 2
        search(subset[:half])
        search(subset[half:])

    search(ids)
    return found or None


def exclude_groups(dg, found: dict[int, str]) -> dict[str, str]:
    """Block ``found`` groups in ``dg`` (with the reason); returns group root -> reason."""
    out = {}
    for gid, msg in found.items():
        g = dg.groups[gid]
        g.prunable[:] = False
        g.blocked_reasons.insert(0, f"{REASON}: {msg}")
        out[g.root] = REASON
    return out
