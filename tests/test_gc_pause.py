"""The analysis pauses the garbage collector (speed) and always switches it back on."""
import gc

import pytest
import torch

from core.analysis.graph import analyze
from core.errors import TraceError
from core.trace.gcpause import gc_paused


class _Fails(torch.nn.Module):
    def forward(self, x):
        raise ValueError("boom")


def test_collector_back_on_after_analysis_and_after_a_failing_forward():
    assert gc.isenabled()
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(gc.isenabled())
            return torch.nn.functional.relu(x)

    analyze(torch.nn.Sequential(torch.nn.Linear(4, 4), Spy()), torch.randn(1, 4))
    assert seen and not any(seen)  # paused while tracing
    assert gc.isenabled()
    with pytest.raises(TraceError):
        analyze(_Fails(), torch.randn(1, 4))
    assert gc.isenabled()


def test_a_collector_the_caller_switched_off_stays_off():
    gc.disable()
    try:
        with gc_paused():
            with gc_paused():
                pass
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_analysed_model_is_freed_by_reference_counts():
    """The window frees a replaced model without a full collection (gui/jobs/gcpolicy.py), so
    nothing the analysis leaves behind may hold the model or its graph in a reference cycle."""
    import gc
    import weakref

    import torch
    from torch import nn

    from core.pipeline import analyze_model

    def net():
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()

    analyze_model(net(), torch.randn(1, 3, 12, 12))  # first-use imports (op families) done
    model = net()
    was = gc.isenabled()
    gc.disable()
    try:
        dg = analyze_model(model, torch.randn(1, 3, 12, 12))
        refs = [weakref.ref(model), weakref.ref(dg.graph)]
        del dg, model
        assert [r() for r in refs] == [None, None]
    finally:
        if was:
            gc.enable()
