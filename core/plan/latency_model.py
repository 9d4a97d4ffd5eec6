"""A FLOPs target planned for speed: more of it taken where a modelled latency per FLOP is high.

torch's FLOP counter sees convolutions and matrix products only. Batch norms, activations,
additions, poolings, layer norms and permute copies carry no FLOPs, yet on a CPU they take a
sixth to a half of a ResNet-50, ConvNeXt or MobileNetV2 forward, and their cost falls only with
the channels they carry (linearly), while a convolution's falls with its input and output channels
(about quadratically). A plan that removes the same share of every group (the uniform ratio)
therefore halves the FLOPs but not the time; worst is ResNet's stem, 64 channels at 112x112
feeding a max-pool (NCHW) that costs 6-10 % of the whole forward.

The model: a plan's latency ~ its FLOPs + over the memory-bound ops a cost per output element (in
FLOP equivalents, :data:`OP_COST`; a depthwise convolution :data:`DEPTHWISE` times its FLOPs on
top), each op scaled by the share of its channels kept; + per matrix product or convolution its
weights read (:data:`WEIGHT_READ` per element) and outputs written (:data:`OUTPUT_WRITE`), which
make a batch-1 product on few positions (ResNet's 7x7 stage, ConvNeXt's last stages) cost more
than its FLOPs; + a fixed cost per op (:data:`OP_FIXED`) that no plan moves. Per group it gives rho = (FLOPs + memory
cost) / FLOPs of one channel. The planner still bisects one ratio r until the FLOPs target is met
(the contract is unchanged), but a group keeps ``(1 - r) ** s`` with ``s = (rho / mean) ** GAMMA``
(clipped to [1/3, 3]): within a group channels still leave in importance order; across groups the
FLOPs come more from where time is spent beyond them. Held back (never pruned harder than the
others on average): groups under NARROW channels and groups carrying under MIN_SHARE of the time -
on the digits CNN, stretching its 16-wide convolutions and 64-wide head cost the fine-tuned
accuracy (0.77 -> 0.28) without any time to gain.

The constants: torch 2.x eager CPU kernels per output element relative to one FLOP of a matrix
product, from per-op profiles of ResNet-50 and ConvNeXt-T on this project's 2-core machine
(``python benchmarks/bench_latency.py`` notes). Another device is still planned sensibly: the
ranking of costs, not their exact values, moves the plan; the plan records the modelled latency
reduction (``modelled_latency_reduction``) next to the FLOPs it met.
"""
from __future__ import annotations

import math

from core.plan.latency import LatencyTable, LayerTable, estimate_ms

# FLOP equivalents per output element (pooling: per window element) of ops the counter sees as free
OP_COST = {
    "batch_norm": 64.0, "layer_norm": 85.0, "group_norm": 85.0, "instance_norm": 85.0,
    "relu": 21.0, "relu6": 21.0, "hardtanh": 21.0, "silu": 50.0, "gelu": 70.0, "hardswish": 40.0,
    "sigmoid": 50.0, "hardsigmoid": 30.0, "tanh": 50.0, "leaky_relu": 21.0,
    "add": 47.0, "mul": 53.0, "sub": 47.0, "div": 53.0,
    "permute": 105.0, "transpose": 105.0, "contiguous": 105.0, "cat": 50.0,
    "max_pool2d": 2400.0, "max_pool1d": 600.0, "avg_pool2d": 100.0,
}
DEPTHWISE = 3.0  # a depthwise convolution costs this many times its FLOPs on top of them
# a matrix product or convolution beyond its FLOPs: each weight element read once per call, each
# output element written once (FLOP equivalents). At batch 1 on few positions (ResNet's 7x7 stage,
# ConvNeXt's last stages, a decoder's tokens) the weights cost as much as the arithmetic; on a
# narrow input dim the outputs do. Fitted to oneDNN/MKL products on the project's machine
# (768x3072: 26 GFLOP/s at 1 row, 200 at 49, 300 at 784).
WEIGHT_READ = 60.0
OUTPUT_WRITE = 40.0
# what every op costs whatever its width (dispatch, thread-pool wake-up; ~10 us on the 2-core
# machine, a fifth of ResNet-50's and ConvNeXt-T's batch-1 time): no plan moves it, but it is
# part of the whole that a group's share is measured against - in a model this small (the digits
# CNN) no group carries time worth bending the plan for
OP_FIXED = 2e6
WEIGHT_OPS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "linear"}


def op_cost(node: dict) -> float:
    """FLOP equivalents of one traced op that the counter does not count (0: weight ops, views,
    inputs)."""
    op = str(node.get("op", "")).rstrip("_")
    if not node.get("shape") or node.get("leaf"):
        return 0.0
    if op.startswith("conv") and node.get("weight_shape"):
        w = node["weight_shape"]
        if len(w) > 2 and w[1] == 1:  # depthwise: memory-bound, its FLOPs understate it
            return DEPTHWISE * 2 * math.prod(w[2:]) * sum(math.prod(s) for s in node["shape"] if s)
    if op in WEIGHT_OPS:
        return 0.0
    c = OP_COST.get(op)
    if c is None:
        return 0.0
    numel = sum(math.prod(s) for s in node["shape"] if s)
    if op.startswith("max_pool") or op.startswith("avg_pool"):
        c *= _window(node)
    return c * numel


def _window(node: dict) -> float:
    """Input elements read per output element of a pooling (the input/output size ratio, at
    least 1): enough to tell a 3x3/2 pool from a 2x2/2 one without the op's arguments."""
    ins = node.get("in_shape")
    out = node["shape"][0]
    if ins:
        return max(1.0, math.prod(ins) / max(math.prod(out), 1))
    return 4.0


def memory_costs(dg, shapes: dict | None = None) -> tuple[dict, float, int]:
    """``({group id: modelled cost per channel}, total modelled cost of every such op, their
    number)``. An op whose output carries channels of several groups (a concatenation) is shared
    by channel."""
    width = {g.id: g.n_channels for g in dg.groups}
    groups_of = {}
    for g in dg.groups:
        for n in g.nodes:
            groups_of.setdefault(n, []).append(g.id)
    per_channel: dict = {}
    total, count = 0.0, 0
    for n, d in dg.graph.nodes(data=True):
        d = dict(d)
        preds = list(dg.graph.predecessors(n))
        if preds:
            d["in_shape"] = (dg.graph.nodes[preds[0]].get("shape") or [None])[0]
        if d.get("params") and shapes:
            d["weight_shape"] = shapes.get(d["params"][0])
        c = op_cost(d)
        if c <= 0:
            continue
        total += c
        count += 1
        gs = groups_of.get(n, [])
        dims = set(d["shape"][0] or ())
        wide = sum(width[g] for g in gs)
        # the channel dim is the one the groups fill together; a group alone in a wider dim
        # (attention heads of 64 features) still owns its share
        chans = wide if wide in dims else 0
        for gid in gs:
            share = width[gid] if chans == 0 else chans
            if chans == 0 and not any(x % width[gid] == 0 for x in dims):
                continue
            per_channel[gid] = per_channel.get(gid, 0.0) + c / share
    return per_channel, total, count


def model_terms(dg, cost, per_channel: dict) -> dict:
    """weight name -> {out, in, a, b_out, b_in}: the weight's modelled cost at widths (i, o) is
    ``a*i*o + b_out*o + b_in*i`` - its FLOPs (``cost.macs_per_weight``) plus the memory-bound cost
    of each group, put on one weight dim the group narrows (its producer's output if it has one)."""
    layers = {}
    for name, mpw in cost.macs_per_weight.items():
        shp = cost.shapes.get(name)
        if not shp or len(shp) < 2:
            continue
        rest = math.prod(shp[2:])
        layers[name] = {"out": shp[0], "in": shp[1], "a": 2 * mpw * rest, "w": WEIGHT_READ * rest,
                        "write": OUTPUT_WRITE * mpw, "b_out": OUTPUT_WRITE * mpw, "b_in": 0.0}
    for g in dg.prunable_groups:
        m_g = per_channel.get(g.id, 0.0)
        if m_g <= 0:
            continue
        cands = [(m.slot.role != "out", m.slot.dim, m) for m in g.members
                 if m.slot.tensor_name in layers and m.slot.dim in (0, 1) and m.slot.role != "aux"]
        if not cands:
            continue
        _, dim, m = min(cands, key=lambda c: c[:2])
        # per slot index of this member (a member may map several indices to one channel: the
        # q, k and v rows of a head)
        hits = max(1, int((m.index_map >= 0).sum()))
        layers[m.slot.tensor_name]["b_out" if dim == 0 else "b_in"] += m_g * g.n_channels / hits
    return layers


def modelled_table(layers: dict) -> LatencyTable:
    """:func:`model_terms` as latency tables (exact: the model is bilinear in the widths)."""
    tables = {}
    base = 0.0
    for name, t in layers.items():
        go = [1, t["out"]] if t["out"] > 1 else [1]
        gi = [1, t["in"]] if t["in"] > 1 else [1]
        ms = [[(t["a"] + t["w"]) * i * o + t["b_out"] * o + t["b_in"] * i for o in go] for i in gi]
        tied = len(gi) == 1  # depthwise: one input per group, only the output width counts
        tables[name] = LayerTable(0, 1, t["out"], t["in"], go, gi, ms, tied)
        base += ms[-1][-1]
    return LatencyTable("model", 0, "flops+memory", "", base, tables)


def group_costs(dg, layers: dict) -> dict:
    """group id -> (FLOPs, memory-bound cost) one of its channels carries at full widths."""
    out = {}
    for g in dg.prunable_groups:
        flops = mem = 0.0
        for m in g.members:
            t = layers.get(m.slot.tensor_name)
            if t is None or m.slot.dim not in (0, 1) or m.slot.role == "aux":
                continue
            h = int((m.index_map >= 0).sum()) / max(g.n_channels, 1)
            other = t["in"] if m.slot.dim == 0 else t["out"]
            flops += t["a"] * other * h
            mem += t["w"] * other * h
            mem += (t["b_out"] if m.slot.dim == 0 else t["b_in"]) * h
        out[g.id] = (flops, mem)
    return out


class RatioShape:
    """Per-group ratios from one ratio r: a group keeps ``(1 - r) ** s`` of its channels, where
    ``s = (rho / mean) ** GAMMA`` (rho: its modelled time per FLOP; mean: FLOPs-weighted), clipped
    to [1/MAX_STRETCH, MAX_STRETCH]. Every group still loses channels in importance order; those
    whose channels cost more time than their FLOPs say lose more, the others less, and the FLOPs
    bisection over r keeps the target."""

    def __init__(self, dg, cost):
        per_channel, self.mem_total, self.n_ops = memory_costs(dg, cost.shapes)
        self.layers = model_terms(dg, cost, per_channel)
        self.table = modelled_table(self.layers)
        # weights read and outputs written by the timed layers: part of the modelled whole
        self.mem_total += sum(t["w"] * t["in"] * t["out"] + t["write"] * t["out"]
                              for t in self.layers.values())
        self.fixed = OP_FIXED * (len(self.layers) + self.n_ops)
        self.full = cost.base_flops + self.mem_total + self.fixed
        costs = group_costs(dg, self.layers)
        rho = {gid: (f + m) / f for gid, (f, m) in costs.items() if f > 0}
        weight = {gid: costs[gid][0] * dg.groups[gid].n_channels for gid in rho}
        mean = sum(rho[g] * weight[g] for g in rho) / (sum(weight.values()) or 1.0)
        self.stretch = {gid: min(MAX_STRETCH, max(1 / MAX_STRETCH, (r / mean) ** GAMMA))
                        for gid, r in rho.items()}
        # held back: a narrow group (no channels to spare), and one whose time the plan cannot
        # move (under MIN_SHARE of the model's): each follows the FLOPs-weighted mean share the
        # others remove (what a uniform plan of the same FLOPs removes everywhere), never more
        self.held = {gid for gid, st in self.stretch.items() if st > 1 and (
            dg.groups[gid].n_channels < NARROW
            or costs[gid][1] * dg.groups[gid].n_channels < MIN_SHARE * self.full)}
        self.weight = {gid: w for gid, w in weight.items() if gid not in self.held}

    def __call__(self, gid: int, r: float) -> float:
        if not 0.0 < r < 1.0:
            return r
        if gid in self.held:
            return min(1.0 - (1.0 - r) ** self.stretch[gid], self._mean_share(r))
        return 1.0 - (1.0 - r) ** self.stretch.get(gid, 1.0)

    def _mean_share(self, r: float) -> float:
        """The FLOPs-weighted mean share the groups not held back remove at r (memoised: the
        bisection asks each r once per held group)."""
        memo = self.__dict__.setdefault("_memo", {})
        if r not in memo:
            total = sum(self.weight.values())
            memo[r] = (sum(w * (1.0 - (1.0 - r) ** self.stretch[h]) for h, w in self.weight.items())
                       / total) if total else r
        return memo[r]

    def reduction(self, kept: dict) -> float:
        """The modelled latency reduction of a plan's kept indices (the whole model's)."""
        return (self.table.base_ms - estimate_ms(self.table, kept)) / (self.full or 1.0)

    def facts(self, kept: dict) -> dict:
        return {"flops_allocation": "latency", "modelled_latency_reduction": self.reduction(kept),
                "modelled_memory_share": self.mem_total / (self.full or 1.0)}


MAX_STRETCH = 3.0
GAMMA = 2.0
NARROW = 32  # groups narrower than this are held back (small CNNs)
MIN_SHARE = 0.01  # memory-bound time a group must carry to be stretched
