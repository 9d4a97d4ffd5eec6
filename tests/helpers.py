"""Shared helpers of the engine test-suite: random weights, the oracle check, isolated runs.

``check_oracle`` is the heart of the suite: analyse, prune at a ratio, and require that the pruned
model computes exactly what the original computes with the removed slices zeroed (unless the engine
itself declared the removal approximate, with reasons), that something really was removed, that the
kept weights are the original ones, and that the pruned model can still be trained.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
import time

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from core.trace.inputs import as_example_inputs  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402
from core.trace.tracer import flatten_outputs  # noqa: E402


# ------------------------------------------------------------------------------------------------
# random, non-trivial weights


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0, inputs=None) -> nn.Module:
    """Give every parameter and float buffer random, non-trivial values (in place; returns model).

    Weights get a Kaiming-like normal (std sqrt(2 / fan_in)) so deep nets neither explode nor
    vanish; 1-D weights (norm scales) are uniform in [0.5, 1.5]; biases, tokens and other 1-D
    parameters are N(0, 0.2); BatchNorm running means N(0, 0.2) and running variances U(0.5, 1.5).
    Nothing is left at zero, so a wrongly coupled slice always shows up in the oracle.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)

    def fill(t, kind):
        if t.is_meta or not t.is_floating_point():
            return
        shape = t.shape
        if kind == "uniform":
            v = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
        elif kind == "small":
            v = torch.randn(shape, generator=g, dtype=torch.float64) * 0.2
        else:
            fan_in = max(1, math.prod(shape[1:]))
            v = torch.randn(shape, generator=g, dtype=torch.float64) * math.sqrt(2.0 / fan_in)
        t.copy_(v.to(t.dtype))

    for mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            if p is None:
                continue
            if "scale" in pname or "gamma" in pname:
                fill(p, "uniform")
            elif p.ndim >= 2 and pname != "bias":
                if isinstance(mod, nn.Embedding):
                    fill(p, "small")
                elif "token" in pname or "pos" in pname or "embedding" in pname:
                    fill(p, "small")
                else:
                    fill(p, "kaiming")
            elif pname == "weight":
                fill(p, "uniform")
            else:
                fill(p, "small")
        for bname, b in mod.named_buffers(recurse=False):
            if b is None or not b.is_floating_point():
                continue
            if "running_var" in bname:
                fill(b, "uniform")
            elif "running_mean" in bname:
                fill(b, "small")
    if inputs is not None:
        calibrate_norms(model, inputs, seed)
    return model


@torch.no_grad()
def calibrate_norms(model: nn.Module, inputs, seed: int = 0) -> None:
    """Set BatchNorm running statistics near the real statistics of ``inputs`` (then jitter them).

    Purely random running stats make deep nets (EfficientNetV2, ...) explode to 1e7 and become
    chaotic in float32: rounding differences of different conv algorithms then dominate the oracle.
    Calibrated-then-jittered stats stay non-trivial but keep activations O(1).
    """
    g = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats and m.running_mean is not None]
    if not bns:
        return
    modes = {m: m.training for m in model.modules()}
    saved = {m: m.momentum for m in bns}
    try:
        model.eval()
        for m in bns:  # one layer at a time, in forward order, so each sees calibrated inputs
            m.reset_running_stats()
            m.momentum = None
        for m in bns:
            m.train()
            as_example_inputs(inputs).call(model)
            m.eval()
            # jitter right away, so the next layers are calibrated on the jittered activations
            n = m.running_var.numel()
            std = m.running_var.clamp_min(1e-6).sqrt()
            m.running_var.mul_((torch.rand(n, generator=g, dtype=torch.float64) * 0.6 + 0.7)
                               .to(m.running_var.dtype))
            m.running_mean.add_((torch.randn(n, generator=g, dtype=torch.float64) * 0.2)
                                .to(m.running_mean.dtype) * std)
    finally:
        for m, t in modes.items():
            m.training = t
        for m, mom in saved.items():
            m.momentum = mom


# ------------------------------------------------------------------------------------------------
# the oracle check


def _outputs(model, ex):
    with torch.no_grad():
        return flatten_outputs(ex.call(model))


def _state(model):
    sd = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    modes = {n: m.training for n, m in model.named_modules()}
    return sd, modes


def assert_unchanged(model, state):
    sd0, modes0 = state
    sd1, modes1 = _state(model)
    assert sd0.keys() == sd1.keys(), "the model's parameters/buffers changed names"
    for k in sd0:
        a, b = sd0[k], sd1[k]
        assert a.shape == b.shape, f"{k} changed shape {tuple(a.shape)} -> {tuple(b.shape)}"
        if a.is_meta:
            continue
        assert torch.equal(a, b), f"{k} was modified"
    assert modes0 == modes1, "train/eval modes of the model changed"


def kept_params_equal(original: nn.Module, pruned: nn.Module, kept: dict) -> None:
    """Every parameter and buffer of ``pruned`` is the original's tensor at the kept indices."""
    orig = dict(original.named_parameters(remove_duplicate=False))
    orig.update(dict(original.named_buffers(remove_duplicate=False)))
    new = dict(pruned.named_parameters(remove_duplicate=False))
    new.update(dict(pruned.named_buffers(remove_duplicate=False)))
    assert orig.keys() == new.keys(), f"tensor names differ: {sorted(orig.keys() ^ new.keys())[:5]}"
    for name, t0 in orig.items():
        t = t0.detach()
        for d, keep in sorted(kept.get(name, {}).items()):
            t = t.index_select(d, torch.as_tensor(keep, dtype=torch.long))
        t1 = new[name].detach()
        assert tuple(t.shape) == tuple(t1.shape), \
            f"{name}: expected shape {tuple(t.shape)} from the kept indices, got {tuple(t1.shape)}"
        assert torch.equal(t, t1), f"{name}: kept values differ from the original's"


def assert_trains(model: nn.Module, ex, reference: nn.Module | None = None) -> None:
    """A backward pass on the sum of outputs gives finite gradients on every parameter
    (every parameter that gets one in ``reference``, when given: eval-mode models may leave
    auxiliary heads unused)."""
    def grads(m):
        m = copy.deepcopy(m)
        m.eval()
        for p in m.parameters():
            p.grad = None
        with torch.enable_grad():
            outs = [o for o in flatten_outputs(ex.call(m)) if o.is_floating_point()]
            sum(o.double().sum() for o in outs).backward()
        return {n: p.grad for n, p in m.named_parameters() if p.requires_grad}

    g = grads(model)
    expect = set(g)
    if reference is not None:
        expect = {n for n, gr in grads(reference).items() if gr is not None}
    for n in sorted(expect):
        assert g.get(n) is not None, f"parameter {n} of the pruned model got no gradient"
        assert torch.isfinite(g[n]).all(), f"parameter {n} of the pruned model has non-finite grads"


def check_oracle(model: nn.Module, inputs, settings: PlanSettings | None = None, tol: float = 1e-5,
                 expect_exact: bool | None = True, calibration=None, train_check: bool = True,
                 dg=None, probe: bool = True, approx_bounds=None):
    """Analyse, prune (latency off, verify on) and check everything; returns (dg, result).

    ``expect_exact``: True -> the engine must call the plan exact and outputs must agree to ``tol``
    (relative); False -> the engine must flag it approximate (with reasons); None -> either, but
    exact plans must still agree to ``tol`` and approximate ones must carry reasons.
    """
    settings = copy.deepcopy(settings) if settings is not None else PlanSettings(ratio=0.5)
    ex = as_example_inputs(inputs)
    state = _state(model)
    if dg is None:
        dg = analyze_model(model, ex, probe=probe)
    assert_unchanged(model, state)
    # the oracle checks couplings; the size of approximate verdicts is a policy of its own
    # (tests/test_approx_bounds.py), so by default any approximate difference is accepted here
    res = prune_model(model, ex, dg, settings, latency=False, verify=True, calibration=calibration,
                      approx_bounds=approx_bounds if approx_bounds is not None else {"*": math.inf})
    assert_unchanged(model, state)

    # shapes
    y0, y1 = _outputs(model, ex), _outputs(res.model, ex)
    assert [tuple(t.shape) for t in y0] == [tuple(t.shape) for t in y1], "output shapes changed"

    # the oracle
    rep = res.verify
    assert rep is not None and rep.shapes_equal, rep and rep.message
    removed_groups = [gid for gid, ch in res.plan.removed.items() if ch]
    group_reasons = {r for gid in removed_groups for r in dg.groups[gid].approx_reasons}
    if rep.expected_exact:
        assert not rep.approximate_reasons
        assert rep.max_rel_diff < tol, (
            f"oracle mismatch: max relative difference {rep.max_rel_diff:.3g} >= {tol:g} "
            f"(abs {rep.max_abs_diff:.3g}); {rep.message}")
    else:
        assert rep.approximate_reasons, "approximate plan without a reason"
        assert set(rep.approximate_reasons) <= group_reasons, (
            f"approximate reasons {rep.approximate_reasons} are not those of the pruned groups")
    if expect_exact is True:
        assert rep.expected_exact, f"expected an exact plan, engine says: {rep.approximate_reasons}"
    elif expect_exact is False:
        assert not rep.expected_exact, "expected the engine to flag this plan as approximate"

    # something was removed and it mattered
    assert res.plan.n_removed > 0, "no channel was removed"
    assert res.kept, "the plan keeps every tensor whole"
    assert res.after.params < res.before.params or res.after.flops < res.before.flops, (
        f"nothing shrank: params {res.before.params} -> {res.after.params}, "
        f"FLOPs {res.before.flops} -> {res.after.flops}")

    kept_params_equal(model, res.model, res.kept)
    if train_check:
        assert_trains(res.model, ex, reference=model)
    return dg, res


# ------------------------------------------------------------------------------------------------
# isolated runs: a case in a subprocess with a memory cap, so a blow-up fails one case only


def run_isolated(module: str, func: str, kwargs: dict, timeout: float = 600,
                 mem_gb: float = 12.0) -> dict:
    """Run ``module.func(**kwargs)`` in a fresh interpreter capped at ``mem_gb`` of address space;
    it must return a JSON-able dict. Raises AssertionError with the child's error on failure."""
    code = (
        "import json, resource, sys\n"
        f"sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}, {os.path.join(ROOT, 'benchmarks')!r}]\n"
        f"lim = int({mem_gb} * 2**30)\n"
        "resource.setrlimit(resource.RLIMIT_AS, (lim, lim))\n"
        f"import {module} as _m\n"
        f"r = _m.{func}(**json.loads(sys.argv[1]))\n"
        "print('@@RESULT@@' + json.dumps(r))\n"
    )
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True,
                           text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{func}({kwargs}) timed out after {timeout:.0f} s") from None
    for line in p.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            r = json.loads(line[len("@@RESULT@@"):])
            r.setdefault("wall_s", time.perf_counter() - t0)
            return r
    tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-25:])
    raise AssertionError(f"{func}({kwargs}) failed (exit {p.returncode}):\n{tail}")


def to_jsonable(x):
    if dataclasses.is_dataclass(x):
        return to_jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


# ------------------------------------------------------------------------------------------------
# small random graphs (message-passing tests)

GRAPH_NODES, GRAPH_FEATURES = 12, 8


def random_graph(seed=0, n=GRAPH_NODES, n_edges=36):
    """(x (n, GRAPH_FEATURES) float64, edge_index (2, n_edges + 4)) with a few self loops."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, GRAPH_FEATURES, generator=g, dtype=torch.float64)
    ei = torch.randint(0, n, (2, n_edges), generator=g)
    return x, torch.cat([ei, torch.arange(4).repeat(2, 1)], dim=1)


# ------------------------------------------------------------------------------------------------
# a model file whose forward fails on the usual example input (conv output does not fit fc)

BAD_FORWARD_SRC = '''
import torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(100, 10)
    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))
def make():
    return Net()
'''


@contextlib.contextmanager
def registries_restored():
    """Registrations made inside (a test declaring its own op or attention) are undone after, so
    a test's extension never leaks into the session's registries (the coverage test reads them)."""
    from core.ops.registry import LEAF_MODULES, OP_HANDLERS
    from core.prune.apply import MODULE_UPDATERS

    saved = dict(OP_HANDLERS), list(LEAF_MODULES), list(MODULE_UPDATERS)
    try:
        yield
    finally:
        OP_HANDLERS.clear()
        OP_HANDLERS.update(saved[0])
        LEAF_MODULES[:] = saved[1]
        MODULE_UPDATERS[:] = saved[2]


def gui_prune(qtbot, window, timeout: int = 120_000):
    """Prune in the real window and wait for its result (the PruneResult)."""
    with qtbot.waitSignal(window.pruneFinished, timeout=timeout) as blocker:
        assert window.prune() is not None
    return blocker.args[0]
