"""Training subcommands: ``finetune``, ``sparse-train``, ``sensitivity``, ``evaluate``.

Hooked into core/cli/main.py with ``register(sub)`` (adds the subparsers, each with
``set_defaults(train_command=True)``) and ``run(args) -> int`` (dispatch); this module never imports
core/cli/main.py. ``main(argv)`` runs them standalone (``python -m core.cli.train finetune ...``), which is also what torchrun launches:

    torchrun --nproc_per_node=4 -m core.cli.train finetune MODEL --data DIR --epochs 30 -o out.pt

Errors are one line on stderr, exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from core.cli.args import TRUST_HELP, Parser, UsageError, clean_spec, fraction, nonneg_int, positive_int
from core.cli.common import interrupted
from core.errors import PruneStudioError
from core.io import tempfiles

COMMANDS = ("finetune", "sparse-train", "sensitivity", "evaluate")
OUTPUT_SUFFIXES = (".pt", ".pth", ".pstudio")


def _model_args(sp):
    sp.add_argument("model", metavar="MODEL", type=clean_spec,
                    help="torchvision:NAME | file.py:factory | demo | saved model")
    sp.add_argument("--weights", metavar="FILE", help="state dict to load into MODEL")
    sp.add_argument("--trust", action="store_true", help=TRUST_HELP)
    sp.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: each rank's GPU)")
    sp.add_argument("--data", required=True, metavar="DATA", type=clean_spec,
                    help="digits | digits@SIZE[xCH] | image folder (class per sub-folder) | file.py:factory")
    sp.add_argument("--batch-size", type=positive_int, default=64)
    sp.add_argument("--workers", type=nonneg_int, default=0, help="data loader workers")
    sp.add_argument("--val-fraction", type=fraction, default=0.2, help="validation split (default 0.2)")
    sp.add_argument("--image-size", type=positive_int, default=32, help="image folder resize (default 32)")
    sp.add_argument("--loss", metavar="FILE.py:FN", type=clean_spec, help="loss function (default cross-entropy)")
    sp.add_argument("--max-batches", type=positive_int, help="batches per epoch / evaluation (quick runs)")
    sp.add_argument("--seed", type=int, default=0)


def _train_args(sp, sparse: bool):
    sp.add_argument("--epochs", type=nonneg_int, default=3)
    sp.add_argument("--lr", type=fraction, default=0.01 if not sparse else 0.05)
    sp.add_argument("--momentum", type=fraction, default=0.9)
    sp.add_argument("--weight-decay", type=fraction, default=5e-4)
    sp.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    sp.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    sp.add_argument("--no-amp", action="store_true", help="no mixed precision on GPU")
    sp.add_argument("--distill", action="store_true", help="distil from the original model")
    sp.add_argument("--distill-alpha", type=fraction, default=0.5)
    sp.add_argument("--temperature", type=fraction, default=4.0)
    sp.add_argument("--checkpoint", metavar="DIR", help="save a checkpoint every epoch here")
    sp.add_argument("--resume", action="store_true", help="resume from --checkpoint DIR")
    # pruning target (like `prune`); without one, finetune trains the model as it is
    t = sp.add_mutually_exclusive_group()
    t.add_argument("--ratio", type=fraction, help="fraction of prunable channels to remove")
    t.add_argument("--target-flops", type=fraction, metavar="F", help="fraction of FLOPs to remove")
    t.add_argument("--target-params", type=fraction, metavar="P", help="fraction of parameters to remove")
    sp.add_argument("--importance", default="l2")
    sp.add_argument("--global", dest="global_ranking", action="store_true")
    sp.add_argument("--round-to", type=positive_int, default=1)
    sp.add_argument("--ignore", action="append", default=[], metavar="NAME")
    sp.add_argument("--max-group-ratio", type=fraction, default=0.95)
    sp.add_argument("--input-shape", metavar="SHAPE", help="example input (default: one data sample)")
    sp.add_argument("--iterative", type=positive_int, default=1, metavar="N",
                    help="prune in N steps with fine-tuning between them")
    sp.add_argument("-o", "--output", metavar="OUT", help="trained model: .pt/.pth (whole) or .pstudio")
    sp.add_argument("--report", metavar="REPORT.json", help="write history and results as JSON")
    sp.add_argument("--force", action="store_true", help="overwrite existing output files")
    if sparse:
        sp.add_argument("--sparse-lambda", type=fraction, default=3e-3, help="regulariser strength")
        sp.add_argument("--sparse-alpha", type=fraction, default=4.0, help="gamma exponent (paper: 4)")
        sp.add_argument("--sparse-schedule", choices=("constant", "linear", "exp"), default="linear")
        sp.add_argument("--sparse-warmup", type=fraction, default=0.5,
                        help="fraction of training over which the strength grows")
        sp.add_argument("--finetune-epochs", type=nonneg_int, default=3,
                        help="after pruning to the target (default 3)")


def register(subparsers) -> None:
    """Add the training subcommands to core/cli/main.py's subparsers."""
    kw = {"formatter_class": argparse.RawDescriptionHelpFormatter}
    ft = subparsers.add_parser("finetune", help="(prune and) fine-tune a model on data", **kw,
                               epilog="torchrun --nproc_per_node=N -m core.cli.train finetune ... "
                               "runs with DistributedDataParallel")
    _model_args(ft)
    _train_args(ft, sparse=False)
    st = subparsers.add_parser("sparse-train", help="sparse learning (group regulariser), then "
                               "optionally prune to a target and fine-tune", **kw)
    _model_args(st)
    _train_args(st, sparse=True)
    se = subparsers.add_parser("sensitivity", help="per-group sensitivity to pruning", **kw)
    _model_args(se)
    se.add_argument("--ratios", default="0.25,0.5,0.75", help="comma-separated ratios")
    se.add_argument("--importance", default="l2")
    se.add_argument("--input-shape", metavar="SHAPE")
    se.add_argument("--mean-ratio", type=fraction, default=0.5, help="for the suggested overrides")
    se.add_argument("--json", metavar="FILE", help="write results and suggested overrides")
    se.add_argument("--force", action="store_true")
    ev = subparsers.add_parser("evaluate", help="top-1/top-5 accuracy and loss on data", **kw)
    _model_args(ev)
    for sp in (ft, st, se, ev):
        sp.set_defaults(train_command=True)


# ----------------------------------------------------------------------------- helpers

def _out(msg=""):
    print(msg, flush=True)


def _rank0() -> bool:
    return int(os.environ.get("RANK", 0)) == 0


def _data(args):
    from core.train.data import load_data
    return load_data(args.data, batch_size=args.batch_size, workers=args.workers,
                     val_fraction=args.val_fraction, seed=args.seed, image_size=args.image_size,
                     trust=args.trust)


def _model(args, device):
    from core.io.sources import load_model
    model = load_model(args.model, trust=args.trust, weights=args.weights, seed=args.seed)
    return model.to(device).eval()


def _inputs(args, data, device):
    from core.trace.inputs import as_example_inputs, make_inputs
    if getattr(args, "input_shape", None):
        return make_inputs(args.input_shape, "float32", str(device))
    return as_example_inputs(data.example_input(1)).to(device)


def _settings(args):
    from core.plan.planner import PlanSettings
    if args.ratio is None and args.target_flops is None and args.target_params is None:
        return None
    s = PlanSettings(ratio=args.ratio, target_flops=args.target_flops, target_params=args.target_params,
                     importance=args.importance, global_ranking=bool(args.global_ranking),
                     round_to=args.round_to, ignore=list(args.ignore),
                     max_group_ratio=args.max_group_ratio, seed=args.seed)
    s.validate()
    return s


def _config(args, epochs, sparse=False):
    from core.train.loop import TrainConfig
    c = TrainConfig(epochs=epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                    optimizer=args.optimizer, schedule=args.schedule, device=args.device,
                    amp=not args.no_amp, distill_alpha=args.distill_alpha,
                    temperature=args.temperature, checkpoint_dir=args.checkpoint, resume=args.resume,
                    max_batches=args.max_batches, seed=args.seed)
    if sparse:
        c.sparse_lambda, c.sparse_alpha = args.sparse_lambda, args.sparse_alpha
        c.sparse_schedule, c.sparse_warmup = args.sparse_schedule, args.sparse_warmup
    c.validate()
    return c


class _Progress:
    def __init__(self):
        self.last = 0.0

    def __call__(self, stage, done, total, message=""):
        now = time.monotonic()
        if sys.stderr.isatty() and _rank0() and (now - self.last > 0.5 or done >= total):
            self.last = now
            print(f"\r{stage}: {done}/{total} {message}"[:120].ljust(120), end="", file=sys.stderr,
                  flush=True)

    def close(self):
        if sys.stderr.isatty() and _rank0():
            print(file=sys.stderr, flush=True)


def _check_outputs(args):
    from core.io.atomic import check_destination
    srcs = [f for f in (args.weights,) if f]
    if args.output:
        if not args.output.lower().endswith(OUTPUT_SUFFIXES):
            raise UsageError(f"output {args.output}: unknown suffix; use .pt, .pth or .pstudio")
        check_destination(args.output, args.force, srcs)
    if getattr(args, "report", None):
        check_destination(args.report, args.force, srcs)


def _save(args, model, kept, meta):
    from core.io.portable import save_portable
    from core.io.torchfile import save_whole
    if not args.output or not _rank0():
        return
    if args.output.lower().endswith(".pstudio"):
        if args.model.lower().endswith(".pstudio"):
            raise UsageError("saving a fine-tuned .pstudio model as .pstudio again is not supported; "
                             "use -o OUT.pt")
        save_portable(args.output, args.model, kept, model.state_dict(), force=args.force,
                      trust=args.trust, meta=meta)
    else:
        save_whole(model, args.output, force=args.force)


def _write_json(path, data, force):
    from core.io.atomic import atomic_write
    text = json.dumps(data, indent=1, default=str)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write, None, force)


def _pct(v):
    return "n/a" if v is None else f"{v:.2%}"


# ----------------------------------------------------------------------------- commands

def cmd_evaluate(args, progress) -> int:
    from core.train.evaluate import evaluate, load_loss_fn
    from core.pipeline import device_of
    device = device_of(args.device)
    data = _data(args)
    model = _model(args, device)
    r = evaluate(model, data.val_loader() or data.train_loader(), load_loss_fn(args.loss, args.trust), device,
                 args.max_batches, progress=progress)
    progress.close()
    _out(f"model: {args.model}  data: {args.data}")
    _out(f"top-1: {_pct(r.top1)}  top-5: {_pct(r.top5)}  loss: {r.loss:.4f}  samples: {r.samples}")
    return 0


def cmd_sensitivity(args, progress) -> int:
    from core.train.evaluate import load_loss_fn
    from core.pipeline import analyze_model, device_of
    from core.train.sensitivity import group_sensitivity, ratios_from_sensitivity
    try:
        ratios = [float(x) for x in args.ratios.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--ratios: '{args.ratios}' is not a comma-separated list of numbers") from None
    if args.json:
        from core.io.atomic import check_destination
        check_destination(args.json, args.force)
    device = device_of(args.device)
    data = _data(args)
    model = _model(args, device)
    ex = _inputs(args, data, device)
    dg = analyze_model(model, ex, progress=progress)
    res = group_sensitivity(model, dg, data.val_loader() or data.train_loader(), ratios,
                            args.importance, load_loss_fn(args.loss, args.trust), device, args.max_batches,
                            progress=progress)
    ov = ratios_from_sensitivity(res, dg, mean_ratio=args.mean_ratio)
    progress.close()
    _out(f"base loss {res.base_loss:.4f}, top-1 {_pct(res.base_top1)}")
    _out("group  root                          " + "  ".join(f"dloss@{r:.0%}" for r in ratios) + "  ratio")
    for g in sorted(res.groups, key=lambda g: g.score):
        _out(f"#{g.gid:<5} {g.root[:28]:<29} " + "  ".join(f"{d:+9.4f}" for d in g.deltas) +
             f"  {ov.get(g.root, 0):.2f}")
    if args.json and _rank0():
        _write_json(args.json, {**res.to_json(), "overrides": ov}, args.force)
        _out(f"saved: {args.json}")
    return 0


def _run_training(args, progress, sparse: bool) -> int:
    from core.train.evaluate import evaluate, load_loss_fn
    from core.pipeline import analyze_model, device_of
    from core.train.loop import iterative_prune, train
    _check_outputs(args)
    settings = _settings(args)
    loss_fn = load_loss_fn(args.loss, args.trust)
    device = device_of(args.device)
    data = _data(args)
    model = _model(args, device)
    ex = _inputs(args, data, device)
    val = data.val_loader()
    before = evaluate(model, val, loss_fn, device, args.max_batches) if val is not None else None
    report = {"model": args.model, "data": args.data, "before": before.to_json() if before else None}
    kept, history = {}, []
    current = model
    if sparse:
        dg = analyze_model(model, ex, progress=progress)
        cfg = _config(args, args.epochs, sparse=True)
        if settings is not None and args.checkpoint:
            cfg.checkpoint_dir = os.path.join(args.checkpoint, "sparse")
        r = train(model, data, cfg, loss_fn=loss_fn, dg=dg, progress=progress)
        current, history = r.model, [{**h, "phase": "sparse"} for h in r.history]
        report["sparse"] = {"history": r.history}
    if settings is not None:
        epochs = args.finetune_epochs if sparse else args.epochs
        cfg = _config(args, epochs)
        if sparse and args.checkpoint:
            cfg.checkpoint_dir = os.path.join(args.checkpoint, "finetune")
        ir = iterative_prune(current, data, settings, steps=args.iterative, config=cfg, inputs=ex,
                             loss_fn=loss_fn, distill=args.distill, progress=progress)
        current, kept = ir.model, ir.kept
        history += [{**h, "phase": "finetune"} for h in ir.history]
        report["steps"] = ir.steps
        report["flops_fraction"] = ir.steps[-1]["flops_fraction"]
        report["params_fraction"] = ir.steps[-1]["params_fraction"]
    elif not sparse:
        r = train(model, data, _config(args, args.epochs), loss_fn=loss_fn,
                  teacher=model if args.distill else None, progress=progress)
        current, history = r.model, r.history
    progress.close()
    after = evaluate(current, val, loss_fn, device, args.max_batches) if val is not None else None
    report["after"] = after.to_json() if after else None
    report["history"] = history
    from core.io.atomic import OutputSet
    with OutputSet() as outs:  # -o and --report together, or neither
        _save(args, current, kept, {"data": args.data, "command": args.command})
        if args.report and _rank0():
            _write_json(args.report, report, args.force)
        outs.commit()
    if _rank0():
        _out(f"model: {args.model}  data: {args.data}  device: {args.device}")
        if "flops_fraction" in report:
            _out(f"pruned: FLOPs kept {report['flops_fraction']:.1%}, params kept "
                 f"{report['params_fraction']:.1%} in {args.iterative} step(s)")
        if before and after:
            _out(f"top-1: {_pct(before.top1)} -> {_pct(after.top1)}  loss: {before.loss:.4f} -> "
                 f"{after.loss:.4f}")
        if args.output:
            _out(f"saved: {args.output}")
        if args.report:
            _out(f"report: {args.report}")
    return 0


def run(args) -> int:
    """Dispatch a parsed training subcommand; one-line errors, exit code 2."""
    progress = _Progress()
    try:
        if args.command == "evaluate":
            return cmd_evaluate(args, progress)
        if args.command == "sensitivity":
            return cmd_sensitivity(args, progress)
        if args.command in ("finetune", "sparse-train"):
            return _run_training(args, progress, sparse=args.command == "sparse-train")
        raise UsageError(f"unknown training command '{args.command}'")
    except (KeyboardInterrupt, tempfiles.Terminated) as e:
        return interrupted(e)
    except (PruneStudioError, OSError, ValueError) as e:
        progress.close()
        text = (f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror and e.filename
                else str(e) or type(e).__name__)
        print("error: " + " ".join(text.split()), file=sys.stderr, flush=True)
        return 2
    finally:
        try:
            import torch.distributed as dist
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass


def build_parser():
    p = Parser(prog="prunestudio-train")
    sub = p.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", parser_class=Parser)
    register(sub)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    if args.command is None:
        p.print_help()
        return 2
    with tempfiles.signal_handlers():
        try:
            return run(args)
        except (KeyboardInterrupt, tempfiles.Terminated) as e:
            return interrupted(e)


if __name__ == "__main__":
    sys.exit(main())
