"""ONNX export, verified: the written file is run in onnxruntime on CPU and its outputs compared
with torch's before it is moved into place."""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import re
import warnings

import torch
from torch import nn

from core.errors import PruneStudioError, VerificationError
from core.io.atomic import atomic_write, remove_quietly
from core.prune.weak import input_independent, run_hooked
from core.trace.inputs import as_example_inputs


def _flat(x) -> list[torch.Tensor]:
    from core.trace.tracer import flatten_outputs
    return [t for t in flatten_outputs(x) if isinstance(t, torch.Tensor)]


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings; keep the CLI's output clean."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "onnxscript", "torch.fx")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


class CheckedDiff(float):
    """The max abs difference onnxruntime vs torch, with ``warnings`` (one line each) when an
    output does not depend on the input (it matches whatever the file computes): they say how many
    intermediate activations were compared instead, or that the check is weak; or that the batch
    dimension could not be made dynamic. ``info``: lines about further checks (the ONNX oracle);
    ``dynamic_batch``: whether the file takes any batch size (checked at two)."""
    warnings: list[str]
    info: list[str]
    dynamic_batch: bool
    oracle_diff: float | None

    def __new__(cls, value: float, warnings: list[str] | None = None):
        obj = super().__new__(cls, value)
        obj.warnings = list(warnings or [])
        obj.info, obj.dynamic_batch, obj.oracle_diff = [], False, None
        return obj


def _non_finite(arrays) -> str | None:
    import numpy as np
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.size and a.dtype.kind in "fc" and not np.isfinite(a).all():
            return (f"output {i} {tuple(a.shape)} has {int((~np.isfinite(a)).sum())} of {a.size} "
                    f"values NaN or inf")
    return None


def _cut(e: BaseException) -> str:
    """One line of an exporter's error, without the terminal colour codes torch puts in it."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    return f"{type(e).__name__}: {' '.join(text.split())[:200]}"


# leaf modules whose output the ONNX graph computes as one tensor: convs, linears, norms,
# activations
_CHECKED = {"torch.nn.modules.conv", "torch.nn.modules.linear", "torch.nn.modules.batchnorm",
            "torch.nn.modules.normalization", "torch.nn.modules.instancenorm",
            "torch.nn.modules.activation"}


def _torch_activations(model: nn.Module, ex) -> list[tuple[str, nn.Module, torch.Tensor, bool]]:
    """(name, module, output, fused_ok) for every call of a checked leaf module, in call order;
    ``fused_ok``: the output only feeds the next checked module (an exporter may fuse the two,
    conv + batch norm, so the file has no tensor for it)."""
    calls, alive, handles = [], [], []
    for name, mod in model.named_modules():
        if not name or next(mod.children(), None) is not None or isinstance(mod, nn.Identity):
            continue
        if not any(c.__module__ in _CHECKED for c in type(mod).__mro__):
            continue

        def hook(m, args, out, name=name):
            if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel():
                alive.append(out)  # ids stay unique while the outputs live
                calls.append([name, m, out.detach().clone(), id(out),
                              {id(a) for a in args if isinstance(a, torch.Tensor)}])

        handles.append(mod.register_forward_hook(hook))
    run_hooked(model, ex, handles)
    return [(name, m, out, k + 1 < len(calls) and oid in calls[k + 1][4])
            for k, (name, m, out, oid, _) in enumerate(calls)]


def _onnx_intermediates(path: str, feeds: dict) -> list:
    """Every float tensor the ONNX file's nodes produce (with a type after shape inference), run
    in onnxruntime on ``feeds``, plus the inputs."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    g = model.graph
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.output)
             if v.type.HasField("tensor_type")}
    have = {o.name for o in g.output}
    for node in g.node:
        for name in node.output:
            if name and name not in have and types.get(name) in floats:
                g.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
                have.add(name)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [np.asarray(a) for a in sess.run(None, feeds)] + list(feeds.values())


def _closest(r, cands: list, limit: float) -> tuple[bool, float]:
    """(whether some candidate is within ``limit`` of ``r`` everywhere, the smallest max abs
    difference); a sample of the values rules most candidates out cheaply."""
    import numpy as np
    pick = np.random.default_rng(0).integers(0, r.size, min(r.size, 64))
    for c in cands:
        if (float(np.abs(c.flat[pick] - r.flat[pick]).max()) <= limit
                and float(np.abs(c.astype(np.float64) - r).max()) <= limit):
            return True, 0.0
    return False, min((float(np.abs(c.astype(np.float64) - r).max()) for c in cands),
                      default=float("inf"))


def _compare_intermediates(model: nn.Module, ex, path: str, feeds: dict, tolerance: float) -> int:
    """Require every torch activation (:func:`_torch_activations`) to be matched by an onnxruntime
    intermediate value of its shape within ``tolerance`` relative to its scale (a tensor far
    smaller than the others is judged on their scale: cancellations). Returns how many were
    compared; raises :class:`VerificationError` naming the first module not matched."""
    import numpy as np
    acts = _torch_activations(model, ex)
    by_shape: dict[tuple, list] = {}
    for a in _onnx_intermediates(path, feeds):
        if a.dtype.kind == "f" and a.size:
            by_shape.setdefault(tuple(a.shape), []).append(a)
    top = max((float(t.abs().max()) for _, _, t, _ in acts if torch.isfinite(t).all()), default=0.0)

    def mismatch(name, mod, r, best, n, scale):
        near = (f"the closest of {n} values of that shape differs by {best:.3g}, scale {scale:.3g}"
                if n else "the file has no value of that shape")
        return VerificationError(f"onnxruntime's intermediate values do not match torch's at module "
                                 f"'{name}' ({type(mod).__name__}, output {tuple(r.shape)}; {near}): "
                                 f"the ONNX file computes something else")

    pending = None  # an output the exporter may have fused into the next module: judged with it
    for name, mod, t, fused_ok in acts:
        r = t.double().numpy()
        scale = max(float(np.abs(r).max()), top * 1e-3, 1e-12)
        cands = by_shape.get(tuple(r.shape), [])
        ok, best = _closest(r, cands, tolerance * scale)
        if ok:
            pending = None
        elif pending is not None:
            raise mismatch(*pending)
        elif fused_ok:
            pending = (name, mod, r, best, len(cands), scale)
        else:
            raise mismatch(name, mod, r, best, len(cands), scale)
    if pending is not None:
        raise mismatch(*pending)
    return len(acts)


def _weak_lines(weak: list[str], model: nn.Module, ex, path: str, feeds: dict,
                tolerance: float) -> list[str]:
    """The warnings for outputs that do not depend on the input (``weak``), once the intermediate
    activations have been compared (a mismatch raises :class:`VerificationError`)."""
    if not weak:
        return []
    try:
        n = _compare_intermediates(model, ex, path, feeds, tolerance)
    except VerificationError:
        raise
    except Exception as e:  # noqa: BLE001 - an exotic graph: keep the final verdict, say it is weak
        why = f"the intermediate activations could not be compared ({_cut(e)})"
    else:
        if n:
            return [f"onnx: {line}: {n} intermediate activations were compared instead"
                    for line in weak]
        why = "no intermediate activation could be compared"
    return [f"onnx: {line}: the onnxruntime comparison cannot fail on it and {why}, so the check "
            f"is weak" for line in weak]


def _ort_run(path: str, feeds_t: list, names_out: list | None = None, quiet: bool = False) -> list:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 4 if quiet else 3  # quiet: a failure is expected and reported by us
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    if len(names) != len(feeds_t):
        raise RuntimeError(f"the ONNX graph takes {len(names)} inputs, the model {len(feeds_t)}")
    if names_out is not None:
        names_out[:] = names
    return sess.run(None, {n: t.detach().numpy() for n, t in zip(names, feeds_t)})


def _max_diff(outs, ref) -> tuple[float, float]:
    import numpy as np
    diff, scale = 0.0, 0.0
    for o, r in zip(outs, ref):
        r = r.detach().double().numpy()
        if r.size:
            diff = max(diff, float(np.abs(o.astype(np.float64) - r).max()))
            scale = max(scale, float(np.abs(r).max()))
    return diff, scale


def _batch_ok(model, ex, path: str, tolerance: float) -> str | None:
    """Why the file does not compute torch's outputs at another batch size (None when it does)."""
    from core.io.onnx.names import batch_size, with_batch
    b = batch_size(list(ex.args) + list(ex.kwargs.values()))
    other = with_batch(ex, 3 if b != 3 else 2)
    try:
        with torch.no_grad():
            ref = _flat(other.call(model))
    except Exception as e:  # noqa: BLE001 - the model is written for its example's batch only
        return f"the model itself does not run at batch {other.args[0].shape[0] if other.args else '?'}: {_cut(e)}"
    try:
        outs = _ort_run(path, list(other.args) + list(other.kwargs.values()), quiet=True)
    except Exception as e:  # noqa: BLE001
        return _cut(e)
    if [tuple(o.shape) for o in outs] != [tuple(r.shape) for r in ref]:
        return "the outputs' shapes differ"
    diff, scale = _max_diff(outs, ref)
    return None if diff <= tolerance * max(scale, 1.0) else f"outputs differ by {diff:.3g}"


def export_onnx(model: nn.Module, inputs, path: str, force: bool = False, source=None,
                tolerance: float = 1e-3, opset: int | None = None, should_stop=None,
                oracle=None) -> CheckedDiff:
    """Export to ONNX (dynamo exporter, falling back to the TorchScript one), run the file in
    onnxruntime on CPU and return the max abs difference to torch's outputs. Raises (leaving no
    file) if no exporter succeeds, onnxruntime cannot run the file, or the outputs differ by more
    than ``tolerance`` relative to the output scale, or either side has NaN or inf values. When an
    output does not depend on the input (a dead or zero head), the intermediate activations are
    compared too (:func:`_compare_intermediates`; a mismatch raises). The difference returned is a
    :class:`CheckedDiff`: its ``warnings`` say so, or that the check is weak.

    The file's inputs and outputs are named (:mod:`core.io.onnx.names`) and its batch dimension is
    dynamic when the model allows it: the file is then also run at another batch size and
    compared with torch; otherwise it is exported with the example's batch and a warning says so.
    ``oracle(path)``: a further check of the written file (the ONNX oracle of an imported ONNX
    model, :mod:`core.io.onnx.oracle`) returning (max abs difference, lines to print); it raises
    :class:`VerificationError` on a mismatch."""
    from core.io.onnx.names import (batch_size, dynamic_shapes, input_names, is_dynamic, name_batch_dim,
                                    output_names, with_batch)
    ex = as_example_inputs(inputs).to("cpu")
    model = copy.deepcopy(model).cpu().eval()
    cfg = getattr(model, "config", None)  # a Hugging Face model: the file computes the logits; a
    if getattr(cfg, "use_cache", False):  # key/value cache (no exporter takes it) is generation's
        cfg.use_cache = False
    with torch.no_grad():
        raw = ex.call(model)
        ref = _flat(raw)
    bad = _non_finite([r.detach().cpu().double().numpy() if r.is_floating_point() else
                       r.detach().cpu().numpy() for r in ref])
    if bad is not None:
        raise VerificationError(f"cannot check an ONNX export of this model: torch's own {bad} "
                                f"(are its weights or inputs broken?)")
    weak = input_independent(model, ex, ref)
    feeds_t = list(ex.args) + list(ex.kwargs.values())
    if not all(isinstance(t, torch.Tensor) for t in feeds_t):
        raise PruneStudioError("ONNX export needs every example input to be a tensor")
    result = {"notes": []}
    in_names = input_names(model, ex)
    out_names = output_names(model, raw, len(ref))
    batch = batch_size(feeds_t)

    def export(tmp, dynamo, dynamic):
        remove_quietly(tmp)
        kw = {"dynamo": dynamo, "kwargs": ex.kwargs or None, "input_names": in_names,
              "output_names": out_names}
        if dynamo:
            kw["external_data"] = False  # one self-contained file (models < 2 GB)
            if dynamic:
                kw["dynamic_shapes"] = dynamic_shapes(model, ex)
        elif dynamic:
            kw["dynamic_axes"] = {n: {0: "batch"} for n in in_names} | {
                n: {0: "batch"} for n, r in zip(out_names, ref) if r.dim() and r.shape[0] == batch}
        if opset is not None:
            kw["opset_version"] = opset
        args = ex.args
        if dynamic and batch == 1:  # traced at batch 1, sizes such as 8 * batch are baked in
            two = with_batch(ex, 2)
            args, kw["kwargs"] = two.args, two.kwargs or None
        with _quiet(), torch.no_grad():
            torch.onnx.export(model, args, tmp, **kw)
        if not os.path.exists(tmp) or os.path.getsize(tmp) == 0:
            raise RuntimeError("the exporter wrote no file")
        if dynamic and dynamo:
            name_batch_dim(tmp, len(feeds_t))

    def write(tmp):
        errors = []
        want_dynamic = batch is not None and dynamic_shapes(model, ex) is not None
        for dynamo in (True, False):
            try:
                why = None
                if want_dynamic:
                    try:
                        export(tmp, dynamo, True)
                        why = ("the exporter fixed it" if not is_dynamic(tmp, len(feeds_t)) else
                               _batch_ok(model, ex, tmp, tolerance))
                    except Exception as e:  # noqa: BLE001 - e.g. the model runs at one batch only
                        why = _cut(e)
                    if why is not None:  # the model fixes its batch: a file that says so
                        export(tmp, dynamo, False)
                        result["notes"].append(f"onnx: the batch dimension is fixed at {batch} "
                                               f"(another batch size does not export: {why[:160]})")
                else:
                    export(tmp, dynamo, False)
                    if batch is not None:
                        result["notes"].append(f"onnx: the batch dimension is fixed at {batch} "
                                               f"(keyword inputs keep their example shapes)")
                if batch is None:
                    result["notes"].append("onnx: the inputs have no common batch dimension; "
                                           "the file takes the example's shapes only")
                result["dynamic"] = want_dynamic and why is None
                result["exporter"] = "dynamo" if dynamo else "torchscript"
                return
            except Exception as e:  # noqa: BLE001
                errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {_cut(e)}")
                result["notes"].clear()
        raise PruneStudioError("ONNX export failed: " + "; ".join(errors))

    def check(tmp):
        try:
            names: list = []
            outs = _ort_run(tmp, feeds_t, names)
            feeds = {n: t.detach().numpy() for n, t in zip(names, feeds_t)}
        except Exception as e:  # noqa: BLE001
            raise VerificationError(f"the exported ONNX file does not run in onnxruntime: "
                                    f"{_cut(e)}") from None
        if len(outs) != len(ref) or any(tuple(o.shape) != tuple(r.shape) for o, r in zip(outs, ref)):
            raise VerificationError("the ONNX model's outputs do not have the torch model's shapes")
        bad_o = _non_finite(outs)
        if bad_o is not None:
            raise VerificationError(f"onnxruntime's {bad_o} where torch's are finite")
        diff, scale = _max_diff(outs, ref)
        if diff > tolerance * max(scale, 1.0):
            raise VerificationError(f"onnxruntime's outputs differ from torch's by {diff:.3g} "
                                    f"(scale {scale:.3g})")
        res = CheckedDiff(diff, result["notes"] + _weak_lines(weak, model, ex, tmp, feeds,
                                                               tolerance))
        res.dynamic_batch = bool(result.get("dynamic"))
        if oracle is not None:
            res.oracle_diff, res.info = oracle(tmp)
        result["diff"] = res

    with torch.no_grad():
        atomic_write(path, write, check, force, source, suffix=".onnx", should_stop=should_stop)
    return result["diff"]
