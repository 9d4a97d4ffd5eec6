"""ONNX export, verified: the written file is run in onnxruntime on CPU and its outputs compared
with torch's before it is moved into place."""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings

import torch
from torch import nn

from core.errors import PruneStudioError, VerificationError
from core.io.atomic import atomic_write, remove_quietly
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
    """The max abs difference onnxruntime vs torch, with ``warnings`` (one line each) when the
    comparison is weak: an output that does not depend on the input matches whatever the file
    computes."""
    warnings: list[str]

    def __new__(cls, value: float, warnings: list[str] | None = None):
        obj = super().__new__(cls, value)
        obj.warnings = list(warnings or [])
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
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def export_onnx(model: nn.Module, inputs, path: str, force: bool = False, source=None,
                tolerance: float = 1e-3, opset: int | None = None, should_stop=None) -> CheckedDiff:
    """Export to ONNX (dynamo exporter, falling back to the TorchScript one), run the file in
    onnxruntime on CPU and return the max abs difference to torch's outputs. Raises (leaving no
    file) if no exporter succeeds, onnxruntime cannot run the file, or the outputs differ by more
    than ``tolerance`` relative to the output scale, or either side has NaN or inf values. The
    difference returned is a :class:`CheckedDiff`: its ``warnings`` say when the check is weak."""
    import numpy as np
    import onnxruntime as ort

    ex = as_example_inputs(inputs).to("cpu")
    model = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        ref = _flat(ex.call(model))
    bad = _non_finite([r.detach().cpu().double().numpy() if r.is_floating_point() else
                       r.detach().cpu().numpy() for r in ref])
    if bad is not None:
        raise VerificationError(f"cannot check an ONNX export of this model: torch's own {bad} "
                                f"(are its weights or inputs broken?)")
    from core.prune.weak import input_independent
    weak = [f"onnx: {line}: the onnxruntime comparison cannot fail on it, so the check is weak"
            for line in input_independent(model, ex, ref)]
    feeds_t = list(ex.args) + list(ex.kwargs.values())
    if not all(isinstance(t, torch.Tensor) for t in feeds_t):
        raise PruneStudioError("ONNX export needs every example input to be a tensor")
    result = {}

    def write(tmp):
        errors = []
        for dynamo in (True, False):
            try:
                remove_quietly(tmp)
                kw = {"dynamo": dynamo, "kwargs": ex.kwargs or None}
                if dynamo:
                    kw["external_data"] = False  # one self-contained file (models < 2 GB)
                if opset is not None:
                    kw["opset_version"] = opset
                if not dynamo:
                    kw["input_names"] = [f"input_{i}" for i in range(len(ex.args))] + list(ex.kwargs)
                with _quiet(), torch.no_grad():
                    torch.onnx.export(model, ex.args, tmp, **kw)
                if not os.path.exists(tmp) or os.path.getsize(tmp) == 0:
                    raise RuntimeError("the exporter wrote no file")
                result["exporter"] = "dynamo" if dynamo else "torchscript"
                return
            except Exception as e:  # noqa: BLE001
                errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {_cut(e)}")
        raise PruneStudioError("ONNX export failed: " + "; ".join(errors))

    def check(tmp):
        try:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            sess = ort.InferenceSession(tmp, so, providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            if len(names) != len(feeds_t):
                raise RuntimeError(f"the ONNX graph takes {len(names)} inputs, the model "
                                   f"{len(feeds_t)}")
            outs = sess.run(None, {n: t.detach().numpy() for n, t in zip(names, feeds_t)})
        except Exception as e:  # noqa: BLE001
            raise VerificationError(f"the exported ONNX file does not run in onnxruntime: "
                                    f"{_cut(e)}") from None
        if len(outs) != len(ref) or any(tuple(o.shape) != tuple(r.shape) for o, r in zip(outs, ref)):
            raise VerificationError("the ONNX model's outputs do not have the torch model's shapes")
        bad_o = _non_finite(outs)
        if bad_o is not None:
            raise VerificationError(f"onnxruntime's {bad_o} where torch's are finite")
        diff, scale = 0.0, 0.0
        for o, r in zip(outs, ref):
            r = r.detach().double().numpy()
            if r.size:
                diff = max(diff, float(np.abs(o.astype(np.float64) - r).max()))
                scale = max(scale, float(np.abs(r).max()))
        if diff > tolerance * max(scale, 1.0):
            raise VerificationError(f"onnxruntime's outputs differ from torch's by {diff:.3g} "
                                    f"(scale {scale:.3g})")
        result["diff"] = CheckedDiff(diff, weak)

    with torch.no_grad():
        atomic_write(path, write, check, force, source, suffix=".onnx", should_stop=should_stop)
    return result["diff"]
