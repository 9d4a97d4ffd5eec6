"""``prune hf:DIR --stream``: prune a Hugging Face checkpoint larger than memory without loading it
(:mod:`core.io.hf.stream`): meta-device analysis, importance read tensor by tensor from the
safetensors shards, pruned shards written one at a time into ``-o DIR/``.

What streaming prunes is fixed by two ratios (``--mlp-ratio``: MLP intermediate width,
``--kv-ratio``: key/value heads with their query heads), the same in every layer so that
``from_pretrained`` loads the result. Options that only make sense for a loaded model are refused
rather than silently ignored.
"""
from __future__ import annotations

import os
import time

from core.cli.args import UsageError, fraction
from core.cli.common import human, out, write_json

# option -> its default: given with --stream, each is refused (it would be ignored)
_NOT_STREAMED = {"ratio": None, "target_flops": None, "target_params": None, "global_ranking": False,
                 "ignore": [], "weights": None, "project": None, "inputs": None,
                 "attention": "heads", "max_group_ratio": 0.95}


def stream_args(pr) -> None:
    g = pr.add_argument_group("streaming (hf:DIR checkpoints larger than memory)")
    g.add_argument("--stream", action="store_true", help="prune a Hugging Face safetensors "
                   "checkpoint tensor by tensor without loading it (needs hf:DIR and -o DIR/)")
    g.add_argument("--mlp-ratio", type=fraction, metavar="R", help="with --stream: fraction of "
                   "every MLP's intermediate width to remove (default 0.5)")
    g.add_argument("--kv-ratio", type=fraction, metavar="R", help="with --stream: fraction of "
                   "every attention block's key/value heads to remove, each with its query heads "
                   "(default 0)")


def wants_stream(args) -> bool:
    """``--stream`` was given; the streaming-only options without it are a usage error."""
    if getattr(args, "stream", False):
        return True
    for opt in ("mlp_ratio", "kv_ratio"):
        if getattr(args, opt, None) is not None:
            raise UsageError(f"--{opt.replace('_', '-')} is an option of --stream (use --ratio "
                             f"for a loaded model)")
    return False


def _check(args) -> None:
    if not args.model.startswith("hf:"):
        raise UsageError(f"--stream prunes Hugging Face checkpoints: give MODEL as hf:DIR, not "
                         f"{args.model}")
    for opt, default in _NOT_STREAMED.items():
        if getattr(args, opt, default) != default:
            flag = {"global_ranking": "global", "ignore": "ignore"}.get(opt, opt)
            raise UsageError(f"--{flag.replace('_', '-')} is not available with --stream (it "
                             f"prunes by --mlp-ratio and --kv-ratio)")
    if args.device != "cpu":
        raise UsageError("--stream runs on the CPU (it never holds the model); drop --device")
    if not args.output:
        raise UsageError("--stream writes a directory: give -o DIR/")
    from core.io.exporters import exporter_for
    e = exporter_for(args.output)
    if e is None or not e.directory:
        raise UsageError(f"--stream writes a Hugging Face directory: give -o as DIR/ "
                         f"(with a trailing /), not {args.output}")


def cmd_stream(args, progress) -> int:
    from core.io.hf.directory import check_hf_destination
    from core.io.hf.stream import StreamSettings, make_stream_plan, write_stream_plan
    t0 = time.perf_counter()
    _check(args)
    src = args.model[3:]
    mlp = 0.5 if args.mlp_ratio is None else args.mlp_ratio
    kv = 0.0 if args.kv_ratio is None else args.kv_ratio
    # auto's micro-benchmark times conv/linear layers of vision widths, not an LLM's MLP
    settings = StreamSettings(mlp, kv, args.importance, 1 if args.round_to == "auto" else args.round_to)
    settings.validate()
    check_hf_destination(args.output, args.force, src)
    if args.report:
        from core.io.atomic import check_destination
        check_destination(args.report, args.force, [src])
    sp = make_stream_plan(src, settings, args.trust, progress)
    t_plan = time.perf_counter() - t0
    write_stream_plan(sp, args.output, args.force, progress)
    progress.close()
    seconds = {"plan": t_plan, "total": time.perf_counter() - t0}
    before, after = sp.params()
    report = {"model": args.model, "stream": True, "settings": dict(settings.__dict__),
              "params": {"before": before, "after": after}, "config": sp.widths(),
              "uniform": sp.uniform, "removed": sp.plan.to_json()["removed"], "output": args.output,
              "seconds": seconds}
    if args.report:
        write_json(args.report, report, args.force, [src])
    _summary(args, sp, before, after, seconds)
    return 0


def _summary(args, sp, before, after, seconds) -> None:
    from core.io.exporters import EXPORTERS
    n_mlp = sum(1 for k in sp.kinds.values() if k == "mlp")
    out(f"model: {args.model}  (streamed: meta-device analysis, weights read tensor by tensor)")
    out(f"groups: {len(sp.dg.groups)} ({len(sp.dg.prunable_groups)} prunable); pruned {n_mlp} MLP "
        f"and {len(sp.kinds) - n_mlp} attention groups, {sp.plan.n_removed} channels removed; "
        f"hidden size kept")
    out(f"params: {human(before)} -> {human(after)} (-{1 - after / max(before, 1):.1%})")
    out("config: " + (", ".join(f"{k} {a} -> {b}" for k, (a, b) in sp.widths().items())
                      or "unchanged"))
    out("verify: not run (the model is never loaded); the streamed path is tested against the "
        "in-memory prune and its oracle")
    out(f"saved: {args.output} ({len(sp.shards)} shard{'s' * (len(sp.shards) != 1)})")
    for line in EXPORTERS.get("hf-dir").notes(sp.pruned, args.output.rstrip("/" + os.sep)):
        out(line)
    if args.report:
        out(f"report: {args.report}")
    out(f"time: {seconds['total']:.2f} s")
