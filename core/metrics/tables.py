"""Per-layer latency lookup tables measured on the device (``core.plan.latency`` reads them).

Every conv and linear layer is timed alone, on inputs of the shape it sees in the model, at a grid
of input and output widths; layers of the same configuration are timed once. Tables are cached per
(model state, inputs, device, threads) for the session; ``LatencyTable.to_json`` saves them.
"""
from __future__ import annotations

import time
import weakref

import torch
from torch import nn

from core.metrics.timing import (compare_latency, device_of_model, eval_no_grad, fixed_threads,
                                 state_key, timer)
from core.plan.latency import LatencyTable, LayerTable
from core.trace.inputs import as_example_inputs

GRID = (0.25, 0.5, 0.75, 1.0)  # fractions of the full width timed per axis
_TABLES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
TIMED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _grid(size: int) -> list[int]:
    return sorted({max(1, round(f * size)) for f in GRID})


def _layer_shapes(model: nn.Module, ex) -> dict:
    """name -> (module, input shape, calls) of every conv/linear the forward runs."""
    seen: dict = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, TIMED) and isinstance(getattr(m, "weight", None), torch.Tensor):
            def hook(mod, args, name=name):
                if args and isinstance(args[0], torch.Tensor):
                    prev = seen.get(name)
                    seen[name] = (mod, tuple(args[0].shape), (prev[2] + 1) if prev else 1)
            hooks.append(m.register_forward_pre_hook(hook))
    try:
        with eval_no_grad(model):
            ex.call(model)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _make(mod: nn.Module, c_in: int, c_out: int, tied: bool, dev, dtype) -> nn.Module:
    if isinstance(mod, nn.Linear):
        return nn.Linear(c_in, c_out, bias=mod.bias is not None).to(dev, dtype)
    groups = c_out if tied else 1
    return type(mod)(c_out if tied else c_in, c_out, mod.kernel_size, mod.stride, mod.padding,
                     mod.dilation, groups, mod.bias is not None).to(dev, dtype)


def _time(layer: nn.Module, x: torch.Tensor, tick, runs: int) -> float:
    """The fastest of ``runs`` calls: a layer alone takes well under a scheduler's time slice, so
    any slower run was interrupted (by other work on a shared machine), not a different cost."""
    layer(x)  # warm-up: first calls pick kernels and allocate
    times = sorted(tick(lambda: layer(x)) for _ in range(runs))
    while (len(times) < 2 or times[1] > 1.15 * times[0]) and len(times) < 4 * runs + 2:
        # until two fast runs agree
        times = sorted([*times, tick(lambda: layer(x))])
    return times[0]


def retime_outliers(ms: list, g_in: list, g_out: list, cell, tries: int = 2) -> list:
    """Cells far above what their narrower neighbours predict (bilinear: the work of a conv or
    linear grows with inputs x outputs) are timed again and the fastest kept: a spike at full
    width would otherwise make its layer look like the cheapest latency to remove. A cell still
    that far above after the retries (sustained load interrupts every run) is capped at the bound:
    a kernel that dislikes a width costs tens of percent, not the 50x seen under load."""
    for i in range(len(ms)):
        for j in range(len(ms[i])):
            if i and j:
                pred = ms[i - 1][j] + ms[i][j - 1] - ms[i - 1][j - 1]
            elif j:
                pred = ms[i][j - 1] * g_out[j] / g_out[j - 1]
            elif i:
                pred = ms[i - 1][j] * g_in[i] / g_in[i - 1]
            else:
                continue
            for _ in range(tries):
                if ms[i][j] <= 1.5 * max(pred, 0.0) + 0.02:
                    break
                ms[i][j] = min(ms[i][j], cell(g_in[i], g_out[j]))
            if j or i:
                ms[i][j] = min(ms[i][j], 1.5 * max(pred, 0.0) + 0.02)
    return ms


def monotone(ms: list) -> list:
    """Each cell at most every cell of wider layers: a narrower layer is never slower (what
    breaks that is a run some other work interrupted, or a width the kernels dislike - which
    the wider neighbour's time then bounds)."""
    out = [list(r) for r in ms]
    for i in range(len(out) - 1, -1, -1):
        for j in range(len(out[i]) - 1, -1, -1):
            if i + 1 < len(out):
                out[i][j] = min(out[i][j], out[i + 1][j])
            if j + 1 < len(out[i]):
                out[i][j] = min(out[i][j], out[i][j + 1])
    return out


def measure_table(model: nn.Module, inputs, threads: int | None = None, runs: int = 3,
                  base_ms: float | None = None, progress=None, should_stop=None) -> LatencyTable:
    """Time every conv/linear of ``model`` (on its device) at :data:`GRID` widths."""
    ex = as_example_inputs(inputs)
    dev = device_of_model(model)
    layers = _layer_shapes(model, ex)
    configs: dict = {}  # one timing per distinct configuration
    tables = {}
    with fixed_threads(threads) as n_threads, torch.no_grad():
        if base_ms is None:
            base_ms = compare_latency(model, None, ex, threads=n_threads, max_pairs=10,
                                      budget_s=3.0, should_stop=should_stop)[0].median_ms
        tick = timer(dev)
        for i, (name, (mod, shape, calls)) in enumerate(layers.items()):
            if should_stop is not None:
                should_stop()
            w = mod.weight
            groups = getattr(mod, "groups", 1)
            c_out = w.shape[0]
            c_in = shape[-1] if isinstance(mod, nn.Linear) else shape[1]
            tied = groups > 1 and groups == c_out == c_in and w.shape[1] == 1
            if groups > 1 and not tied:
                continue  # grouped convs: left to the untimed rest
            key = (type(mod).__name__, shape, c_out, tuple(w.shape[2:]), str(getattr(mod, "stride", "")),
                   str(getattr(mod, "padding", "")), str(getattr(mod, "dilation", "")), tied,
                   mod.bias is not None)
            if key not in configs:
                g_out, g_in = _grid(c_out), ([c_in] if tied else _grid(c_in))

                def cell(ci, co, mod=mod, shape=shape, tied=tied, dtype=w.dtype):
                    cin = co if tied else ci
                    xs = list(shape)
                    xs[-1 if isinstance(mod, nn.Linear) else 1] = cin
                    x = torch.randn(xs, device=dev, dtype=dtype)
                    return _time(_make(mod, cin, co, tied, dev, dtype), x, tick, runs)
                ms = [[cell(ci, co) for co in g_out] for ci in g_in]
                configs[key] = (g_out, g_in, monotone(retime_outliers(ms, g_in, g_out, cell)))
            g_out, g_in, ms = configs[key]
            tables[name + ".weight"] = LayerTable(0, 1, int(c_out), int(c_in if not tied else c_out),
                                                  g_out, g_in, ms, tied, calls)
            if progress is not None:
                progress(i + 1, len(layers), f"latency tables: {name}")
    return LatencyTable(str(dev), n_threads, f"{type(model).__name__}", ex.describe(), float(base_ms),
                        tables)


def table_for(model: nn.Module, inputs, threads: int | None = None, progress=None,
              should_stop=None) -> tuple[LatencyTable, bool]:
    """The cached table of this model state, inputs, device and thread count, or a new one;
    ``(table, was cached)``."""
    ex = as_example_inputs(inputs)
    with fixed_threads(threads) as n:
        key = (state_key(model), ex.describe(), str(device_of_model(model)), n)
    hit = _TABLES.get(model, {}).get(key)
    if hit is not None:
        return hit, True
    t0 = time.perf_counter()
    table = measure_table(model, ex, threads=n, progress=progress, should_stop=should_stop)
    table.seconds = time.perf_counter() - t0
    _TABLES.setdefault(model, {})[key] = table
    return table, False
