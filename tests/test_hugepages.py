"""core.trace.hugepages: numpy's huge-page requests are off during analysis and restored after."""
import pytest

from core.trace import hugepages
from core.trace.hugepages import plain_pages


def test_plain_pages_switches_huge_pages_off_and_restores_them():
    switch = hugepages._setter()
    if switch is None:
        pytest.skip("this numpy has no huge-page switch")
    was = switch(True)
    try:
        with plain_pages():
            assert switch(False) is False  # (the switch returns the setting it replaces)
        assert switch(True) is True
        with pytest.raises(RuntimeError), plain_pages():
            raise RuntimeError("the analysis failed")
        assert switch(True) is True  # restored on error too
        switch(False)
        with plain_pages():
            pass
        assert switch(False) is False  # off before: left off
    finally:
        switch(was)


def test_analysis_runs_with_plain_pages(monkeypatch):
    import torch
    from torch import nn

    import core.analysis.graph as graph
    seen = []
    real = graph.build_groups

    def spy(trace):
        seen.append(hugepages._setter()(False) if hugepages._setter() else False)
        return real(trace)

    monkeypatch.setattr(graph, "build_groups", spy)
    graph.analyze(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)), torch.randn(1, 3, 4, 4))
    assert seen == [False]
