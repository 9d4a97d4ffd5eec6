"""The portable form (``.pstudio``) as data: what the file holds and how a rebuilt original model
becomes the pruned one. Saving and loading, which need the model sources, are in
:mod:`core.io.portable`; this module sits below :mod:`core.io.sources` so that the ``pstudio``
source can read the format without an import cycle.

A ``torch.save`` zip archive of plain data, loadable with ``torch.load(weights_only=True)`` - no
pickled code::

    {"format": "prunestudio.portable", "version": 1,
     "model_spec": "torchvision:resnet18" | "/abs/path/file.py:factory" | "/abs/model.pt",
                                                      # loaded as recorded, with the reader's consent
     "kept": {tensor name: {dim: [kept indices]}},   # PruningPlan.kept_indices(dg)
     "state_dict": {name: tensor},                    # the pruned model's weights
     "plan": PruningPlan.to_json() or None, "meta": {...}}
"""
from __future__ import annotations

import os

import torch
from torch import nn

from core.errors import LoadError, PruneStudioError
from core.io.specs import PORTABLE_SUFFIX, normalize_spec, spec_file
from core.io.torchfile import check_state_dict, read_torch_file
from core.prune.apply import apply_kept

PORTABLE_FORMAT = "prunestudio.portable"
PORTABLE_VERSION = 1

__all__ = [
    "PORTABLE_FORMAT",
    "PORTABLE_SUFFIX",
    "PORTABLE_VERSION",
    "apply_portable",
    "is_portable",
    "original_spec",
    "portable_payload",
    "read_portable",
]


def is_portable(obj) -> bool:
    """Whether a loaded torch file holds the portable form (whatever the file's suffix)."""
    return isinstance(obj, dict) and obj.get("format") == PORTABLE_FORMAT


def portable_payload(model_spec: str, kept: dict, state_dict: dict, plan=None,
                     meta: dict | None = None) -> dict:
    """The dictionary a portable file holds (plain data: indices as ints, tensors on the CPU)."""
    return {"format": PORTABLE_FORMAT, "version": PORTABLE_VERSION,
            "model_spec": normalize_spec(model_spec),
            "kept": {str(n): {int(d): [int(i) for i in idx] for d, idx in dims.items()}
                     for n, dims in kept.items()},
            "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
            "plan": plan.to_json() if hasattr(plan, "to_json") else plan,
            "meta": {"torch": str(torch.__version__), **(meta or {})}}


def read_portable(path: str) -> dict:
    """The checked contents of a portable file (LoadError if it is not one, or is damaged)."""
    d = read_torch_file(path, trust=False)
    if not is_portable(d):
        raise LoadError(f"{path} is not a PruneStudio portable file")
    if int(d.get("version", 0)) > PORTABLE_VERSION:
        raise LoadError(f"{path} was written by a newer PruneStudio (format version {d['version']})")
    for k in ("model_spec", "kept", "state_dict"):
        if k not in d:
            raise LoadError(f"{path} is damaged: it has no '{k}'")
    return d


def original_spec(d: dict, path: str) -> str:
    """The spec of the original model, exactly as recorded. A file it names that is missing is an
    error: it is never looked for next to the portable file (a shared folder holding model.pstudio
    and a file of the same name would otherwise run that file)."""
    spec = d["model_spec"]
    if not isinstance(spec, str) or not spec.strip():
        raise LoadError(f"{path} is damaged: its model_spec is not a spec")
    f = spec_file(spec)
    if f is not None and not os.path.exists(f):
        raise LoadError(f"{path}: the original model's file {f} (recorded in it) is missing; put it "
                        f"back at that path (PruneStudio does not look for it elsewhere)")
    return spec


def apply_portable(model: nn.Module, d: dict, path: str, spec: str) -> nn.Module:
    """Slice the rebuilt original ``model`` (in place) to the kept indices and load the pruned
    weights strictly."""
    kept = {n: {int(k): list(v) for k, v in dims.items()} for n, dims in d["kept"].items()}
    try:
        apply_kept(model, kept, inplace=True)
    except PruneStudioError as e:
        raise LoadError(f"{path}: the plan does not fit '{spec}': {e}") from None
    check_state_dict(model, d["state_dict"], path, f"the pruned '{spec}'")
    with torch.no_grad():
        model.load_state_dict(d["state_dict"], strict=True)
    return model.eval()
