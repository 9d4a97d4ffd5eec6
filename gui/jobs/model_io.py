"""The one place the GUI loads and saves models: core.io.sources, and the core.io.exporters
registry for exports (the form is chosen by the file's suffix)."""
from __future__ import annotations

import json



def load_model(spec: str, trust=None, weights: str | None = None, seed: int = 0):
    """The model of ``spec`` (with a state-dict file ``weights``; random weights from ``seed``);
    code runs only as ``trust`` (a core.io.trust.TrustPolicy: what the window asked the user
    about) allows."""
    from core.io.sources import load_model as load
    return load(spec, trust=trust, weights=weights, seed=seed)


def open_filter() -> str:
    """The open dialog's filter: every saved-model suffix core reads (core.io.specs) and factories."""
    from core.io.specs import MODEL_SUFFIXES
    return f"Models ({' '.join('*' + s for s in MODEL_SUFFIXES)} *.py);;All files (*)"


def input_shape_for(spec: str, shape: str) -> str:
    """The example input shape for ``spec``: the one an ONNX graph fixes (any other would not
    run), else ``shape`` as typed (a dynamic dim is the user's to choose)."""
    from core.errors import LoadError
    from core.io.sources import declared_input_shape
    try:
        return declared_input_shape(spec) or shape
    except LoadError:
        return shape  # dynamic dims, or an unreadable file that loading will name


def suggested_input(spec: str) -> tuple[str, str] | None:
    """(shape, dtype) for ``spec`` when the user has not typed one: a Hugging Face text model
    takes token ids, not the last image shape (core.io.sources.default_input); None otherwise,
    and for a spec that loading will name as bad."""
    from core.errors import PruneStudioError
    from core.io.sources import default_input
    try:
        return default_input(spec)
    except PruneStudioError:
        return None


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
                 should_stop=None, trust=None, original=None):
    """Write ``model`` in the form of ``path``; the window already asked about overwriting
    (``source``, the input model file, is never written over). ``result`` (the PruneResult) gives
    the plan the portable form stores. A cancel (``should_stop``) leaves no file. ``trust``: the
    consent the model was loaded with (the portable form's rebuild check runs its code again).
    Returns (the difference found by the form's check against torch - ONNX: onnxruntime - or None,
    and for an ``.onnx`` file with an ``original`` to compare with, the (original, exported)
    onnxruntime timings, else None)."""
    diff = exporter_for(path).write(
        model, path, inputs=inputs, force=True, source=source, should_stop=should_stop, spec=spec,
        kept=result.kept if result is not None else None,
        plan=result.plan if result is not None else None, trust=trust)
    timings = None
    if original is not None and path.lower().endswith(".onnx"):
        from core.io.onnx.speed import time_against_original
        if progress:
            progress("time", 0, 1, "timing the original and the exported file in onnxruntime")
        try:  # the file is in place: a cancel now stops only its timing
            timings = time_against_original(original, inputs, path, should_stop=should_stop)
        except Exception:  # noqa: BLE001 - Cancelled included: the timing is a bonus
            timings = None
    return diff, timings


def save_report(report: dict, path: str):
    text = json.dumps(report, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    _atomic(path, write)
