"""The window's torch work keeps to one OpenMP team: its main tasks run on one long-lived thread
with the GUI thread's torch thread count, the small tasks beside them with one torch thread.
(Every thread running parallel ops keeps a team of its own; more team threads than cores made
every parallel region wait on futexes - the window timed ConvNeXt-T twice as slow as the CLI.)"""
from __future__ import annotations

import threading

import pytest
import torch

pytest.importorskip("pytestqt")

from gui.jobs import worker  # noqa: E402

TIMEOUT = 30_000


def _probe(seen: dict, tag: str, hold: threading.Event | None = None):
    def fn():
        seen[tag] = (threading.get_ident(), torch.get_num_threads())
        if hold is not None:
            hold.wait(20)
    return worker.Task(tag, fn, with_callbacks=False)


def test_main_tasks_share_one_thread_and_side_tasks_use_one_torch_thread(qtbot):
    seen, hold = {}, threading.Event()
    side = _probe(seen, "side", hold)
    with qtbot.waitSignal(side.progress, timeout=200, raising=False):
        worker.start(side)  # holds a pool thread while the main tasks run
    for tag in ("a", "b"):
        t = _probe(seen, tag)
        with qtbot.waitSignal(t.done, timeout=TIMEOUT):
            worker.start(t, lane="compute")
    hold.set()
    qtbot.waitUntil(lambda: "side" in seen and not worker.busy(), timeout=TIMEOUT)
    main_thread = threading.get_ident()
    assert seen["a"][0] == seen["b"][0] not in (seen["side"][0], main_thread)
    assert seen["a"][1] == seen["b"][1] == torch.get_num_threads()
    assert seen["side"][1] == 1


def test_the_window_runs_its_main_task_on_the_compute_lane(qtbot, win):
    seen = {}
    lane = _probe(seen, "lane")
    with qtbot.waitSignal(lane.done, timeout=TIMEOUT):
        worker.start(lane, lane="compute")
    done = []
    assert win.ctx.tasks.run("probe", lambda: seen.setdefault("task", threading.get_ident()),
                             on_done=done.append, with_callbacks=False) is not None
    qtbot.waitUntil(lambda: bool(done), timeout=TIMEOUT)
    assert seen["task"] == seen["lane"][0]


def test_claimed_threads_go_to_the_compute_thread_and_the_gui_thread_keeps_one(qtbot, monkeypatch):
    n = torch.get_num_threads()
    monkeypatch.setattr(worker, "_compute_threads", None)
    try:
        worker.claim_compute_threads(3)
        assert torch.get_num_threads() == 1 and worker.compute_threads() == 3
        seen = {}
        t = _probe(seen, "lane")
        with qtbot.waitSignal(t.done, timeout=TIMEOUT):
            worker.start(t, lane="compute")
        assert seen["lane"][1] == 3
    finally:
        torch.set_num_threads(n)
