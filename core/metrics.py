"""Model size and speed: parameters, FLOPs (torch.utils.flop_counter), latency and peak memory."""
from __future__ import annotations

import statistics
import time
import tracemalloc
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .inputs import as_example_inputs


@dataclass
class Metrics:
    params: int
    flops: float  # floating-point operations of one forward pass (2 per multiply-add)
    latency_ms: float | None = None
    latency_runs: int = 0
    peak_memory_mb: float | None = None
    device: str = "cpu"

    def to_json(self):
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, inputs) -> float:
    ex = as_example_inputs(inputs)
    mode = {m: m.training for m in model.modules()}
    try:
        model.eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            ex.call(model)
        return float(counter.get_total_flops())
    finally:
        for m, t in mode.items():
            m.training = t


def measure_latency(model: nn.Module, inputs, warmup: int = 3, runs: int = 10,
                    should_stop=None) -> tuple[float, float | None]:
    """Median forward time in ms (CUDA synchronised) and peak memory in MB of one forward."""
    ex = as_example_inputs(inputs)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    mode = {m: m.training for m in model.modules()}
    times = []
    try:
        model.eval()
        with torch.no_grad():
            for _ in range(warmup):
                ex.call(model)
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
            else:
                tracemalloc.start()
            for _ in range(runs):
                if should_stop is not None:
                    should_stop()
                t0 = time.perf_counter()
                ex.call(model)
                sync()
                times.append((time.perf_counter() - t0) * 1000)
            if cuda:
                peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
            else:
                peak = None  # CPU tensor memory is not visible to tracemalloc
                tracemalloc.stop()
    finally:
        for m, t in mode.items():
            m.training = t
    return statistics.median(times), peak


def measure(model: nn.Module, inputs, latency: bool = True, runs: int = 10, should_stop=None) -> Metrics:
    ex = as_example_inputs(inputs)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    m = Metrics(count_params(model), count_flops(model, ex), device=str(dev))
    if latency and dev.type != "meta":
        m.latency_ms, m.peak_memory_mb = measure_latency(model, ex, runs=runs, should_stop=should_stop)
        m.latency_runs = runs
    return m
