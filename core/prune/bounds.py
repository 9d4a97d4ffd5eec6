"""Sizes for approximate verdicts: each reason an approximate plan gives is checked against a
stated bound on the relative output difference it causes.

An approximate plan removes channels that a statistic or a normalisation reads (LayerNorm through
a pruned residual stream, a softmax over pruned channels, GroupNorm with one group, an attention
scale that follows the head size): the pruned model then differs from the zeroed original by
design. How much is measured, per kind of reason, by pruning only the groups that carry that kind
(groups are independent, so each kind's share is measured on its own; behind a dead head, on the
intermediate activations - ``core.prune.weak``). A verdict is within bounds
when every kind's difference is at most its bound; the caller decides whether approximate results
are accepted at all (``--accept-approximate``).

The default bound, 1.0 relative (max |difference| / max |reference output|), is the point past
which the pruned output is further from the original than an all-zero output would be: beyond it
the pruned model no longer approximates the original in any useful sense, whatever the reason.
It is a sanity bound, not a quality target. Measured on small random-weight models at uniform
ratio 0.2 / 0.5: LayerNorm through a pruned stream 0.21 / 0.34 (torchvision ViT), 0.15 / 0.39
(Swin), 0.66-0.98 for the test-suite's ViT/Llama streams at 0.5; at 224x224 and ratio 0.5
ViT-B/16 0.54, Swin-T 0.37, ConvNeXt-T 0.35 (the README's support table); GroupNorm 0.008 / 0.03; a
softmax over 16 pruned channels 0.05 / 0.69. Pruning an already pruned transformer stream
again (75 % of it gone) reaches 1.2-1.4 and is refused unless the user raises the bound
(``--approximate-bound``, ``approx_bounds``). Trained models usually differ less than random ones.
"""
from __future__ import annotations

import math
import re

import torch

from core.prune.apply import PruningPlan, apply_kept, zero_channels

DEFAULT_BOUND = 1.0

# kind -> (what it means, substrings of the reasons the engine writes for it)
KINDS = {
    "layer_norm": ("LayerNorm/RMSNorm statistics over a pruned stream",
                   ("normalisation statistics are computed over the pruned channels",
                    "normalised dims")),
    "group_norm": ("GroupNorm statistics over pruned channels", ("norm group",)),
    "softmax": ("softmax or normalisation over pruned channels",
                ("normalises over pruned channels", "softmax", "normalise q and k",
                 "normalises across neighbouring channels")),
    "attention_scale": ("attention scale follows the pruned head size",
                        ("attention scale", "head dimension", "head_dim")),
    "statistic": ("a statistic (mean, variance, max, norm) over pruned channels",
                  ("statistic over pruned channels", "sum over pruned channels")),
}


# a norm written as ops (a Llama's RMSNorm: pow, mean, rsqrt) gives its mean's reason, in a
# module whose name ends in "norm" (input_layernorm, model.norm): the LayerNorm/RMSNorm kind
_TRACED_NORM = re.compile(r" in (?:[\w.]*\.)?\w*norm: statistic over pruned channels")


def reason_kind(reason: str) -> str:
    low = reason.lower()
    if _TRACED_NORM.search(low):
        return "layer_norm"
    for kind, (_, keys) in KINDS.items():
        if any(k.lower() in low for k in keys):
            return kind
    return "other"


def describe(kind: str) -> str:
    return KINDS.get(kind, ("another approximation",))[0]


def bound_for(kind: str, bounds: dict | None) -> float:
    if bounds is None:
        return DEFAULT_BOUND
    return float(bounds.get(kind, bounds.get("*", DEFAULT_BOUND)))


def approximate_groups(dg, plan) -> list[int]:
    """Ids of the groups whose removed channels make ``plan`` approximate."""
    return [gid for gid, chans in plan.removed.items()
            if chans and not dg.groups[gid].exact[chans].all()]


def approximate_summary(dg) -> str | None:
    """One line saying which prunable groups of ``dg`` can only prune approximately, and why (None
    when every group prunes exactly): a user learns it before choosing targets, not after."""
    kinds: dict[str, int] = {}
    n = 0
    for g in dg.prunable_groups:
        if is_approximate(g):
            n += 1
            for k in {reason_kind(r) for r in g.approx_reasons}:
                kinds[k] = kinds.get(k, 0) + 1
    if not n:
        return None
    why = "; ".join(describe(k) for k in sorted(kinds, key=lambda k: -kinds[k]))
    return f"{n} group{'s' if n > 1 else ''} prune{'' if n > 1 else 's'} approximately ({why})"


def is_approximate(g) -> bool:
    """Some channel of group ``g`` prunes only approximately."""
    return bool(g.approx_reasons) and not g.exact.all()


def measure_kinds(model, dg, plan, total_rel: float, bounds: dict | None, rel_of) -> list[dict]:
    """One entry per kind of approximation in ``plan``: its reasons, bound and measured relative
    difference (``total_rel`` when there is one kind; else ``rel_of(zeroed, pruned, kept)`` on a
    plan of that kind's groups alone, inf where it does not run)."""
    by_kind: dict[str, dict] = {}
    for gid in approximate_groups(dg, plan):
        for r in dg.groups[gid].approx_reasons:
            e = by_kind.setdefault(reason_kind(r), {"reasons": set(), "groups": set()})
            e["reasons"].add(r)
            e["groups"].add(gid)
    out = []
    for kind, e in sorted(by_kind.items()):
        if len(by_kind) == 1:
            rel = total_rel
        else:
            rel = _subset_rel(model, dg, plan, e["groups"], rel_of)
        b = bound_for(kind, bounds)
        out.append({"kind": kind, "what": describe(kind), "bound": b, "rel_diff": rel,
                    "within": bool(rel <= b), "reasons": sorted(e["reasons"])})
    return out


def _subset_rel(model, dg, plan, groups, rel_of) -> float:
    sub = PruningPlan({g: plan.removed[g] for g in groups})
    kept = sub.kept_indices(dg)
    try:
        z, p = zero_channels(model, kept).eval(), apply_kept(model, kept).eval()
        with torch.no_grad():
            return rel_of(z, p, kept)
    except Exception:  # noqa: BLE001 - the whole plan ran; a part that does not is unmeasured
        return math.inf


def summary(entries: list[dict]) -> str:
    return "; ".join(f"{e['kind']} {e['rel_diff']:.3g} {'<=' if e['within'] else '>'} "
                     f"bound {e['bound']:g}" for e in entries)
