"""The zeroed-group oracle: prove that a pruning plan is structurally exact on the user's model.

Zero every parameter slice the plan removes in a copy of the original, prune another copy, run both
on the same inputs: if the engine coupled the right slices, the outputs are equal up to float error.
Where the plan removes channels that the math cannot keep exact (normalisation statistics across
channels, attention scaling), the difference is reported as an approximation, not a failure.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .inputs import as_example_inputs
from .prune import apply_kept, zero_channels
from .tracer import flatten_outputs


@dataclass
class VerifyReport:
    max_abs_diff: float
    max_rel_diff: float  # max_abs_diff / max |reference output|
    shapes_equal: bool
    expected_exact: bool
    passed: bool
    tolerance: float
    approximate_reasons: list[str] = field(default_factory=list)
    message: str = ""

    def to_json(self):
        return asdict(self)


def compare_outputs(a, b) -> tuple[float, float, bool]:
    ta, tb = flatten_outputs(a), flatten_outputs(b)
    if len(ta) != len(tb) or any(x.shape != y.shape for x, y in zip(ta, tb)):
        return float("inf"), float("inf"), False
    diff, scale = 0.0, 0.0
    for x, y in zip(ta, tb):
        if x.numel() == 0:
            continue
        x, y = x.detach().double(), y.detach().double()
        diff = max(diff, (x - y).abs().max().item())
        scale = max(scale, x.abs().max().item())
    return diff, diff / max(scale, 1e-12), True


def verify_plan(model, inputs, dg, plan, tolerance: float = 1e-4, pruned=None) -> VerifyReport:
    """Run the oracle. ``tolerance`` applies to the relative difference."""
    ex = as_example_inputs(inputs)
    kept = plan.kept_indices(dg)
    zeroed = zero_channels(model, kept)
    if pruned is None:
        pruned = apply_kept(model, kept)
    approx = sorted({r for gid, chans in plan.removed.items() if chans
                     for r in dg.groups[gid].approx_reasons
                     if not dg.groups[gid].exact[chans].all()})
    expected_exact = not approx
    with torch.no_grad():
        zeroed.eval()
        pruned.eval()
        try:
            y0 = ex.call(zeroed)
            y1 = ex.call(pruned)
        except Exception as e:
            return VerifyReport(float("inf"), float("inf"), False, expected_exact, False, tolerance,
                                approx, f"the pruned model failed to run: {type(e).__name__}: {e}")
    abs_d, rel_d, same = compare_outputs(y0, y1)
    if not same:
        return VerifyReport(abs_d, rel_d, False, expected_exact, False, tolerance, approx,
                            "the pruned model's output shapes differ from the original's")
    passed = rel_d <= tolerance or not expected_exact
    msg = (f"exact: max difference {abs_d:.3g} (relative {rel_d:.3g})" if expected_exact else
           f"approximate by design ({len(approx)} reason(s)): max difference {abs_d:.3g} "
           f"(relative {rel_d:.3g})")
    if expected_exact and not passed:
        msg = (f"MISMATCH: max difference {abs_d:.3g} (relative {rel_d:.3g}) exceeds {tolerance:g}; "
               f"the engine coupled the wrong slices")
    return VerifyReport(abs_d, rel_d, True, expected_exact, passed, tolerance, approx, msg)
