"""The one place the GUI loads and saves models: core.io.sources when present, else a small
torchvision/torch.load fallback (so the GUI works while that module evolves); exports go through
the core.io.exporters registry (the form is chosen by the file's suffix)."""
from __future__ import annotations

import json

import torch

from core.errors import LoadError

try:
    from core.io import sources as _loading
except ImportError:  # pragma: no cover - engine without a loader
    _loading = None

def load_model(spec: str, trust=None):
    """The model of ``spec``; code runs only as ``trust`` (a core.io.trust.TrustPolicy: what the
    window asked the user about) allows."""
    if _loading is not None:
        return _loading.load_model(spec, trust=trust)
    if spec == "demo":
        from core.models.demo import demo_model
        return demo_model()
    if spec.startswith("torchvision:"):
        import torchvision
        return torchvision.models.get_model(spec.split(":", 1)[1], weights=None).eval()
    try:
        obj = torch.load(spec, map_location="cpu", weights_only=True)  # no consent model here
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"{spec} could not be loaded: {type(e).__name__}: {e}") from None
    if not isinstance(obj, torch.nn.Module):
        raise LoadError(f"{spec} holds a {type(obj).__name__}, not a torch.nn.Module")
    return obj.eval()


def _atomic(path: str, write):
    """Core's atomic writer (the window already asked about overwriting): a recognisable
    temporary file, mode from the umask, never replacing a FIFO or a link, disk errors named."""
    from core.io.atomic import atomic_write
    atomic_write(path, write, force=True)


def file_filter() -> str:
    """The export dialog's filter: every form a file dialog can choose."""
    from core.io.exporters import file_filter
    return file_filter()


def exporter_for(path: str):
    """The export form ``path`` asks for; an unknown suffix exports the whole model (.pt)."""
    from core.io.exporters import EXPORTERS, exporter_for
    return exporter_for(path) or EXPORTERS.get(".pt")


def export_model(path: str, model, inputs=None, spec=None, result=None, source=None, progress=None,
                 should_stop=None, trust=None):
    """Write ``model`` in the form of ``path``; the window already asked about overwriting
    (``source``, the input model file, is never written over). ``result`` (the PruneResult) gives
    the plan the portable form stores. A cancel (``should_stop``) leaves no file. Returns the
    difference found by the form's check against torch (ONNX: onnxruntime), else None. ``trust``:
    the consent the model was loaded with (the portable form's rebuild check runs its code again)."""
    return exporter_for(path).write(
        model, path, inputs=inputs, force=True, source=source, should_stop=should_stop, spec=spec,
        kept=result.kept if result is not None else None,
        plan=result.plan if result is not None else None, trust=trust)


def save_report(report: dict, path: str):
    text = json.dumps(report, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    _atomic(path, write)
