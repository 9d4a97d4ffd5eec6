"""Model size: parameters, FLOPs (torch.utils.flop_counter) and peak memory of one forward."""
from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: PLC2701 (torch documents this mode API)
from torch.utils.flop_counter import FlopCounterMode

from core.trace.inputs import as_example_inputs


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
