"""Files written with ``torch.save``: reading them with the trust rule, state dicts that must fit a
model, and the whole-model pickle as an output.

Reading is SAFE BY DEFAULT (``torch.load(weights_only=True)``): a pickled module contains code that
runs when loaded, so it is only unpickled with consent (:mod:`core.io.trust`).
"""
from __future__ import annotations

import copy
import hashlib
import io
import os
import re
import sys
import warnings
import zipfile

import torch
from torch import nn

from core.errors import LoadError, PruneStudioError
from core.io.atomic import atomic_write
from core.io.tempfiles import disk_error, torch_save
from core.io.messages import exc_text, one_line
from core.io.specs import PORTABLE_SUFFIX
from core.io.trust import CodeRef, as_policy, code_ref


def check_readable(path: str) -> None:
    """Raise a LoadError unless ``path`` is a non-empty file."""
    if not os.path.exists(path):
        raise LoadError(f"file not found: {path}")
    if os.path.isdir(path):
        raise LoadError(f"{path} is a folder, not a model file")
    if os.path.getsize(path) == 0:
        raise LoadError(f"{path} is empty (0 bytes)")


def _short_torch_error(e: BaseException) -> str:
    """torch.load's errors for damaged files are long and cryptic; say what they mean."""
    msg = one_line(e)
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
    return exc_text(e)[:200]


def pickled_code(path: str) -> CodeRef | None:
    """The ref of the code ``torch.load(weights_only=False)`` would run for ``path``, read without
    unpickling anything: the globals of a zip archive's pickle that the safe loader refuses; a file
    in another format (the legacy format, a plain pickle) may hold code whatever it references.
    None when nothing would run (or the archive is unreadable: loading it says why)."""
    if zipfile.is_zipfile(path):
        try:
            from torch.serialization import get_unsafe_globals_in_checkpoint
            unsafe = get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - damaged, or a torch without the scanner
            return None
        if not unsafe:
            return None
        names = sorted(unsafe)
        more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
        return code_ref("pickled code", path, detail=f"it references {', '.join(names[:3])}{more}")
    return code_ref("pickled code", path, detail="not a zip archive: any pickle may hold code")


def _refuse_pickle(path: str, data: bytes, global_name: str | None, policy) -> None:
    """Raise unless ``policy`` allows the pickle whose bytes are ``data``."""
    what = f" (it references {global_name})" if global_name else ""
    ref = CodeRef("pickled code", os.path.abspath(path), hashlib.sha256(data).hexdigest(),
                  detail=what.strip(" ()") or None)
    policy.require(ref, f"{path} contains pickled code{what}, which runs when loaded; load it only "
                        f"if you trust its source: pass --trust (trust=True)")


def read_torch_file(path: str, trust=False, mmap: bool = False):
    """``torch.load`` with the safe default, turning every failure into a one-line LoadError.
    Pickled code is unpickled only if ``trust`` (a :class:`~core.io.trust.TrustPolicy` or bool)
    allows the file's content; the bytes unpickled are then the bytes that were hashed."""
    check_readable(path)
    policy = as_policy(trust)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"{path} is not a readable PyTorch file (corrupt or truncated): {exc_text(e)}")
        if any(n.split("/", 1)[-1].startswith("code/") or n.endswith("/constants.pkl") for n in names):
            raise LoadError(f"{path} is a TorchScript archive; PruneStudio needs the eager (Python) "
                            f"model: give path/to/file.py:factory instead")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001
        text = str(e)
        m = (re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
             or re.search(r"unsupported GLOBAL ([\w.]+)", text))
        if m is None and ("Weights only load failed" not in text
                          or re.search(r"Unsupported operand \d+", text)):
            raise LoadError(f"{path} is not a readable PyTorch file (corrupt or truncated?): "
                            f"{_short_torch_error(e)}") from None
        global_name = m.group(1) if m else None
    source = path
    if not policy.trust_all:
        with open(path, "rb") as f:
            data = f.read()
        _refuse_pickle(path, data, global_name, policy)
        source = io.BytesIO(data)
    # A trusted pickle may name classes from a user file next to it or in the working folder.
    extra = [d for d in dict.fromkeys([os.getcwd(), os.path.dirname(os.path.abspath(path))])
             if d not in sys.path]
    sys.path.extend(extra)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(source, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError, ImportError) as e:
        raise LoadError(f"{path} pickles a model whose class cannot be imported here ({exc_text(e)}); "
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


def as_state_dict(obj) -> dict | None:
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


def check_state_dict(model: nn.Module, sd: dict, path: str, what: str = "the model") -> None:
    """Raise a LoadError listing the missing, unexpected and misshapen keys of ``sd``."""
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


def load_weights(model: nn.Module, path: str, what: str = "the model") -> None:
    """Load a state-dict file strictly into ``model``; a LoadError lists what does not fit."""
    obj = read_torch_file(path, trust=False)
    sd = as_state_dict(obj)
    if sd is None:
        raise LoadError(f"{path} does not hold a state dict (a dict of tensors) but "
                        f"{type(obj).__name__}")
    check_state_dict(model, sd, path, what)
    with torch.no_grad():
        model.load_state_dict(sd, strict=True)


# ----------------------------------------------------------------------------- writing

def cpu_copy(model: nn.Module) -> nn.Module:
    """``model`` itself when it is on the CPU, else a CPU copy (the original stays where it is)."""
    dev = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    return model if dev <= {"cpu"} else copy.deepcopy(model).cpu()


def tensor_shapes(sd: dict) -> dict:
    """``{name: shape}`` of the tensors of a state dict: what a reload check compares."""
    return {k: tuple(v.shape) for k, v in sd.items() if isinstance(v, torch.Tensor)}


def save_whole(model: nn.Module, path: str, force: bool = False, source=None,
               should_stop=None) -> None:
    """Pickle the whole (pruned) module with ``torch.save`` (loads with ``torch.load(...,
    weights_only=False)``, i.e. ``--trust``; the model's class must be importable there)."""
    model = cpu_copy(model)
    want = tensor_shapes(model.state_dict())

    def write(tmp):
        try:
            torch_save(model, tmp)
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001
            if disk_error(e, path) is not None:
                raise  # a full disk, not a model that cannot be pickled
            raise PruneStudioError(f"the model cannot be pickled ({type(e).__name__}: {e}); save the "
                                   f"portable {PORTABLE_SUFFIX} form instead") from None

    def check(tmp):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                back = torch.load(tmp, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise PruneStudioError(f"the saved model does not load back ({type(e).__name__}: {e})") from None
        if not isinstance(back, nn.Module) or tensor_shapes(back.state_dict()) != want:
            raise PruneStudioError("the saved model does not load back identically")

    atomic_write(path, write, check, force, source, should_stop=should_stop)
