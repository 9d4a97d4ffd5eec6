"""Model size and speed: parameters, FLOPs (torch.utils.flop_counter), latency and peak memory."""
from __future__ import annotations

import statistics
import time
import weakref
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: PLC2701 (torch documents this mode API)
from torch.utils.flop_counter import FlopCounterMode

from core.trace.inputs import as_example_inputs


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


def _register_cpu_attention_flops():
    """torch's counter knows the CUDA attention kernels but not the CPU flash kernel, so CPU
    attention would count as free; give it the same formula."""
    import torch.utils.flop_counter as fc

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in fc.flop_registry:
        return

    @fc.register_flop_formula(op)
    def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)


_register_cpu_attention_flops()


class _Unfused(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def count_flops(model: nn.Module, inputs, per_module: bool = False):
    """FLOPs of one forward; with ``per_module``, ``(total, {module name: FLOPs inside it})``."""
    ex = as_example_inputs(inputs)
    mode = {m: m.training for m in model.modules()}
    # FlopCounterMode's module tracker hooks every module input that requires grad; a view of a
    # parameter made under no_grad (CaiT's ``cls_token.expand(B, -1, -1)`` passed to a block)
    # requires grad but has no grad_fn, and the hook fails. Nothing here needs gradients.
    frozen = [p for p in model.parameters() if p.requires_grad]
    try:
        model.eval()
        for p in frozen:
            p.requires_grad_(False)
        counter = FlopCounterMode(display=False)
        # The pass-through mode keeps fused fast paths (nn.MultiheadAttention's native kernel) out of
        # the way: their FLOPs are invisible to the counter, and the pruned model has none.
        with torch.no_grad(), _Unfused(), counter:
            ex.call(model)
        total = float(counter.get_total_flops())
        if not per_module:
            return total
        # the counter names modules "<RootClass>.<qualified name>"
        prefix = type(model).__name__ + "."
        counts = {k[len(prefix):]: float(sum(v.values()))
                  for k, v in counter.get_flop_counts().items() if k.startswith(prefix)}
        return total, counts
    finally:
        for p in frozen:
            p.requires_grad_(True)
        for m, t in mode.items():
            m.training = t


class _PeakMemory(TorchDispatchMode):
    """Peak bytes of live activations during one forward (works on any device, CPU included):
    every op output that owns its storage is counted until it is garbage-collected."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0

    def _free(self, n):
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t._base is None and not t.is_meta:
                n = t.untyped_storage().nbytes()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, n)
        return out


def peak_memory_mb(model: nn.Module, inputs) -> float:
    """Parameters and buffers plus the peak of live activations of one forward, in MiB."""
    ex = as_example_inputs(inputs)
    static = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    mode = {m: m.training for m in model.modules()}
    tracker = _PeakMemory()
    try:
        model.eval()
        with torch.no_grad(), tracker:
            out = ex.call(model)
        del out
    finally:
        for m, t in mode.items():
            m.training = t
    return (static + tracker.peak) / 2**20


def measure_latency(model: nn.Module, inputs, warmup: int = 3, runs: int = 10,
                    should_stop=None) -> float:
    """Median forward time in ms over ``runs`` after ``warmup`` runs, CUDA synchronised."""
    ex = as_example_inputs(inputs)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    mode = {m: m.training for m in model.modules()}
    times = []
    try:
        model.eval()
        with torch.no_grad():
            for _ in range(warmup):
                ex.call(model)
            sync()
            for _ in range(runs):
                if should_stop is not None:
                    should_stop()
                t0 = time.perf_counter()
                ex.call(model)
                sync()
                times.append((time.perf_counter() - t0) * 1000)
    finally:
        for m, t in mode.items():
            m.training = t
    return statistics.median(times)


def measure(model: nn.Module, inputs, latency: bool = True, runs: int = 10, should_stop=None) -> Metrics:
    ex = as_example_inputs(inputs)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    m = Metrics(count_params(model), count_flops(model, ex), device=str(dev))
    if latency and dev.type != "meta":
        m.latency_ms = measure_latency(model, ex, runs=runs, should_stop=should_stop)
        m.latency_runs = runs
        m.peak_memory_mb = peak_memory_mb(model, ex)
    return m
