"""Rows of the group table, computed on a worker thread (importance touches every weight); the
table widget (gui/widgets/group_panel.py) only displays them."""
from __future__ import annotations

import math

import numpy as np

from core.errors import Cancelled
from core.plan.criteria import group_scores


def group_params(g, shapes: dict, is_param: set) -> int:
    """Parameters that belong to the group's channels (view-side bookkeeping, no pruning)."""
    total = 0
    for m in g.members:
        name = m.slot.tensor_name
        if name not in is_param or name not in shapes:
            continue
        shp = shapes[name]
        per_index = math.prod(shp) // max(shp[m.slot.dim], 1)
        total += per_index * int((m.index_map >= 0).sum())
    return total


def attention_unit(g) -> str | None:
    """How an attention module's group is pruned: ``"heads"`` (whole heads) or ``"head_dim"``
    (dimensions inside every head), from the analysis option ``attention``; None for other groups."""
    for m in g.members:
        if m.slot.virtual and m.slot.attr in ("num_heads", "head_dim"):
            return "heads" if m.slot.attr == "num_heads" else "head_dim"
    return None


def row_importance(dg, model, criterion="l2", should_stop=None) -> dict:
    """Group id -> mean importance of its prunable channels (NaN: none, or not scorable). It
    touches every weight: the window computes it after the graph is on screen (and stops it,
    ``should_stop``, when the model is replaced)."""
    try:
        scores = group_scores(dg, model, criterion, normalise=False,
                              should_stop=should_stop) if criterion != "taylor" else {}
    except Cancelled:
        raise
    except Exception:  # noqa: BLE001 - importance is informative only; the table works without it
        scores = {}
    out = {}
    for g in dg.groups:
        s = scores.get(g.id)
        out[g.id] = float(np.mean(s[g.prunable])) if s is not None and g.prunable.any() else float("nan")
    return out


def group_rows(dg, model, criterion="l2", importance: bool = True) -> list[dict]:
    """One dict per group: id, root, channels, prunable, is_prunable, params, importance, unit,
    span (without ``importance``: NaN, to be filled in from :func:`row_importance`)."""
    shapes = {n: tuple(t.shape) for n, t in model.named_parameters()}
    is_param = set(shapes)
    imps = row_importance(dg, model, criterion) if importance else {}
    rows = []
    for g in dg.groups:
        imp = imps.get(g.id, float("nan"))
        rows.append({"id": g.id, "root": g.root, "channels": g.n_channels, "prunable": g.n_prunable,
                     "is_prunable": g.is_prunable, "params": group_params(g, shapes, is_param),
                     "importance": imp, "unit": attention_unit(g),
                     "span": g.channel_span})
    return rows


def group_rows_meta(dg, model) -> list[dict]:
    """The same rows for a meta-device model: no weights, so no importance."""
    shapes = {n: tuple(t.shape) for n, t in model.named_parameters()}
    return [{"id": g.id, "root": g.root, "channels": g.n_channels, "prunable": g.n_prunable,
             "is_prunable": g.is_prunable, "params": group_params(g, shapes, set(shapes)),
             "importance": float("nan"), "unit": attention_unit(g),
             "span": g.channel_span} for g in dg.groups]
