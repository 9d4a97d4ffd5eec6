"""Training view (pytest-qt, offscreen): runs off the GUI thread, live curves, pause/cancel."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytestqt")

from core.train.data import load_data  # noqa: E402
from core.pipeline import analyze_model  # noqa: E402
from core.models.digits import digits_cnn  # noqa: E402
from core.train.loop import TrainConfig  # noqa: E402


@pytest.fixture
def view(qtbot):
    from gui.compat import guard_none_refcount
    guard_none_refcount()
    from gui.widgets.training_view import TrainingView
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    v = TrainingView()
    qtbot.addWidget(v)
    data = load_data("digits", batch_size=64)
    model = digits_cnn(8)
    v.set_inputs(model, analyze_model(model, data.example_input(1)), data)
    yield v
    v.shutdown()
    torch.set_num_threads(n)


def test_run_finishes_with_curves(qtbot, view):
    before = {k: t.clone() for k, t in view.model.state_dict().items()}
    with qtbot.waitSignal(view.finished, timeout=60000) as b:
        assert view.start(TrainConfig(epochs=2, lr=0.05, max_batches=6, sparse_lambda=0.003))
        assert view.state == "running" and not view.start_btn.isEnabled()
    res = b.args[0]
    assert res is view.result and len(res.history) == 2
    xs, ys = view.curves["train_loss"].getData()
    assert len(xs) == 2
    assert len(view.curves["top1"].getData()[0]) == 2
    assert len(view.curves["sparsity"].getData()[0]) == 2
    assert len(view.curves["batch_loss"].getData()[0]) >= 1
    assert view.state == "idle" and view.start_btn.isEnabled()
    for k, t in view.model.state_dict().items():  # the original model is untouched
        assert torch.equal(t, before[k])


def test_pause_resume_and_cancel(qtbot, view):
    assert view.start(TrainConfig(epochs=50, lr=0.05, max_batches=4))
    view.pause()
    assert view.state == "paused" and view.pause_btn.text() == "Resume"
    qtbot.wait(300)
    n = (len(view.points["batch_loss"][0]), len(view.points["train_loss"][0]))
    qtbot.wait(600)
    assert (len(view.points["batch_loss"][0]), len(view.points["train_loss"][0])) == n  # no progress
    view.resume()
    assert view.state == "running"
    with qtbot.waitSignal(view.cancelled, timeout=30000):
        view.cancel()
    assert view.state == "idle" and view.result is None
    assert "cancelled" in view.status.text()


def test_a_training_worker_outliving_its_qt_object_ends_quietly(monkeypatch):
    """A training run still going when the window closes and the process ends outlives its
    worker's Qt object: its late signals ("Signal source has been deleted") must not raise out
    of the thread (the same guard as gui.jobs.worker); alive, they arrive as before."""
    import shiboken6

    from core.train import loop
    from gui.jobs.training import TrainWorker

    def fake_train(model, data, config, on_epoch, on_batch, **kw):
        on_batch(1, 1, 0.5)
        on_epoch({"epoch": 1})
        return "done"
    monkeypatch.setattr(loop, "train", fake_train)
    alive = TrainWorker(None, None, None, None, None)
    got = []
    alive.finished.connect(got.append)
    alive.batch.connect(lambda *a: got.append(a))
    alive.run()
    assert got == [(1, 1, 0.5), "done"]
    gone = TrainWorker(None, None, None, None, None)
    shiboken6.delete(gone)
    gone.run()  # no RuntimeError
    monkeypatch.setattr(loop, "train", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad")))
    gone.run()  # the failure path too


def test_training_runs_on_the_windows_compute_thread(qtbot, view, monkeypatch):
    """One OpenMP team in the process (gui.jobs.worker): a run in a thread of its own beside the
    compute thread's team made every parallel region of both wait on futexes."""
    import threading

    from core.train import loop
    from gui.jobs import worker
    seen = {}
    lane = worker.Task("lane", lambda: seen.setdefault("lane", threading.get_ident()),
                       with_callbacks=False)
    with qtbot.waitSignal(lane.done, timeout=30000):
        worker.start(lane, lane="compute")
    real = loop.train
    monkeypatch.setattr(loop, "train", lambda *a, **k: (seen.setdefault("train", threading.get_ident()),
                                                         real(*a, **k))[1])
    with qtbot.waitSignal(view.finished, timeout=60000):
        assert view.start(TrainConfig(epochs=1, lr=0.05, max_batches=2))
    assert seen["train"] == seen["lane"] != threading.get_ident()
