"""The whole job as plain functions shared by the GUI, the CLI and the tests.

Long steps take a ``progress(stage, done, total, message)`` callback and a ``should_stop()``
predicate, checked between groups, layers and runs (a running torch op cannot be interrupted).
Cancelling raises :class:`Cancelled`; the user's model is never modified: pruning works on a copy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from core.prune.diagnose import exclude_groups, mismatching_groups
from core.errors import ApproximateRefused, Cancelled, VerificationError
from core.analysis.graph import DependencyGraph, analyze
from core.trace.inputs import as_example_inputs
from core.metrics import Metrics, count_flops, count_params, measure_pair, sizes, speedup_text
from core.metrics.blocks import measure_blocks
from core.plan.planner import CostModel, PlanSettings, make_plan
from core.analysis.probe import probe_groups
from core.prune.apply import PruningPlan, apply_kept
from core.prune.bounds import approximate_groups
from core.prune.verify import VerifyReport, verify_plan


def _noop(*_a, **_k):
    return None


def _checker(should_stop):
    def check():
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled by the user")
    return check


def analyze_model(model: nn.Module, inputs, probe: bool = True, progress=None,
                  should_stop=None, options=None) -> DependencyGraph:
    progress = progress or _noop
    check = _checker(should_stop)
    progress("trace", 0, 1, "tracing the model")
    dg = analyze(model, inputs, should_stop=should_stop, options=options)
    check()
    if probe:
        t0 = time.perf_counter()
        probe_groups(model, inputs, dg,
                     progress=lambda i, n, msg: progress("probe", i, n, msg), should_stop=should_stop)
        dg.seconds["probe"] = time.perf_counter() - t0
    progress("trace", 1, 1, f"{len(dg.prunable_groups)} prunable groups")
    return dg


@dataclass
class PruneResult:
    model: nn.Module
    plan: PruningPlan
    kept: dict
    before: Metrics
    after: Metrics
    verify: VerifyReport | None
    channels: dict  # layer -> [original, kept] output channels
    seconds: dict = field(default_factory=dict)
    excluded: dict = field(default_factory=dict)  # group root -> why it was left out (oracle)
    warnings: list = field(default_factory=list)  # one line each: a target missed, a weak check
    latency_table: object = None  # the LatencyTable a latency target was planned with
    round_auto: dict | None = None  # what round-to auto measured and chose (set by the caller)
    blocks: object = None  # core.metrics.blocks.BlockLatency: per-block latency before/after

    def report(self, dg: DependencyGraph | None = None, spec: str | None = None,
               inputs=None) -> dict:
        """The run as JSON; ``spec`` (the model source) and ``inputs`` (its example inputs) name
        what was pruned, so a report read later says which model and input shape it is about."""
        r = {}
        if spec is not None or inputs is not None:
            r["model"] = {"spec": spec}
            if inputs is not None:
                ex = as_example_inputs(inputs)
                r["model"]["inputs"] = ex.describe()
                r["model"]["input_shapes"] = [list(t.shape) for t in ex.args if hasattr(t, "shape")]
                kw = {k: list(t.shape) for k, t in ex.kwargs.items() if hasattr(t, "shape")}
                if kw:
                    r["model"]["input_kwarg_shapes"] = kw
        r |= {
            "before": self.before.to_json(), "after": self.after.to_json(),
            "reduction": {
                "params": 1 - self.after.params / max(self.before.params, 1),
                "flops": 1 - self.after.flops / max(self.before.flops, 1),
            },
            "speedup": (self.before.latency_ms / self.after.latency_ms
                        if self.before.latency_ms and self.after.latency_ms else None),
            "speedup_text": (speedup_text(self.before.latency_ms, self.after.latency_ms)
                             if self.before.latency_ms and self.after.latency_ms else None),
            "channels_removed": self.plan.n_removed,
            "channels_per_layer": self.channels,
            "plan": self.plan.to_json(),
            "verify": self.verify.to_json() if self.verify else None,
            "seconds": self.seconds,
            "excluded_groups": self.excluded,
            "warnings": self.warnings,
            "block_latency": self.blocks.to_json() if self.blocks is not None else None,
        }
        if dg is not None:
            r["groups"] = len(dg.groups)
            r["prunable_groups"] = len(dg.prunable_groups)
            r["blocked_ops"] = dg.blocked_ops
            r["seconds"] = {**dg.seconds, **self.seconds}
        return r


def channels_per_layer(dg: DependencyGraph, kept: dict) -> dict:
    out = {}
    for g in dg.groups:
        for m in g.members:
            if m.slot.role == "out" and not m.slot.tensor_name.endswith(".bias"):
                name = m.slot.module_name or m.slot.tensor_name
                k = kept.get(m.slot.tensor_name, {}).get(m.slot.dim)
                out[name] = [m.slot.size, len(k) if k is not None else m.slot.size]
    return out


def cost_model(dg, model, inputs, base_flops: float | None = None) -> CostModel:
    ex = as_example_inputs(inputs)
    leaf_flops = None
    if any(d.get("leaf") for _, d in dg.graph.nodes(data=True)):
        # modules traced as one op: their FLOPs are attributed to their weights (one more forward)
        counted, leaf_flops = count_flops(model, ex, per_module=True)
        base_flops = counted if base_flops is None else base_flops
    elif base_flops is None:
        base_flops = count_flops(model, ex)
    return CostModel(dg, model, base_flops, count_params(model), leaf_flops)


def prune_model(model: nn.Module, inputs, dg: DependencyGraph, settings: PlanSettings,
                latency: bool = True, verify: bool = True, latency_runs: int = 10, calibration=None,
                progress=None, should_stop=None, before: Metrics | None = None,
                exclude_mismatches: bool = True, accept_approximate: bool = True,
                approx_bounds: dict | None = None, threads: int | None = None,
                latency_budget_s: float = 8.0, latency_table=None) -> PruneResult:
    """Plan, prune a copy, measure before/after and (by default) run the oracle.

    If the oracle fails, the groups responsible are located (``core.prune.diagnose``) and, with
    ``exclude_mismatches``, blocked in ``dg`` and left out of a new plan; they are listed in
    ``PruneResult.excluded``. Without it, or if no single group explains the mismatch, a
    :class:`VerificationError` is raised. An approximate plan whose difference exceeds its bound
    (``approx_bounds``, see ``core.prune.bounds``), or that ``accept_approximate=False`` refuses,
    raises it too (the CLI and the GUI ask the user to accept approximate results).

    Latency: the original and the pruned copy are timed interleaved at the end with ``threads``
    torch threads (``latency_runs`` pairs at most, ``latency_budget_s`` seconds), the original's
    timing cached. A latency target plans with ``latency_table`` (else tables measured here, cached)
    and is checked against measurements of the pruned model while planning."""
    progress = progress or _noop
    check = _checker(should_stop)
    ex = as_example_inputs(inputs)
    secs = {}
    t = time.perf_counter()
    progress("measure", 0, 4, "counting the original model's FLOPs")
    if before is None:
        before = sizes(model, ex, memory=latency)
    secs["measure_before"] = time.perf_counter() - t
    check()
    cost = cost_model(dg, model, ex, before.flops)
    if settings.target_latency is not None:
        t = time.perf_counter()
        cost.latency = _latency_table(model, ex, latency_table, threads, cost, progress, check)
        secs["latency_tables"] = time.perf_counter() - t
    excluded: dict = {}
    loop_warnings: list = []
    for attempt in range(3):
        t = time.perf_counter()
        progress("plan", 1, 4, "scoring groups and choosing channels")
        if settings.target_latency is not None and latency:  # planned and measured in a loop
            plan, kept = _refine_latency_target(model, ex, dg, settings, cost, calibration,
                                                threads, check, progress, loop_warnings)
        else:
            plan = make_plan(dg, model, settings, cost=cost, calibration=calibration)
            kept = plan.kept_indices(dg)
        if settings.target_flops is not None:
            plan, kept = _refine_flops_target(model, ex, dg, settings, cost, calibration, plan,
                                              kept, before.flops)
        secs["plan"] = secs.get("plan", 0.0) + time.perf_counter() - t
        check()
        built = []

        def build(kept=kept):
            t = time.perf_counter()
            progress("prune", 2, 4, f"removing {plan.n_removed} channels")
            built.append(apply_kept(model, kept))
            secs["prune"] = secs.get("prune", 0.0) + time.perf_counter() - t
            if verify:
                progress("verify", 3, 4, "checking the pruned model against the zeroed original")
            return built[-1]
        report = None
        if not verify:
            pruned = build()
            check()
            break
        t, t_prune = time.perf_counter(), secs.get("prune", 0.0)
        progress("verify", 2, 4, "running the zeroed original (the oracle's reference)")
        # verify builds the pruned model once the zeroed copy is freed (peak memory)
        report = verify_plan(model, ex, dg, plan, pruned=build,
                             accept_approximate=accept_approximate, bounds=approx_bounds)
        pruned = built[-1] if built else build()
        secs["verify"] = secs.get("verify", 0.0) + (time.perf_counter() - t
                                                 - (secs.get("prune", 0.0) - t_prune))
        check()
        if report.passed:
            break
        if not report.finite:
            raise VerificationError(f"cannot verify the pruning: {report.message}")
        if not report.expected_exact:  # approximate by design: nothing to locate
            msg = f"approximate result refused: {report.message}"
            if report.within_bounds and not report.accepted:  # accepting it would pass
                raise ApproximateRefused(msg, {"groups": len(approximate_groups(dg, plan)),
                                               "kinds": report.approximations})
            raise VerificationError(msg)
        found = None
        if exclude_mismatches and attempt < 2:
            t = time.perf_counter()
            found = mismatching_groups(model, ex, dg, plan, should_stop=should_stop,
                                       progress=progress)
            secs["diagnose"] = secs.get("diagnose", 0.0) + time.perf_counter() - t
        if not found:
            raise VerificationError(f"pruning would change the model: {report.message}")
        excluded.update(exclude_groups(dg, found))
    t = time.perf_counter()
    progress("measure", 0, latency_runs, "timing the original and the pruned model interleaved")
    before, after = measure_pair(
        model, pruned, ex, latency=latency, runs=latency_runs, threads=threads,
        budget_s=latency_budget_s, before=before, should_stop=check,
        progress=lambda i, n, msg: progress("measure", i, n, msg))
    secs["measure_after"] = time.perf_counter() - t
    blocks, block_warnings = None, []
    if latency:
        t = time.perf_counter()
        blocks, block_warnings = measure_blocks(
            model, pruned, ex, dg.graph, threads=threads, max_pairs=latency_runs,
            budget_s=min(2.0, 0.4 * latency_budget_s),
            should_stop=check, progress=lambda i, n, msg: progress("measure", i, n, msg))
        secs["measure_blocks"] = time.perf_counter() - t
    progress("done", 4, 4, "done")
    warnings = loop_warnings + target_warnings(settings, plan, before, after, dg) + block_warnings
    warnings += report.warnings if report is not None else []
    return PruneResult(pruned, plan, kept, before, after, report, channels_per_layer(dg, kept), secs,
                       excluded, warnings, getattr(cost, "latency", None), blocks=blocks)


def target_warnings(settings: PlanSettings, plan: PruningPlan, before: Metrics, after: Metrics,
                    dg: DependencyGraph) -> list[str]:
    """A line for a plan that removes nothing although asked to, and for a FLOPs or parameter
    target the pruned model misses (measured) by more than a percentage point, or by more than
    a tenth of the share it was to keep."""
    out = []
    targets = [x for x in (settings.target_flops, settings.target_params, settings.target_latency)
               if x is not None]
    asked = targets[0] if targets else settings.ratio
    if plan.n_removed == 0 and asked and dg.prunable_groups:
        out.append(f"nothing was removed: no prunable group allows removing channels at these "
                   f"settings (round-to {settings.round_to}, max group ratio "
                   f"{settings.max_group_ratio:g}, {len(dg.prunable_groups)} prunable groups)")
    for what, target, b, a in (("FLOPs", settings.target_flops, before.flops, after.flops),
                               ("parameter", settings.target_params, before.params, after.params)):
        if target is None or not b or a is None:
            continue
        got = 1 - a / b
        off = abs(got - target)
        # a point, or (near 100 %) a kept share off by more than a tenth: 99.4 % for 99.9 %
        if off > 0.01 or (off > 0.001 and abs((1 - got) / max(1 - target, 1e-9) - 1) > 0.1):
            top = plan.settings.get("max_reduction")
            why = ("every prunable group is pruned as far as --max-group-ratio allows"
                   if got < target and top is not None and top < target + 0.005 else
                   "the closest plan: groups remove channels in steps (small groups, round-to, "
                   "whole heads) that jump across it")
            out.append(f"the {what} reduction target {target:.1%} was "
                       f"{'not reached' if got < target else 'overshot'}: the pruned model "
                       f"has {got:.1%} fewer {'FLOPs' if what == 'FLOPs' else 'parameters'} "
                       f"({why})")
    ratio = plan.settings.get("tables_vs_measured")
    if settings.target_latency is not None and ratio and ratio > 1.5:
        # the layers alone cannot take longer than the whole model: runs were interrupted
        out.append(f"the latency tables add up to {ratio:.1f}× the measured model: their timing "
                   f"was disturbed (a busy machine?), so their estimate is unreliable")
    if (settings.target_latency is not None and before.latency_ms and after.latency_ms
            and plan.settings.get("latency_target_met") is not False):  # a miss the loop said
        got = 1 - after.latency_ms / before.latency_ms
        if abs(got - settings.target_latency) > 0.05:
            est = plan.settings.get("estimated_latency_reduction")
            out.append(f"the latency reduction target {settings.target_latency:.1%} was "
                       f"{'not reached' if got < settings.target_latency else 'overshot'}: "
                       f"measured {got:.1%} (the tables estimated "
                       f"{'?' if est is None else f'{est:.1%}'})")
    return out


def _refine_flops_target(model, ex, dg, settings, cost, calibration, plan, kept, base_flops):
    """The cost model ignores FLOPs it cannot attribute to a weight; correct the target by the
    measured error of a weightless (meta) prune until the real reduction is within 0.5 %."""
    from dataclasses import replace

    from core.analysis.probe import meta_copy

    target = settings.target_flops
    aim = target
    meta_in = ex.to("meta")
    best = None
    for step in range(5):
        try:
            achieved = 1 - count_flops(apply_kept(meta_copy(model), kept), meta_in) / base_flops
        except Exception:  # noqa: BLE001 - forward needs real values: keep the estimate
            break
        if best is None or abs(achieved - target) < abs(best[2] - target):
            best = (plan, kept, achieved)
        if abs(achieved - target) <= 0.005 or step == 4:
            break
        aim = min(0.99, max(0.0, aim + (target - achieved)))
        plan = make_plan(dg, model, replace(settings, target_flops=aim), cost=cost,
                         calibration=calibration)
        kept = plan.kept_indices(dg)
    if best is not None:
        plan, kept, achieved = best
        plan.settings["target_flops"] = target
        plan.settings["achieved_reduction"] = achieved
    return plan, kept


def estimate(dg: DependencyGraph, model: nn.Module, settings: PlanSettings, cost: CostModel,
             calibration=None) -> tuple[int, float]:
    """Instant (params, FLOPs) estimate of a setting, without pruning anything."""
    plan = make_plan(dg, model, settings, cost=cost, calibration=calibration)
    return cost.estimate(plan.kept_indices(dg))


def device_of(name: str) -> torch.device:
    """The torch device ``name`` names, refused in one line when it is not one or not here."""
    from core.errors import PruneStudioError
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PruneStudioError(f"device '{name}' was asked for, but no CUDA GPU is available here")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise PruneStudioError(f"unknown device '{name}': use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise PruneStudioError(f"device '{name}' was asked for, but this machine has "
                               f"{torch.cuda.device_count()} CUDA GPU(s) (cuda:0 ...)")
    backend = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type, None)
    if dev.type not in ("cpu", "cuda") and not (backend is not None and hasattr(
            backend, "is_available") and backend.is_available()):
        raise PruneStudioError(f"device '{name}' is not available here: use cpu"
                               f"{', cuda or cuda:N' if torch.cuda.is_available() else ''}")
    return dev


def _latency_table(model, ex, given, threads, cost, progress, check):
    """The latency tables a latency target plans with: ``given`` (loaded from a file, checked to
    fit the model) or measured here on the model's device (cached per model state)."""
    from core.metrics.tables import table_for
    from core.plan.latency import check_fits
    if given is not None:
        check_fits(given, cost.shapes)
        return given
    progress("tables", 0, 1, "timing every layer at several widths (latency tables)")
    table, _cached = table_for(model, ex, threads, should_stop=check,
                               progress=lambda i, n, msg: progress("tables", i, n, msg))
    return table


def _refine_latency_target(model, ex, dg, settings, cost, calibration, threads, check, progress,
                           warnings):
    """The tables plan, a measurement judges: core.metrics.latency_target corrects the aim until
    the measured reduction is within tolerance (or says in one line that it is not)."""
    from dataclasses import replace

    from core.metrics.latency_target import loop_facts, meet_latency_target
    from core.plan.latency import proportional

    def planner(table):
        def plan_for(aim):
            c = cost if table is None else replace_latency(cost, table)
            p = make_plan(dg, model, replace(settings, target_latency=aim), cost=c,
                          calibration=calibration)
            k = p.kept_indices(dg)
            return p, k, apply_kept(model, k), p.settings.get("estimated_latency_reduction")
        return plan_for
    res = meet_latency_target(planner(None), model, ex, settings.target_latency, threads=threads,
                              should_stop=check, fallback=lambda: planner(proportional(cost.latency)),
                              progress=lambda i, n, msg: progress("measure", i, n, msg))
    res["plan"].settings.update(loop_facts(res, settings.target_latency))
    warnings[:] = [res["message"]] if res["message"] else []  # this attempt's plan only
    return res["plan"], res["kept"]


def replace_latency(cost, table):
    """A shallow copy of the cost model planning with another latency table."""
    import copy
    c = copy.copy(cost)
    c.latency = table
    return c
