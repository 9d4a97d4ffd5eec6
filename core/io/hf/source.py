"""Hugging Face models from local files only: a ``save_pretrained`` directory, or a hub id already
in the local cache (never downloaded). Custom modelling code (``auto_map``) needs consent
(:mod:`core.io.trust`)."""
from __future__ import annotations

import contextlib
import json
import os
import warnings

import torch
from torch import nn

from core import families
from core.errors import LoadError
from core.io.messages import exc_text
from core.io.trust import CodeRef, as_policy, code_ref

WEIGHT_SUFFIXES = (".safetensors", ".bin")


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


def hf_local_dir(path: str) -> str | None:
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


def _auto_map(d: str) -> dict | None:
    """config.json's ``auto_map`` (custom modelling code), read as plain JSON."""
    auto = _config(d).get("auto_map")
    return auto if auto else None


def _config(d: str) -> dict:
    try:
        with open(os.path.join(d, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def default_input(path: str) -> tuple[str, str] | None:
    """The example input an ``hf:`` model takes when the user names none, read from config.json
    as plain JSON: 32 token ids for a text model (``vocab_size``), one image for a vision model
    (``image_size``, ``num_channels``); None when the config says neither."""
    d = hf_local_dir(path)
    cfg = _config(d) if d else {}
    if "vocab_size" in cfg or "vocab_size" in (cfg.get("text_config") or {}):
        return "1,32", "int64"
    size = cfg.get("image_size")
    if isinstance(size, int) and size > 0:
        return f"1,{int(cfg.get('num_channels') or 3)},{size},{size}", "float32"
    return None


def custom_code_ref(path: str) -> CodeRef | None:
    """The custom modelling code (``auto_map``) of an ``hf:`` spec's directory, as a ref whose hash
    covers its ``*.py`` files and config.json; None when it has none."""
    d = hf_local_dir(path)
    if d is None or _auto_map(d) is None:
        return None
    return code_ref("custom modelling code", d, detail="auto_map in config.json")


def hf_class_and_config(path: str, trust):
    """(model class, config, local directory) for an ``hf:`` spec, from local files only; custom
    code (``auto_map``) runs only if ``trust`` (a TrustPolicy or bool) allows the directory."""
    try:
        import transformers
        from transformers import AutoConfig
    except ImportError:
        raise LoadError("hf: models need the 'transformers' package (pip install transformers)") \
            from None
    d = hf_local_dir(path)
    if d is None:
        if os.path.exists(path):
            raise LoadError(f"hf:{path} is a file; give the model directory (with config.json)")
        raise LoadError(f"hf:{path}: no such directory, and not a model already in the local "
                        f"Hugging Face cache (PruneStudio never downloads)")
    if not os.path.isfile(os.path.join(d, "config.json")):
        raise LoadError(f"hf:{path}: the directory has no config.json; it is not a Hugging Face "
                        f"model directory (save one with model.save_pretrained(DIR))")
    ref = custom_code_ref(d)
    allowed = ref is not None and as_policy(trust).allows(ref)
    if ref is not None and "AutoConfig" in _auto_map(d) and not allowed:
        _refuse(path, ref, trust)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = AutoConfig.from_pretrained(d, local_files_only=True, trust_remote_code=allowed)
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"hf:{path}: config.json cannot be read: {exc_text(e)}") from None
    archs = list(getattr(cfg, "architectures", None) or [])
    cls = None
    for a in archs:
        cls = getattr(transformers, a, None)
        if cls is not None:
            break
    if cls is None and getattr(cfg, "auto_map", None):
        if not allowed:
            _refuse(path, ref or code_ref("custom modelling code", d), trust)
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


def _refuse(path: str, ref: CodeRef, trust) -> None:
    as_policy(trust).require(ref, f"hf:{path} uses custom modelling code (auto_map in config.json; "
                                  f"sha256 {ref.short}), which runs when loaded: pass --trust "
                                  f"(trust=True) if you trust it")


def load_hf(path: str, trust, have_weights: bool) -> nn.Module:
    """The model of an ``hf:`` spec with its weights; ``have_weights``: the caller loads a
    ``--weights`` file afterwards (allowed only when the directory holds no weights)."""
    cls, cfg, d = hf_class_and_config(path, trust)
    families.load()  # Hugging Face attribute/config sync
    rec = getattr(cfg, "prunestudio", None) or {}
    kw = {"local_files_only": True}
    ref = custom_code_ref(d)
    if ref is not None and as_policy(trust).allows(ref):
        kw["trust_remote_code"] = True
    has_weights = any(f.endswith(WEIGHT_SUFFIXES) or f.endswith(".index.json")
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
                # non-uniform pruning cannot be described by the config: rebuild from the shapes
                from core.adapters.hf import load_pruned
                model = load_pruned(cls, d, **kw)
            else:
                model = cls.from_pretrained(d, **kw)
    except LoadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"hf:{path}: loading {getattr(cls, '__name__', cls)} failed: "
                        f"{exc_text(e)}") from None
    return model


def build_hf_meta(path: str, trust) -> nn.Module:
    """The architecture of an ``hf:`` spec from its config alone, every tensor on the meta device."""
    cls, cfg, _ = hf_class_and_config(path, trust)
    families.load()  # Hugging Face attribute/config sync
    try:
        with torch.device("meta"):
            return cls._from_config(cfg)
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"building hf:{path} on the meta device failed: {exc_text(e)}") from None


def hf_weight_bytes(path: str) -> int | None:
    """Bytes of the weight files of an ``hf:`` spec's local directory (None if unknown)."""
    d = hf_local_dir(path)
    if d is None:
        return None
    sizes = [os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
             if f.endswith((".safetensors", ".bin", ".pt", ".pth"))]
    return sum(sizes) or None
