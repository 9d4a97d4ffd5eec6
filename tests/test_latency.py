"""Honest latency: interleaved timing, quartiles, the cached baseline, fixed threads, wording."""
from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import randomize  # noqa: E402

from core.metrics import Metrics, measure_pair, speedup_text  # noqa: E402
from core.metrics import timing  # noqa: E402


class Logged(nn.Module):
    """A model that writes its name into a shared log on every forward."""

    def __init__(self, name, log, width=4):
        super().__init__()
        self.name, self.log = name, log
        self.lin = nn.Linear(width, width)

    def forward(self, x):
        self.log.append(self.name)
        return self.lin(x)


@pytest.fixture(autouse=True)
def _fresh_cache():
    timing.clear_baselines()
    yield
    timing.clear_baselines()


def test_quartiles_and_median():
    q1, med, q3 = timing.quartiles([5, 1, 3, 2, 4])
    assert (q1, med, q3) == (2.0, 3.0, 4.0)
    q1, med, q3 = timing.quartiles([1, 2, 3, 4])
    assert med == 2.5 and q1 == pytest.approx(1.75) and q3 == pytest.approx(3.25)
    assert timing.quartiles([7]) == (7.0, 7.0, 7.0)
    t = timing.timing_of([10, 12, 11, 30], threads=2, device="cpu")
    assert t.median_ms == 11.5 and t.iqr_ms == pytest.approx(t.q3_ms - t.q1_ms) and t.runs == 4


def test_models_alternate_after_warmup_of_both(monkeypatch):
    log = []
    a, b = Logged("A", log), Logged("B", log)
    x = torch.randn(2, 4)
    # equal and noisy times (never tight), so the six pairs end on "max runs" whatever the machine
    # does; real microsecond runs read "tight" once in CI
    noisy = iter([1.0, 9.0, 9.0, 1.0] * 100)
    monkeypatch.setattr(timing, "timer", lambda dev: (lambda fn: (fn(), next(noisy))[1]))
    ta, tb = timing.compare_latency(a, b, x, warmup=2, min_pairs=6, max_pairs=6, use_cache=False)
    assert log[:4] == ["A", "A", "B", "B"]  # both warm up before any timed run
    timed = log[4:]
    assert timed == ["A", "B"] * 6
    assert ta.runs == tb.runs == 6 and ta.stop == tb.stop == "max runs"


def test_stops_when_tight_or_over_budget(monkeypatch):
    log = []
    a, b = Logged("A", log), Logged("B", log)
    fake = iter([10.0, 5.0] * 100)
    monkeypatch.setattr(timing, "timer", lambda dev: (lambda fn: (fn(), next(fake))[1]))
    ta, tb = timing.compare_latency(a, b, torch.randn(1, 4), min_pairs=3, max_pairs=40, use_cache=False)
    assert ta.stop == "tight" and ta.runs == 3 and (ta.median_ms, tb.median_ms) == (10.0, 5.0)
    # noisy and equal: never tight, so the budget ends it
    noisy = iter([1.0, 9.0, 9.0, 1.0] * 1000)
    monkeypatch.setattr(timing, "timer", lambda dev: (lambda fn: (fn(), next(noisy))[1]))
    ta, tb = timing.compare_latency(a, b, torch.randn(1, 4), min_pairs=3, max_pairs=40, budget_s=0.0,
                                    use_cache=False)
    assert ta.stop == "budget" and ta.runs == 3


def test_baseline_is_cached_and_only_checked(monkeypatch):
    # a tiny model's microsecond runs are noise: its check runs confirm the cache here (the tests
    # below refute a stale cache with a fake clock)
    monkeypatch.setattr(timing, "agrees", lambda cached, fresh: True)
    log = []
    a, b = Logged("A", log), Logged("B", log)
    x = torch.randn(1, 4)
    t1, _ = timing.compare_latency(a, b, x, threads=1, min_pairs=3, max_pairs=3)
    log.clear()
    t2, tb = timing.compare_latency(a, Logged("B", log), x, threads=1, min_pairs=8, max_pairs=8)
    # the cached original runs only its check runs (a warm-up and CHECK_RUNS), the new model every pair
    assert log.count("A") <= 1 + timing.CHECK_RUNS and log.count("B") >= 8
    assert t2.stop == "cached" and t2.median_ms == t1.median_ms and tb is not None
    # other inputs, another thread count or changed weights: a miss
    for kw in ({"inputs": torch.randn(2, 4), "threads": 1}, {"inputs": x, "threads": 2}):
        log.clear()
        timing.compare_latency(a, None, kw["inputs"], threads=kw["threads"], min_pairs=2, max_pairs=2)
        assert "A" in log
    with torch.no_grad():
        a.lin.weight.add_(1.0)
    log.clear()
    timing.compare_latency(a, None, x, threads=1, min_pairs=2, max_pairs=2)
    assert "A" in log


def test_threads_are_fixed_and_restored():
    seen = []

    class T(nn.Module):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return x

    old = torch.get_num_threads()
    want = 1 if old != 1 else 2
    ta, _ = timing.compare_latency(T(), None, torch.randn(1), threads=want, min_pairs=2, max_pairs=2,
                                   use_cache=False)
    assert set(seen) == {want} and ta.threads == want
    assert torch.get_num_threads() == old


def test_metrics_carry_median_spread_and_threads():
    torch.manual_seed(0)
    m = randomize(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)))
    p = randomize(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)))
    b, a = measure_pair(m, p, torch.randn(2, 8), runs=5, threads=1)
    for x in (b, a):
        assert isinstance(x, Metrics)
        assert x.latency_q1_ms <= x.latency_ms <= x.latency_q3_ms and x.latency_threads == 1
        assert x.latency_runs >= 1 and x.latency_stop in ("tight", "budget", "max runs")
    assert "latency_q1_ms" in b.to_json()


def test_speedup_wording_says_slower():
    assert speedup_text(20.0, 10.0) == "2.00× faster"
    assert speedup_text(10.0, 12.5) == "1.25× slower"
    assert "no" in speedup_text(10.0, 10.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_timing_uses_events():
    m = nn.Linear(64, 64).cuda()
    t, _ = timing.compare_latency(m, None, torch.randn(8, 64, device="cuda"), min_pairs=3, max_pairs=3)
    assert t.device.startswith("cuda") and t.median_ms > 0


def test_onnx_session_is_timed(tmp_path):
    pytest.importorskip("onnxruntime")
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU()).eval()
    path = str(tmp_path / "m.onnx")
    x = torch.randn(1, 8)
    torch.onnx.export(m, (x,), path, dynamo=False)
    t = timing.onnx_latency(path, x, threads=1, min_runs=3, max_runs=3)
    assert t.runs == 3 and t.median_ms > 0 and t.threads == 1


def _scripted(monkeypatch, durations: dict):
    """Runs of model A/B take ``durations[name]`` ms (a fake timer); the log says who ran."""
    log = []
    a, b = Logged("A", log), Logged("B", log)

    def fake_timer(dev):
        def tick(fn):
            fn()
            return durations[log[-1]]
        return tick
    monkeypatch.setattr(timing, "timer", fake_timer)
    return a, b, log


def test_a_stale_cached_baseline_is_timed_again(monkeypatch):
    """Timed under heavy load, the cached original would exaggerate a speed-up measured later on
    a quiet machine: its check runs disagree, so it is timed afresh, interleaved."""
    dur = {"A": 100.0, "B": 50.0}
    a, b, log = _scripted(monkeypatch, dur)
    x = torch.randn(1, 4)
    ta, _ = timing.compare_latency(a, b, x, threads=1, min_pairs=3, max_pairs=3)
    assert ta.median_ms == 100.0
    dur.update(A=40.0, B=32.0)  # the load is gone: the original takes 40 ms now
    ta, tb = timing.compare_latency(a, b, x, threads=1, min_pairs=6, max_pairs=6)
    assert ta.stop == "re-timed" and ta.median_ms == 40.0 and ta.runs == tb.runs == 6
    assert ta.median_ms / tb.median_ms == pytest.approx(1.25)  # not 100 / 32
    # a check that agrees keeps the cache (and the fresh figure is what is cached now)
    dur.update(A=41.0)
    ta, _ = timing.compare_latency(a, b, x, threads=1, min_pairs=6, max_pairs=6)
    assert ta.stop == "cached" and ta.median_ms == 40.0


def test_an_old_cached_baseline_is_timed_again(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(timing, "_clock", lambda: now[0])
    a, b, log = _scripted(monkeypatch, {"A": 10.0, "B": 5.0})
    x = torch.randn(1, 4)
    timing.compare_latency(a, b, x, threads=1, min_pairs=3, max_pairs=3)
    now[0] += timing.BASELINE_MAX_AGE_S / 2
    assert timing.cached_baseline(a, x, 1) is not None
    now[0] += timing.BASELINE_MAX_AGE_S
    assert timing.cached_baseline(a, x, 1) is None
    log.clear()
    ta, _ = timing.compare_latency(a, b, x, threads=1, min_pairs=4, max_pairs=4)
    assert ta.stop != "cached" and log.count("A") == 4 + 2  # warm-ups, then every pair


def test_onnx_files_are_timed_interleaved(tmp_path, monkeypatch):
    """The original and the pruned file run in turns (A, B, A, B) in onnxruntime, after both warm
    up, so a drift of the machine touches both alike."""
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(1, 8)
    paths = []
    for name, width in (("a", 8), ("b", 4)):
        m = nn.Sequential(nn.Linear(8, width), nn.ReLU()).eval()
        paths.append(str(tmp_path / f"{name}.onnx"))
        torch.onnx.export(m, (x,), paths[-1], dynamo=False)
    log, spins = [], []
    real = ort.InferenceSession

    class Logged(real):
        def run(self, *a, **k):
            log.append(self._path)
            return super().run(*a, **k)

        def __init__(self, path, opts, *a, **k):
            super().__init__(path, opts, *a, **k)
            self._path = path
            try:
                spins.append(opts.get_session_config_entry("session.intra_op.allow_spinning"))
            except RuntimeError:  # not set: onnxruntime's default (spinning)
                spins.append("default")

    monkeypatch.setattr(ort, "InferenceSession", Logged)
    before, after = timing.onnx_compare_latency(paths[0], paths[1], x, threads=1, min_runs=4,
                                                max_runs=4)
    assert before.runs == after.runs == 4 and before.device == after.device == "onnxruntime-cpu"
    timed = log[4:]  # two warm-ups each first
    assert timed == [paths[0], paths[1]] * 4
    # two sessions' thread pools spinning in turns on the same cores measured ResNet-50's pruned
    # file at 46 ms instead of 22 (benchmarks/bench_onnx_latency.py): neither spins
    assert spins[:2] == ["0", "0"]
    alone = timing.onnx_latency(paths[1], x, threads=1, min_runs=3, max_runs=3)
    assert alone.runs == 3


def test_an_original_that_does_not_export_leaves_the_pruned_file_timed_alone(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from core.errors import Cancelled
    from core.io.onnx import speed
    x = torch.randn(1, 8)
    path = str(tmp_path / "pruned.onnx")
    torch.onnx.export(nn.Sequential(nn.Linear(8, 4)).eval(), (x,), path, dynamo=False)

    def broken(*a, **k):
        raise RuntimeError("no exporter can take this model")
    monkeypatch.setattr(speed, "export_onnx", broken)
    warnings = []
    before, after = speed.time_against_original(nn.Linear(8, 8), x, path, threads=1,
                                                warnings=warnings)
    assert before is None and after.runs > 0
    assert warnings and "could not be exported" in warnings[0] and "no exporter" in warnings[0]
    assert "onnxruntime: " in speed.speed_line((before, after))
    monkeypatch.undo()

    def stop():
        raise Cancelled("cancelled")
    with pytest.raises(Cancelled):
        speed.time_against_original(nn.Sequential(nn.Linear(8, 4)).eval(), x, path, threads=1,
                                    should_stop=stop)
    assert sorted(os.listdir(tmp_path)) == ["pruned.onnx"]  # the scratch export is gone
