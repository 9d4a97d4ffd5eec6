"""The one place the GUI loads and saves models: core.io.sources / core.io.formats when present,
else a small torchvision/torch.save fallback (so the GUI works while those modules evolve)."""
from __future__ import annotations

import json
import os
import tempfile

import torch

from core.errors import LoadError, PruneStudioError

try:
    from core.io import sources as _loading
except ImportError:  # pragma: no cover - engine without a loader
    _loading = None
try:
    from core.io import formats as _serialize
except ImportError:  # pragma: no cover
    _serialize = None

TRUST_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".ckpt", ".pstudio")


def needs_trust_prompt(spec: str) -> bool:
    """A saved file may hold pickled code: the user must confirm before it is trusted."""
    return spec.lower().endswith(TRUST_SUFFIXES)


def load_model(spec: str, trust: bool = False):
    if _loading is not None:
        return _loading.load_model(spec, trust=trust)
    if spec == "demo":
        from core.models.demo import demo_model
        return demo_model()
    if spec.startswith("torchvision:"):
        import torchvision
        return torchvision.models.get_model(spec.split(":", 1)[1], weights=None).eval()
    try:
        obj = torch.load(spec, map_location="cpu", weights_only=not trust)
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"{spec} could not be loaded: {type(e).__name__}: {e}") from None
    if not isinstance(obj, torch.nn.Module):
        raise LoadError(f"{spec} holds a {type(obj).__name__}, not a torch.nn.Module")
    return obj.eval()


def _atomic(path: str, write):
    fd, tmp = tempfile.mkstemp(prefix=".ps-", suffix=os.path.splitext(path)[1],
                               dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_pt(model, path: str, source=None, progress=None, should_stop=None):
    """Whole-model pickle; the window already asked about overwriting (``source``, the input
    model file, is never written over). A cancel (``should_stop``) leaves no file."""
    if _serialize is not None:
        return _serialize.save_whole(model, path, force=True, source=source,
                                     should_stop=should_stop)
    _atomic(path, lambda tmp: torch.save(model, tmp))


def save_portable(path: str, spec: str, result, source=None, progress=None, should_stop=None):
    if _serialize is None:
        raise PruneStudioError("this engine has no portable format (core.io.formats missing)")
    _serialize.save_portable(path, spec, result.kept, result.model.state_dict(), force=True,
                             plan=result.plan, trust=True, source=source, should_stop=should_stop)


def export_onnx(model, inputs, path: str, source=None, progress=None, should_stop=None) -> float:
    """Returns onnxruntime's max abs difference to torch's outputs."""
    if _serialize is not None:
        return _serialize.export_onnx(model, inputs, path, force=True, source=source,
                                      should_stop=should_stop)
    import numpy as np
    import onnxruntime as ort
    from core.trace.inputs import as_example_inputs
    ex = as_example_inputs(inputs)
    _atomic(path, lambda tmp: torch.onnx.export(model, ex.args, tmp, dynamo=False))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), ex.args)})
    with torch.no_grad():
        ref = ex.call(model)
    return float(np.abs(outs[0] - ref.numpy()).max())


def save_report(report: dict, path: str):
    text = json.dumps(report, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    _atomic(path, write)
