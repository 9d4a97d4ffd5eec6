"""The exported file's speed where it is deployed: the original model exported the same way to a
scratch file beside it, and both run in turns in onnxruntime (``core.metrics.timing``).

The scratch file is registered with ``core.io.tempfiles`` (a signal removes it) and written outside
any :class:`~core.io.atomic.OutputSet` the caller has open: it is never one of the outputs."""
from __future__ import annotations

import os

from core.errors import Cancelled
from core.io import tempfiles
from core.io.atomic import scratch_writes
from core.io.onnx.export import export_onnx
from core.metrics.timing import onnx_compare_latency, speedup_text


def time_against_original(original, inputs, pruned_path: str, threads: int | None = None,
                          warnings: list | None = None, should_stop=None):
    """(original's Timing or None, the pruned file's Timing). An original that does not export
    leaves the pruned file timed alone, with a line in ``warnings`` saying why. ``should_stop()``
    is polled during the export and between runs (it raises to cancel)."""
    base = tempfiles.temp_path(os.path.dirname(os.path.abspath(pruned_path)), "original.onnx")
    tempfiles.register(base)
    try:
        before = base
        try:
            with scratch_writes():
                export_onnx(original, inputs, base, should_stop=should_stop)
        except Cancelled:
            raise
        except Exception as e:  # noqa: BLE001 - the pruned file is still timed on its own
            if warnings is not None:
                warnings.append(f"the original model could not be exported to time it in "
                                f"onnxruntime: {e}"[:300])
            before = None
        return onnx_compare_latency(before, pruned_path, inputs, threads=threads,
                                    should_stop=should_stop)
    finally:
        tempfiles.remove(base)


def speed_line(timings) -> str:
    """``onnxruntime: A ms (IQR) -> B ms (IQR): N× faster  [threads, runs, stop]``."""
    b, a = timings
    now = f"{a.median_ms:.2f} ms (IQR {a.q1_ms:.2f}-{a.q3_ms:.2f})"
    if b is None:
        return f"onnxruntime: {now}  [{a.threads} threads, {a.runs} runs]"
    return (f"onnxruntime: {b.median_ms:.2f} ms (IQR {b.q1_ms:.2f}-{b.q3_ms:.2f}) -> {now}: "
            f"{speedup_text(b.median_ms, a.median_ms)}  [{a.threads} threads, {a.runs} interleaved "
            f"runs, stopped: {a.stop}; the original exported the same way]")


def speed_json(timings) -> dict | None:
    """The report's ``onnx_latency``: before, after and the speed-up (None where not timed)."""
    if not timings:
        return None
    before, after = timings
    return {"before": before.to_json() if before else None, "after": after.to_json(),
            "speedup": before.median_ms / after.median_ms if before else None}
