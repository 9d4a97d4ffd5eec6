"""Why the window keeps one OpenMP team (gui/jobs/worker.py), measured.

    python benchmarks/bench_threads.py [--threads 2] [--numel 300000]

Times a ReLU of ``--numel`` elements (a batch-1 activation) on a fresh thread in three settings:
alone; while another live thread holds an OpenMP team of its own (what the window's thread pool
did); and as the window runs it now - the compute lane beside a side task that uses one torch
thread. On the project's 2-core machine (2026-12-02, two runs): 33-35 us alone, 123-128 us beside
a second team, 33-45 us on the compute lane.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def relu_us(x, reps: int = 2000) -> float:
    import torch
    for _ in range(50):
        torch.relu(x)
    t = time.perf_counter()
    for _ in range(reps):
        torch.relu(x)
    return (time.perf_counter() - t) / reps * 1e6


def on_thread(fn, threads: int, hold: threading.Event | None = None) -> dict:
    """``fn()`` on a new thread with ``threads`` torch threads; with ``hold`` the thread stays
    alive (its team too) until the event is set."""
    import torch
    out: dict = {}

    def run():
        torch.set_num_threads(threads)
        out["us"] = fn()
        if hold is not None:
            hold.wait()
    t = threading.Thread(target=run)
    t.start()
    if hold is None:
        t.join()
    else:
        while "us" not in out:
            time.sleep(0.01)
    out["thread"] = t
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--numel", type=int, default=300_000)
    a = ap.parse_args(argv)
    import torch
    x = torch.randn(a.numel)
    alone = on_thread(lambda: relu_us(x), a.threads)["us"]
    hold = threading.Event()
    first = on_thread(lambda: relu_us(x), a.threads, hold)  # its team stays alive
    beside = on_thread(lambda: relu_us(x), a.threads)["us"]
    hold.set()
    first["thread"].join()
    # the window's lanes: the compute thread with the claimed count, a side task with one thread
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QCoreApplication
    from gui.jobs import worker
    app = QCoreApplication.instance() or QCoreApplication([])  # noqa: F841 - alive while it runs
    worker.claim_compute_threads(a.threads)  # as gui.app.main does
    res: dict = {}
    side_hold = threading.Event()
    side = worker.Task("side", lambda: (relu_us(x, 200), side_hold.wait(60)), with_callbacks=False)
    worker.start(side)
    lane = worker.Task("lane", lambda: res.setdefault("us", relu_us(x)), with_callbacks=False)
    worker.start(lane, lane="compute")
    while "us" not in res:
        app.processEvents()
        time.sleep(0.01)
    side_hold.set()
    print(f"ReLU of {a.numel:,} elements, {a.threads} torch threads: alone {alone:.1f} us; beside "
          f"another thread's OpenMP team {beside:.1f} us; on the window's compute lane beside a "
          f"side task {res['us']:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
