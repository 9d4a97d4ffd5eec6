"""``prune``: load a model, analyse it, plan and prune to a target, write the outputs (``-o`` in any
form of :data:`core.io.exporters.EXPORTERS`, ``--report``, ``--project``) and print a summary.

Every output is checked *before* the work starts (suffix, folder, overwrite, not the input file),
and the outputs are all or nothing: they are staged and committed together
(:class:`core.io.atomic.OutputSet`), so a failure leaves every existing file as it was.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field

from core.cli.args import UsageError, model_args, positive_int, target_args
from core.cli.verify import approximate_args, approximate_options
from core.cli.common import (analyze, calibration, check_ignore, example_inputs, human, input_paths,
                             load, out, plan_settings, warn, write_json)
from core.cli.prune_stream import cmd_stream, stream_args, wants_stream


def register(subparsers, epilog: str) -> None:
    from core.io.exporters import output_help

    def fill(pr):
        model_args(pr)
        target_args(pr)
        pr.add_argument("-o", "--output", metavar="OUT", help=output_help())
        pr.add_argument("--report", metavar="REPORT.json", help="write a JSON report")
        pr.add_argument("--project", metavar="OUT.psproj", help="save the work (model, input, "
                        "settings, plan, results) as a project file the GUI can open")
        pr.add_argument("--force", action="store_true", help="overwrite existing output files")
        pr.add_argument("--no-verify", action="store_true", help="skip the zeroed-group oracle")
        pr.add_argument("--no-latency", action="store_true", help="skip latency measurements")
        approximate_args(pr)
        stream_args(pr)
        pr.add_argument("--threads", type=positive_int, metavar="N", help="torch threads while "
                        "timing (default: torch's own count); the original and the pruned model "
                        "are timed interleaved with the same count")
        pr.add_argument("--latency-table", metavar="FILE.json", help="with --target-latency: plan "
                        "with this saved per-layer latency table (e.g. measured on another "
                        "device), or, if FILE does not exist, save the tables measured here to it")

    pr = subparsers.add_parser("prune", help="prune a model and save it", epilog=epilog,
                               formatter_class=argparse.RawDescriptionHelpFormatter, fill=fill)
    pr.set_defaults(run=cmd_prune)


@dataclass
class _Run:
    """What one ``prune`` run has gathered so far, handed from step to step."""
    args: argparse.Namespace
    settings: object = None
    sources: list = field(default_factory=list)
    exporter: object = None  # the Exporter of -o, None without -o
    device: object = None
    model: object = None
    inputs: object = None
    dg: object = None
    result: object = None
    report: dict = field(default_factory=dict)
    check_diff: float | None = None  # the exporter's check against torch (ONNX: onnxruntime)
    round_auto: dict | None = None  # what --round-to auto measured and chose
    table: object = None  # the LatencyTable loaded from --latency-table
    onnx_latency: object = None  # (original, pruned) Timing in onnxruntime (original: None if not exported)
    seconds: dict = field(default_factory=dict)


def cmd_prune(args, progress) -> int:
    if wants_stream(args):  # hf:DIR larger than memory: core/cli/prune_stream.py
        return cmd_stream(args, progress)
    t_start = time.perf_counter()
    run = _Run(args, settings=plan_settings(args), sources=input_paths(args))
    _check_outputs(run)
    _load(run)
    _prune(run, progress)
    _write_outputs(run, t_start)
    _print_summary(run)
    return 0


def _check_outputs(run: _Run) -> None:
    """Refuse bad output names before anything is loaded."""
    from core.io.atomic import check_destination
    from core.io.exporters import exporter_for, suffix_choices
    args, srcs, o = run.args, run.sources, run.args.output
    if o:
        run.exporter = exporter_for(o)
        if run.exporter is None:
            raise UsageError(f"output {o}: unknown suffix; use {suffix_choices()}")
        run.exporter.check_destination(o, args.force, srcs)
    _check_latency_args(args, srcs)
    if args.report:
        if o and os.path.abspath(args.report) == os.path.abspath(o):
            raise UsageError("--report and -o name the same file")
        check_destination(args.report, args.force, srcs)
    if args.project:
        from core.io.project import PROJECT_SUFFIX
        if not args.project.lower().endswith(PROJECT_SUFFIX):
            raise UsageError(f"--project {args.project}: the project file must end in {PROJECT_SUFFIX}")
        if os.path.abspath(args.project) in {os.path.abspath(f) for f in (o, args.report) if f}:
            raise UsageError("--project names the same file as -o or --report")
        check_destination(args.project, args.force, srcs)


def _check_latency_args(args, srcs) -> None:
    from core.io.atomic import check_destination
    if args.latency_table is None:
        return
    if args.target_latency is None:
        raise UsageError("--latency-table needs --target-latency")
    if args.no_latency:
        raise UsageError("--target-latency is checked by measurement: drop --no-latency")
    if not os.path.exists(args.latency_table):
        if os.path.abspath(args.latency_table) in {os.path.abspath(f) for f in
                                                   (args.output, args.report, args.project) if f}:
            raise UsageError("--latency-table names the same file as another output")
        check_destination(args.latency_table, args.force, srcs)


def _load(run: _Run) -> None:
    """The model (refused early when the output form cannot hold it) and its example inputs."""
    from core.pipeline import device_of
    run.device = device_of(run.args.device)
    run.model, run.seconds["load"] = load(run.args, run.device)
    why = run.exporter.unsuitable(run.model) if run.exporter is not None else None
    if why:
        raise UsageError(f"output {run.args.output}: {why}")
    run.inputs = example_inputs(run.args, run.device, run.model)
    check_ignore(run.model, run.settings.ignore)
    args = run.args
    if args.round_to == "auto":
        from core.metrics.widths import best_multiple
        run.settings.round_to, run.round_auto = best_multiple(run.device, args.threads)
        run.settings.round_auto = True
    if args.latency_table and os.path.exists(args.latency_table):
        from core.plan.latency import LatencyTable
        run.table = LatencyTable.load(args.latency_table)


def _prune(run: _Run, progress) -> None:
    from core.pipeline import prune_model
    t = time.perf_counter()
    run.dg = analyze(run.model, run.inputs, run.args, progress=progress)
    run.seconds["analyze"] = time.perf_counter() - t
    run.result = prune_model(run.model, run.inputs, run.dg, run.settings,
                             latency=not run.args.no_latency, verify=not run.args.no_verify,
                             calibration=calibration(run.settings, run.inputs), progress=progress,
                             threads=run.args.threads, latency_table=run.table,
                             **approximate_options(run.args))
    progress.close()


def _check_fields(run: _Run) -> dict:
    """The report's field of every checking output form: the difference found, or None."""
    from core.io.exporters import EXPORTERS
    fields = {e.report_key: None for _, e in EXPORTERS.items() if e.report_key}
    if run.exporter is not None and run.exporter.report_key:
        fields[run.exporter.report_key] = run.check_diff
        if getattr(run.check_diff, "oracle_diff", None) is not None:
            fields["onnx_oracle_max_abs_diff"] = run.check_diff.oracle_diff
    return fields


def _write_outputs(run: _Run, t_start: float) -> None:
    """-o, --report and --project: all staged, then committed together - or, if any fails, every
    existing file stays exactly as it was."""
    from core.io.atomic import OutputSet
    from core.io.onnx.speed import speed_json
    args, result, ex, srcs = run.args, run.result, run.inputs, run.sources
    with OutputSet() as outs:
        if args.output:
            t = time.perf_counter()
            run.check_diff = run.exporter.write(
                result.model, args.output, inputs=ex, force=args.force, source=srcs,
                spec=args.model, kept=result.kept, plan=result.plan, trust=args.trust,
                meta={"input": ex.describe(), "settings": run.settings.to_json(),
                      "seed": args.seed})
            run.seconds["save"] = time.perf_counter() - t
            _time_onnx(run, outs)
        if args.latency_table and run.table is None and result.latency_table is not None:
            write_json(args.latency_table, result.latency_table.to_json(), args.force, srcs)
        run.seconds["total"] = time.perf_counter() - t_start
        result.warnings += getattr(run.check_diff, "warnings", [])
        report = result.report(run.dg)
        report["seconds"] = {**report.get("seconds", {}), **run.seconds}
        report.update({"model": args.model, "weights": args.weights, "seed": args.seed,
                       "input": ex.describe(), "device": str(run.device),
                       "settings": run.settings.to_json(), "output": args.output,
                       "round_to_auto": run.round_auto,
                       "flops_allocation": _allocation(result.plan),
                       "onnx_latency": speed_json(run.onnx_latency),
                       **_check_fields(run)})
        run.report = report
        if args.report:
            write_json(args.report, report, args.force, srcs)
        if args.project:
            _save_project(run)
        outs.commit()


def _allocation(plan) -> dict | None:
    """How a FLOPs target was spread over the groups (core.plan.latency_model), or None."""
    st = plan.settings
    if st.get("modelled_latency_reduction") is None:
        return None
    return {k: st.get(k) for k in ("flops_allocation", "modelled_latency_reduction",
                                   "modelled_memory_share")}


def _time_onnx(run: _Run, outs) -> None:
    """The exported .onnx (still staged) timed in onnxruntime against the original exported the
    same way: the speed-up where many users deploy."""
    args = run.args
    if args.no_latency or not args.output.lower().endswith(".onnx"):
        return
    from core.io.onnx.speed import time_against_original
    staged = [s for s in outs.staged if os.path.abspath(s.path) == os.path.abspath(args.output)]
    if not staged or staged[0].is_dir:
        return
    try:
        run.onnx_latency = time_against_original(run.model, run.inputs, staged[0].tmp,
                                                 threads=args.threads, warnings=run.result.warnings)
    except Exception as e:  # noqa: BLE001 - a figure we could not take is said, not fatal
        run.result.warnings.append(f"the ONNX model could not be timed in onnxruntime: {e}"[:300])


def _save_project(run: _Run) -> None:
    from core.io.project import project_from, save_project
    args = run.args
    proj = project_from(args.model, run.settings, result=run.result, shape=args.input_shape,
                        dtype=args.input_dtype or "float32", inputs_fn=args.inputs, weights=args.weights,
                        device=args.device, model=run.model, dg=run.dg, seed=args.seed)
    proj.describe = run.inputs.describe()
    save_project(args.project, proj, force=args.force)


def _print_summary(run: _Run) -> None:
    args, result, dg, report = run.args, run.result, run.dg, run.report
    b, a = result.before, result.after
    out(f"model: {args.model}  input: {run.inputs.describe()}  device: {run.device}")
    out(f"groups: {len(dg.groups)} ({len(dg.prunable_groups)} prunable), "
        f"{result.plan.n_removed} channels removed")
    out(f"params: {human(b.params)} -> {human(a.params)} (-{report['reduction']['params']:.1%})")
    out(f"FLOPs:  {human(b.flops)} -> {human(a.flops)} (-{report['reduction']['flops']:.1%})")
    if run.round_auto:
        used = result.plan.settings.get("round_to_groups") or {}
        per = ", ".join(f"{len(g)} at {m}" for m, g in sorted(used.items(), key=lambda kv: -int(kv[0])))
        out(f"round-to auto: multiples of {run.settings.round_to} "
            f"({'cached' if run.round_auto.get('cached') else 'measured'} on {run.device})"
            + (f"; groups: {per}" if per else ""))
    for line in latency_lines(result, str(run.device)):
        out(line)
    if run.onnx_latency is not None:
        from core.io.onnx.speed import speed_line
        out(speed_line(run.onnx_latency))
    if result.verify is not None:
        out(f"verify: {result.verify.message}")
    for root, why in result.excluded.items():
        out(f"excluded group {root}: {why}")
    exp = run.exporter
    if run.check_diff is not None:
        out(f"{exp.suffixes[0].lstrip('.') if exp.suffixes else 'output'}: {exp.checked_by} vs "
            f"torch max abs difference {run.check_diff:.3g}")
        for line in getattr(run.check_diff, "info", []):
            out(line)
    if args.output:
        out(f"saved: {args.output}")
        for line in exp.notes(result.model, args.output):
            out(line)
    if args.report:
        out(f"report: {args.report}")
    if args.project:
        out(f"project: {args.project}")
    out(f"time: {run.seconds['total']:.2f} s")
    for line in result.warnings:
        warn(line)


def latency_lines(result, device: str) -> list[str]:
    """Before and after with their spread, the speed-up worded right, and for a latency target
    the tables' estimate against the measurement."""
    from core.metrics import speedup_text
    b, a = result.before, result.after
    if not (b.latency_ms and a.latency_ms):
        return []
    lines = [f"latency: {b.latency_ms:.2f} ms (IQR {b.latency_q1_ms:.2f}-{b.latency_q3_ms:.2f}) -> "
             f"{a.latency_ms:.2f} ms (IQR {a.latency_q1_ms:.2f}-{a.latency_q3_ms:.2f}): "
             f"{speedup_text(b.latency_ms, a.latency_ms)}  [{device}, {a.latency_threads} threads, "
             f"{a.latency_runs} interleaved runs, stopped: {a.latency_stop}"
             f"{', original cached' if b.latency_stop == 'cached' else ''}]"]
    st = result.plan.settings
    if st.get("target_latency") is not None and "estimated_latency_reduction" in st:
        from core.metrics.latency_target import LoopStep
        steps = [LoopStep(**s) for s in st.get("latency_loop") or []]
        lines += [step.line(i + 1) for i, step in enumerate(steps)]
        iqr = st.get("measured_latency_iqr")
        kept = (f"; kept plan measured {st['measured_latency_reduction']:.1%} (IQR {iqr[0]:.1%} to "
                f"{iqr[1]:.1%}) while planning" if steps and iqr else "")
        lines.append(f"latency target {st['target_latency']:.1%}: tables estimated "
                     f"{st['estimated_latency_reduction']:.1%}, measured "
                     f"{1 - a.latency_ms / b.latency_ms:.1%} in the final timing{kept}"
                     + ("" if st.get("latency_target_met") is not False else " - NOT met"))
    return lines
