"""Save pruned models: whole-model pickles, the portable plan form, and verified ONNX exports.

Every writer is atomic: it writes a temporary file in the destination folder, checks that the file
loads back, then ``os.replace``\\ s it into place. An existing file is never overwritten unless
``force=True``, and the input model file (``source``) is never written over, even with ``force``.
A failure leaves no file behind.

Portable form (``.pstudio``): a ``torch.save`` zip archive of plain data, loadable with
``torch.load(weights_only=True)`` - no pickled code::

    {"format": "prunestudio.portable", "version": 1,
     "model_spec": "torchvision:resnet18" | "/abs/path/file.py:factory" | "/abs/model.pt",
     "kept": {tensor name: {dim: [kept indices]}},   # PruningPlan.kept_indices(dg)
     "state_dict": {name: tensor},                    # the pruned model's weights
     "plan": PruningPlan.to_json() or None, "meta": {...}}

Loading rebuilds the original architecture from ``model_spec``, slices it with
``core.prune.apply.apply_kept`` and loads the pruned state dict strictly.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
import warnings

import torch
from torch import nn

from core.errors import LoadError, PruneStudioError, VerificationError
from core.trace.inputs import as_example_inputs

PORTABLE_FORMAT = "prunestudio.portable"
PORTABLE_VERSION = 1
PORTABLE_SUFFIX = ".pstudio"


class OutputExistsError(PruneStudioError, FileExistsError):
    """The destination exists and ``force`` was not given."""


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_destination(path: str, force: bool = False, source: str | list | None = None) -> None:
    """Raise unless ``path`` may be written: its folder exists, it is not the input file, and it
    does not exist yet (or ``force``). Called before the work starts and again when writing."""
    if not path:
        raise PruneStudioError("no output file name given")
    sources = [source] if isinstance(source, str) else list(source or [])
    for s in sources:
        if s and _same_file(path, s):
            raise PruneStudioError(f"refusing to write over the input file {s}; choose another "
                                   f"output name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PruneStudioError(f"output folder {folder} does not exist")
    if os.path.isdir(path):
        raise PruneStudioError(f"output {path} is a folder")
    if os.path.exists(path) and not force:
        raise OutputExistsError(f"{path} already exists; pass --force (force=True) to overwrite it")


def _stop_check(should_stop):
    if should_stop is not None and should_stop():
        from core.errors import Cancelled
        raise Cancelled("export cancelled; nothing was written")


def atomic_write(path: str, write, check=None, force: bool = False, source=None,
                 suffix: str | None = None, should_stop=None) -> None:
    """``write(tmp_path)`` then ``check(tmp_path)``, then move into place; no file on failure.
    ``should_stop()`` is polled before and between the steps: a cancel leaves no file."""
    _stop_check(should_stop)
    check_destination(path, force, source)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    sfx = suffix if suffix is not None else os.path.splitext(base)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{sfx}", dir=folder)
    except OSError as e:
        raise PruneStudioError(f"cannot write in {folder}: {e.strerror or e}") from None
    os.close(fd)
    try:
        write(tmp)
        _stop_check(should_stop)
        if check is not None:
            check(tmp)
        _stop_check(should_stop)
        if os.path.exists(path) and not force:  # appeared meanwhile
            raise OutputExistsError(f"{path} already exists; pass --force (force=True) to overwrite it")
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        _remove(tmp + ".data")
        raise


def _remove(p):
    try:
        os.remove(p)
    except OSError:
        pass


def _cpu_copy(model: nn.Module) -> nn.Module:
    dev = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    return model if dev <= {"cpu"} else copy.deepcopy(model).cpu()


def _shapes(sd: dict) -> dict:
    return {k: tuple(v.shape) for k, v in sd.items() if isinstance(v, torch.Tensor)}


# ----------------------------------------------------------------------------- whole model

def save_whole(model: nn.Module, path: str, force: bool = False, source=None,
               should_stop=None) -> None:
    """Pickle the whole (pruned) module with ``torch.save`` (loads with ``torch.load(...,
    weights_only=False)``, i.e. ``--trust``; the model's class must be importable there)."""
    model = _cpu_copy(model)
    want = _shapes(model.state_dict())

    def write(tmp):
        try:
            torch.save(model, tmp)
        except Exception as e:  # noqa: BLE001
            raise PruneStudioError(f"the model cannot be pickled ({type(e).__name__}: {e}); save the "
                                   f"portable {PORTABLE_SUFFIX} form instead") from None

    def check(tmp):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                back = torch.load(tmp, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise PruneStudioError(f"the saved model does not load back ({type(e).__name__}: {e})") from None
        if not isinstance(back, nn.Module) or _shapes(back.state_dict()) != want:
            raise PruneStudioError("the saved model does not load back identically")

    atomic_write(path, write, check, force, source, should_stop=should_stop)


def load_whole(path: str, trust: bool = False) -> nn.Module:
    from core.io.sources import load_model
    return load_model(path, trust=trust)


# ----------------------------------------------------------------------------- portable form

def _plain_kept(kept: dict) -> dict:
    return {str(n): {int(d): [int(i) for i in idx] for d, idx in dims.items()} for n, dims in kept.items()}


def save_portable(path: str, model_spec: str, kept: dict, state_dict: dict, force: bool = False,
                  source=None, plan=None, meta: dict | None = None, trust: bool = False,
                  rebuild_check: bool = True, should_stop=None) -> None:
    """Write the portable form (see the module docstring). ``rebuild_check`` rebuilds the model
    from the temporary file before it is moved into place (needs ``trust`` for pickled specs)."""
    from core.io.sources import normalize_spec
    spec = normalize_spec(model_spec)
    sd = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    payload = {"format": PORTABLE_FORMAT, "version": PORTABLE_VERSION, "model_spec": spec,
               "kept": _plain_kept(kept), "state_dict": sd,
               "plan": plan.to_json() if hasattr(plan, "to_json") else plan,
               "meta": {"torch": str(torch.__version__), **(meta or {})}}

    def write(tmp):
        torch.save(payload, tmp)

    def check(tmp):
        if rebuild_check:
            m = load_portable(tmp, trust=trust)
            if _shapes(m.state_dict()) != _shapes(sd):
                raise PruneStudioError("the portable file does not rebuild the pruned model")
        else:
            read_portable(tmp)

    atomic_write(path, write, check, force, source, should_stop=should_stop)


def read_portable(path: str) -> dict:
    from core.io.sources import read_torch_file
    d = read_torch_file(path, trust=False)
    if not isinstance(d, dict) or d.get("format") != PORTABLE_FORMAT:
        raise LoadError(f"{path} is not a PruneStudio portable file")
    if int(d.get("version", 0)) > PORTABLE_VERSION:
        raise LoadError(f"{path} was written by a newer PruneStudio (format version {d['version']})")
    for k in ("model_spec", "kept", "state_dict"):
        if k not in d:
            raise LoadError(f"{path} is damaged: it has no '{k}'")
    return d


def load_portable(path: str, trust: bool = False) -> nn.Module:
    """Rebuild the pruned model: original architecture from the spec, ``apply_kept``, weights."""
    from core.io.sources import load_model, spec_file, split_factory_spec, spec_kind
    from core.prune.apply import apply_kept
    d = read_portable(path)
    spec = d["model_spec"]
    f = spec_file(spec)
    if f is not None and not os.path.exists(f):
        # the spec's file moved along with the portable file: look next to it
        alt = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.basename(f))
        if os.path.exists(alt):
            spec = f"{alt}:{split_factory_spec(spec)[1]}" if spec_kind(spec) == "factory" else alt
    try:
        model = load_model(spec, trust=trust)
    except LoadError as e:
        raise LoadError(f"{path}: cannot rebuild the original model '{spec}': {e}") from None
    kept = {n: {int(k): list(v) for k, v in dims.items()} for n, dims in d["kept"].items()}
    try:
        apply_kept(model, kept, inplace=True)
    except PruneStudioError as e:
        raise LoadError(f"{path}: the plan does not fit '{spec}': {e}") from None
    from core.io.sources import check_state_dict
    check_state_dict(model, d["state_dict"], path, f"the pruned '{spec}'")
    with torch.no_grad():
        model.load_state_dict(d["state_dict"], strict=True)
    return model.eval()


# ----------------------------------------------------------------------------- Hugging Face directory

def is_hf_model(model) -> bool:
    import sys
    tf = sys.modules.get("transformers")
    return tf is not None and isinstance(model, tf.PreTrainedModel)


def _is_inside(a: str, b: str) -> bool:
    """``a`` is ``b`` or lies inside it."""
    a, b = os.path.realpath(a), os.path.realpath(b)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def check_hf_destination(path: str, force: bool = False, source=None) -> None:
    """Raise unless the directory ``path`` may be written: its parent exists; it is not, nor lies
    in, the input model's directory; it does not exist, or is empty, or (with ``force``) holds a
    previous Hugging Face export (``config.json``) - any other folder is never replaced."""
    if not path:
        raise PruneStudioError("no output directory given")
    path = path.rstrip("/" + os.sep) or path
    sources = [source] if isinstance(source, str) else list(source or [])
    for s in sources:
        if s and (_is_inside(path, s) or _is_inside(s, path)):
            raise PruneStudioError(f"refusing to write over the input model {s}; choose another "
                                   f"output directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise PruneStudioError(f"output folder {parent} does not exist")
    if os.path.exists(path) and not os.path.isdir(path):
        raise PruneStudioError(f"output {path} is a file, not a directory")
    if os.path.isdir(path) and os.listdir(path):
        if not force:
            raise OutputExistsError(f"{path} already exists and is not empty; pass --force "
                                    f"(force=True) to overwrite it")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise PruneStudioError(f"{path} is not empty and is not a Hugging Face model directory "
                                   f"(no config.json): refusing to replace it even with --force")


def save_hf_dir(model, path: str, force: bool = False, source=None, should_stop=None) -> None:
    """Save a (pruned) Hugging Face model as a directory with ``save_pretrained``, atomically: it is
    written into a temporary sibling directory, reloaded and compared (parameter shapes; with
    ``from_pretrained`` when ``config.prunestudio`` says the pruning was uniform, else with
    :func:`core.adapters.hf.load_pruned`), then ``os.replace``\\ d into place. A failure or a cancel leaves
    no directory behind; an existing non-empty ``path`` is replaced only with ``force`` (and only
    when it is itself a Hugging Face model directory)."""
    import shutil
    if not is_hf_model(model):
        raise PruneStudioError(f"a directory output is for Hugging Face models (save_pretrained); "
                               f"this is a {type(model).__name__}: use .pt, .pstudio or .onnx")
    path = path.rstrip("/" + os.sep) or path
    _stop_check(should_stop)
    check_hf_destination(path, force, source)
    model = _cpu_copy(model)
    want = _shapes(model.state_dict())
    parent = os.path.dirname(os.path.abspath(path))
    try:
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise PruneStudioError(f"cannot write in {parent}: {e.strerror or e}") from None
    old = None
    try:
        try:
            from core.io.sources import hf_quiet
            with hf_quiet():
                model.save_pretrained(tmp)
        except Exception as e:  # noqa: BLE001
            raise PruneStudioError(f"save_pretrained failed: {type(e).__name__}: "
                                   f"{' '.join(str(e).split())[:200]}") from None
        _stop_check(should_stop)
        try:
            back = load_hf_dir(tmp, type(model))
        except Exception as e:  # noqa: BLE001
            raise PruneStudioError(f"the saved directory does not load back ({type(e).__name__}: "
                                   f"{' '.join(str(e).split())[:200]})") from None
        got = _shapes(back.state_dict())
        if {k: v for k, v in got.items() if k in want} != {k: v for k, v in want.items() if k in got}:
            raise PruneStudioError("the saved directory does not load back with the pruned shapes")
        _stop_check(should_stop)
        check_hf_destination(path, force, source)  # appeared meanwhile?
        if os.path.isdir(path) and os.listdir(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
        try:
            os.replace(tmp, path)  # an existing empty directory is replaced
        except BaseException:
            if old is not None:
                os.replace(old, path)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_hf_dir(path: str, model_cls=None):
    """Load a Hugging Face model directory written by :func:`save_hf_dir`: ``from_pretrained`` when
    the pruning was uniform (the config describes the model), :func:`core.adapters.hf.load_pruned`
    otherwise. ``model_cls`` defaults to the class named in ``config.architectures``."""
    from core.adapters.hf import load_pruned
    if model_cls is None:
        from core.io.sources import _hf_class_and_config
        model_cls = _hf_class_and_config(path, False)[0]
    from core.io.sources import hf_quiet
    with hf_quiet():
        return load_pruned(model_cls, path, local_files_only=True).eval()


# ----------------------------------------------------------------------------- ONNX

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


def export_onnx(model: nn.Module, inputs, path: str, force: bool = False, source=None,
                tolerance: float = 1e-3, opset: int | None = None, should_stop=None) -> float:
    """Export to ONNX (dynamo exporter, falling back to the TorchScript one), run the file in
    onnxruntime on CPU and return the max abs difference to torch's outputs. Raises (leaving no
    file) if no exporter succeeds, onnxruntime cannot run the file, or the outputs differ by more
    than ``tolerance`` relative to the output scale."""
    import numpy as np
    import onnxruntime as ort

    ex = as_example_inputs(inputs).to("cpu")
    model = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        ref = _flat(ex.call(model))
    feeds_t = list(ex.args) + list(ex.kwargs.values())
    if not all(isinstance(t, torch.Tensor) for t in feeds_t):
        raise PruneStudioError("ONNX export needs every example input to be a tensor")
    result = {}

    def write(tmp):
        errors = []
        for dynamo in (True, False):
            try:
                _remove(tmp)
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
                errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: "
                              f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")
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
                                    f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
        if len(outs) != len(ref) or any(tuple(o.shape) != tuple(r.shape) for o, r in zip(outs, ref)):
            raise VerificationError("the ONNX model's outputs do not have the torch model's shapes")
        diff, scale = 0.0, 0.0
        for o, r in zip(outs, ref):
            r = r.detach().double().numpy()
            if r.size:
                diff = max(diff, float(np.abs(o.astype(np.float64) - r).max()))
                scale = max(scale, float(np.abs(r).max()))
        if diff > tolerance * max(scale, 1.0):
            raise VerificationError(f"onnxruntime's outputs differ from torch's by {diff:.3g} "
                                    f"(scale {scale:.3g})")
        result["diff"] = diff

    with torch.no_grad():
        atomic_write(path, write, check, force, source, suffix=".onnx", should_stop=should_stop)
    return result["diff"]
