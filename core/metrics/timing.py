"""Honest latency: two models timed interleaved (A, B, A, B, ...) after warm-up of both, on the same
inputs with a fixed thread count; medians and interquartile ranges; runs added until the spread is
small next to the difference or a time budget ends; the unchanged original's timing cached.

A shared, noisy machine drifts; alternating the two models makes the drift hit both equally, so
their ratio stays honest even when the absolute figures wander.
"""
from __future__ import annotations

import statistics
import time
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from core.trace.inputs import as_example_inputs


@dataclass
class Timing:
    median_ms: float
    q1_ms: float
    q3_ms: float
    runs: int
    threads: int
    device: str
    stop: str = ""  # why the runs stopped: "tight", "budget", "max runs", "cached", "re-timed"
    samples: list | None = field(default=None, repr=False)  # the runs in order (not saved)

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("samples")
        return d


def quartiles(xs) -> tuple[float, float, float]:
    """(q1, median, q3) with linear interpolation between order statistics (numpy's default);
    a single value is its own quartiles."""
    s = sorted(float(x) for x in xs)
    if not s:
        raise ValueError("no timings")

    def q(p):
        pos = p * (len(s) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)
    return q(0.25), statistics.median(s), q(0.75)


def timing_of(times, threads: int, device: str, stop: str = "") -> Timing:
    q1, med, q3 = quartiles(times)
    return Timing(med, q1, q3, len(times), threads, device, stop, [float(t) for t in times])


def speedup_text(before_ms: float, after_ms: float) -> str:
    """``2.00× faster`` / ``1.25× slower`` / ``no change``: a ratio below one is a slow-down and is
    said so, never shown as a "0.8× speed-up"."""
    r = before_ms / after_ms
    if abs(r - 1) < 0.005:
        return "no measurable change"
    return f"{r:.2f}× faster" if r > 1 else f"{1 / r:.2f}× slower"


def device_of_model(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextmanager
def fixed_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` (None: as it is) and restored afterwards.

    OpenMP keeps the count per thread (a worker first used while it was 1 keeps 1), so callers on
    worker threads pass the count they mean (the GUI's: gui.jobs.worker.compute_threads)."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(int(n))
    try:
        yield int(n) if n is not None else old
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


@contextmanager
def eval_no_grad(*models):
    modes = [{m: m.training for m in model.modules()} for model in models if isinstance(model, nn.Module)]
    try:
        for model in models:
            if isinstance(model, nn.Module):
                model.eval()
        with torch.no_grad():
            yield
    finally:
        for mode in modes:
            for m, t in mode.items():
                m.training = t


def timer(device: torch.device):
    """``time_ms(fn)``: one call of ``fn`` in ms. CUDA: events recorded around the call on the
    current stream after a synchronize, read after the end event completes (a wall clock around
    asynchronous launches measures the launch, not the work)."""
    if device.type == "cuda":
        def time_cuda(fn):
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        return time_cuda

    def time_wall(fn):
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1000.0
    return time_wall


def _tight(a: list, b: list | None, rel: float) -> bool:
    """The spread is small next to what is measured: with two models, both IQRs below ``rel`` of
    the difference of the medians (or, when they hardly differ, below 2 % of each median)."""
    qa = quartiles(a)
    if b is None:
        return qa[2] - qa[0] <= 0.02 * qa[1]
    qb = quartiles(b)
    spread = max(qa[2] - qa[0], qb[2] - qb[0])
    diff = abs(qa[1] - qb[1])
    return spread <= rel * diff or spread <= 0.02 * min(qa[1], qb[1])


# Timings of unchanged models, by model (weakly: a model that is gone takes its entries with it),
# each with the time it was taken (by _clock).
_BASELINES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
BASELINE_MAX_AGE_S = 600.0  # an older cached original is timed again
CHECK_RUNS = 3  # runs of a cached original interleaved with the new model: they must agree with it
_clock = time.monotonic


def state_key(model: nn.Module) -> tuple:
    """Changes when the model's tensors do: storage addresses, shapes and torch's in-place version
    counters (cheap; hashing ViT-B's weights would take longer than timing it)."""
    ts = list(model.parameters()) + list(model.buffers())
    return tuple((t.data_ptr(), tuple(t.shape), t._version) for t in ts)


def _cache_key(model, ex, device, threads) -> tuple:
    return (state_key(model), ex.describe(), str(device), threads)


def cached_baseline(model: nn.Module, inputs, threads: int) -> Timing | None:
    """The cached timing of the unchanged original, unless it is older than
    :data:`BASELINE_MAX_AGE_S` (the machine's load has moved on since)."""
    ex = as_example_inputs(inputs)
    hit = _BASELINES.get(model, {}).get(_cache_key(model, ex, device_of_model(model), threads))
    if hit is None or _clock() - hit[1] > BASELINE_MAX_AGE_S:
        return None
    return Timing(**{**asdict(hit[0]), "stop": "cached"})


def agrees(cached: Timing, fresh: list) -> bool:
    """A few fresh runs of the original confirm its cached timing when their median lies within
    the cached spread (at least 5 % of the median either way): a baseline timed under heavy load
    and compared with a model timed later on a quiet machine would exaggerate the speed-up."""
    med = statistics.median(fresh)
    slack = max(cached.iqr_ms / 2, 0.05 * cached.median_ms)
    return cached.q1_ms - slack <= med <= cached.q3_ms + slack


def _remember(model, ex, threads, t: Timing) -> None:
    _BASELINES.setdefault(model, {})[_cache_key(model, ex, device_of_model(model), threads)] = (t, _clock())


def compare_latency(a: nn.Module, b: nn.Module | None, inputs, threads: int | None = None,
                    warmup: int = 2, min_pairs: int = 5, max_pairs: int = 50, budget_s: float = 10.0,
                    rel: float = 0.25, use_cache: bool = True, progress=None,
                    should_stop=None, tight=None,
                    budget_pairs: int = 3) -> tuple[Timing | None, Timing | None]:
    """Time ``a`` (the original) and ``b`` (the pruned copy; None: ``a`` alone) interleaved.

    Both warm up first, then pairs A, B are run until ``min_pairs`` are in and the spread is tight
    (``tight(a_times, b_times)``, default :func:`_tight`), ``max_pairs`` are in, or ``budget_s``
    seconds have passed (once ``budget_pairs`` are in); every timing says which in ``stop``. ``a``'s timing is cached per (model
    state, inputs, device, threads): when it is known (and not too old), ``a`` runs only in the
    first :data:`CHECK_RUNS` pairs, and if those disagree with the cache (:func:`agrees`) it is
    timed afresh in every pair (``stop`` then says "re-timed"). ``progress(done, total, message)``
    is called after each pair, ``should_stop()`` before each run (it raises to cancel)."""
    ex = as_example_inputs(inputs)
    dev = device_of_model(a)
    if dev.type == "meta":
        return None, None
    tick = timer(dev)
    min_pairs = max(1, min(min_pairs, max_pairs))
    tight = tight or (lambda ta, tb: _tight(ta, tb, rel))
    with fixed_threads(threads) as n_threads, eval_no_grad(a, b):
        base = cached_baseline(a, ex, n_threads) if use_cache else None
        models = [m for m in (a, b) if m is not None]
        for m in models:
            for _ in range(1 if (m is a and base) else warmup):
                if should_stop is not None:
                    should_stop()
                t_warm = time.perf_counter()
                ex.call(m)
                if time.perf_counter() - t_warm > 0.1 * budget_s:
                    break  # a slow model: one warm-up call leaves the budget for timed runs
        times_a, times_b = [], []
        checking = base is not None  # the cached original's check runs are still going
        stale = False
        t0 = time.perf_counter()
        stop = "max runs"
        for i in range(max_pairs):
            for m, times in ((a, times_a), (b, times_b)):  # A then B: the alternation is the point
                if m is None or (m is a and base is not None and not checking):
                    continue
                if should_stop is not None:
                    should_stop()
                times.append(tick(lambda m=m: ex.call(m)))
            if checking and len(times_a) >= CHECK_RUNS:
                checking, stale = False, not agrees(base, times_a)
                if stale:
                    base = None  # the original is timed in every pair from now on
                elif b is None:
                    return base, None
            if progress is not None:
                progress(i + 1, max_pairs, f"timing {'the pruned model' if base else 'both models'}"
                         f" interleaved: {i + 1} run{'s' * (i > 0)}")
            if checking:
                continue
            ta, tb = (times_b, None) if base is not None else (times_a, times_b or None)
            if i + 1 >= min_pairs and tight(ta, tb):
                stop = "tight"
                break
            # the budget wins over min_pairs, but three runs make a median with a spread
            if i + 1 >= min(budget_pairs, min_pairs) and time.perf_counter() - t0 > budget_s:
                stop = "budget"
                break
        if checking and times_a and not agrees(base, times_a):  # fewer runs than CHECK_RUNS
            base, stale = None, True
        if base is None:
            base = timing_of(times_a, n_threads, str(dev), "re-timed" if stale else stop)
            if use_cache:
                _remember(a, ex, n_threads, base)
        after = timing_of(times_b, n_threads, str(dev), stop) if b is not None else None
    return base, after


def clear_baselines() -> None:
    _BASELINES.clear()


def onnx_latency(path: str, inputs, threads: int | None = None, warmup: int = 2,
                 min_runs: int = 5, max_runs: int = 50, budget_s: float = 5.0) -> Timing:
    """One exported model as deployed: an onnxruntime CPU session (``threads`` intra-op threads,
    default torch's count) fed the example inputs (:func:`onnx_compare_latency` without a
    baseline)."""
    return onnx_compare_latency(None, path, inputs, threads, warmup, min_runs, max_runs,
                                budget_s)[1]


def onnx_compare_latency(before: str | None, after: str, inputs, threads: int | None = None,
                         warmup: int = 2, min_runs: int = 5, max_runs: int = 50,
                         budget_s: float = 8.0, should_stop=None) -> tuple[Timing | None, Timing]:
    """The original (``before``; None: not timed) and the pruned ``.onnx`` file in onnxruntime
    CPU sessions, run in turns after each warms up, like :func:`compare_latency` times torch
    models: until the spread is tight, ``max_runs`` pairs, or ``budget_s`` seconds
    (``should_stop()`` is polled before each pair; it raises to cancel). Two sessions
    run without spinning thread pools (a lone session would be a few % faster: both alike)."""
    import onnxruntime as ort

    ex = as_example_inputs(inputs)
    n = int(threads or torch.get_num_threads())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = n
    opts.inter_op_num_threads = 1
    if before is not None:
        # each session has a thread pool that spins after its run: two taking turns on the same
        # cores spin against each other (ResNet-50's pruned file: 46 ms instead of 22)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    tensors = list(ex.args) + list(ex.kwargs.values())
    runs = []
    for path in (before, after):
        if path is None:
            continue
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        feed = {name: t.detach().cpu().numpy() for name, t in zip(names, tensors)}
        for _ in range(warmup):
            sess.run(None, feed)
        runs.append(lambda sess=sess, feed=feed: sess.run(None, feed))
    tick = timer(torch.device("cpu"))
    times: list[list] = [[] for _ in runs]
    t0, stop = time.perf_counter(), "max runs"
    for i in range(max_runs):
        if should_stop is not None:
            should_stop()
        for run, ts in zip(runs, times):  # the original, then the pruned file: in turns
            ts.append(tick(run))
        if i + 1 >= min_runs:
            if _tight(times[0], times[1] if len(times) > 1 else None, 0.25):
                stop = "tight"
                break
            if time.perf_counter() - t0 > budget_s:
                stop = "budget"
                break
    out = [timing_of(ts, n, "onnxruntime-cpu", stop) for ts in times]
    return (out[0] if before is not None else None), out[-1]
