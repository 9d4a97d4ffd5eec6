"""``--round-to auto``: the channel multiple that is fastest on this device, measured once.

Kernels (oneDNN on CPU, tensor cores on CUDA) run some widths faster than their neighbours: a
layer kept at 61 channels can be slower than one kept at 64. A micro-benchmark times typical layers
(3x3 conv, 1x1 conv, linear over tokens) at the widths that keeping a multiple of m gives, for
m in 1, 4, 8, 16, 32, interleaved, and picks the multiple with the least time per kept channel
(the smallest one within 2 % of the best: smaller multiples let the planner hit targets closer).
The answer is cached in a small JSON file per device, thread count and torch version.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time

import torch
from torch import nn

from core.metrics.timing import fixed_threads, timer

MULTIPLES = (1, 4, 8, 16, 32)
TARGETS = tuple(range(100, 164, 7))  # widths a pruned layer might want, around typical sizes
TOLERANCE = 0.02
CACHE_ENV = "PRUNESTUDIO_CACHE_DIR"


def cache_path() -> str:
    """``$PRUNESTUDIO_CACHE_DIR`` (tests), else the user cache dir (XDG) / prunestudio."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "prunestudio")
    return os.path.join(base, "widths.json")


def rounded(t: int, m: int) -> int:
    return max(m, int(round(t / m)) * m)


def choose_multiple(times: dict) -> tuple[int, dict]:
    """``times``: multiple -> {width: ms}. Returns (the multiple, its ms per kept channel by
    multiple): per multiple, the time of the widths the targets round to over the channels they
    keep; the smallest multiple within :data:`TOLERANCE` of the best wins."""
    score = {}
    for m, by_width in times.items():
        ws = [rounded(t, m) for t in TARGETS]
        score[m] = sum(by_width[w] for w in ws) / sum(ws)
    best = min(score.values())
    pick = min(m for m, s in score.items() if s <= best * (1 + TOLERANCE))
    return pick, score


def _layers(c: int, dev):
    """Typical layer shapes at width c: (module, input)."""
    return [(nn.Conv2d(c, c, 3, padding=1), torch.randn(1, c, 14, 14)),
            (nn.Conv2d(c, c, 1), torch.randn(1, c, 28, 28)),
            (nn.Linear(c, c), torch.randn(197, c))]


def bench_widths(device: torch.device, threads: int | None = None, runs: int = 5,
                 max_runs: int = 30, budget_s: float = 20.0) -> dict:
    """multiple -> {width: ms}: the three layer kinds summed; every width timed in turn, round
    after round, until the two fastest runs of each agree within 15 % (or ``max_runs`` rounds, or
    ``budget_s`` seconds); the
    fastest counts - these layers take well under a time slice, so a slower run was interrupted
    by other work, which says nothing about the width."""
    widths = sorted({rounded(t, m) for m in MULTIPLES for t in TARGETS})
    tick = timer(device)
    with fixed_threads(threads), torch.no_grad():
        cases = {w: [(m.to(device), x.to(device)) for m, x in _layers(w, device)] for w in widths}
        for w in widths:  # warm-up
            for m, x in cases[w]:
                m(x)
        samples: dict = {w: [] for w in widths}
        t0 = time.perf_counter()
        for r in range(max_runs):
            for w in widths:
                samples[w].append(sum(tick(lambda m=m, x=x: m(x)) for m, x in cases[w]))
            if r + 1 >= runs and (time.perf_counter() - t0 > budget_s or all(
                    sorted(v)[1] <= 1.15 * min(v) for v in samples.values())):
                break
    best = {w: min(v) for w, v in samples.items()}
    return {m: {rounded(t, m): best[rounded(t, m)] for t in TARGETS} for m in MULTIPLES}


def device_key(device: torch.device, threads: int) -> str:
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    return f"{device.type}|{name}|threads={threads}|torch={torch.__version__.split('+')[0]}"


def best_multiple(device="cpu", threads: int | None = None, bench=None) -> tuple[int, dict]:
    """(the fastest multiple here, facts for the report: cached or measured, the scores). The
    benchmark (``bench(device, threads)``, default :func:`bench_widths`) runs once per device
    key; its answer is kept in :func:`cache_path`."""
    device = torch.device(device)
    with fixed_threads(threads) as n:
        key = device_key(device, n)
        path = cache_path()
        try:
            with open(path) as f:
                cache = json.load(f)
        except (OSError, ValueError):
            cache = {}
        hit = cache.get(key) if isinstance(cache, dict) else None
        if isinstance(hit, dict) and isinstance(hit.get("multiple"), int):
            return hit["multiple"], {**hit, "cached": True, "key": key}
        times = (bench or bench_widths)(device, n)
    pick, score = choose_multiple(times)
    entry = {"multiple": pick, "ms_per_channel": {str(m): s for m, s in score.items()}}
    cache = cache if isinstance(cache, dict) else {}
    cache[key] = entry
    try:  # a cache that cannot be written costs a re-measurement next time, nothing else
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass
    return pick, {**entry, "cached": False, "key": key}
