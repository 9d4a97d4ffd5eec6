"""The zeroed-group oracle: prove that a pruning plan is structurally exact on the user's model.

Zero every parameter slice the plan removes in a copy of the original, prune another copy, run both
on the same inputs: if the engine coupled the right slices, the outputs are equal up to float error.
Where the plan removes channels that the math cannot keep exact (normalisation statistics across
channels, attention scaling), the difference is reported as an approximation, not a failure.

Outputs that pass through data-dependent selections (score thresholds, top-k, NMS, sorting,
``argmax``: detection models) can differ by far more than float32 rounding when a rounding-level
difference flips a selection: boxes are reordered, a keypoint jumps to another heatmap peak. The
unpruned model itself then differs that much between float32 and float64. So a float32 comparison
that fails is repeated in float64 (copies of both models and the inputs), where rounding stays
~1e-13 and flips do not happen; the verdict is taken there and both results are reported. A real
coupling error differs in any precision, so this never hides one.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils._pytree import tree_map  # noqa: PLC2701 (torch's pytree: no public alias)

from core.trace.inputs import as_example_inputs
from core.prune.apply import apply_kept, zero_channels
from core.prune.bounds import approximate_groups, measure_kinds, summary as bound_summary
from core.prune.copying import copy_model
from core.prune.weak import check_activations, compare_activations, input_independent
from core.trace.tracer import flatten_outputs


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
    # set when the comparison in the model's own dtype (float32 usually) failed and the verdict
    # was taken in float64 (see above): the differences in that dtype (inf where shapes differed)
    float32_abs_diff: float | None = None
    float32_rel_diff: float | None = None
    # False when the original model's own outputs hold NaN or inf: nothing can be compared
    finite: bool = True
    # what makes the check weak (an output that does not depend on the input), one line each
    warnings: list[str] = field(default_factory=list)
    # module outputs compared besides the final ones (when an output is input-independent)
    intermediates_compared: int = 0
    # approximate plans: per kind of reason its bound and measured relative difference
    # (core.prune.bounds); within_bounds: every kind at most its bound; accepted: the caller
    # accepts approximate results at all. An approximate verdict passes only with both.
    approximations: list[dict] = field(default_factory=list)
    within_bounds: bool = True
    accepted: bool = True

    def to_json(self):
        return asdict(self)


def compare_outputs(a, b) -> tuple[float, float, bool]:
    """(max abs difference, relative to max |a|, shapes equal). A NaN or inf in either side makes
    the difference inf: non-finite values never compare as equal (``max(0.0, nan)`` is 0.0)."""
    ta, tb = flatten_outputs(a), flatten_outputs(b)
    if len(ta) != len(tb) or any(x.shape != y.shape for x, y in zip(ta, tb)):
        return float("inf"), float("inf"), False
    diff, scale = 0.0, 0.0
    for x, y in zip(ta, tb):
        if x.numel() == 0:
            continue
        x, y = x.detach().double(), y.detach().double()
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            return float("inf"), float("inf"), True
        diff = max(diff, (x - y).abs().max().item())
        scale = max(scale, x.abs().max().item())
    return diff, diff / max(scale, 1e-12), True


def non_finite(out) -> str | None:
    """A description of the NaN/inf values in an output, None when every value is finite."""
    ts = [t for t in flatten_outputs(out) if t.is_floating_point() or t.is_complex()]
    bad = [(i, t) for i, t in enumerate(ts) if t.numel() and not torch.isfinite(t).all()]
    if not bad:
        return None
    i, t = bad[0]
    n = int((~torch.isfinite(t)).sum())
    where = f"output {i} {tuple(t.shape)}" if len(ts) > 1 else f"output {tuple(t.shape)}"
    return f"{where} has {n} of {t.numel()} values NaN or inf"


def verify_plan(model, inputs, dg, plan, tolerance: float = 1e-4, pruned=None,
                accept_approximate: bool = True, bounds: dict | None = None,
                check_bounds: bool = True) -> VerifyReport:
    """Run the oracle. ``tolerance`` applies to the relative difference of exact plans; an
    approximate plan passes when ``accept_approximate`` and, with ``check_bounds``, every kind of
    approximation stays within its bound (``bounds``: kind or ``"*"`` -> relative bound; default
    :data:`core.prune.bounds.DEFAULT_BOUND`).

    ``pruned``: the pruned model, or a function building it (None: :func:`apply_kept`). A built
    one is built after the zeroed copy has run and been freed, so the two (each most of the
    model's size) are not in memory together; the rare checks needing both re-zero a copy."""
    ex = as_example_inputs(inputs)
    kept = plan.kept_indices(dg)
    if pruned is None:
        def pruned():
            return apply_kept(model, kept)
    zeroed = zero_channels(model, kept)
    approx = sorted({r for gid in approximate_groups(dg, plan) for r in dg.groups[gid].approx_reasons})
    expected_exact = not approx
    weak = []
    with torch.no_grad():
        zeroed.eval()
        try:
            y0 = ex.call(zeroed)
            if non_finite(y0) is None:
                weak = input_independent(zeroed, ex, y0)
            if not isinstance(pruned, nn.Module):
                if not weak:
                    zeroed = None  # freed before the pruned model is built
                pruned = pruned()
            pruned.eval()
            y1 = ex.call(pruned)
        except Exception as e:
            return VerifyReport(float("inf"), float("inf"), False, expected_exact, False, tolerance,
                                approx, f"the pruned model failed to run: {type(e).__name__}: {e}")
    bad = non_finite(y0)
    if bad is not None:
        return VerifyReport(float("inf"), float("inf"), True, expected_exact, False, tolerance,
                            approx, f"NOT CHECKED: the original model's {bad}: nothing can be "
                            f"compared (are its weights or inputs broken?)", finite=False)
    abs_d, rel_d, same = compare_outputs(y0, y1)
    f32 = None
    if expected_exact and not (same and rel_d <= tolerance):
        r64 = _float64_outputs(zeroed if zeroed is not None else zero_channels(model, kept),
                               pruned, ex)
        if r64 is not None:
            f32 = (abs_d, rel_d)
            abs_d, rel_d, same = compare_outputs(*r64)
    if not same:
        return VerifyReport(abs_d, rel_d, False, expected_exact, False, tolerance, approx,
                            "the pruned model's output shapes differ from the original's")
    if not math.isfinite(abs_d):
        return VerifyReport(abs_d, rel_d, True, expected_exact, False, tolerance, approx,
                            f"MISMATCH: the pruned model's {non_finite(y1) or 'output is not finite'}"
                            f" where the original's is finite", *(f32 or (None, None)))
    passed = rel_d <= tolerance or not expected_exact
    msg = (f"exact: max difference {abs_d:.3g} (relative {rel_d:.3g})" if expected_exact else
           f"approximate by design ({len(approx)} reason(s)): max difference {abs_d:.3g} "
           f"(relative {rel_d:.3g})")
    kinds, within, measured = [], True, None
    if not expected_exact and check_bounds:
        total, rel_of, inside = rel_d, _outputs_rel(ex), ""
        if weak:  # a dead head: both outputs are constant, so the bound is measured inside
            try:
                measured = compare_activations(zeroed, pruned, ex, kept)
            except Exception:  # noqa: BLE001 - hooks on exotic modules: check_activations says so
                measured = None
            if measured and measured[0]:
                total, rel_of = measured[1], _activations_rel(ex)
                inside = f" (measured inside, worst at '{measured[2]}')"
        kinds = measure_kinds(model, dg, plan, total, bounds, rel_of)
        within = all(e["within"] for e in kinds)
        msg += f"; per reason: {bound_summary(kinds)}{inside}"
        if not within:
            passed = False
            msg = "APPROXIMATE BEYOND BOUND: " + msg
        elif not accept_approximate:
            passed = False
            msg = ("APPROXIMATE (not accepted: accept approximate results within their bounds "
                   "with --accept-approximate, or in the GUI's Targets panel): " + msg)
    if expected_exact and not passed:
        msg = (f"MISMATCH: max difference {abs_d:.3g} (relative {rel_d:.3g}) exceeds {tolerance:g}; "
               f"the engine coupled the wrong slices")
    if f32 is not None and passed:
        msg += (f" in float64; in float32 the relative difference is {f32[1]:.3g} (rounding flips "
                f"data-dependent selections: thresholds, sorting, NMS, argmax)")
    elif f32 is not None:
        msg += f" in float64 too (float32: relative {f32[1]:.3g})"
    rep = VerifyReport(abs_d, rel_d, True, expected_exact, passed, tolerance, approx, msg,
                       *(f32 or (None, None)), approximations=kinds, within_bounds=within,
                       accepted=accept_approximate)
    if passed:
        check_activations(rep, zeroed, pruned, ex, kept, weak, measured)
    return rep


def _outputs_rel(ex):
    """``rel_of`` for :func:`measure_kinds`: the models' final outputs (inf: shapes differ)."""
    def rel_of(zeroed, pruned, kept):
        _, rel, same = compare_outputs(ex.call(zeroed), ex.call(pruned))
        return rel if same else math.inf
    return rel_of


def _activations_rel(ex):
    """``rel_of`` for a model whose output does not depend on the input: the worst relative
    difference over the intermediate activations (:func:`compare_activations`)."""
    def rel_of(zeroed, pruned, kept):
        n, worst, _ = compare_activations(zeroed, pruned, ex, kept)
        return worst if n else math.inf
    return rel_of


def _float64_outputs(zeroed, pruned, ex):
    """Outputs of both models in float64 (float64 copies: ``zeroed`` shares tensors with the
    user's model, nothing is converted in place), or None when the models already are float64
    or cannot run in it."""
    params = [p for m in (zeroed, pruned) for p in list(m.parameters()) + list(m.buffers())]
    if not any(p.is_floating_point() and p.dtype != torch.float64 for p in params):
        return None

    def up(t):
        return t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    try:
        z64, p64 = _as_float64(zeroed), _as_float64(pruned)
        args, kwargs = tree_map(up, (ex.args, ex.kwargs))
        with torch.no_grad():
            return z64(*args, **kwargs), p64(*args, **kwargs)
    except Exception:  # noqa: BLE001 - no float64 kernels, out of memory: keep float32's verdict
        return None


def _as_float64(model):
    """``copy.deepcopy(model).double()`` without the intermediate full-precision copy: each
    floating parameter/buffer is converted once, straight into the copy."""
    memo = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point() and t.dtype != torch.float64:
            d = t.detach().double()
            memo[id(t)] = nn.Parameter(d, t.requires_grad) if isinstance(t, nn.Parameter) else d
    return copy_model(model, memo)
