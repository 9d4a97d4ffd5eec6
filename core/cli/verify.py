"""``verify``: plan a pruning and check it with the zeroed-group oracle (exit code 1 on a
mismatch, or on an approximate plan that is beyond its bound or not accepted with
``--accept-approximate``), without pruning or writing the model."""
from __future__ import annotations

import sys

from core.cli.args import model_args, target_args
from core.cli.common import (analyze, calibration, check_ignore, example_inputs, input_paths, load,
                             out, plan_settings, warn, write_json)


def approximate_args(sp) -> None:
    """Whether approximate results are accepted, and their bound (prune, verify)."""
    from core.prune.bounds import DEFAULT_BOUND

    sp.add_argument("--accept-approximate", action="store_true", help="accept an approximate plan "
                    "(LayerNorm through a pruned stream, softmax/GroupNorm over pruned channels) "
                    "whose measured difference stays within its bound; without it such a plan "
                    "fails")
    sp.add_argument("--approximate-bound", type=_bound, default=None, metavar="REL",
                    help=f"bound on the relative output difference of each kind of approximation "
                         f"(default {DEFAULT_BOUND:g}; 'inf' for none)")


def _bound(text: str) -> float:
    import argparse
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def approximate_options(args) -> dict:
    """``accept_approximate`` / ``approx_bounds`` keywords from the parsed arguments."""
    b = getattr(args, "approximate_bound", None)
    return {"accept_approximate": bool(getattr(args, "accept_approximate", False)),
            "approx_bounds": None if b is None else {"*": b}}


def register(subparsers) -> None:
    def fill(ve):
        model_args(ve)
        target_args(ve)
        approximate_args(ve)
        ve.add_argument("--tolerance", type=float, default=1e-4, help="relative tolerance "
                        "(default 1e-4)")
        ve.add_argument("--report", metavar="REPORT.json", help="write the verification as JSON")
        ve.add_argument("--force", action="store_true", help="overwrite an existing report")

    ve = subparsers.add_parser("verify", help="check a pruning plan with the zeroed-group oracle",
                               fill=fill)
    ve.set_defaults(run=cmd_verify)


def cmd_verify(args, progress) -> int:
    from core.io.atomic import check_destination
    from core.pipeline import cost_model, device_of
    from core.plan.planner import make_plan
    from core.prune.verify import verify_plan
    settings = plan_settings(args)
    srcs = input_paths(args)
    if args.report:
        check_destination(args.report, args.force, srcs)
    device = device_of(args.device)
    model, _ = load(args, device)
    ex = example_inputs(args, device, model)
    check_ignore(model, settings.ignore)
    dg = analyze(model, ex, args, progress=progress)
    progress("plan", 0, 2, "planning")
    cost = cost_model(dg, model, ex)
    if args.round_to == "auto":
        from core.metrics.widths import best_multiple
        settings.round_to, _ = best_multiple(device)
        settings.round_auto = True
    if settings.target_latency is not None:  # plan as prune would: by tables measured here
        from core.metrics.tables import table_for
        cost.latency, _ = table_for(model, ex)
    plan = make_plan(dg, model, settings, cost=cost, calibration=calibration(settings, ex))
    progress("verify", 1, 2, "zeroed-group oracle")
    opts = approximate_options(args)
    rep = verify_plan(model, ex, dg, plan, tolerance=args.tolerance,
                      accept_approximate=opts["accept_approximate"], bounds=opts["approx_bounds"])
    progress.close()
    if args.report:
        write_json(args.report, {"model": args.model, "input": ex.describe(),
                                 "settings": settings.to_json(), "plan": plan.to_json(),
                                 "verify": rep.to_json()}, args.force, srcs)
    kind = "exact" if rep.expected_exact else "approximate by design"
    out(f"model: {args.model}  input: {ex.describe()}")
    out(f"plan: {plan.n_removed} channels removed in "
        f"{sum(1 for v in plan.removed.values() if v)} of {len(dg.prunable_groups)} prunable groups")
    out(f"max abs difference: {rep.max_abs_diff:.3g} (relative {rep.max_rel_diff:.3g}, "
        f"tolerance {rep.tolerance:g})")
    out(f"expected: {kind}")
    for r in rep.approximate_reasons[:10]:
        out(f"  approximate: {r}")
    for e in rep.approximations:
        out(f"  {e['kind']}: relative difference {e['rel_diff']:.3g} "
            f"{'within' if e['within'] else 'BEYOND'} bound {e['bound']:g} ({e['what']})")
    verdict = ("PASS" if rep.passed else "MISMATCH" if rep.finite and rep.expected_exact
               else "APPROXIMATE" if rep.finite else "NOT CHECKED")
    out(f"result: {rep.message if rep.message.startswith(verdict) else f'{verdict}: {rep.message}'}")
    for line in rep.warnings:
        warn(line)
    if not rep.passed:
        print(f"error: verification failed: {rep.message}", file=sys.stderr, flush=True)
        return 1
    return 0
