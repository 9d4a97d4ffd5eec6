"""What stands between a load and the graph on screen: the full garbage collection that frees the
replaced model runs after the new graph was painted, and the FLOP count behind the estimate is
made by the first estimate, not by the load (gui/controllers/model.py, gui/jobs/session.py)."""
from core.models.demo import DEMO_INPUT_SHAPE


def quiet(qtbot, win):
    """The fixture's load has finished its estimate and its collection."""
    qtbot.waitUntil(lambda: win.pruning._est_task is None and not win.ctx.settling,
                    timeout=60_000)


def test_the_collection_runs_after_the_graph_is_painted(qtbot, win, monkeypatch):
    from gui.jobs import gcpolicy

    quiet(qtbot, win)
    events = []
    real = gcpolicy.settle
    monkeypatch.setattr(gcpolicy, "settle", lambda **k: (events.append("collect"), real(**k))[1])
    win.modelReady.connect(lambda: events.append("ready"))
    win.view.viewport().installEventFilter(paints := PaintSpy(events))
    with qtbot.waitSignal(win.ctx.settled, timeout=60_000):
        win.open_model("demo", DEMO_INPUT_SHAPE)
    assert paints  # keep the filter alive
    assert "collect" in events and "ready" in events
    assert events.index("ready") < events.index("collect")
    assert "paint" in events[: events.index("collect")]


def test_the_load_leaves_the_flop_count_to_the_estimate(qtbot, win, monkeypatch):
    from core import pipeline

    quiet(qtbot, win)
    calls, old = [], win.session
    real = pipeline.cost_model
    # a count made while the old session is still shown is the load's
    monkeypatch.setattr(pipeline, "cost_model",
                        lambda *a, **k: (calls.append(win.ctx.session is old), real(*a, **k))[1])
    from gui.jobs import gcpolicy
    real_settle = gcpolicy.settle
    monkeypatch.setattr(gcpolicy, "settle",
                        lambda **k: (calls.append("painted and collected"), real_settle(**k))[1])
    with qtbot.waitSignal(win.estimateReady, timeout=60_000):
        win.open_model("demo", DEMO_INPUT_SHAPE)  # the load, then its first estimate
    assert calls == ["painted and collected", False]  # once, after the new graph was painted
    with qtbot.waitSignal(win.estimateReady, timeout=60_000) as got:
        win.update_estimate()
    assert calls == ["painted and collected", False] and win.session.cost is not None
    params, _flops = got.args[0]
    assert 0 < params <= win.session.cost.base_params


from PySide6.QtCore import QEvent, QObject  # noqa: E402


class PaintSpy(QObject):
    def __init__(self, events):
        super().__init__()
        self.events = events

    def eventFilter(self, obj, ev):  # noqa: N802 - Qt's name
        if ev.type() == QEvent.Paint and (not self.events or self.events[-1] != "paint"):
            self.events.append("paint")
        return False

    def __bool__(self):
        return True


def test_the_importance_column_fills_in_after_the_paint(qtbot, win, monkeypatch):
    """Scoring every weight (ViT-B/16: 86 M) is left out of the load: the group table shows "–"
    until a worker has scored the groups after the graph was painted, then the same values a
    direct count gives."""
    import math

    from gui.jobs import group_rows as gr
    quiet(qtbot, win)
    calls, old = [], win.session
    real = gr.group_scores
    monkeypatch.setattr(gr, "group_scores",
                        lambda *a, **k: (calls.append(win.ctx.session is old), real(*a, **k))[1])
    with qtbot.waitSignal(win.modelReady, timeout=60_000):
        win.open_model("demo", DEMO_INPUT_SHAPE)
    assert True not in calls  # not scored by the load
    p = win.groups
    qtbot.waitUntil(lambda: all(p.text(i, "importance") != "–" for i in range(p.row_count())
                                if p.text(i, "prunable") != "no"), timeout=60_000)
    s = win.session
    direct = {r["id"]: r["importance"] for r in gr.group_rows(s.dg, s.model)}
    for i in range(p.row_count()):
        gid, imp = p.value(i, "id"), p.value(i, "importance")
        if not math.isnan(direct[gid]):
            assert imp == direct[gid]
