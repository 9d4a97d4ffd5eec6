"""Model zoos: torchvision and timm architectures by name, with random weights or with pretrained
weights that are *already in the local cache* - nothing is ever downloaded."""
from __future__ import annotations

import difflib
import os
import warnings

import torch
from torch import nn

from core.errors import LoadError
from core.io.messages import exc_text


def _unknown(zoo: str, name: str, available) -> LoadError:
    close = difflib.get_close_matches(name, available, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return LoadError(f"{zoo} has no model '{name}'{hint}")


def _build(zoo: str, name: str, make) -> nn.Module:
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - a zoo's builder can fail in any way: one line
        raise LoadError(f"building {zoo}:{name} failed: {exc_text(e)}") from None


def load_torchvision(name: str, have_weights: bool) -> nn.Module:
    """``name`` or ``name@WEIGHTS`` (``@DEFAULT``, ``@IMAGENET1K_V1``, ...); ``have_weights``: the
    caller loads a ``--weights`` file afterwards (which conflicts with ``@WEIGHTS``)."""
    import torchvision.models as tvm

    name, _, wname = name.partition("@")
    available = tvm.list_models()
    if name not in available:
        raise _unknown("torchvision", name, available)
    if not wname:
        return _build("torchvision", name, lambda: tvm.get_model(name, weights=None))
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
        raise LoadError(f"loading cached weights {cached} failed: {exc_text(e)}") from None


def timm_cached_file(pcfg) -> tuple[str | None, list[str]]:
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


def load_timm(name: str, have_weights: bool) -> nn.Module:
    """``name`` (random weights) or ``name@pretrained`` (timm's weights, from the cache only)."""
    try:
        import timm
    except ImportError:
        raise LoadError("timm: models need the 'timm' package (pip install timm)") from None
    name, _, wname = name.partition("@")
    if not name:
        raise LoadError("timm: give a model name, e.g. timm:resnet18")
    base = name.partition(".")[0]
    if not timm.is_model(base):
        raise _unknown("timm", base, timm.list_models())
    if not wname:
        return _build("timm", name, lambda: timm.create_model(name, pretrained=False))
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
    path, looked = timm_cached_file(pcfg)
    if path is None:
        raise LoadError(f"pretrained weights of timm:{name} are not in the local cache (looked for "
                        f"{'; '.join(looked) or 'no source known'}); PruneStudio never downloads: "
                        f"fetch them yourself or use --weights FILE")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": path})
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"loading cached weights {path} into timm:{name} failed: {exc_text(e)}") \
            from None
