"""Every entry of every engine registry has an oracle-checked case.

Registries: op handlers (``core.ops.registry.OP_HANDLERS``, one entry per handler, named by its
first op), leaf modules (``LEAF_MODULES``), module updaters (``core.prune.apply.MODULE_UPDATERS``,
by module type) and importance criteria (``core.plan.criteria.CRITERIA``); model sources and
export formats are covered the same way in ``tests/test_io_registries.py``.

The cases below (small models, most borrowed from the family test files) are each analysed,
pruned, verified with the zeroed-group oracle, then analysed and pruned *again* (that second round
exercises the ``Pruned…`` classes). While a round runs, every registered handler and updater is
wrapped to record that the trace (or the pruner) called it; a round counts only if the
oracle passes, something was removed and no group had to be excluded. Each registry entry is then
a parametrized test: an entry that no case reaches fails, so a new op family, leaf module, updater
or criterion cannot land without a case.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys

import pytest
import torch
import torchvision
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
pytest.importorskip("torch_geometric")

import coverage_cases as cc  # noqa: E402
from helpers import randomize  # noqa: E402

from core import families  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.criteria import CRITERIA  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402
from core.ops.registry import LEAF_MODULES, OP_HANDLERS, leaf_op  # noqa: E402
from core.prune import apply as prune_apply  # noqa: E402
from core.prune.apply import MODULE_UPDATERS, update_module  # noqa: E402
from core.trace.inputs import as_example_inputs  # noqa: E402

families.load()  # timm, transformers and torch_geometric are imported: every family registers


def _op_entries() -> dict[str, list[str]]:
    """One entry per distinct handler, named by its alphabetically first op name."""
    by_fn: dict[int, list[str]] = {}
    for name, fn in OP_HANDLERS.items():
        by_fn.setdefault(id(fn), []).append(name)
    return {sorted(names)[0]: sorted(names) for names in by_fn.values()}


def _qualname(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


OP_ENTRIES = _op_entries()
LEAF_ENTRIES = sorted({_qualname(t) for t, _, _ in LEAF_MODULES})
UPDATER_ENTRIES = sorted({_qualname(t) for t, _ in MODULE_UPDATERS})


@contextlib.contextmanager
def _recording(hits: dict):
    """Record which op handlers run on tensors carrying channels, and which module updaters run.

    Op handlers are wrapped in the registry for the duration (the tracer calls a handler only
    for an op that reads a traced tensor). Updaters are watched with a
    profiler hook instead, because updaters delegate to each other by identity (Hugging Face's
    catch-all skips itself) and one factory may build several (same code, other types)."""
    saved_ops = dict(OP_HANDLERS)
    first_name = {id(fn): sorted(n for n, f in saved_ops.items() if f is fn)[0] for fn in saved_ops.values()}

    def wrap_op(fn):
        def handler(ctx, call, *a, **k):
            # the tracer calls a handler only for ops that read traced tensors
            hits["ops"].add(first_name[id(fn)])
            return fn(ctx, call, *a, **k)
        return handler

    by_code: dict = {}
    for typ, fn in MODULE_UPDATERS:
        by_code.setdefault(fn.__code__, []).append(typ)

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in by_code:
            m = frame.f_locals.get(frame.f_code.co_varnames[0])
            hits["updaters"].update(_qualname(t) for t in by_code[frame.f_code] if isinstance(m, t))

    def watched_update(m, virtual):  # profile only while updaters run: it slows every call
        old = sys.getprofile()
        sys.setprofile(profile)
        try:
            return update_module(m, virtual)
        finally:
            sys.setprofile(old)

    wrapped = {id(fn): wrap_op(fn) for fn in saved_ops.values()}
    OP_HANDLERS.update({n: wrapped[id(fn)] for n, fn in saved_ops.items()})
    prune_apply.update_module = watched_update
    try:
        yield
    finally:
        prune_apply.update_module = update_module
        OP_HANDLERS.clear()
        OP_HANDLERS.update(saved_ops)


def _round(model, ex, settings, options, calibration=None):
    """Analyse, prune, verify; returns (pruned model, hits) or raises with the reason."""
    hits = {"ops": set(), "updaters": set(), "leaves": set()}
    with _recording(hits):
        dg = analyze_model(model, ex, options=options)
        # structural coverage: a second round prunes a pruned stream again, beyond the default
        # bound of approximate verdicts (checked in tests/test_approx_bounds.py)
        res = prune_model(model, ex, dg, settings, latency=False, verify=True, calibration=calibration,
                          approx_bounds={"*": float("inf")})
    rep = res.verify
    assert rep is not None and rep.passed, rep and rep.message
    assert res.plan.n_removed > 0, "no channel was removed"
    assert not res.excluded, f"groups excluded by the oracle: {res.excluded}"
    if rep.expected_exact:
        assert rep.max_rel_diff < 1e-5, rep.message
    else:
        assert rep.approximate_reasons, "an approximate plan without a reason"
    hits["leaves"] = {_qualname(type(m)) for m in model.modules() if leaf_op(m) is not None}
    return res.model, hits


@functools.lru_cache(maxsize=None)
def run_case(name: str) -> dict:
    """Both rounds of one case; the union of what they reached."""
    build, settings, options = cc.CASES[name]
    torch.manual_seed(0)
    model, inputs = build()
    ex = as_example_inputs(inputs)
    total = {"ops": set(), "updaters": set(), "leaves": set()}
    for _ in range(2):
        model, hits = _round(model, ex, settings, options)
        for k in total:
            total[k] |= hits[k]
    return total


def _reached(kind: str, entry: str) -> list[str]:
    """Names of the cases whose oracle-checked rounds reach ``entry`` (running them as needed)."""
    found = []
    for name in cc.COVERS.get((kind, entry), ()):
        if entry in run_case(name)[kind]:
            found.append(name)
    return found


def _check(kind, entry):
    cases = cc.COVERS.get((kind, entry))
    assert cases, (f"no oracle-checked case for the {kind} entry '{entry}': add a model to "
                   f"tests/coverage_cases.py and name it in COVERS")
    assert _reached(kind, entry), f"the cases {cases} no longer reach the {kind} entry '{entry}'"


@pytest.mark.parametrize("entry", sorted(OP_ENTRIES))
def test_every_op_handler_has_an_oracle_case(entry):
    _check("ops", entry)


@pytest.mark.parametrize("entry", LEAF_ENTRIES)
def test_every_leaf_module_has_an_oracle_case(entry):
    _check("leaves", entry)


@pytest.mark.parametrize("entry", UPDATER_ENTRIES)
def test_every_module_updater_has_an_oracle_case(entry):
    _check("updaters", entry)


@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_every_criterion_prunes_under_the_oracle(criterion):
    """Each criterion plans a prune of a BN network that the oracle accepts (taylor with a
    calibration batch), and ranks channels differently from at least one other criterion."""
    model = randomize(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 4, 1)).eval(), 0)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    calibration = (lambda: ((x,), None)) if CRITERIA.get(criterion).needs_gradients else None
    _, hits = _round(model, as_example_inputs((x,)), PlanSettings(ratio=0.5, importance=criterion),
                     None, calibration)
    assert "conv1d" in hits["ops"]  # (the conv handler, named by its first op)


def test_a_new_entry_without_a_case_fails():
    """The check itself can fail: a handler nobody wrote a case for is reported."""
    with pytest.raises(AssertionError, match="no oracle-checked case"):
        _check("ops", "an_op_without_a_case")
    assert torchvision  # (imported so that torchvision's adapters are registered above)
