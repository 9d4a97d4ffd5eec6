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
