"""``graph``: analyse a model's dependency graph and list its coupled channel groups (optionally on
the meta device, for models too large for memory)."""
from __future__ import annotations

from core.cli.args import model_args
from core.cli.common import analyze, example_inputs, input_paths, load, out, write_json
from core.errors import PruneStudioError


def register(subparsers) -> None:
    def fill(gr):
        model_args(gr)
        gr.add_argument("--json", metavar="FILE", help="write the graph and groups as JSON")
        gr.add_argument("--force", action="store_true", help="overwrite an existing JSON file")
        gr.add_argument("--no-probe", action="store_true", help="skip the numerical shape probes")
        gr.add_argument("--meta", action="store_true", help="analyse on the meta device: no "
                        "weights are allocated, for models too large for memory")

    gr = subparsers.add_parser("graph", help="analyse the dependency graph and its coupled groups",
                               fill=fill)
    gr.set_defaults(run=cmd_graph)


def cmd_graph(args, progress) -> int:
    from core.pipeline import device_of
    srcs = input_paths(args)
    if args.json:
        from core.io.atomic import check_destination
        check_destination(args.json, args.force, srcs)
    device = device_of(args.device)
    model, t_load = load(args, device)
    ex = example_inputs(args, device, model)
    if args.meta:
        ex = ex.to("meta")
    try:
        dg = analyze(model, ex, args, probe=not args.no_probe, progress=progress)
    except PruneStudioError as e:
        if args.meta:
            raise PruneStudioError(f"{e} (on the meta device: a forward that needs real values "
                                   f"cannot be analysed without weights)") from None
        raise
    progress.close()
    if args.json:
        data = dg.to_json()
        data["model"] = args.model
        data["input"] = ex.describe()
        data["seconds"] = {**data.get("seconds", {}), "load": t_load}
        write_json(args.json, data, args.force, srcs)
    out(f"model: {args.model}  input: {ex.describe()}" + ("  (meta device: structure only, "
                                                          "no weights)" if args.meta else ""))
    out(f"graph: {dg.graph.number_of_nodes()} nodes, {dg.graph.number_of_edges()} edges")
    out(f"groups: {len(dg.groups)} ({len(dg.prunable_groups)} prunable)")
    from core.prune.bounds import approximate_summary, is_approximate
    for g in dg.groups:
        state = ("blocked" if not g.is_prunable else "approx" if is_approximate(g) else "prunable")
        layers = ", ".join(x for x in g.layers if x)[:100]
        span = f" ×{g.channel_span}" if g.channel_span > 1 else ""  # a channel is a block of rows
        out(f"  #{g.id:<4} {g.n_channels:>5} ch{span}  {g.n_prunable:>5} prunable  {state:<8} {layers}")
    if dg.blocked_ops:
        out("blocked ops: " + "; ".join(f"{k} at {', '.join(v[:3])}" for k, v in dg.blocked_ops.items()))
    approx = approximate_summary(dg)
    if approx:  # said before a prune refuses them
        out(f"approximate: {approx}; --accept-approximate allows it, --ignore keeps a layer whole")
    if args.json:
        out(f"saved: {args.json}")
    return 0
