"""Steps shared by the ``prune``, ``graph`` and ``verify`` commands: settings, loading, example
inputs, analysis, JSON output, progress bars. Heavy modules (torch and the engine) are imported
inside the functions, when a command runs."""
from __future__ import annotations

import json
import sys
import time

from core.cli.args import UsageError
from core.errors import PruneStudioError


def out(msg: str = "") -> None:
    print(msg, flush=True)


def interrupted(e: BaseException) -> int:
    """SIGINT or SIGTERM ended the command: remove what an unfinished write left, print one line,
    return 130 (SIGINT) or 143 (SIGTERM)."""
    from core.io import tempfiles
    tempfiles.remove_all()
    why = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
    if tempfiles.committed_in_command():
        print(f"error: {why} after its outputs were written", file=sys.stderr, flush=True)
    else:
        print(f"error: {why}; unfinished outputs were removed, existing files are unchanged",
              file=sys.stderr, flush=True)
    return tempfiles.exit_status(e)


def warn(msg: str) -> None:
    """``warning: ...`` on stderr: the run goes on, but the user must know."""
    print(f"warning: {' '.join(str(msg).split())}", file=sys.stderr, flush=True)


def human(x, unit: str = "") -> str:
    if x is None:
        return "n/a"
    for div, suf in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suf}{unit}"
    return f"{x:.0f}{unit}" if isinstance(x, (int, float)) else str(x)


class Progress:
    """tqdm bars on stderr when it is a terminal; silent otherwise."""

    FORMAT = "{desc:<8} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]{postfix}"

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.stage = None
        self.probe = False

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


def plan_settings(args):
    """PlanSettings from the target options (``--ratio 0.5`` when no target is given)."""
    from core.plan.planner import PlanSettings
    ratio = args.ratio
    latency = getattr(args, "target_latency", None)
    if ratio is None and args.target_flops is None and args.target_params is None and latency is None:
        ratio = 0.5
    s = PlanSettings(ratio=ratio, target_flops=args.target_flops, target_params=args.target_params,
                     target_latency=latency, importance=args.importance,
                     global_ranking=bool(args.global_ranking),
                     flops_allocation=getattr(args, "flops_allocation", "latency"),
                     round_to=1 if args.round_to == "auto" else args.round_to, ignore=list(args.ignore),
                     max_group_ratio=args.max_group_ratio, seed=args.seed)
    s.validate()
    if not 0.0 < s.max_group_ratio < 1.0:
        raise UsageError(f"--max-group-ratio must be in (0, 1), got {s.max_group_ratio}")
    return s


def example_inputs(args, device, model=None):
    """The example inputs of ``--inputs`` or ``--input-shape``; without either, the model's own
    (the demo's shape, an ONNX graph's declared one, a Hugging Face config's suggestion). The shape
    and dtype used are written back to ``args`` so that what is saved with the work (a project)
    names the input that was used, not the options as typed."""
    from core.io.inputs import fit_inputs, load_inputs
    from core.trace.inputs import make_inputs
    if args.inputs and args.input_shape:
        raise UsageError("give either --input-shape or --inputs, not both")
    if args.inputs:
        return load_inputs(args.inputs, args.trust).to(device)
    if not args.input_shape:
        args.input_shape, dtype = _own_input(args.model)
        # --input-dtype given alone applies to the model's own shape
        args.input_dtype = args.input_dtype or dtype
    args.input_dtype = args.input_dtype or "float32"
    from core.io.memory import check_input_memory
    check_input_memory(args.input_shape, args.input_dtype, device,
                       None if getattr(args, "meta", False) else model)
    ex = make_inputs(args.input_shape, args.input_dtype, str(device))
    # random integer inputs are drawn in [0, 100): keep token ids inside a smaller vocabulary
    return fit_inputs(model, ex) if model is not None else ex


def _own_input(spec: str) -> tuple[str, str]:
    """(shape, dtype) a model without ``--input-shape`` takes, or a UsageError."""
    if spec == "demo":
        from core.models.demo import DEMO_INPUT_SHAPE
        return DEMO_INPUT_SHAPE, "float32"
    from core.io.sources import declared_input_shape, default_input
    declared = declared_input_shape(spec)  # an ONNX graph's own input shape
    if declared:
        return declared, "float32"
    default = default_input(spec)  # a Hugging Face model's: token ids, or an image
    if default:
        return default
    raise UsageError("the example input is missing: give --input-shape (e.g. 1,3,224,224) or "
                     "--inputs file.py:function")


def input_hint(args) -> str:
    """The input options as typed (and ``--trust``), for the meta-analysis command a too-large
    error suggests."""
    trust = " --trust" if getattr(args, "trust", False) else ""
    if getattr(args, "inputs", None):
        return f"--inputs {args.inputs}{trust}"
    if getattr(args, "input_shape", None):
        return f"--input-shape {args.input_shape}{trust}"
    return trust.strip()


def load(args, device):
    """``(model, seconds)``: on the meta device with ``--meta``, else after the memory check."""
    from core.io.memory import check_memory
    from core.io.sources import build_meta_model, load_model
    t = time.perf_counter()
    if getattr(args, "meta", False):
        if args.weights:
            raise UsageError("--meta analyses the structure only: --weights is not used with it")
        return build_meta_model(args.model, trust=args.trust), time.perf_counter() - t
    check_memory(args.model, args.weights, input_hint(args), trust=args.trust)
    model = load_model(args.model, trust=args.trust, weights=args.weights,
                       seed=getattr(args, "seed", 0))
    try:
        model = model.to(device)
    except Exception as e:  # noqa: BLE001
        raise PruneStudioError(f"moving the model to {device} failed: {type(e).__name__}: {e}") from None
    return model, time.perf_counter() - t


def check_ignore(model, names) -> None:
    mods = dict(model.named_modules())
    for n in names:
        if n not in mods:
            import difflib
            close = difflib.get_close_matches(n, [m for m in mods if m], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise PruneStudioError(f"--ignore: layer '{n}' does not exist in the model{hint}")


def analyze(model, ex, args=None, **kw):
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
        from core.io.inputs import explain_forward_failure
        raise explain_forward_failure(model, ex, e) from None


def input_paths(args) -> list[str]:
    """The files and folders the model is read from: outputs must never be written over them."""
    from core.io.specs import spec_dir, spec_file
    return [f for f in (spec_file(args.model), spec_dir(args.model), args.weights) if f]


def calibration(settings, ex):
    """The data gradient criteria need (the example inputs), None for the others."""
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


def write_json(path, data, force, sources=()) -> None:
    """Write ``data`` as JSON atomically (NaN/inf as null)."""
    from core.io.atomic import atomic_write
    from core.io.project import json_clean
    text = json.dumps(json_clean(json.loads(json.dumps(data, default=_jsonable))), indent=1)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    def check(tmp):
        with open(tmp, encoding="utf-8") as f:
            json.load(f)

    atomic_write(path, write, check, force, list(sources))
