"""Load the user's model and example inputs from a command-line style spec.

``MODEL`` specs:

* ``torchvision:NAME`` - a torchvision architecture with random weights; ``torchvision:NAME@WEIGHTS``
  (e.g. ``@DEFAULT`` or ``@IMAGENET1K_V1``) uses torchvision's pretrained weights *only if they are
  already in the torch hub cache* - nothing is ever downloaded.
* ``path/to/file.py:factory`` - import the file by path and call ``factory()``.
* ``hf:path/to/dir`` - a local Hugging Face model directory (``config.json`` + weights, as written by
  ``save_pretrained``): the class named in ``config.architectures`` is built with its pretrained
  weights from the directory, local files only (never downloaded; ``HF_HUB_OFFLINE`` is honoured
  trivially). A directory written by PruneStudio from a non-uniformly pruned model is rebuilt with
  :func:`core.adapters.hf.load_pruned`. A hub id (``hf:org/name``) is accepted only when it is already in the
  local Hugging Face cache. Custom modelling code (``auto_map``) needs ``trust=True``.
* ``timm:NAME`` - a timm architecture with random weights; ``timm:NAME@pretrained`` uses timm's
  pretrained weights only when they are already in the local Hugging Face / torch hub cache.
* ``demo`` - the built-in demo network (:mod:`core.models.demo`).
* ``model.pt`` / ``model.pth`` - a saved whole model. Loading is SAFE BY DEFAULT
  (``torch.load(weights_only=True)``); a pickled module contains code and needs ``trust=True``.
  A file holding only a state dict needs an architecture: ``load_model("torchvision:resnet18",
  weights="sd.pt")``.
* ``model.pstudio`` - PruneStudio's portable form (see :mod:`core.io.formats`).

Every failure raises :class:`~core.errors.LoadError` with one line naming the file and the problem.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.util
import os
import re
import sys
import warnings
import zipfile

import torch
from torch import nn

from core import families
from core.errors import LoadError
from core.trace.inputs import ExampleInputs, as_example_inputs

MODEL_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".ckpt", ".pstudio")


def _one_line(text: str, limit: int = 300) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _exc(e: BaseException) -> str:
    msg = _one_line(e)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


# ----------------------------------------------------------------------------- spec parsing

def split_factory_spec(spec: str) -> tuple[str, str] | None:
    """``"dir/file.py:make"`` -> ``("dir/file.py", "make")``; None if ``spec`` is not of that form
    (a Windows drive letter such as ``C:`` is not taken for a separator)."""
    path, sep, name = spec.rpartition(":")
    if sep and path.endswith(".py") and name.isidentifier():
        return path, name
    return None


def spec_kind(spec: str) -> str:
    """'torchvision' | 'hf' | 'timm' | 'factory' | 'demo' | 'file'."""
    if spec.startswith("torchvision:"):
        return "torchvision"
    if spec.startswith("hf:"):
        return "hf"
    if spec.startswith("timm:"):
        return "timm"
    if split_factory_spec(spec):
        return "factory"
    if spec == "demo":
        return "demo"
    return "file"


def normalize_spec(spec: str) -> str:
    """The spec with file paths made absolute, so that it still works from another folder."""
    kind = spec_kind(spec)
    if kind == "factory":
        path, name = split_factory_spec(spec)
        return f"{os.path.abspath(path)}:{name}"
    if kind == "file":
        return os.path.abspath(spec)
    if kind == "hf" and os.path.isdir(spec[3:]):
        return "hf:" + os.path.abspath(spec[3:])
    return spec


def spec_dir(spec: str) -> str | None:
    """The local directory an ``hf:`` spec reads from (None for every other spec)."""
    if spec_kind(spec) == "hf" and os.path.isdir(spec[3:]):
        return spec[3:]
    return None


def spec_file(spec: str) -> str | None:
    """The file a spec reads from (None for torchvision and demo specs)."""
    kind = spec_kind(spec)
    if kind == "factory":
        return split_factory_spec(spec)[0]
    if kind == "file":
        return spec
    return None


# ----------------------------------------------------------------------------- public API

def load_model(spec: str, trust: bool = False, weights: str | None = None) -> nn.Module:
    """Build or load the model named by ``spec`` (see the module docstring), in eval mode.

    ``weights``: a local state-dict file loaded (strictly) into the architecture.
    ``trust``: allow unpickling code from a whole-model file (``torch.load(weights_only=False)``).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise LoadError("no model given: use torchvision:NAME, hf:DIR, timm:NAME, "
                        "path/to/file.py:factory or a saved model file")
    spec = spec.strip()
    kind = spec_kind(spec)
    if kind == "torchvision":
        model = _load_torchvision(spec[len("torchvision:"):], weights is not None)
    elif kind == "hf":
        model = _load_hf(spec[len("hf:"):], trust=trust, have_weights=weights is not None)
    elif kind == "timm":
        model = _load_timm(spec[len("timm:"):], weights is not None)
    elif kind == "factory":
        path, name = split_factory_spec(spec)
        model = _call_factory(path, name, "model factory")
        if not isinstance(model, nn.Module):
            raise LoadError(f"{path}:{name}() returned {type(model).__name__}, not a torch.nn.Module")
    elif kind == "demo":
        from core.models.demo import demo_model
        model = demo_model()
    else:
        model = _load_file(spec, trust=trust, have_weights=weights is not None)
    if weights is not None:
        load_weights(model, weights, what=spec)
    return model.eval()


def load_inputs(spec: str) -> ExampleInputs:
    """Example inputs from ``file.py:function``; the function returns a tensor, a tuple of tensors,
    a dict of keyword tensors or ``(args_tuple, kwargs_dict)``."""
    parts = split_factory_spec(spec or "")
    if parts is None:
        raise LoadError(f"inputs '{spec}' must be given as path/to/file.py:function")
    path, name = parts
    value = _call_factory(path, name, "inputs function")
    try:
        ex = as_example_inputs(value)
    except Exception as e:
        raise LoadError(f"{path}:{name}() returned {type(value).__name__}; example inputs must be a "
                        f"tensor, a tuple of tensors or a dict") from e
    if not ex.args and not ex.kwargs:
        raise LoadError(f"{path}:{name}() returned no inputs")
    return ex


def read_torch_file(path: str, trust: bool = False):
    """``torch.load`` with the safe default, turning every failure into a one-line LoadError."""
    _check_readable(path)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"{path} is not a readable PyTorch file (corrupt or truncated): {_exc(e)}")
        if any(n.split("/", 1)[-1].startswith("code/") or n.endswith("/constants.pkl") for n in names):
            raise LoadError(f"{path} is a TorchScript archive; PruneStudio needs the eager (Python) "
                            f"model: give path/to/file.py:factory instead")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        text = str(e)
        m = (re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
             or re.search(r"unsupported GLOBAL ([\w.]+)", text))
        if m is None and ("Weights only load failed" not in text
                          or re.search(r"Unsupported operand \d+", text)):
            raise LoadError(f"{path} is not a readable PyTorch file (corrupt or truncated?): "
                            f"{_short_torch_error(e)}") from None
        if not trust:
            what = f" (it references {m.group(1)})" if m else ""
            raise LoadError(f"{path} contains pickled code{what}, which runs when loaded; load it "
                            f"only if you trust its source: pass --trust (trust=True)") from None
    # A trusted pickle may name classes from a user file next to it or in the working folder.
    extra = [d for d in dict.fromkeys([os.getcwd(), os.path.dirname(os.path.abspath(path))])
             if d not in sys.path]
    sys.path.extend(extra)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError, ImportError) as e:
        raise LoadError(f"{path} pickles a model whose class cannot be imported here ({_exc(e)}); "
                        f"put the folder holding its code on PYTHONPATH, or use "
                        f"path/to/file.py:factory with --weights") from None
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"{path} could not be loaded even with --trust: "
                        f"{_short_torch_error(e)}") from None
    finally:
        for d in extra:
            try:
                sys.path.remove(d)
            except ValueError:
                pass


def load_weights(model: nn.Module, path: str, what: str = "the model") -> None:
    """Load a state-dict file strictly into ``model``; a LoadError lists what does not fit."""
    obj = read_torch_file(path, trust=False)
    sd = _as_state_dict(obj, path)
    if sd is None:
        raise LoadError(f"{path} does not hold a state dict (a dict of tensors) but "
                        f"{type(obj).__name__}")
    check_state_dict(model, sd, path, what)
    with torch.no_grad():
        model.load_state_dict(sd, strict=True)


def check_state_dict(model: nn.Module, sd: dict, path: str, what: str = "the model") -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} in the file vs {tuple(own[k].shape)} in the model"
              for k in own if k in sd and isinstance(sd[k], torch.Tensor)
              and tuple(sd[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return

    def lst(xs, n=5):
        return ", ".join(xs[:n]) + (f" (+{len(xs) - n} more)" if len(xs) > n else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {lst(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {lst(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches: {lst(shapes, 3)}")
    hint = ("; was it saved from a pruned model? keep pruned models in the portable .pstudio form"
            if shapes and not missing and not unexpected else "")
    raise LoadError(f"the weights in {path} do not fit {what}: {'; '.join(parts)}{hint}")


# ----------------------------------------------------------------------------- helpers

def _check_readable(path: str) -> None:
    if not os.path.exists(path):
        raise LoadError(f"file not found: {path}")
    if os.path.isdir(path):
        raise LoadError(f"{path} is a folder, not a model file")
    if os.path.getsize(path) == 0:
        raise LoadError(f"{path} is empty (0 bytes)")


def _short_torch_error(e: BaseException) -> str:
    msg = _one_line(e)
    if "central directory" in msg or "zip archive" in msg:
        return "the zip archive is truncated or damaged"
    if isinstance(e, EOFError):
        return "unexpected end of file (truncated)"
    full = str(e)
    if "truncated" in full:
        return "unexpected end of file (truncated)"
    if isinstance(e, (KeyError, IndexError)) or "load key" in msg or "Memo value" in msg or \
            re.search(r"Unsupported operand \d+", full):
        return "the data is not a PyTorch/pickle file"
    return _exc(e)[:200]


def _as_state_dict(obj, path: str) -> dict | None:
    """A flat ``{name: tensor}`` dict from a state dict or a common checkpoint layout."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return None
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _load_file(path: str, trust: bool, have_weights: bool) -> nn.Module:
    if path.endswith(".py"):
        raise LoadError(f"{path} is a Python file: name the function that builds the model, "
                        f"e.g. {path}:make_model")
    _check_readable(path)
    obj = read_torch_file(path, trust=trust)
    if isinstance(obj, dict) and obj.get("format") == "prunestudio.portable":
        from core.io.formats import load_portable
        return load_portable(path, trust=trust)
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
        return obj["model"]
    if isinstance(obj, torch.jit.ScriptModule):
        raise LoadError(f"{path} is a TorchScript module; PruneStudio needs the eager model")
    sd = _as_state_dict(obj, path)
    if sd is not None:
        raise LoadError(f"{path} holds only weights (a state dict of {len(sd)} tensors), not a "
                        f"model: give the architecture as MODEL (torchvision:NAME or "
                        f"file.py:factory) and this file with --weights")
    raise LoadError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module or a state dict")


def _import_file(path: str):
    if not os.path.exists(path):
        raise LoadError(f"file not found: {path}")
    apath = os.path.abspath(path)
    stem = os.path.splitext(os.path.basename(apath))[0]
    # Register the module under its own name when that is free, so a whole model saved from it
    # can be unpickled later from the same folder; otherwise under a private unique name.
    mod_name = stem
    existing = sys.modules.get(stem)
    if not stem.isidentifier() or (existing is not None and
                                   os.path.abspath(getattr(existing, "__file__", "") or "") != apath):
        mod_name = f"_prunestudio_user_{stem if stem.isidentifier() else 'mod'}_" \
                   f"{hashlib.sha1(apath.encode()).hexdigest()[:10]}"
    folder = os.path.dirname(apath)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # the file may import its neighbours
    try:
        spec = importlib.util.spec_from_file_location(mod_name, apath)
        if spec is None or spec.loader is None:
            raise LoadError(f"{path} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as e:
            sys.modules.pop(mod_name, None)
            raise LoadError(f"{path} has a syntax error at line {e.lineno}: {e.msg}") from None
        except Exception as e:  # noqa: BLE001
            sys.modules.pop(mod_name, None)
            raise LoadError(f"importing {path} failed: {_exc(e)}") from None
    finally:
        if added:
            try:
                sys.path.remove(folder)
            except ValueError:
                pass
    return module


def _call_factory(path: str, name: str, what: str):
    module = _import_file(path)
    fn = getattr(module, name, None)
    if fn is None:
        avail = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        hint = f" (it defines: {', '.join(avail[:8])})" if avail else ""
        raise LoadError(f"{path} has no {what} '{name}'{hint}")
    if not callable(fn):
        raise LoadError(f"{path}:{name} is a {type(fn).__name__}, not a function")
    try:
        return fn()
    except LoadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"{path}:{name}() raised {_exc(e)}") from None


def _load_torchvision(name: str, have_weights: bool) -> nn.Module:
    import torchvision.models as tvm

    name, _, wname = name.partition("@")
    available = tvm.list_models()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise LoadError(f"torchvision has no model '{name}'{hint}")
    if not wname:
        try:
            return tvm.get_model(name, weights=None)
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"building torchvision:{name} failed: {_exc(e)}") from None
    if have_weights:
        raise LoadError(f"give either torchvision:{name}@{wname} or --weights, not both")
    enum = tvm.get_model_weights(name)
    try:
        w = enum[wname] if wname != "DEFAULT" else enum.DEFAULT
    except KeyError:
        choices = ", ".join(["DEFAULT"] + [m.name for m in enum])
        raise LoadError(f"torchvision:{name} has no weights '{wname}' (choose from {choices})") from None
    fname = os.path.basename(w.url.split("?")[0])
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", fname)
    if not os.path.exists(cached):
        raise LoadError(f"pretrained weights {w} are not in the torch hub cache (missing file "
                        f"{cached}); PruneStudio never downloads: fetch them yourself or use "
                        f"--weights FILE")
    try:
        return tvm.get_model(name, weights=w)  # reads the cached file; no download happens
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"loading cached weights {cached} failed: {_exc(e)}") from None


# ----------------------------------------------------------------------------- Hugging Face / timm

@contextlib.contextmanager
def hf_quiet():
    """No transformers progress bars or warnings on the CLI's stderr while loading/saving."""
    tl = None
    try:
        from transformers.utils import logging as tl
    except ImportError:
        pass
    was = tl.is_progress_bar_enabled() if tl is not None else False
    level = tl.get_verbosity() if tl is not None else None
    try:
        if tl is not None:
            tl.disable_progress_bar()
            tl.set_verbosity_error()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if tl is not None:
            if was:
                tl.enable_progress_bar()
            tl.set_verbosity(level)



def _hf_local_dir(path: str) -> str | None:
    """``path`` itself when it is a directory; else the snapshot folder of a hub id that is already
    in the local Hugging Face cache; else None. Never downloads."""
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or path.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
        cfg = try_to_load_from_cache(path, "config.json")
    except Exception:  # noqa: BLE001
        return None
    return os.path.dirname(cfg) if isinstance(cfg, str) and os.path.isfile(cfg) else None


def _hf_class_and_config(path: str, trust: bool):
    """(model class, config, local directory) for an ``hf:`` spec, from local files only."""
    try:
        import transformers
        from transformers import AutoConfig
    except ImportError:
        raise LoadError("hf: models need the 'transformers' package (pip install transformers)") \
            from None
    d = _hf_local_dir(path)
    if d is None:
        if os.path.exists(path):
            raise LoadError(f"hf:{path} is a file; give the model directory (with config.json)")
        raise LoadError(f"hf:{path}: no such directory, and not a model already in the local "
                        f"Hugging Face cache (PruneStudio never downloads)")
    if not os.path.isfile(os.path.join(d, "config.json")):
        raise LoadError(f"hf:{path}: the directory has no config.json; it is not a Hugging Face "
                        f"model directory (save one with model.save_pretrained(DIR))")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = AutoConfig.from_pretrained(d, local_files_only=True, trust_remote_code=trust)
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"hf:{path}: config.json cannot be read: {_exc(e)}") from None
    archs = list(getattr(cfg, "architectures", None) or [])
    cls = None
    for a in archs:
        cls = getattr(transformers, a, None)
        if cls is not None:
            break
    if cls is None and getattr(cfg, "auto_map", None):
        if not trust:
            raise LoadError(f"hf:{path} uses custom modelling code (auto_map in config.json), "
                            f"which runs when loaded: pass --trust (trust=True) if you trust it")
        from transformers import AutoModel, AutoModelForCausalLM
        auto = cfg.auto_map
        cls = AutoModelForCausalLM if "AutoModelForCausalLM" in auto else AutoModel
    if cls is None:
        if archs:
            raise LoadError(f"hf:{path}: transformers {transformers.__version__} has no class "
                            f"{', '.join(archs)} (named in config.json 'architectures')")
        from transformers import AutoModel
        cls = AutoModel  # no architectures recorded: the bare model of this model_type
    return cls, cfg, d


def _load_hf(path: str, trust: bool, have_weights: bool) -> nn.Module:
    cls, cfg, d = _hf_class_and_config(path, trust)
    families.load()  # Hugging Face attribute/config sync
    rec = getattr(cfg, "prunestudio", None) or {}
    kw = {"local_files_only": True}
    if trust:
        kw["trust_remote_code"] = True
    has_weights = any(f.endswith((".safetensors", ".bin")) or f.endswith(".index.json")
                      for f in os.listdir(d))
    try:
        with hf_quiet():
            if not has_weights:
                if not have_weights:
                    raise LoadError(f"hf:{path}: the directory has no weights (*.safetensors or "
                                    f"pytorch_model.bin); give them with --weights, or save the "
                                    f"model with save_pretrained")
                model = cls._from_config(cfg) if hasattr(cls, "_from_config") else cls(cfg)
            elif isinstance(rec, dict) and rec.get("uniform") is False:
                from core.adapters.hf import load_pruned
                model = load_pruned(cls, d, **kw)
            else:
                model = cls.from_pretrained(d, **kw)
    except LoadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"hf:{path}: loading {getattr(cls, '__name__', cls)} failed: "
                        f"{_exc(e)}") from None
    return model


def _timm_cached_file(pcfg) -> tuple[str | None, list[str]]:
    """The local file holding timm's pretrained weights, and the places that were looked at."""
    looked = []
    hub_id = getattr(pcfg, "hf_hub_id", None)
    if hub_id:
        repo, _, rev = hub_id.partition("@")
        names = [n for n in (getattr(pcfg, "hf_hub_filename", None),) if n] or \
            ["model.safetensors", "pytorch_model.bin"]
        try:
            from huggingface_hub import try_to_load_from_cache
            for n in names:
                looked.append(f"{repo}/{n} in the Hugging Face cache")
                f = try_to_load_from_cache(repo, n, revision=rev or None)
                if isinstance(f, str) and os.path.isfile(f):
                    return f, looked
        except ImportError:
            pass
    url = getattr(pcfg, "url", None)
    if url:
        f = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url.split("?")[0]))
        looked.append(f)
        if os.path.isfile(f):
            return f, looked
    f = getattr(pcfg, "file", None)
    if f:
        looked.append(f)
        if os.path.isfile(f):
            return f, looked
    return None, looked


def _load_timm(name: str, have_weights: bool) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise LoadError("timm: models need the 'timm' package (pip install timm)") from None
    name, _, wname = name.partition("@")
    if not name:
        raise LoadError("timm: give a model name, e.g. timm:resnet18")
    base = name.partition(".")[0]
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise LoadError(f"timm has no model '{base}'{hint}")
    if not wname:
        try:
            return timm.create_model(name, pretrained=False)
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"building timm:{name} failed: {_exc(e)}") from None
    if wname != "pretrained":
        raise LoadError(f"timm:{name}@{wname}: the only weights option is @pretrained (choose a "
                        f"pretrained tag with a dot, e.g. timm:resnet18.a1_in1k@pretrained)")
    if have_weights:
        raise LoadError(f"give either timm:{name}@pretrained or --weights, not both")
    from timm.models import get_pretrained_cfg
    try:
        pcfg = get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001
        pcfg = None
    if pcfg is None:
        raise LoadError(f"timm:{name} has no pretrained weights (no pretrained config)")
    path, looked = _timm_cached_file(pcfg)
    if path is None:
        raise LoadError(f"pretrained weights of timm:{name} are not in the local cache (looked for "
                        f"{'; '.join(looked) or 'no source known'}); PruneStudio never downloads: "
                        f"fetch them yourself or use --weights FILE")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": path})
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"loading cached weights {path} into timm:{name} failed: {_exc(e)}") \
            from None


def input_vocab_size(model: nn.Module) -> int | None:
    """The vocabulary of the model's input embedding (Hugging Face ``get_input_embeddings``),
    None when the model has none."""
    get = getattr(model, "get_input_embeddings", None)
    if get is None:
        return None
    try:
        emb = get()
    except Exception:  # noqa: BLE001
        return None
    n = getattr(emb, "num_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def fit_inputs(model: nn.Module, inputs) -> ExampleInputs:
    """Random integer example inputs (``make_inputs`` draws them in [0, 100)) folded into the
    model's vocabulary (``t % vocab``) when it is smaller, so token ids stay valid."""
    ex = as_example_inputs(inputs)
    n = input_vocab_size(model)
    if n is None:
        return ex

    def fit(t):
        if isinstance(t, torch.Tensor) and not t.is_floating_point() and t.dtype != torch.bool \
                and t.device.type != "meta" and t.numel() and int(t.max()) >= n:
            return t % n
        return t
    return ExampleInputs(tuple(fit(a) for a in ex.args), {k: fit(v) for k, v in ex.kwargs.items()})


# ----------------------------------------------------------------------------- memory / meta

MEMORY_ENV = "PRUNESTUDIO_AVAILABLE_MEMORY"  # bytes; overrides /proc/meminfo (tests, containers)
#: analysing and pruning holds the original, a pruned copy, the verification copy and activations
MEMORY_FACTOR = 3.0


class TooLargeError(LoadError):
    """The model's parameters do not fit in the memory available; analyse it on the meta device."""


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable`` in /proc/meminfo, or the env override)."""
    env = os.environ.get(MEMORY_ENV)
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise LoadError(f"{MEMORY_ENV}='{env}' is not a number of bytes") from None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (works on meta tensors: nothing is allocated)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def build_meta_model(spec: str, trust: bool = False) -> nn.Module:
    """The architecture named by ``spec`` with every tensor on the meta device (no memory used):
    torchvision and factory specs are constructed under ``torch.device('meta')``; a saved file is
    memory-mapped and its tensors replaced by meta tensors."""
    spec = (spec or "").strip()
    kind = spec_kind(spec)
    if kind in ("torchvision", "factory", "demo"):
        name = spec[len("torchvision:"):].partition("@")[0] if kind == "torchvision" else None
        with torch.device("meta"):
            if kind == "torchvision":
                model = _load_torchvision(name, False)
            elif kind == "factory":
                path, fn = split_factory_spec(spec)
                model = _call_factory(path, fn, "model factory")
                if not isinstance(model, nn.Module):
                    raise LoadError(f"{path}:{fn}() returned {type(model).__name__}, not a "
                                    f"torch.nn.Module")
            else:
                from core.models.demo import demo_model
                model = demo_model()
    elif kind == "hf":
        cls, cfg, _ = _hf_class_and_config(spec[len("hf:"):], trust)
        families.load()  # Hugging Face attribute/config sync
        try:
            with torch.device("meta"):
                model = cls._from_config(cfg)
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"building {spec} on the meta device failed: {_exc(e)}") from None
    elif kind == "timm":
        name = spec[len("timm:"):].partition("@")[0]
        with torch.device("meta"):
            model = _load_timm(name, False)
    else:
        model = load_model(spec, trust=trust)
    from core.analysis.probe import meta_copy
    if any(t.device.type != "meta" for t in list(model.parameters()) + list(model.buffers())):
        model = meta_copy(model)  # a factory that allocated explicitly on the CPU
    return model.eval()


def estimate_bytes(spec: str, weights: str | None = None) -> int | None:
    """Parameter and buffer bytes of the model named by ``spec``, known *before* building it:
    from a meta-device construction (torchvision, factory, demo) or from the saved file's size.
    None when it cannot be told cheaply."""
    kind = spec_kind((spec or "").strip())
    try:
        if kind == "file":
            return os.path.getsize(spec) if os.path.isfile(spec) else None
        if kind == "hf":
            d = _hf_local_dir(spec[len("hf:"):])
            if d is None:
                return None
            sizes = [os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
                     if f.endswith((".safetensors", ".bin", ".pt", ".pth"))]
            return sum(sizes) or None
        if weights and os.path.isfile(weights):
            return os.path.getsize(weights)
        return tensor_bytes(build_meta_model(spec))
    except Exception:  # noqa: BLE001 - the real load will report what is wrong
        return None


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"


def check_memory(spec: str, weights: str | None = None, input_hint: str = "") -> int | None:
    """Raise :class:`TooLargeError` if the model named by ``spec`` would not fit in memory; the
    message offers the meta-device analysis instead. Returns the estimated bytes."""
    need = estimate_bytes(spec, weights)
    avail = available_memory()
    if need is None or avail is None:
        return need
    if need * MEMORY_FACTOR > avail:
        shape = f" {input_hint}" if input_hint else " --input-shape ..."
        raise TooLargeError(
            f"{spec} is too large for this machine's memory: its parameters take about {_gb(need)} "
            f"and analysing and pruning it needs about {_gb(need * MEMORY_FACTOR)}, but only "
            f"{_gb(avail)} is available; analyse its structure on the meta device instead "
            f"(no weights are loaded): python main.py graph {spec}{shape} --meta")
    return need


def locate_forward_failure(model: nn.Module, inputs) -> tuple[str, str, BaseException] | None:
    """Run one forward with hooks and return ``(layer name, layer type, exception)`` for the
    innermost layer whose forward raised, or None if the forward runs."""
    ex = as_example_inputs(inputs)
    names = {id(m): n for n, m in model.named_modules()}
    stack: list = []
    culprit: list = []
    hooks = []

    def pre(mod, _args):
        stack.append(mod)

    def post(mod, _args, _out):
        if stack and stack[-1] is mod:
            stack.pop()

    for m in model.modules():
        hooks.append(m.register_forward_pre_hook(pre))
        hooks.append(m.register_forward_hook(post))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ex.call(model)
    except Exception as e:  # noqa: BLE001
        culprit = [stack[-1] if stack else model, e]
    finally:
        for h in hooks:
            h.remove()
    if not culprit:
        return None
    mod, e = culprit
    return names.get(id(mod), ""), type(mod).__name__, e


def _float_dtype(model: nn.Module):
    for p in list(model.parameters()) + list(model.buffers()):
        if p.is_floating_point():
            return p.dtype
    return None


def explain_forward_failure(model: nn.Module, inputs, error: BaseException) -> BaseException:
    """A clearer error for a forward that failed on the example inputs: it names the layer that
    raised and, when the input dtype differs from the weights', says so."""
    from core.errors import TraceError
    try:
        where = locate_forward_failure(model, inputs)
    except Exception:  # noqa: BLE001
        where = None
    if where is None:
        return error
    name, kind, e = where
    ex = as_example_inputs(inputs)
    layer = f"layer '{name}' ({kind})" if name else f"the top-level forward ({kind})"
    hint = ""
    wd = _float_dtype(model)
    dts = {t.dtype for t in list(ex.args) + list(ex.kwargs.values()) if isinstance(t, torch.Tensor)}
    mismatch = wd is not None and dts and (
        any(d.is_floating_point and d != wd for d in dts) or
        (all(not d.is_floating_point for d in dts) and
         re.search(r"scalar type|dtype|expected .*(Float|Half|Double)", str(e))))
    if mismatch:
        hint = (f"; the example input is {', '.join(sorted(str(d).replace('torch.', '') for d in dts))}"
                f" but the model's weights are {str(wd).replace('torch.', '')}: check --input-dtype")
    return TraceError(f"the model's forward failed in {layer} on the example inputs "
                      f"({ex.describe()}): {_exc(e)}{hint}")
