"""Physically remove channels: slice parameters and buffers, then fix module attributes.

A :class:`PruningPlan` names the removed channels of each group. It resolves to *kept indices per
tensor and dim*, which is all that is needed to rebuild the pruned architecture from the original
model definition later (see serialize.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from core import families
from core.errors import PlanError
from core.prune.copying import copy_model
from core.prune.slots import layout_of

MODULE_UPDATERS: list[tuple[type, Callable]] = []


def register_module_updater(module_type: type):
    """Decorator: ``fn(module, virtual)`` refreshes channel-sized attributes of ``module_type``
    after its tensors were sliced (``virtual`` holds kept counts of attribute-only slots)."""

    def deco(fn):
        MODULE_UPDATERS.insert(0, (module_type, fn))
        return fn

    return deco


@dataclass
class PruningPlan:
    """Channels removed per group (group id -> sorted local channel indices)."""

    removed: dict[int, list[int]] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def n_removed(self) -> int:
        return sum(len(v) for v in self.removed.values())

    def kept_indices(self, dg) -> dict[str, dict[int, list[int]]]:
        """tensor name -> dim -> kept indices (only tensors that change). A slot shared by
        several groups (a concatenation's consumer) loses the union of what each removes."""
        return layout_of(dg).kept_indices(dg, self.removed)

    def kept_counts(self, dg) -> dict[str, dict[int, int]]:
        """tensor name -> dim -> how many indices stay: what the FLOPs/parameter estimate needs,
        without building index lists (the planner's bisection and rounding ask hundreds of times)."""
        return layout_of(dg).kept_counts(dg, self.removed)

    def to_json(self) -> dict:
        return {"removed": {str(k): list(map(int, v)) for k, v in self.removed.items() if v},
                "settings": self.settings}

    @classmethod
    def from_json(cls, d: dict) -> "PruningPlan":
        return cls({int(k): list(v) for k, v in d.get("removed", {}).items()}, d.get("settings", {}))


def apply_kept(model: nn.Module, kept: dict[str, dict[int, list[int]]], inplace: bool = False) -> nn.Module:
    """Slice every named tensor to its kept indices and update module attributes."""
    families.load()  # updaters of optional libraries (timm) the model may come from
    owners = _owners(model)
    names = {id(m): n for n, m in model.named_modules()}
    virtual: dict[str, dict[str, int]] = {}
    touched = set()
    # A copy is made once, after slicing: the sliced tensors go into the copy in place of the
    # originals (deepcopy's memo), so the full-size tensors are never cloned just to be dropped.
    memo: dict[int, object] | None = None if inplace else {}
    indices: dict = {}  # (kept indices, device) -> (index tensor, min, max, the indices, alive)
    for name, dims in kept.items():
        if name.endswith(">") and "<" in name:  # attribute-only slot: "module.<attr>"
            mod_name, _, attr = name[:-1].rpartition("<")
            mod_name = mod_name[:-1] if mod_name.endswith(".") else mod_name
            virtual.setdefault(mod_name, {})[attr] = len(dims[0])
            touched.add(mod_name)
            continue
        if name not in owners:
            raise PlanError(f"the plan names '{name}', which this model does not have")
        holders = owners[name]
        mod0, attr0 = holders[0]
        t = mod0._parameters.get(attr0)
        if t is None:
            t = getattr(mod0, attr0)
        new = t.detach()
        for d, keep in sorted(dims.items()):
            # the members of a group share their kept indices: converted and checked once
            key = (tuple(keep) if isinstance(keep, list) else id(keep), new.device)
            hit = indices.get(key)
            if hit is None:
                # through numpy: torch.as_tensor of a list of ints costs ~50 ns an element
                k = np.asarray(keep, dtype=np.int64).reshape(-1)
                lo, hi = (int(k.min()), int(k.max())) if k.size else (0, -1)
                hit = indices[key] = (torch.from_numpy(k).to(new.device), lo, hi, keep)
            index, lo, hi, _ = hit
            if not 0 <= d < new.ndim or hi >= new.shape[d] or lo < 0:
                raise PlanError(f"the plan's indices for {name} dim {d} do not fit its shape "
                                f"{tuple(t.shape)}")
            new = new.index_select(d, index)
        new = new.contiguous()
        if isinstance(t, nn.Parameter):
            new = nn.Parameter(new, requires_grad=t.requires_grad)
        for mod, a in holders:
            if memo is None:
                (mod._parameters if isinstance(t, nn.Parameter) else mod._buffers)[a] = new
            touched.add(names.get(id(mod), ""))
        if memo is not None:
            memo[id(t)] = new
    if memo is not None:
        model = copy_model(model, memo)
    # A module whose children changed may keep sizes of its own (a head count): its ancestors are
    # updated too. Parents run first, so an updater still sees its children's original attributes
    # (e.g. the width before pruning) next to their already sliced tensors.
    mods = dict(model.named_modules())
    ancestors = set()
    for mname in touched:
        while mname:
            mname = mname.rpartition(".")[0]
            if mname not in touched and updater_for(mods.get(mname)) is not None:
                ancestors.add(mname)
    for mname in sorted(touched | ancestors, key=lambda n: (n.count(".") + bool(n), n)):
        m = mods.get(mname)
        if m is not None:
            update_module(m, virtual.get(mname, {}))
    return model


def updater_for(m):
    """The updater registered for ``m``'s own family (not a catch-all for every module)."""
    if m is None:
        return None
    key = (type(m), len(MODULE_UPDATERS))  # updaters are only ever added
    if key not in _UPDATER_CACHE:
        _UPDATER_CACHE[key] = next((fn for typ, fn in MODULE_UPDATERS
                                    if typ is not nn.Module and isinstance(m, typ)), None)
    return _UPDATER_CACHE[key]


_UPDATER_CACHE: dict = {}


def _owners(model):
    """tensor qualified name -> every (module, attr) holding it (tied weights have several)."""
    by_id: dict[int, list] = {}
    held = []
    for mname, mod in model.named_modules(remove_duplicate=False):
        for table in (mod._parameters, mod._buffers):
            for a, p in table.items():
                if p is None:
                    continue
                holders = by_id.setdefault(id(p), [])
                if (mod, a) not in holders:
                    holders.append((mod, a))
                held.append((f"{mname}.{a}" if mname else a, id(p)))
    return {name: by_id[pid] for name, pid in held}


def update_module(m: nn.Module, virtual: dict) -> None:
    for key, n in virtual.items():  # a head count the module's own reshape reads (ops.replay)
        if key.startswith("heads:") and isinstance(getattr(m, key[6:], None), int):
            setattr(m, key[6:], n)
    for typ, fn in MODULE_UPDATERS:
        if isinstance(m, typ):
            fn(m, virtual)
            return


def zero_channels(model: nn.Module, kept: dict[str, dict[int, list[int]]]) -> nn.Module:
    """A copy of ``model`` with every removed slice of every *parameter* set to zero (the oracle).

    Parameters the plan does not touch are shared with ``model``, not copied (memory: a partial
    plan, the bound checks' one-kind plans): the copy must never be changed in place, except
    through the tensors this function zeroes. Buffers are always copied (a forward may write them).
    """
    fills = removed_slices(model, kept)
    touched = {id(p) for p, _, _, _ in fills}
    shared = {id(p): p for p in model.parameters() if id(p) not in touched}
    model = copy_model(model, shared)
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for _, name, d, idx in fills:  # buffers and attribute-only slots keep their values
            params[name].index_fill_(d, idx, 0.0)
    return model


def removed_slices(model: nn.Module, kept: dict[str, dict[int, list[int]]]) -> list:
    """(parameter, name, dim, removed indices) for every parameter slice the plan removes."""
    out = []
    for name, p in model.named_parameters(remove_duplicate=False):
        for d, keep in kept.get(name, {}).items():
            mask = torch.ones(p.shape[d], dtype=torch.bool, device=p.device)
            mask[torch.as_tensor(keep, dtype=torch.long, device=p.device)] = False
            idx = torch.nonzero(mask).flatten()
            if len(idx):
                out.append((p, name, d, idx))
    return out
