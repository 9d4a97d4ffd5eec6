"""Choose which channels to remove: ratios, global/uniform ranking, FLOPs/parameter targets."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from core.errors import PlanError
from core.plan.criteria import group_scores
from core.plan.rounding import group_multiples, legal_counts, round_toward, used_multiples
from core.prune.apply import PruningPlan

FINE_GROUP = 32  # groups with at least this many channels can approach any ratio smoothly
WEIGHT_OPS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "linear"}


@dataclass
class PlanSettings:
    ratio: float | None = 0.5  # fraction of prunable channels removed
    target_flops: float | None = None  # fraction of FLOPs to remove (e.g. 0.5 halves FLOPs)
    target_params: float | None = None  # fraction of parameters to remove
    target_latency: float | None = None  # fraction of latency to remove (by the latency tables)
    importance: str = "l2"
    global_ranking: bool = False
    # a FLOPs target without global ranking: "latency" shapes the per-group ratios by a modelled
    # latency per FLOP (core.plan.latency_model), "uniform" removes the same share of every group
    flops_allocation: str = "latency"
    round_to: int = 1
    # round_to came from --round-to auto: it is a ceiling, each group uses the largest of it, 8, 4, 1
    # that the group is at least AUTO_WIDTHS times as wide as (and that still removes channels)
    round_auto: bool = False
    ignore: list[str] = field(default_factory=list)  # modules whose output channels stay
    overrides: dict[str, float] = field(default_factory=dict)  # module name -> ratio
    max_group_ratio: float = 0.95  # never remove more than this fraction of one group
    seed: int = 0

    def validate(self):
        for name in ("ratio", "target_flops", "target_params", "target_latency"):
            v = getattr(self, name)
            if v is not None and not (0.0 <= v < 1.0):
                raise PlanError(f"{name.replace('_', ' ')} must be in [0, 1), got {v}")
        for k, v in self.overrides.items():
            if not (0.0 <= v < 1.0):
                raise PlanError(f"ratio override for '{k}' must be in [0, 1), got {v}")
        if self.flops_allocation not in ("latency", "uniform"):
            raise PlanError(f"FLOPs allocation must be 'latency' or 'uniform', got "
                            f"'{self.flops_allocation}'")
        if self.round_to < 1:
            raise PlanError(f"round_to must be a positive integer, got {self.round_to}")
        if sum(x is not None for x in (self.target_flops, self.target_params, self.target_latency)) > 1:
            raise PlanError("give one target: FLOPs, parameters or latency")

    def to_json(self):
        return dict(self.__dict__)


class CostModel:
    """Parameters and FLOPs of the pruned model, estimated instantly from kept channel counts.

    FLOPs of convs and linears scale with their weight's size (spatial sizes do not change);
    everything else counted by torch's flop counter is taken as unchanged.
    """

    def __init__(self, dg, model: nn.Module, base_flops: float, base_params: int,
                 leaf_flops: dict | None = None):
        self.base_flops = base_flops
        self.base_params = base_params
        tensors = dict(model.named_parameters(remove_duplicate=False))
        tensors.update(dict(model.named_buffers(remove_duplicate=False)))
        self.shapes = {n: tuple(t.shape) for n, t in tensors.items()}
        self.is_param = {n for n, _ in model.named_parameters()}
        self.macs_per_weight = {}  # weight name -> output positions per weight element
        self.leaf_flops = leaf_flops or {}
        for _, d in dg.graph.nodes(data=True):
            if d["op"] in WEIGHT_OPS and d["params"]:
                w = d["params"][0]
                shp = self.shapes.get(w)
                if shp is None:
                    continue
                out_numel = math.prod(d["shape"][0])
                out_ch = shp[1] if d["op"].startswith("conv_transpose") else shp[0]
                groups_mult = 1
                self.macs_per_weight[w] = self.macs_per_weight.get(w, 0) + out_numel / out_ch * groups_mult
            elif d.get("leaf") and d["shape"] and d["params"]:
                self._leaf_costs(d)
            elif d["op"] == "multi_head_attention_forward" and d["shape"]:
                # projections cost one MAC per weight per token; the score and value products
                # scale with the inner width, i.e. with the packed projection's rows
                seq, batch, width = d["shape"][0][0], d["shape"][0][1], d["shape"][0][-1]
                for name in d["params"]:
                    if name.endswith("in_proj_weight"):
                        self.macs_per_weight[name] = seq * batch * (1 + 2 * seq / (3 * width))
                    elif name.endswith("out_proj.weight"):
                        self.macs_per_weight[name] = seq * batch

    def _leaf_costs(self, d) -> None:
        """A module traced as one op (attention): the FLOPs the counter measured inside it are
        spread over its matrix weights, so removing a share of their elements removes that share
        (projections scale exactly so; the score and value products with the inner width, which
        head pruning shrinks with them). Without a measurement: one MAC per element per token."""
        weights = [w for w in d["params"] if len(self.shapes.get(w, ())) >= 2]
        total = sum(math.prod(self.shapes[w]) for w in weights)
        measured = self.leaf_flops.get(d["module"])
        if measured:
            per = measured / 2 / max(total, 1)
        else:
            out = d["shape"][0]
            rows = {self.shapes[w][0] for w in weights}
            chans = out[-1] if out and (out[-1] in rows or len(out) < 2) else out[1] if out else 1
            per = math.prod(out) / max(chans, 1) if out else 0
        for w in weights:
            self.macs_per_weight[w] = self.macs_per_weight.get(w, 0) + per

    def estimate(self, kept: dict) -> tuple[int, float]:
        params, flops = self.base_params, self.base_flops
        for name, dims in kept.items():
            shp = self.shapes.get(name)
            if shp is None:
                continue
            after = list(shp)
            for d, k in dims.items():
                after[d] = k if isinstance(k, int) else len(k)  # kept_counts or kept_indices
            before_n, after_n = math.prod(shp), math.prod(after)
            if name in self.is_param:
                params -= before_n - after_n
            if name in self.macs_per_weight:
                flops -= 2 * self.macs_per_weight[name] * (before_n - after_n)
        return params, flops


def _resolve_modules(dg, model, names, what):
    mods = dict(model.named_modules())
    for n in names:
        if n not in mods:
            close = [m for m in mods if m and (n in m or m in n)][:3]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise PlanError(f"{what} layer '{n}' does not exist in the model{hint}")


def _group_limits(dg, settings):
    """Per group: (ratio or None for global, ignored?)."""
    out = {}
    for g in dg.prunable_groups:
        outs = {m.slot.module_name for m in g.members if m.slot.role == "out"}
        ignored = bool(outs & set(settings.ignore))
        ov = [settings.overrides[m] for m in outs if m in settings.overrides]
        out[g.id] = (ignored, min(ov) if ov else None)
    return out


def remove_count(g, want: int, settings: PlanSettings, used: dict | None = None) -> int:
    """:func:`_n_remove` with the group's multiples: the first that still removes channels when
    some are wanted (``used[g.id]`` records the multiple taken)."""
    n = 0
    for m in group_multiples(g.n_channels, settings):
        n = _n_remove(g, want, m, settings.max_group_ratio)
        if n > 0 or want <= 0:
            break
    if used is not None:
        used[g.id] = m
    return n


def _n_remove(g, want: int, round_to: int, cap: float) -> int:
    """Channels to remove from g: at most cap of the group, keep >= 1, kept a multiple of round_to."""
    want = min(want, g.n_prunable, int(math.floor(cap * g.n_channels)), g.n_channels - 1)
    if want <= 0:
        return 0
    kept = g.n_channels - want
    if round_to > 1:
        kept = min(g.n_channels, max(round_to, int(math.ceil(kept / round_to)) * round_to))
        if g.n_channels - kept > g.n_prunable:
            kept = g.n_channels  # cannot reach a multiple with the prunable channels
    return g.n_channels - kept


def plan_for_ratio(dg, scores: dict, ratio: float, settings: PlanSettings,
                   fine_ratio: float | None = None, shape=None, orders: dict | None = None) -> PruningPlan:
    """``fine_ratio``, if given, applies to fine-grained groups (many channels) while coarse ones
    (a dozen attention heads) keep ``ratio``: it fills the jumps that whole heads make.
    ``shape(gid, r)``, if given, turns the ratio into the group's own (not for overrides)."""
    limits = _group_limits(dg, settings)
    counts: dict[int, int] = {}
    used: dict[int, int] = {}
    global_pool = []
    for g in dg.prunable_groups:
        ignored, override = limits[g.id]
        if ignored:
            continue
        r = override if override is not None else ratio
        if fine_ratio is not None and override is None and g.n_channels >= FINE_GROUP:
            r = fine_ratio
        if shape is not None and override is None:
            r = shape(g.id, r)
        if settings.global_ranking and override is None and fine_ratio is None:
            s = scores[g.id]
            idx = np.nonzero(g.prunable)[0]
            global_pool.append((s[idx], np.full(idx.size, g.id)))
        else:
            counts[g.id] = remove_count(g, int(math.floor(r * g.n_prunable + 1e-9)), settings, used)
    if global_pool:
        vals = np.concatenate([v for v, _ in global_pool])
        gids = np.concatenate([g for _, g in global_pool])
        n = int(math.floor(ratio * vals.size + 1e-9))
        if n > 0:
            chosen = gids[np.argsort(vals, kind="stable")[:n]]
            for gid, c in zip(*np.unique(chosen, return_counts=True)):
                g = dg.groups[int(gid)]
                counts[int(gid)] = remove_count(g, int(c), settings, used)
    return plan_from_counts(dg, scores, counts, settings, used, orders)


def plan_from_counts(dg, scores: dict, counts: dict, settings: PlanSettings, used: dict,
                     orders: dict | None = None) -> PruningPlan:
    """Each group's ``counts[gid]`` least important prunable channels removed. ``orders``: a
    search's cache of each group's removal order (its candidate plans share the scores: argsorts
    of 3072-wide MLP groups were a third of ViT's plan when made per candidate)."""
    removed = {}
    for gid, n in counts.items():
        if n <= 0:
            continue
        g = dg.groups[gid]
        order = orders.get(gid) if orders is not None else None
        if order is None:  # prunable channels, least important first (stable); blocked ones last
            order = np.argsort(np.where(g.prunable, scores[gid], np.inf), kind="stable")
            if orders is not None:
                orders[gid] = order
        chosen = np.sort(order[:n])
        removed[gid] = _keep_every_member(g, chosen, scores[gid]).tolist()
    # group ids depend on the analysis options: a saved plan records them
    facts = {"round_to_groups": used_multiples(used)} if settings.round_auto else {}
    return PruningPlan(removed, {**settings.to_json(), **facts,
                                 "analysis": dict(getattr(dg, "options", {}))})


def _keep_every_member(g, chosen: np.ndarray, score: np.ndarray) -> np.ndarray:
    """No member slice may lose all its indices (e.g. one half of a split): of a member whose
    channels are all chosen, the best-scored one (the lowest index among equals) is kept."""
    if chosen.size < g.fewest_member_channels:
        return chosen
    mask = np.zeros(g.n_channels, bool)
    mask[chosen] = True
    for m in g.members:
        mapped = m.index_map[m.index_map >= 0]
        if mapped.size and mask[mapped].all():
            vals = score[mapped]
            top = np.isnan(vals) if np.isnan(vals).any() else vals == vals.max()  # argmax's pick
            mask[mapped[top].min()] = False
    return np.flatnonzero(mask)


def make_plan(dg, model: nn.Module, settings: PlanSettings, cost: CostModel | None = None,
              calibration=None, progress=None) -> PruningPlan:
    settings.validate()
    _resolve_modules(dg, model, settings.ignore, "ignored")
    _resolve_modules(dg, model, list(settings.overrides), "overridden")
    widest = max((g.n_channels for g in dg.prunable_groups), default=0)
    if settings.round_to > 1 and widest and settings.round_to >= widest and not settings.round_auto:
        raise PlanError(f"round-to {settings.round_to} leaves nothing to remove: kept channels must "
                        f"be a multiple of it, and the widest prunable group has {widest} channels")
    scores = group_scores(dg, model, settings.importance, calibration, settings.seed)
    if settings.target_latency is not None:  # the knapsack of core.plan.knapsack, by latency tables
        from core.plan.knapsack import latency_plan
        chosen, facts = latency_plan(dg, scores, settings, getattr(cost, "latency", None))
        removed = {gid: _keep_every_member(dg.groups[gid], ch, scores[gid]).tolist()
                   for gid, ch in chosen.items()}
        return PruningPlan(removed, {**settings.to_json(), **facts,
                                     "analysis": dict(getattr(dg, "options", {}))})
    target = settings.target_flops if settings.target_flops is not None else settings.target_params
    if target is None:
        return plan_for_ratio(dg, scores, settings.ratio or 0.0, settings)
    if cost is None:
        raise PlanError("a FLOPs or parameter target needs the cost model (measure the model first)")
    use_flops = settings.target_flops is not None
    base = cost.base_flops if use_flops else cost.base_params

    orders: dict = {}  # each group's removal order, shared by every candidate plan below
    shape = None  # per-group ratios from the one bisected (None: the same in every group)
    if use_flops and settings.flops_allocation == "latency" and not settings.global_ranking:
        from core.plan.latency_model import RatioShape
        shape = RatioShape(dg, cost)

    def reduction(r, fine=None):
        plan = plan_for_ratio(dg, scores, r, settings, fine, shape, orders)
        p, f = cost.estimate(plan.kept_counts(dg))
        return plan, 1.0 - (f if use_flops else p) / base

    hi_plan, hi_red = reduction(0.99)
    if hi_red < target - 0.02:
        what = "FLOPs" if use_flops else "parameter"
        raise PlanError(f"the {what} reduction target {target:.0%} cannot be reached: pruning every "
                        f"prunable group as far as allowed removes {hi_red:.1%}")
    best, lo, mid = _bisect(reduction, target, 0.0, (hi_plan, hi_red))
    if abs(best[1] - target) > 0.005:
        # a jump (whole heads or small groups) lies across the target: keep the coarse groups at
        # the ratio just below it and move only the fine-grained ones
        best, _, _ = _bisect(lambda r: reduction(lo, r), target, lo, best)
    plan, red = best
    if abs(red - target) > 0.005:  # channel multiples still jump across it: round per group
        plan, red = _round_toward(dg, scores, settings, plan, red, target, cost, use_flops, orders)
    plan.settings["achieved_reduction"] = red
    plan.settings["max_reduction"] = hi_red
    if shape is not None:
        plan.settings.update(shape.facts(plan.kept_indices(dg)))
    plan.settings["search_ratio"] = mid
    return plan


def _round_toward(dg, scores, settings, plan, red, target, cost, use_flops, orders):
    """:func:`core.plan.rounding.round_toward` on the plan's counts: groups without an override
    step by their own multiple (``round_to_groups`` under auto) toward the target."""
    limits = _group_limits(dg, settings)
    by_group = {int(g): int(m) for m, gs in plan.settings.get("round_to_groups", {}).items() for g in gs}
    counts = {gid: len(plan.removed.get(gid, [])) for gid, (ign, ov) in limits.items() if not ign}
    legal, mean = {}, {}
    for gid, (ign, ov) in limits.items():
        g = dg.groups[gid]
        if ign or ov is not None:
            continue
        most = min(g.n_prunable, int(math.floor(settings.max_group_ratio * g.n_channels)))
        legal[gid] = legal_counts(g.n_channels, by_group.get(gid, settings.round_to), most)
        if counts[gid] not in legal[gid]:
            del legal[gid]  # a count set by _keep_every_member: left as it is
            continue
        s = np.abs(np.asarray(scores[gid], float))[g.prunable]
        mean[gid] = np.sort(s) / (s.mean() or 1.0)
    base = cost.base_flops if use_flops else cost.base_params
    used = {gid: by_group.get(gid, settings.round_to) for gid in counts}

    def reduction(c):
        p, f = cost.estimate(plan_from_counts(dg, scores, c, settings, used, orders).kept_counts(dg))
        return 1.0 - (f if use_flops else p) / base
    counts, red = round_toward(counts, legal, lambda gid, a, b: float(mean[gid][a:b].sum()),
                               reduction, target)
    return plan_from_counts(dg, scores, counts, settings, used, orders), red


def _bisect(reduction, target: float, lo: float, best):
    """Bisect a ratio in [lo, 0.99] until ``reduction(ratio)`` (-> (plan, reduction reached)) is
    within half a percent of ``target``; returns the closest (plan, reduction) seen, the last
    lower bound (the largest ratio known to stay below the target) and the last ratio tried."""
    hi, mid = 0.99, lo
    for _ in range(30):
        mid = (lo + hi) / 2
        plan, red = reduction(mid)
        if abs(red - target) < abs(best[1] - target):
            best = (plan, red)
        if abs(red - target) <= 0.005:
            break
        if red < target:
            lo = mid
        else:
            hi = mid
    return best, lo, mid
