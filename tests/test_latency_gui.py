"""The window's pruning job and latency: the original timed once (cached on the next prune), the
device and thread count in the summary, the latency target with its instant estimate after the
first prune, and round-to auto."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from helpers import gui_prune  # noqa: E402

TIMEOUT = 120_000


def _prune(qtbot, w):
    return gui_prune(qtbot, w, TIMEOUT)


@pytest.fixture
def flops_tables(monkeypatch):
    """Layer times as multiply-adds: the demo's real layer times are noise on a busy machine."""
    from core.metrics import tables
    monkeypatch.setattr(tables, "_time", lambda layer, x, tick, runs: float(
        layer.weight.numel() * (x[0, 0].numel() if x.dim() > 2 else 1)) * 1e-6)


def test_second_prune_uses_the_cached_original_and_summary_names_device(qtbot, win, monkeypatch):
    from core.metrics import timing
    # the demo's runs are noise on a busy machine: its check runs confirm the cache here
    # (tests/test_latency.py tests a cache that they refute)
    monkeypatch.setattr(timing, "agrees", lambda cached, fresh: True)
    r1 = _prune(qtbot, win)
    assert r1.before.latency_stop != "cached" and r1.after.latency_threads >= 1
    r2 = _prune(qtbot, win)
    assert r2.before.latency_stop == "cached" and r2.before.latency_ms == r1.before.latency_ms
    log = win.logbox.toPlainText()
    assert "threads" in log and "original cached" in log


def test_the_prune_times_with_the_gui_threads_count(qtbot, win, monkeypatch):
    """OpenMP keeps a thread count per thread: a pool thread first used while the count was 1
    keeps 1 after it is set back to 2. The prune times with the count the GUI thread sees, so
    the cache key and the summary do not depend on which pool thread runs the job."""
    import threading

    import torch
    real, main = torch.get_num_threads, threading.main_thread()
    old = real()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(torch, "get_num_threads",
                            lambda: real() if threading.current_thread() is main else 1)
        r = _prune(qtbot, win)
    finally:
        torch.set_num_threads(old)
    assert r.before.latency_threads == 2 and r.after.latency_threads == 2


def test_latency_target_in_the_window(qtbot, win, flops_tables):
    t = win.targets
    t.mode.setCurrentIndex(t.mode.findData("latency"))
    t.slider.setValue(30)
    assert t.settings().target_latency == pytest.approx(0.3)
    qtbot.waitUntil(lambda: "first prune" in t.estimate.text(), timeout=10_000)
    r = _prune(qtbot, win)
    assert r.plan.settings["target_latency"] == pytest.approx(0.3)
    assert r.latency_table is not None and win.session.cost.latency is r.latency_table
    log = win.logbox.toPlainText()
    assert "tables estimated" in log
    # each measured plan of the loop is said, as on the command line
    assert len(r.plan.settings["latency_loop"]) >= 1 and "latency plan 1: aim 30.0%" in log
    with qtbot.waitSignal(win.estimateReady, timeout=10_000):
        t.slider.setValue(40)
    qtbot.waitUntil(lambda: "by the tables" in t.estimate.text(), timeout=10_000)


def test_round_to_auto_in_the_window(qtbot, win, monkeypatch, tmp_path):
    from core.metrics import widths
    monkeypatch.setenv(widths.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(widths, "bench_widths", lambda dev, threads: {
        m: {widths.rounded(x, m): widths.rounded(x, m) * (0.5 if m >= 4 else 1.0)
            for x in widths.TARGETS} for m in widths.MULTIPLES})
    win.targets.round_to.setValue(0)
    assert win.targets.round_to.text() == "auto" and win.targets.settings().round_to == 1
    r = _prune(qtbot, win)
    assert r.round_auto["multiple"] == 4 and r.plan.settings["round_to"] == 4
    assert "round-to auto: multiples of 4" in win.logbox.toPlainText()


def test_plan_for_speed_is_the_flops_targets_default_and_can_be_turned_off(qtbot, win):
    t = win.targets
    t.mode.setCurrentIndex(t.mode.findData("ratio"))
    assert not t.speed_shaped.isEnabled()  # it shapes a FLOPs target only
    t.mode.setCurrentIndex(t.mode.findData("flops"))
    assert t.speed_shaped.isEnabled() and t.settings().flops_allocation == "latency"
    t.speed_shaped.setChecked(False)
    assert t.settings().flops_allocation == "uniform"
    t.global_rank.setChecked(True)
    assert not t.speed_shaped.isEnabled()  # global ranking replaces the per-group ratios
    t.global_rank.setChecked(False)
    s = t.settings()
    t.speed_shaped.setChecked(True)
    t.set_settings(s)  # a project's settings come back as saved
    assert not t.speed_shaped.isChecked()


def test_a_project_saved_before_plan_for_speed_plans_uniformly(tmp_path):
    from core.io.project import Project
    p = Project(spec="demo", settings={"target_flops": 0.5})
    assert p.plan_settings().flops_allocation == "uniform"
    p = Project(spec="demo", settings={"target_flops": 0.5, "flops_allocation": "latency"})
    assert p.plan_settings().flops_allocation == "latency"
