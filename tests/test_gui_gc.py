"""The window keeps the garbage collector off the loaded model (gui/jobs/gcpolicy.py), and a
replaced model is still freed: freezing must never turn into a leak."""
import gc
import weakref

from core.models.demo import DEMO_INPUT_SHAPE


def load(qtbot, w):
    """A load, and the collection that follows once its graph was painted."""
    settled(qtbot, w)
    with qtbot.waitSignals([w.modelReady, w.ctx.settled], timeout=60_000):
        w.open_model("demo", DEMO_INPUT_SHAPE)


def settled(qtbot, w):
    qtbot.waitUntil(lambda: not w.ctx.settling, timeout=60_000)


def test_loaded_model_is_frozen_and_a_replaced_one_is_freed(qtbot, win):
    settled(qtbot, win)
    s = win.session
    assert gc.get_freeze_count() > 0  # the loaded model is out of the collector's walks
    old_model, old_graph = weakref.ref(s.model), weakref.ref(s.dg.graph)
    old_session = weakref.ref(s)
    del s
    load(qtbot, win)
    assert old_session() is None and old_model() is None and old_graph() is None


def test_repeated_loads_do_not_grow_the_frozen_set(qtbot, win):
    load(qtbot, win)
    first = gc.get_freeze_count()
    for _ in range(3):
        load(qtbot, win)
    assert gc.get_freeze_count() < first * 1.2


def test_a_pruned_model_is_freed_when_its_session_is_replaced(qtbot, win):
    win.targets.slider.setValue(30)
    with qtbot.waitSignal(win.pruneFinished, timeout=120_000) as got:
        win.prune()
    pruned = weakref.ref(got.args[0].model)
    del got
    load(qtbot, win)
    # an estimate still running when the load lands holds the old session until it ends (then it
    # is collected: see the next test); on a busy machine one often is
    qtbot.waitUntil(lambda: win.pruning._est_task is None, timeout=60_000)
    qtbot.wait(50)
    assert pruned() is None


def test_a_model_held_by_an_estimate_in_flight_is_freed_when_it_ends(qtbot, win, monkeypatch):
    import threading

    from gui.jobs import session as sess

    gate, real = threading.Event(), sess.estimate

    def slow_estimate(*a, **k):  # still running, holding the old session, when the load lands
        gate.wait(30)
        return real(*a, **k)

    monkeypatch.setattr(sess, "estimate", slow_estimate)
    old = weakref.ref(win.session.dg.graph)  # freed by the cycle collector, not reference counts
    win.pruning.update_estimate()
    load(qtbot, win)
    monkeypatch.setattr(sess, "estimate", real)
    gate.set()
    qtbot.waitUntil(lambda: old() is None, timeout=60_000)  # once the estimate has ended


def _count_collections(monkeypatch):
    calls = []
    real = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: (calls.append(a), real(*a))[1])
    return calls


def test_a_replaced_model_goes_without_a_full_collection(qtbot, win, monkeypatch):
    """A full collection walks every live object (0.47 s with a 20k-node graph, a frozen
    window): the replaced model, graph and session are freed by reference counts instead."""
    load(qtbot, win)
    s = win.session
    _ = s.dg.graph.edges, s.dg.graph.degree  # networkx caches these views: each holds the graph
    old = [weakref.ref(x) for x in (s, s.model, s.dg.graph)]
    del s, _
    from gui.jobs import gcpolicy
    monkeypatch.setattr(gcpolicy, "FULL_EVERY", 10**9)  # not the every-8th-load collection
    calls = _count_collections(monkeypatch)
    load(qtbot, win)
    qtbot.waitUntil(lambda: all(r() is None for r in old), timeout=30_000)  # jobs may hold it
    assert calls == []


def test_a_replaced_model_in_a_reference_cycle_is_still_collected(qtbot, win, monkeypatch):
    load(qtbot, win)
    s = win.session
    s.model.loop = [s.model]  # a model that refers to itself: only the collector frees it
    old = weakref.ref(s.model)
    del s
    calls = _count_collections(monkeypatch)
    load(qtbot, win)
    qtbot.waitUntil(lambda: old() is None, timeout=30_000)  # at once, or when the jobs end
    assert calls


def test_a_replaced_model_a_job_still_holds_costs_no_full_collection(qtbot, win, monkeypatch):
    """Walking every object while a job holds the old model frees nothing (0.8 s with two 20k
    graphs loaded): the model goes when the job ends, by reference counts."""
    import threading

    from gui.jobs import gcpolicy, session as sess
    load(qtbot, win)
    qtbot.waitUntil(lambda: win.pruning._est_task is None, timeout=60_000)
    gate, started, real = threading.Event(), threading.Event(), sess.estimate

    def slow_estimate(*a, **k):
        started.set()
        gate.wait(30)
        return real(*a, **k)

    monkeypatch.setattr(sess, "estimate", slow_estimate)
    monkeypatch.setattr(gcpolicy, "FULL_EVERY", 10**9)
    old = weakref.ref(win.session.model)
    win.pruning.update_estimate()
    qtbot.waitUntil(started.is_set, timeout=30_000)  # the job holds the session from here on
    calls = _count_collections(monkeypatch)
    load(qtbot, win)
    assert calls == [] and old() is not None  # still held by the estimate
    monkeypatch.setattr(sess, "estimate", real)
    gate.set()
    qtbot.waitUntil(lambda: old() is None, timeout=30_000)
    assert calls == []


def test_the_load_job_runs_with_the_collector_paused(qtbot, win, monkeypatch):
    """A load allocates millions of objects on a worker; an automatic full collection there
    holds the GIL (275 ms with the 20k-node chain), and so the window, however idle it is."""
    from gui.jobs import session as sess
    seen, real = [], sess.layout

    def layout(*a, **k):
        seen.append(gc.isenabled())
        return real(*a, **k)

    monkeypatch.setattr(sess, "layout", layout)
    load(qtbot, win)
    assert seen == [False] and gc.isenabled()


def test_a_replaced_model_is_freed_after_the_new_graph_is_painted(qtbot, win):
    """Freeing a big model object by object takes ~90 ms: not in the turn that shows the new one."""
    settled(qtbot, win)
    qtbot.waitUntil(lambda: win.pruning._est_task is None, timeout=60_000)
    old = weakref.ref(win.session.model)
    seen = []
    win.modelReady.connect(lambda: seen.append(old() is not None))
    load(qtbot, win)
    assert seen == [True]
    qtbot.waitUntil(lambda: old() is None, timeout=30_000)
