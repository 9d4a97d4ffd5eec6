"""The oracle's copies: the zeroed copy shares what the plan does not touch and never changes the
user's model (also on the float64 re-check); the fast module copy builds what deepcopy builds."""
from __future__ import annotations

import copy
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import randomize  # noqa: E402

from core.pipeline import analyze_model  # noqa: E402
from core.plan.planner import PlanSettings, make_plan  # noqa: E402
from core.prune.apply import apply_kept, zero_channels  # noqa: E402
from core.prune.copying import copy_model  # noqa: E402
from core.prune.verify import verify_plan  # noqa: E402


def _net():
    return randomize(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))).eval()


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_zeroed_copy_shares_untouched_parameters_only():
    m = _net()
    before = _state(m)
    kept = {"0.weight": {0: [0, 2, 4, 6]}, "0.bias": {0: [0, 2, 4, 6]},
            "3.weight": {1: list(range(8))}}  # keeps every input channel: nothing removed
    z = zero_channels(m, kept)
    assert z[0].weight is not m[0].weight and z[0].weight[1].abs().sum() == 0
    assert z[0].weight[0].equal(m[0].weight[0]) and z[0].bias[1] == 0
    assert z[3].weight is m[3].weight and z[5].weight is m[5].weight  # untouched: shared
    assert z[1].running_mean is not m[1].running_mean  # buffers are copied
    after = _state(m)
    assert all(before[k].equal(after[k]) for k in before)


def test_float64_recheck_leaves_the_users_model_unchanged():
    """A wrong pruned model makes the float32 comparison fail, so the float64 re-check runs: it
    must not convert the (shared) tensors of the user's model in place."""
    torch.manual_seed(0)
    m = _net()
    x = torch.randn(2, 3, 8, 8)
    dg = analyze_model(m, x)
    plan = make_plan(dg, m, PlanSettings(ratio=0.5))
    kept = {k: {d: list(v) for d, v in dims.items()} for k, dims in plan.kept_indices(dg).items()}
    before = _state(m)
    wrong = {k: {d: (v[1:] + [max(set(range(8)) - set(v))] if k.startswith("0.") and d == 0 else v)
                 for d, v in dims.items()} for k, dims in kept.items()}
    rep = verify_plan(m, x, dg, plan, pruned=apply_kept(m, wrong))
    assert not rep.passed and rep.float32_rel_diff is not None, rep.message
    assert all(p.dtype == torch.float32 for p in m.parameters())
    after = _state(m)
    assert all(before[k].equal(after[k]) for k in before)
    good = verify_plan(m, x, dg, plan)
    assert good.passed and good.float32_rel_diff is None, good.message
    # a built pruned model: the zeroed copy was freed first, the float64 re-check zeroes anew
    late = verify_plan(m, x, dg, plan, pruned=lambda: apply_kept(m, wrong))
    assert not late.passed and late.float32_rel_diff is not None, late.message
    assert late.max_rel_diff == rep.max_rel_diff


class _Custom:
    def __init__(self):
        self.copied = False

    def __deepcopy__(self, memo):
        c = _Custom()
        c.copied = True
        return c


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight
        self.rnn = nn.LSTM(4, 4)
        self.again = self.head  # the same module twice
        self.extra = _Custom()
        self.cache = {"t": torch.ones(2), "shared": self.emb.weight}
        self.pair, self.plain, self.tags = (self.emb.weight, 3), (1, "a"), {"x", 2}


def test_copy_model_builds_what_deepcopy_builds():
    m = _Tied()
    a, b = copy.deepcopy(m), copy_model(m)
    assert b.head.weight is b.emb.weight and b.again is b.head and b.extra.copied
    assert b.cache["shared"] is b.emb.weight and b.cache["t"] is not m.cache["t"]
    assert all(p is not q for p, q in zip(m.parameters(), b.parameters()))
    assert b.pair[0] is b.emb.weight and b.pair[1] == 3 and b.plain is m.plain
    assert b.tags == m.tags and b.tags is not m.tags
    for x, y in zip(a.modules(), b.modules()):
        assert type(x) is type(y) and set(x.__dict__) == set(y.__dict__)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(sa[k].equal(sb[k]) for k in sa)
    x = torch.randint(0, 10, (3, 2))
    with torch.no_grad():
        assert b.rnn(b.emb(x))[0].equal(m.rnn(m.emb(x))[0])
    new = nn.Parameter(torch.zeros(10, 4))
    c = copy_model(m, {id(m.emb.weight): new})  # a memo entry replaces the tensor everywhere
    assert c.emb.weight is new and c.head.weight is new and c.cache["shared"] is new


def test_copy_model_keeps_every_memo_key_alive():
    """As deepcopy does: every object whose id is a memo key lives as long as the memo. A module's
    state is a fresh dict (``Module.__getstate__`` copies ``__dict__``): freed early, its id went
    to the next module's state, which the memo then answered with the first one's copy (a swin
    block pruned with another block's attributes, now and then)."""
    import gc
    m = nn.Sequential(*[nn.Linear(i + 1, 2) for i in range(20)])
    memo: dict = {}
    gc.disable()  # nothing but the memo's own references decides what lives
    try:
        copy_model(m, memo)
        alive = {id(o) for o in memo.get(id(memo), [])}
        reachable, todo = set(), [m]
        while todo:  # everything the original model holds
            o = todo.pop()
            if id(o) not in reachable:
                reachable.add(id(o))
                todo.extend(gc.get_referents(o))
        stray = [k for k in memo if k != id(memo) and k not in alive and k not in reachable]
    finally:
        gc.enable()
    assert not stray


def test_the_zeroed_copy_and_the_pruned_model_never_live_together(monkeypatch):
    """Peak memory: the pipeline runs the zeroed original, frees it, and only then builds the
    pruned model (each is most of the model's size)."""
    import gc
    import weakref

    import core.pipeline as pipeline
    import core.prune.verify as verify
    torch.manual_seed(0)
    m = _net()
    x = torch.randn(2, 3, 8, 8)
    zeroed, pruned, overlaps = [], [], []

    def alive(refs):
        gc.collect()
        return [r for r in refs if r() is not None]

    def zero(model, kept):
        overlaps.extend(alive(pruned))
        z = zero_channels(model, kept)
        zeroed.append(weakref.ref(z))
        return z

    def build(model, kept):
        overlaps.extend(alive(zeroed))
        p = apply_kept(model, kept)
        pruned.append(weakref.ref(p))
        return p

    monkeypatch.setattr(verify, "zero_channels", zero)
    monkeypatch.setattr(verify, "apply_kept", build)
    monkeypatch.setattr(pipeline, "apply_kept", build)
    res = pipeline.prune_model(m, x, analyze_model(m, x), PlanSettings(ratio=0.5), latency=False)
    assert res.verify.passed and zeroed and pruned and not overlaps
