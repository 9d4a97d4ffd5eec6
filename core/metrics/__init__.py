"""Model size and speed: parameters, FLOPs, peak memory (counting), latency measured honestly
(timing), the fastest channel multiple of a device (widths) and per-layer latency tables (tables)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from torch import nn

from core.metrics.counting import count_flops, count_params, peak_memory_mb
from core.metrics.timing import Timing, compare_latency, device_of_model, speedup_text
from core.trace.inputs import as_example_inputs

__all__ = ["Metrics", "count_flops", "count_params", "measure", "measure_latency", "measure_pair",
           "peak_memory_mb", "sizes", "speedup_text"]


@dataclass
class Metrics:
    params: int
    flops: float  # floating-point operations of one forward pass (2 per multiply-add)
    latency_ms: float | None = None  # the median of the runs
    latency_runs: int = 0
    peak_memory_mb: float | None = None
    device: str = "cpu"
    latency_q1_ms: float | None = None  # interquartile range of the runs
    latency_q3_ms: float | None = None
    latency_threads: int | None = None  # torch intra-op threads during the runs
    latency_stop: str | None = None  # why the runs stopped: tight, budget, max runs, cached

    def to_json(self):
        return asdict(self)

    def set_timing(self, t: Timing | None) -> None:
        if t is None:
            return
        self.latency_ms, self.latency_q1_ms, self.latency_q3_ms = t.median_ms, t.q1_ms, t.q3_ms
        self.latency_runs, self.latency_threads, self.latency_stop = t.runs, t.threads, t.stop


def sizes(model: nn.Module, inputs, memory: bool = True) -> Metrics:
    """Parameters, FLOPs and (with ``memory``) peak memory: no timing."""
    ex = as_example_inputs(inputs)
    dev = device_of_model(model)
    m = Metrics(count_params(model), count_flops(model, ex), device=str(dev))
    if memory and dev.type != "meta":
        m.peak_memory_mb = peak_memory_mb(model, ex)
    return m


def measure_latency(model: nn.Module, inputs, runs: int = 10, threads: int | None = None,
                    should_stop=None, **kw) -> float:
    """Median forward time in ms of one model (cached when the model is unchanged)."""
    t, _ = compare_latency(model, None, inputs, threads=threads, max_pairs=runs,
                           should_stop=should_stop, **kw)
    return t.median_ms


def measure(model: nn.Module, inputs, latency: bool = True, runs: int = 10, should_stop=None,
            threads: int | None = None, progress=None, budget_s: float = 10.0) -> Metrics:
    """Size of one model and, with ``latency``, its timing alone (cached baseline when unchanged)."""
    ex = as_example_inputs(inputs)
    m = sizes(model, ex, latency)
    if latency:
        t, _ = compare_latency(model, None, ex, threads=threads, max_pairs=runs, budget_s=budget_s,
                               should_stop=should_stop, progress=progress)
        m.set_timing(t)
    return m


def measure_pair(original: nn.Module, pruned: nn.Module, inputs, latency: bool = True,
                 runs: int = 10, threads: int | None = None, budget_s: float = 10.0,
                 before: Metrics | None = None, should_stop=None,
                 progress=None) -> tuple[Metrics, Metrics]:
    """Sizes of both and their latency timed interleaved (:func:`compare_latency`); the
    original's sizes are taken from ``before`` when given, its timing from the cache when known."""
    ex = as_example_inputs(inputs)
    b = replace(before) if before is not None else sizes(original, ex, latency)
    a = sizes(pruned, ex, latency)
    if latency:
        tb, ta = compare_latency(original, pruned, ex, threads=threads, max_pairs=runs,
                                 budget_s=budget_s, should_stop=should_stop, progress=progress)
        b.set_timing(tb)
        a.set_timing(ta)
    return b, a
