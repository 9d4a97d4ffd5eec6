"""Work for a model that was replaced stops: its importance column (every weight scored: 10 s on
a 20k-node chain) is cancelled when another model is shown, so the CPU goes to the new one and
the old model is freed sooner."""
import threading
import time

import pytest
import torch
from torch import nn

from core.errors import Cancelled
from core.models.demo import DEMO_INPUT_SHAPE
from core.pipeline import analyze_model
from core.plan.criteria import group_scores


def test_group_scores_stop_at_the_next_group_when_asked():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    dg = analyze_model(m.eval(), torch.randn(1, 3, 12, 12))
    asked = []

    def stop():
        asked.append(1)
        return len(asked) > 1  # the second group is never scored
    with pytest.raises(Cancelled):
        group_scores(dg, m, "l2", should_stop=stop)
    assert len(asked) == 2
    assert set(group_scores(dg, m, "l2", should_stop=lambda: False)) == {g.id for g in dg.prunable_groups}


def test_the_importance_of_a_replaced_model_is_cancelled(qtbot, win, monkeypatch):
    from gui.jobs import session as sess
    started, seen = threading.Event(), {}
    real = sess.ensure_importance

    def slow(session, *a, **kw):  # stands for a big model's scoring: runs until told to stop
        stop = kw.get("should_stop")
        if not seen:
            seen["first"] = session
            started.set()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 20:
                if stop is not None and stop():
                    seen["stopped_after"] = time.monotonic() - t0
                    raise Cancelled("replaced")
                time.sleep(0.01)
            seen["stopped_after"] = None
            return {}
        return real(session, *a, **kw)
    monkeypatch.setattr(sess, "ensure_importance", slow)
    qtbot.waitUntil(lambda: not win.ctx.settling, timeout=60_000)
    with qtbot.waitSignals([win.modelReady, win.ctx.settled], timeout=60_000):
        win.open_model("demo", DEMO_INPUT_SHAPE)
    assert started.wait(30)
    first = seen["first"]
    with qtbot.waitSignal(win.modelReady, timeout=60_000):
        win.open_model("demo", DEMO_INPUT_SHAPE)
    assert win.session is not first
    qtbot.waitUntil(lambda: "stopped_after" in seen, timeout=30_000)
    assert seen["stopped_after"] is not None and seen["stopped_after"] < 15
    # the new model's column is still scored
    qtbot.waitUntil(lambda: any(win.groups.value(r, "importance") >= 0
                                for r in range(win.groups.row_count())), timeout=30_000)
