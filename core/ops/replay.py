"""Derive channel maps of data-movement ops by replaying them on index tensors.

Instead of knowing what ``view``, ``cat``, ``pixel_shuffle`` or a fancy ``__getitem__`` do to
channels, each labelled input is replaced by a float64 tensor whose elements hold ``1 + position`` in
that input's label array (broadcast over unlabelled dims), unlabelled inputs by -1, and the op is run
again on the CPU. Each output element then says which labelled position it came from (0 = from a
constant such as padding). From that element-level provenance we read off the output's labelled
dimensions and the positions that must be coupled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten  # noqa: PLC2701 (torch's pytree: no public alias)

from core.ops.atoms import NO_ATOM, Labeling

FOREIGN = -1.0  # element of an unlabelled tensor input
NOWHERE = -2  # element created by the op itself (padding, fill)


def _index_tensor(shape, lab: Labeling, base: int) -> torch.Tensor:
    """float64 tensor of ``shape`` holding base + 1 + flat position in lab.atoms."""
    sizes = [shape[d] for d in lab.dims]
    flat = torch.arange(1, int(np.prod(sizes)) + 1, dtype=torch.float64) + base
    view = [1] * len(shape)
    for d, s in zip(lab.dims, sizes):
        view[d] = s
    # lab.dims are sorted, so the flat order of `flat` matches lab.atoms.ravel()
    return flat.reshape([shape[d] for d in lab.dims]).reshape(view).expand(tuple(shape)).contiguous()


def replay(func, args, kwargs, labelings_for, table, reason: str, channel_dims=None,
           heads: HeadAttrs | None = None):
    """Run ``func`` on index tensors; return one list of Labeling per tensor output.

    ``labelings_for(t)`` gives the labelings of a floating-point tensor input; integer and bool
    inputs (indices, masks) are passed through unchanged. ``channel_dims`` restricts which output
    dims may carry channels (e.g. pixel_shuffle spreads each channel over space: the spread
    positions are then coupled instead of becoming labelled spatial dims).
    """
    leaves, spec = tree_flatten((args, kwargs))
    tensor_pos = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
    labs = {i: labelings_for(leaves[i]) for i in tensor_pos if _is_data(leaves[i])}
    # One round per set of labelled dims (counted from the last dim, as inputs broadcast): the
    # labelings replayed together are those of the same dims, so channels of one input's dim 1 are
    # never read as coupled to another input's dim 2 (a (1, tokens, C) parameter concatenated
    # with (B, N, C) features). An input labelled elsewhere but not on this round's dims is fixed
    # along them: it is replayed as foreign.
    keys = []
    for i, ls in labs.items():
        for lab in ls:
            k = _key(leaves[i], lab)
            if k not in keys:
                keys.append(k)
    results = None
    for key in keys:
        new = list(leaves)
        table_atoms = []
        base = 0
        for i in tensor_pos:
            t = leaves[i]
            if i not in labs:
                new[i] = t.detach().to("cpu") if t.device.type != "meta" else torch.zeros(
                    t.shape, dtype=t.dtype)
                continue
            lab = next((lab for lab in labs[i] if _key(t, lab) == key), None)
            if lab is None:
                new[i] = torch.full(tuple(t.shape), FOREIGN, dtype=torch.float64)
            else:
                new[i] = _index_tensor(t.shape, lab, base)
                table_atoms.append(lab.atoms.ravel())
                base += lab.atoms.size
        all_atoms = np.concatenate(table_atoms) if table_atoms else np.zeros(0, np.int64)
        bounds = np.cumsum([a.size for a in table_atoms])  # value ranges of each input
        a, k = tree_unflatten(new, spec)
        out = func(*a, **k)
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        if results is None:
            results = [[] for _ in outs]
        for j, o in enumerate(outs):
            lab = _decode(o, all_atoms, table, reason, channel_dims, bounds)
            if lab is None:
                continue
            if len(lab.dims) > 1:
                dyn, attr = prefer_heads(dynamic_dims(func, args, kwargs, o), lab, o.shape, heads)
                dyn = prefer_channel_first(dyn, lab, o.shape)
                lab = collapse_split(lab, table, reason, dyn)
                if attr is not None:
                    tie_head_attr(table, heads, attr, lab.atoms, reason)
            results[j].append(lab)
    return results


def _key(t: torch.Tensor, lab: Labeling) -> tuple:
    """The labelled dims of ``t``, counted from the last one."""
    return tuple(d - t.ndim for d in lab.dims)


def dynamic_dims(func, args, kwargs, out) -> set:
    """Output dims a view/reshape leaves to be inferred (-1): their size follows the input."""
    name = getattr(func, "__name__", "")
    if name not in ("view", "reshape", "unflatten"):
        return set()
    shape = [a for a in args[1:] if not isinstance(a, torch.Tensor)]
    if name == "unflatten":
        dim = int(args[1] if len(args) > 1 else kwargs["dim"]) % max(args[0].ndim, 1)
        sizes = list(args[2] if len(args) > 2 else kwargs["sizes"])
        return {dim + i for i, v in enumerate(sizes) if v == -1}
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = list(shape[0])
    shape = shape or list(kwargs.get("shape", kwargs.get("size", ())))
    return {i for i, v in enumerate(shape) if isinstance(v, int) and v == -1}


HEAD_NAMES = ("num_heads", "n_heads", "n_head", "num_attention_heads", "num_key_value_heads")


@dataclass
class HeadAttrs:
    """Integer attributes of the module running a reshape, by value: a split dim sized like one
    of them is read as that module's head count (``reshape(b, n, 3, self.h, d // self.h)``)."""

    module: str
    named: dict  # value -> attribute, for the usual head-count names
    other: dict  # value -> [attributes], every other int attribute of the module
    library: bool = False  # a library's class: its updater keeps the named counts (see below)


# Library classes that reshape by a named head count have updaters of their own (Hugging Face,
# torchvision's MViT): their named counts are left to them, and their other int attributes are
# not read as head counts (torch_geometric's GAT keeps its ``heads``, pruning per-head widths).
LIBRARIES = ("torch.", "torchvision.", "transformers.", "timm.", "torch_geometric.")


def head_attrs(ctx) -> HeadAttrs | None:
    """The running module's candidate head counts (heads mode only)."""
    t = getattr(ctx, "tracer", None)
    if t is None or ctx.options.get("attention", "heads") != "heads" or not t.scope:
        return None
    name = t.scope[-1]
    mod = t.module_named(name)
    if isinstance(mod, torch.nn.Unflatten) and isinstance(mod.unflattened_size[0], int):
        # its leading size is the channel count when it unflattens channels into blocks
        # (Linear -> Unflatten(1, (32, 4, 4)) -> deconv); its updater rewrites it
        return HeadAttrs(name, {}, {mod.unflattened_size[0]: ["unflattened_size"]})
    named, other = {}, {}
    for a, v in vars(mod).items():
        if isinstance(v, int) and not isinstance(v, bool) and v > 1 and not a.startswith("_"):
            if a in HEAD_NAMES:
                named.setdefault(v, a)
            else:
                other.setdefault(v, []).append(a)
    library = type(mod).__module__.startswith(LIBRARIES)
    if library:
        other = {}
    return HeadAttrs(name, named, other, library) if named or other else None


def prefer_heads(dynamic: set, lab: Labeling, shape, heads: HeadAttrs | None):
    """With no inferred (-1) dim among a split's dims, a dim sized like the running module's head
    count is the one that shrinks; returns (dims that shrink, that attribute or None).

    A usual name (``num_heads``...) qualifies on any outer dim of the split; any other int
    attribute (``self.h``, ``self.heads``) only when the split ends on the last dim (``..., h,
    d``, as attention lays heads out) and exactly one attribute has that value: the attribute is
    then set to the kept head count after pruning (a virtual slot, see :func:`tie_head_attr`)."""
    if heads is None or any(d in dynamic for d in lab.dims):
        return dynamic, None
    outer = lab.dims[:-1]
    match = [d for d in outer if shape[d] in heads.named]
    if match:
        if len(match) != 1:
            return dynamic, None
        return dynamic | {match[0]}, None if heads.library else heads.named[shape[match[0]]]
    if lab.dims[-1] != len(shape) - 1:
        return dynamic, None
    match = [d for d in outer if shape[d] in heads.other]
    if len(match) != 1 or len(heads.other[shape[match[0]]]) != 1:
        return dynamic, None
    return dynamic | {match[0]}, heads.other[shape[match[0]]][0]


def tie_head_attr(table, heads: HeadAttrs, attr: str, rep, reason: str) -> None:
    """Head j of the collapsed split goes with index j of a virtual slot ``module.<heads:attr>``:
    the module updater sets ``attr`` to the number of heads kept."""
    slot = table.virtual_slot(heads.module, f"heads:{attr}", len(rep))
    table.join(rep, slot.atoms, f"{reason}: heads counted by {heads.module or 'the model'}.{attr}")


def prefer_channel_first(dynamic: set, lab: Labeling, shape) -> set:
    """A flat channel dim split into dim 1 and *every* dim after it (``Linear(64, 512)`` ->
    ``view(b, 32, 4, 4)`` -> deconv: the decoder pattern) is read channel-first, as PyTorch lays
    feature maps out: dim 1 shrinks and each of its indices owns the contiguous block of positions
    in the trailing (spatial) dims. When the last dim is the larger one (``view(b, 4, 4, C)``
    before a permute, ``view(b, heads, head_dim)``) the innermost shrinks, as before. An inferred
    (-1) or head-count dim still wins; a guess that does not fit the consumer blocks there, and
    explicit sizes are checked by the shape probe."""
    nd = len(shape)
    if any(d in dynamic for d in lab.dims) or nd < 3 or lab.dims != tuple(range(1, nd)) \
            or shape[-1] > shape[1]:
        return dynamic
    return dynamic | {1}


def collapse_split(lab: Labeling, table, reason: str, dynamic: set) -> Labeling:
    """One channel dim was split across several dims (heads x head_dim, groups x channels).

    Only one of them can shrink after pruning: the one the code leaves to be inferred (-1), or
    else the innermost (outer sizes such as a group or head count are usually constants). Every
    position along the fixed dims is removed together with its index along the shrinking dim, so
    the labeling collapses to that single dim.
    """
    cand = [k for k, d in enumerate(lab.dims) if d in dynamic]
    k = cand[0] if len(cand) == 1 else len(lab.dims) - 1
    rows = np.moveaxis(lab.atoms, k, 0).reshape(lab.atoms.shape[k], -1)
    if rows.shape[1] > 1:
        first = np.repeat(rows[:, :1], rows.shape[1] - 1, axis=1)
        table.join(first.ravel(), rows[:, 1:].ravel(), f"{reason}: split channel dim")
    rep = np.where((rows >= 0).all(axis=1), rows[:, 0], -1)
    return Labeling((lab.dims[k],), rep)


def _is_data(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def _decode(o: torch.Tensor, all_atoms: np.ndarray, table, reason: str,
            channel_dims=None, bounds=()) -> Labeling | None:
    if not o.is_floating_point():
        return None  # e.g. an indices output; only data outputs carry channels
    if o.numel() == 0:  # nothing to read a map from (e.g. zero detections at trace time)
        table.block(all_atoms, f"{reason}: op on an empty tensor, its channel map is unknown")
        return None
    v = o.detach().to(torch.float64)
    r = torch.round(v)
    if (v - r).abs().max().item() > 1e-6 if v.numel() else False:
        # the op computed across positions, so it is not pure data movement
        idx = r.clamp(min=0).long().unique()
        idx = idx[(idx > 0) & (idx <= all_atoms.size)] - 1
        table.block(all_atoms[idx.numpy()], f"{reason}: op mixes values across channels")
        return None
    r = r.long()
    if not (r > 0).any():
        return None
    # one gather: value -1 -> NO_ATOM (unlabelled input), 0 -> NOWHERE (constant), k -> atom k-1
    lut = torch.from_numpy(np.concatenate([[NO_ATOM, NOWHERE], all_atoms]))
    e = lut[r + 1]
    if o.ndim == 0:
        table.block(e.reshape(1).numpy(), f"{reason}: a single channel is selected into a scalar")
        return None
    # dims along which the atom changes between neighbouring elements of the same input
    src = torch.from_numpy(np.searchsorted(bounds, r.clamp(min=0).numpy().ravel(), side="left")
                           ).reshape(r.shape) if len(bounds) > 1 else None
    varying = []
    for d in range(e.ndim):
        n = e.shape[d]
        if n < 2:
            continue
        a, b = e.narrow(d, 0, n - 1), e.narrow(d, 1, n - 1)
        diff = (a != b) & (a >= 0) & (b >= 0)
        if src is not None:
            diff &= src.narrow(d, 0, n - 1) == src.narrow(d, 1, n - 1)
        if diff.any():
            varying.append(d)
    if channel_dims is not None:
        varying = [d for d in varying if d in channel_dims]
    if not varying:
        table.block(e[e >= 0].unique().numpy(),
                    f"{reason}: a fixed channel is selected (its index would change after pruning)")
        return None
    rest = [d for d in range(e.ndim) if d not in varying]
    rows = e.permute(varying + rest).reshape(int(np.prod([e.shape[d] for d in varying])), -1)
    rmax = rows.max(dim=1).values
    rmin = torch.where(rows >= 0, rows, torch.full_like(rows, np.iinfo(np.int64).max)).min(dim=1).values
    labelled = rmax >= 0
    mixed = labelled & (rmin != rmax)
    if mixed.any():  # several atoms meet in one position: they are coupled
        sub = rows[mixed]
        s = torch.sort(torch.where(sub >= 0, sub, torch.full_like(sub, -1)), dim=1).values
        a, b = s[:, :-1], s[:, 1:]
        keep = (a >= 0) & (b >= 0) & (a != b)
        table.join(a[keep].numpy(), b[keep].numpy(), reason)
    foreign = labelled & (rows == NO_ATOM).any(dim=1)
    if foreign.any():
        table.block(rows[foreign][rows[foreign] >= 0].numpy(),
                    f"{reason}: channels aligned with a tensor that cannot be pruned")
    arr = torch.where(labelled & ~foreign, rmax, torch.full_like(rmax, NO_ATOM)).numpy()
    arr = arr.reshape([e.shape[d] for d in varying])
    return Labeling(tuple(varying), arr, joint=reason if len(varying) > 1 else None)
