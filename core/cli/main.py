"""Headless command line: ``python main.py prune|graph|verify ...`` (see ``--help``).

Exit codes: 0 success; 1 ``verify`` found a mismatch; 2 bad input or any PruneStudio error (one
line ``error: ...`` on stderr, no output file left behind); 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from core.errors import PruneStudioError

EPILOG = """\
MODEL is one of:
  torchvision:NAME            torchvision architecture, random weights (add --weights FILE)
  torchvision:NAME@DEFAULT    torchvision's pretrained weights, only if already in the torch hub
                              cache (nothing is downloaded)
  hf:path/to/dir              a local Hugging Face model directory (config.json + weights);
                              integer inputs (token ids) are folded into its vocabulary
  timm:NAME[@pretrained]      a timm model, random weights (@pretrained: only if already cached)
  path/to/file.py:factory     calls factory() from that file
  demo                        the built-in demo network (input 1,3,32,32)
  model.pt | model.pstudio    a saved model; pickled whole models need --trust

output (-o) by suffix:
  .pt / .pth   whole pickled model (load with torch.load(..., weights_only=False))
  .pstudio     portable form: original model spec + kept indices + pruned weights, no pickled code
               (load with core.io.formats.load_portable or use it as MODEL)
  .onnx        ONNX, checked in onnxruntime against torch
  DIR/         (a path ending in / or an existing directory; Hugging Face models) save_pretrained
               directory; reload with from_pretrained (uniform pruning) or core.adapters.hf.load_pruned,
               or use it as MODEL: hf:DIR

examples:
  python main.py prune torchvision:resnet18 --input-shape 1,3,224,224 --ratio 0.5 -o r18.pt
  python main.py prune net.py:make --input-shape 1,3,64,64 --target-flops 0.5 --global -o net.onnx
  python main.py graph torchvision:resnet18 --input-shape 1,3,224,224 --json graph.json
  python main.py verify demo --input-shape 1,3,32,32 --ratio 0.3

exit codes: 0 ok, 1 verify found a mismatch, 2 error (one line on stderr), 130 interrupted
"""

OUTPUT_SUFFIXES = (".pt", ".pth", ".pstudio", ".onnx")


class UsageError(PruneStudioError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, like every other error
        raise UsageError(f"{self.prog}: {message}")


def _fraction(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from core.plan.criteria import CRITERIA
    from core.trace.inputs import DTYPES

    p = _Parser(prog="prunestudio", description="PruneStudio: structural pruning of PyTorch models "
                "(DepGraph). Without a subcommand main.py opens the desktop application.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", parser_class=_Parser,
                           metavar="{prune,graph,verify,finetune,sparse-train,sensitivity,evaluate}")
    from core.cli.train import register as register_training
    register_training(sub)

    def model_args(sp):
        sp.add_argument("model", metavar="MODEL", help="torchvision:NAME | hf:DIR | timm:NAME | "
                        "file.py:factory | demo | saved model file")
        sp.add_argument("--input-shape", metavar="SHAPE", help="example input shape, e.g. "
                        "1,3,224,224 (several inputs separated by ';')")
        sp.add_argument("--input-dtype", default="float32", choices=sorted(DTYPES),
                        metavar="DTYPE", help="dtype of the random example input (default float32)")
        sp.add_argument("--inputs", metavar="FILE.py:FN", help="function returning example inputs "
                        "(tensor, tuple or dict) instead of --input-shape")
        sp.add_argument("--weights", metavar="FILE", help="state dict to load into MODEL")
        sp.add_argument("--trust", action="store_true", help="allow loading pickled code from "
                        "model files (only for files you trust)")
        sp.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        sp.add_argument("--attention", default="heads", choices=["heads", "head-dim"],
                        help="prune attention by whole heads (default) or by dimensions inside "
                        "every head (Swin, MaxViT, timm, nn.MultiheadAttention)")

    def target_args(sp):
        t = sp.add_mutually_exclusive_group()
        t.add_argument("--ratio", type=_fraction, help="fraction of prunable channels to remove "
                       "(default 0.5)")
        t.add_argument("--target-flops", type=_fraction, metavar="F",
                       help="fraction of FLOPs to remove (0.5 halves FLOPs)")
        t.add_argument("--target-params", type=_fraction, metavar="P",
                       help="fraction of parameters to remove")
        sp.add_argument("--importance", default="l2", choices=list(CRITERIA),
                        help="channel importance criterion (default l2)")
        r = sp.add_mutually_exclusive_group()
        r.add_argument("--global", dest="global_ranking", action="store_true",
                       help="rank channels across all groups")
        r.add_argument("--uniform", dest="global_ranking", action="store_false",
                       help="same ratio in every group (default)")
        sp.add_argument("--round-to", type=_positive_int, default=1, metavar="N",
                        help="keep channel counts a multiple of N")
        sp.add_argument("--ignore", action="append", default=[], metavar="NAME",
                        help="module whose output channels are kept (repeatable)")
        sp.add_argument("--max-group-ratio", type=_fraction, default=0.95, metavar="R",
                        help="never remove more than this fraction of one group (default 0.95)")
        sp.add_argument("--seed", type=int, default=0, help="seed for the random criterion")

    pr = sub.add_parser("prune", help="prune a model and save it", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    model_args(pr)
    target_args(pr)
    pr.add_argument("-o", "--output", metavar="OUT", help="pruned model: .pt/.pth (whole model), "
                    ".pstudio (portable), .onnx (verified in onnxruntime) or DIR/ (Hugging Face "
                    "save_pretrained directory)")
    pr.add_argument("--report", metavar="REPORT.json", help="write a JSON report")
    pr.add_argument("--project", metavar="OUT.psproj", help="save the work (model, input, settings, "
                    "plan, results) as a project file the GUI can open")
    pr.add_argument("--force", action="store_true", help="overwrite existing output files")
    pr.add_argument("--no-verify", action="store_true", help="skip the zeroed-group oracle")
    pr.add_argument("--no-latency", action="store_true", help="skip latency measurements")

    gr = sub.add_parser("graph", help="analyse the dependency graph and its coupled groups")
    model_args(gr)
    gr.add_argument("--json", metavar="FILE", help="write the graph and groups as JSON")
    gr.add_argument("--force", action="store_true", help="overwrite an existing JSON file")
    gr.add_argument("--no-probe", action="store_true", help="skip the numerical shape probes")
    gr.add_argument("--meta", action="store_true", help="analyse on the meta device: no weights "
                    "are allocated, for models too large for memory")

    ve = sub.add_parser("verify", help="check a pruning plan with the zeroed-group oracle")
    model_args(ve)
    target_args(ve)
    ve.add_argument("--tolerance", type=float, default=1e-4, help="relative tolerance "
                    "(default 1e-4)")
    ve.add_argument("--report", metavar="REPORT.json", help="write the verification as JSON")
    ve.add_argument("--force", action="store_true", help="overwrite an existing report")
    return p


# ----------------------------------------------------------------------------- progress

class _Progress:
    """tqdm bars on stderr when it is a terminal; silent otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.stage = None
        self.probe = False

    FORMAT = "{desc:<8} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]{postfix}"

    def __call__(self, stage, done, total, message=""):
        if not self.enabled:
            return
        from tqdm import tqdm
        family = "analyze" if stage in ("trace", "probe") else "prune"
        total = max(int(total), 1)
        if self.bar is None or family != self.stage or (stage == "probe") != self.probe:
            self.close()
            self.stage, self.probe = family, stage == "probe"
            self.bar = tqdm(total=total, file=sys.stderr, leave=False, dynamic_ncols=True,
                            bar_format=self.FORMAT)
        self.bar.set_description_str(stage, refresh=False)
        self.bar.total = total
        self.bar.n = min(int(done), total)
        self.bar.set_postfix_str(str(message)[:60], refresh=False)
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ----------------------------------------------------------------------------- helpers

def _human(x, unit=""):
    if x is None:
        return "n/a"
    for div, suf in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suf}{unit}"
    return f"{x:.0f}{unit}" if isinstance(x, (int, float)) else str(x)


def _settings(args):
    from core.plan.planner import PlanSettings
    ratio = args.ratio
    if ratio is None and args.target_flops is None and args.target_params is None:
        ratio = 0.5
    s = PlanSettings(ratio=ratio, target_flops=args.target_flops, target_params=args.target_params,
                     importance=args.importance, global_ranking=bool(args.global_ranking),
                     round_to=args.round_to, ignore=list(args.ignore),
                     max_group_ratio=args.max_group_ratio, seed=args.seed)
    s.validate()
    if not 0.0 < s.max_group_ratio < 1.0:
        raise UsageError(f"--max-group-ratio must be in (0, 1), got {s.max_group_ratio}")
    return s


def _inputs(args, device, model=None):
    from core.trace.inputs import make_inputs
    from core.io.sources import fit_inputs, load_inputs
    if args.inputs and args.input_shape:
        raise UsageError("give either --input-shape or --inputs, not both")
    if args.inputs:
        return load_inputs(args.inputs).to(device)
    if not args.input_shape:
        if args.model == "demo":
            from core.models.demo import DEMO_INPUT_SHAPE
            return make_inputs(DEMO_INPUT_SHAPE, args.input_dtype, str(device))
        raise UsageError("the example input is missing: give --input-shape (e.g. 1,3,224,224) or "
                         "--inputs file.py:function")
    ex = make_inputs(args.input_shape, args.input_dtype, str(device))
    # random integer inputs are drawn in [0, 100): keep token ids inside a smaller vocabulary
    return fit_inputs(model, ex) if model is not None else ex


def _input_hint(args) -> str:
    if getattr(args, "inputs", None):
        return f"--inputs {args.inputs}"
    if getattr(args, "input_shape", None):
        return f"--input-shape {args.input_shape}"
    return ""


def _load(args, device):
    from core.io.sources import build_meta_model, check_memory, load_model
    t = time.perf_counter()
    if getattr(args, "meta", False):
        if args.weights:
            raise UsageError("--meta analyses the structure only: --weights is not used with it")
        return build_meta_model(args.model, trust=args.trust), time.perf_counter() - t
    check_memory(args.model, args.weights, _input_hint(args))
    model = load_model(args.model, trust=args.trust, weights=args.weights)
    try:
        model = model.to(device)
    except Exception as e:  # noqa: BLE001
        raise PruneStudioError(f"moving the model to {device} failed: {type(e).__name__}: {e}") from None
    return model, time.perf_counter() - t


def _check_ignore(model, names):
    mods = dict(model.named_modules())
    for n in names:
        if n not in mods:
            import difflib
            close = difflib.get_close_matches(n, [m for m in mods if m], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise PruneStudioError(f"--ignore: layer '{n}' does not exist in the model{hint}")


def _analyze(model, ex, args=None, **kw):
    """analyze_model, with a forward failure explained: which layer raised, dtype mismatches."""
    from core.errors import TraceError
    from core.pipeline import analyze_model
    if args is not None and getattr(args, "attention", None):
        kw["options"] = {"attention": args.attention.replace("-", "_")}
    try:
        return analyze_model(model, ex, **kw)
    except TraceError as e:
        if "forward failed" not in str(e):
            raise
        from core.io.sources import explain_forward_failure
        raise explain_forward_failure(model, ex, e) from None


def _sources(args):
    from core.io.sources import spec_dir, spec_file
    return [f for f in (spec_file(args.model), spec_dir(args.model), args.weights) if f]


def _is_dir_output(out: str) -> bool:
    return out.endswith(("/", os.sep)) or os.path.isdir(out)


def _calibration(settings, ex):
    if settings.importance == "taylor":
        return lambda: (ex, None)
    return None


def _jsonable(o):
    import numpy as np
    import torch
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=str)
    if isinstance(o, torch.Size):
        return list(o)
    if isinstance(o, (torch.dtype, torch.device)):
        return str(o)
    return str(o)


def _write_json(path, data, force, sources=()):
    from core.io.formats import atomic_write
    from core.io.project import json_clean as _clean
    text = json.dumps(_clean(json.loads(json.dumps(data, default=_jsonable))), indent=1)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    def check(tmp):
        with open(tmp, encoding="utf-8") as f:
            json.load(f)

    atomic_write(path, write, check, force, list(sources))


def _pickle_note(model, out) -> str | None:
    """Whole-model pickles name their classes' modules; warn when one is a user file that will
    only import with its folder on the Python path."""
    files = set()
    for m in model.modules():
        mod = sys.modules.get(type(m).__module__)
        f = getattr(mod, "__file__", None)
        if not f:
            continue
        folder = os.path.dirname(os.path.abspath(f))
        on_path = any(os.path.abspath(p or os.getcwd()) == folder for p in sys.path)
        private = type(m).__module__.startswith("_prunestudio_user_")
        if private or not on_path and "site-packages" not in folder and not \
                f.startswith(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))):
            files.add(f)
    if not files:
        return None
    return (f"note: {out} pickles classes defined in {', '.join(sorted(files))}; loading it needs "
            f"that folder on PYTHONPATH, as the working folder or next to the file (or save the "
            f"portable .pstudio form)")


def _out(msg=""):
    print(msg, flush=True)


# ----------------------------------------------------------------------------- commands

def cmd_prune(args, progress) -> int:
    from core.pipeline import device_of, prune_model
    from core.io.formats import (check_destination, check_hf_destination, export_onnx, is_hf_model,
                            save_hf_dir, save_portable, save_whole)

    t_start = time.perf_counter()
    settings = _settings(args)
    srcs = _sources(args)
    out = args.output
    out_dir = bool(out) and _is_dir_output(out)
    if out_dir:
        check_hf_destination(out, args.force, srcs)
    elif out:
        if not out.lower().endswith(OUTPUT_SUFFIXES):
            raise UsageError(f"output {out}: unknown suffix; use .pt, .pth, .pstudio, .onnx or a "
                             f"directory DIR/ (Hugging Face models)")
        check_destination(out, args.force, srcs)
    if args.report:
        if out and os.path.abspath(args.report) == os.path.abspath(out):
            raise UsageError("--report and -o name the same file")
        check_destination(args.report, args.force, srcs)
    if args.project:
        if not args.project.lower().endswith(".psproj"):
            raise UsageError(f"--project {args.project}: the project file must end in .psproj")
        if os.path.abspath(args.project) in {os.path.abspath(f) for f in (out, args.report) if f}:
            raise UsageError("--project names the same file as -o or --report")
        check_destination(args.project, args.force, srcs)
    device = device_of(args.device)
    model, t_load = _load(args, device)
    if out_dir and not is_hf_model(model):
        raise UsageError(f"output {out}: a directory output is for Hugging Face models "
                         f"(save_pretrained); this model is a {type(model).__name__}: use .pt, "
                         f".pstudio or .onnx")
    ex = _inputs(args, device, model)
    _check_ignore(model, settings.ignore)

    t = time.perf_counter()
    dg = _analyze(model, ex, args, progress=progress)
    t_analyze = time.perf_counter() - t
    result = prune_model(model, ex, dg, settings, latency=not args.no_latency,
                         verify=not args.no_verify, calibration=_calibration(settings, ex),
                         progress=progress)
    progress.close()

    seconds = {"load": t_load, "analyze": t_analyze}
    written = []
    onnx_diff = None
    try:
        if out:
            t = time.perf_counter()
            low = out.lower()
            if out_dir:
                save_hf_dir(result.model, out, force=args.force, source=srcs)
            elif low.endswith(".onnx"):
                onnx_diff = export_onnx(result.model, ex, out, force=args.force, source=srcs)
            elif low.endswith(".pstudio"):
                save_portable(out, args.model, result.kept, result.model.state_dict(),
                              force=args.force, source=srcs, plan=result.plan, trust=args.trust,
                              meta={"input": ex.describe(), "settings": settings.to_json()})
            else:
                save_whole(result.model, out, force=args.force, source=srcs)
            written.append(out)
            seconds["save"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - t_start
        report = result.report(dg)
        report["seconds"] = {**report.get("seconds", {}), **seconds}
        report.update({"model": args.model, "weights": args.weights, "input": ex.describe(),
                       "device": str(device), "settings": settings.to_json(), "output": out,
                       "onnx_max_abs_diff": onnx_diff})
        if args.report:
            _write_json(args.report, report, args.force, srcs)
            written.append(args.report)
        if args.project:
            from core.io.project import project_from, save_project
            proj = project_from(args.model, settings, result=result, shape=args.input_shape,
                                dtype=args.input_dtype, inputs_fn=args.inputs,
                                weights=args.weights, trust=args.trust, device=args.device,
                                model=model, dg=dg)
            proj.describe = ex.describe()
            save_project(args.project, proj, force=args.force)
            written.append(args.project)
    except BaseException:
        for f in written:  # all or nothing
            try:
                if os.path.isdir(f):
                    import shutil
                    shutil.rmtree(f)
                else:
                    os.remove(f)
            except OSError:
                pass
        raise

    b, a = result.before, result.after
    _out(f"model: {args.model}  input: {ex.describe()}  device: {device}")
    _out(f"groups: {len(dg.groups)} ({len(dg.prunable_groups)} prunable), "
         f"{result.plan.n_removed} channels removed")
    _out(f"params: {_human(b.params)} -> {_human(a.params)} "
         f"(-{report['reduction']['params']:.1%})")
    _out(f"FLOPs:  {_human(b.flops)} -> {_human(a.flops)} (-{report['reduction']['flops']:.1%})")
    if b.latency_ms and a.latency_ms:
        _out(f"latency: {b.latency_ms:.2f} ms -> {a.latency_ms:.2f} ms "
             f"(x{b.latency_ms / a.latency_ms:.2f})")
    if result.verify is not None:
        _out(f"verify: {result.verify.message}")
    for root, why in result.excluded.items():
        _out(f"excluded group {root}: {why}")
    if onnx_diff is not None:
        _out(f"onnx: onnxruntime vs torch max abs difference {onnx_diff:.3g}")
    if out:
        _out(f"saved: {out}")
        if out_dir:
            uniform = (getattr(result.model.config, "prunestudio", None) or {}).get("uniform", True)
            how = (f"{type(result.model).__name__}.from_pretrained('{out}')" if uniform else
                   f"core.adapters.hf.load_pruned({type(result.model).__name__}, '{out}') (non-uniform "
                   f"pruning: the config cannot describe it)")
            _out(f"reload: {how}, or use hf:{out} as MODEL")
        if out.lower().endswith((".pt", ".pth")):
            note = _pickle_note(result.model, out)
            if note:
                _out(note)
    if args.report:
        _out(f"report: {args.report}")
    if args.project:
        _out(f"project: {args.project}")
    _out(f"time: {seconds['total']:.2f} s")
    return 0


def cmd_graph(args, progress) -> int:
    from core.pipeline import device_of
    srcs = _sources(args)
    if args.json:
        from core.io.formats import check_destination
        check_destination(args.json, args.force, srcs)
    device = device_of(args.device)
    model, t_load = _load(args, device)
    ex = _inputs(args, device, model)
    if args.meta:
        ex = ex.to("meta")
    try:
        dg = _analyze(model, ex, args, probe=not args.no_probe, progress=progress)
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
        _write_json(args.json, data, args.force, srcs)
    _out(f"model: {args.model}  input: {ex.describe()}" + ("  (meta device: structure only, "
                                                            "no weights)" if args.meta else ""))
    _out(f"graph: {dg.graph.number_of_nodes()} nodes, {dg.graph.number_of_edges()} edges")
    _out(f"groups: {len(dg.groups)} ({len(dg.prunable_groups)} prunable)")
    for g in dg.groups:
        state = "prunable" if g.is_prunable else "blocked"
        layers = ", ".join(x for x in g.layers if x)[:100]
        _out(f"  #{g.id:<4} {g.n_channels:>5} ch  {g.n_prunable:>5} prunable  {state:<8} {layers}")
    if dg.blocked_ops:
        _out("blocked ops: " + "; ".join(f"{k} at {', '.join(v[:3])}" for k, v in dg.blocked_ops.items()))
    if args.json:
        _out(f"saved: {args.json}")
    return 0


def cmd_verify(args, progress) -> int:
    from core.pipeline import cost_model, device_of
    from core.plan.planner import make_plan
    from core.io.formats import check_destination
    from core.prune.verify import verify_plan
    settings = _settings(args)
    srcs = _sources(args)
    if args.report:
        check_destination(args.report, args.force, srcs)
    device = device_of(args.device)
    model, t_load = _load(args, device)
    ex = _inputs(args, device, model)
    _check_ignore(model, settings.ignore)
    dg = _analyze(model, ex, args, progress=progress)
    progress("plan", 0, 2, "planning")
    plan = make_plan(dg, model, settings, cost=cost_model(dg, model, ex),
                     calibration=_calibration(settings, ex))
    progress("verify", 1, 2, "zeroed-group oracle")
    rep = verify_plan(model, ex, dg, plan, tolerance=args.tolerance)
    progress.close()
    if args.report:
        _write_json(args.report, {"model": args.model, "input": ex.describe(),
                                  "settings": settings.to_json(), "plan": plan.to_json(),
                                  "verify": rep.to_json()}, args.force, srcs)
    kind = "exact" if rep.expected_exact else "approximate by design"
    _out(f"model: {args.model}  input: {ex.describe()}")
    _out(f"plan: {plan.n_removed} channels removed in "
         f"{sum(1 for v in plan.removed.values() if v)} of {len(dg.prunable_groups)} prunable groups")
    _out(f"max abs difference: {rep.max_abs_diff:.3g} (relative {rep.max_rel_diff:.3g}, "
         f"tolerance {rep.tolerance:g})")
    _out(f"expected: {kind}")
    for r in rep.approximate_reasons[:10]:
        _out(f"  approximate: {r}")
    _out(f"result: {'PASS' if rep.passed else 'MISMATCH'}: {rep.message}")
    if not rep.passed:
        print(f"error: verification failed: {rep.message}", file=sys.stderr, flush=True)
        return 1
    return 0


# ----------------------------------------------------------------------------- entry point

def _error_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename}" if e.filename else ""
        text = f"{e.strerror}{where}"
    else:
        text = str(e) or type(e).__name__
    return "error: " + " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    progress = _Progress(enabled=sys.stderr.isatty())
    try:
        if not argv:
            parser.print_help()
            return 2
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help
            return int(e.code or 0)
        if args.command is None:
            parser.print_help()
            return 2
        if getattr(args, "train_command", False):
            from core.cli.train import run as run_training
            return run_training(args)
        cmd = {"prune": cmd_prune, "graph": cmd_graph, "verify": cmd_verify}[args.command]
        return cmd(args, progress)
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): files are written
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        progress.close()
        print("error: interrupted", file=sys.stderr, flush=True)
        return 130
    except (PruneStudioError, OSError, ValueError) as e:
        progress.close()
        print(_error_line(e), file=sys.stderr, flush=True)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug: still one line, but say so
        progress.close()
        if os.environ.get("PRUNESTUDIO_DEBUG"):
            raise
        print(f"error: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} "
              f"(set PRUNESTUDIO_DEBUG=1 for the traceback)", file=sys.stderr, flush=True)
        return 2
    finally:
        progress.close()
