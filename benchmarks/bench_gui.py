"""GUI benchmark: load -> graph on screen, layout + render of a 20k-node graph, GUI stalls.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui.py [--quick] [--chain-only RUNS]

Prints one line per figure. --quick skips vit_b_16 and uses a 4k-node synthetic graph.
"load -> graph on screen" ends with the first paint of the fitted graph; the full garbage
collection that frees the replaced model and the FLOP count behind the first estimate come after
it (gui/controllers/model.py) and are printed on the next line.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PRUNESTUDIO_SETTINGS_ORG", "prunestudio-bench")

import torch  # noqa: E402
from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from torch import nn  # noqa: E402

app = QApplication.instance() or QApplication([])

from core import pipeline  # noqa: E402
from core.trace.inputs import make_inputs  # noqa: E402
from gui.jobs import gcpolicy  # noqa: E402
from gui.jobs.graph_layout import layout  # noqa: E402
from gui.widgets.graph_view import GraphView  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402


def wait(signal, timeout_ms=900_000):
    loop = QEventLoop()
    got = []
    signal.connect(lambda *a: (got.append(a), loop.quit()))
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()
    if not got:
        raise TimeoutError("signal never came")
    return got[0]


class Heartbeat:
    """A 10 ms QTimer on the GUI thread; the largest gap between ticks is the worst stall.
    It also times Python's garbage collections meanwhile (``max_gc``): with a big model loaded a
    full collection walks millions of objects, on whichever thread allocates."""

    def __init__(self, ms=10):
        self.timer = QTimer(interval=ms)
        self.timer.timeout.connect(self._tick)
        self.last, self.max_gap, self.max_gc, self._gc_t = None, 0.0, 0.0, None
        self.gap_cpu = 0.0  # the GUI thread's CPU time in the longest gap: the rest is waiting
        self._cpu = 0.0  # for a core on a loaded machine

    def _gc(self, phase, info):
        if phase == "start":
            self._gc_t = time.perf_counter()
        elif self._gc_t is not None:
            self.max_gc = max(self.max_gc, time.perf_counter() - self._gc_t)

    def _tick(self):
        now, cpu = time.perf_counter(), time.thread_time()
        if self.last is not None and now - self.last > self.max_gap:
            self.max_gap, self.gap_cpu = now - self.last, cpu - self._cpu
        self.last, self._cpu = now, cpu

    def start(self):
        self.last, self.max_gap, self.max_gc = time.perf_counter(), 0.0, 0.0
        self._cpu, self.gap_cpu = time.thread_time(), 0.0
        gc.callbacks.append(self._gc)
        self.timer.start()

    def stop(self):
        self.timer.stop()
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
        return self.max_gap


def window():
    w = MainWindow()
    w.headless = True
    w.resize(1600, 1000)
    w.show()
    return w


def bench_load(w, name, shape="1,3,224,224"):
    hb = Heartbeat()
    hb.start()
    t = time.perf_counter()
    w.open_model(f"torchvision:{name}", shape)
    wait(w.modelReady)
    w.view.viewport().repaint()  # the first paint of the fitted graph
    app.processEvents()
    total = time.perf_counter() - t
    stall = hb.stop()
    s = w.session
    parts = ", ".join(f"{k} {v:.2f}s" for k, v in s.seconds.items())
    print(f"{name} {shape}: load -> graph on screen {total:.2f} s "
          f"({s.dg.graph.number_of_nodes()} nodes; {parts}); max GUI stall {stall * 1000:.0f} ms")
    settle_wait(w)  # the replaced model's collection, after the first paint (off the path above)
    print(f"{name}: then the collection that frees the replaced model {s.seconds.get('gc', 0):.2f} s, "
          f"FLOPs counted by the first estimate {s.seconds.get('cost', 0):.2f} s (both after the paint)")
    app.processEvents()
    w.targets.slider.setValue(w.targets.slider.value() + 5)  # debounced, then estimated on a worker
    t = time.perf_counter()
    wait(w.estimateReady)
    print(f"{name}: estimate after a slider move (120 ms debounce + worker) "
          f"{1000 * (time.perf_counter() - t):.0f} ms")


def settle_wait(w):
    if w.ctx.settling:
        wait(w.ctx.settled)
    if w.pruning._est_task is not None:
        wait(w.estimateReady)


def bench_prune_stall(w, name):
    w.latency_runs = 3
    w.targets.accept_approx.setChecked(True)  # ViT and friends are approximate through LayerNorm
    hb = Heartbeat()
    hb.start()
    t = time.perf_counter()
    w.prune()
    res = wait(w.pruneFinished)[0]
    total = time.perf_counter() - t
    stall = hb.stop()
    print(f"{name}: pruning run {total:.2f} s (params {res.before.params:,} -> {res.after.params:,}); "
          f"max GUI-thread stall {stall * 1000:.0f} ms (10 ms heartbeat)")


class Chain(nn.Module):
    """A deep chain of small Linear layers: n Linear + n ReLU nodes in the traced graph."""

    def __init__(self, n, width=8):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(n))

    def forward(self, x):
        for lin in self.layers:
            x = torch.relu(lin(x))
        return x


def bench_synthetic(n_nodes):
    model = Chain(n_nodes // 2).eval()
    ex = make_inputs("1,8")
    t = time.perf_counter()
    dg = pipeline.analyze_model(model, ex, probe=False)
    t_an = time.perf_counter() - t
    g = dg.graph
    t = time.perf_counter()
    lay = layout(g, expanded="all")  # every node visible: the worst case for drawing
    t_lay = time.perf_counter() - t
    # as the window does once a model is on screen (gui/jobs/gcpolicy.py): the analysis's
    # millions of objects (and the models loaded before) out of the cycle collector's walks
    gcpolicy.settle()
    view = GraphView()
    view.resize(1200, 800)
    view.show()
    steps = []  # each chunk of the build: one event-loop turn
    run_steps = view._run_steps

    def timed_step(*a):
        t0 = time.perf_counter()
        run_steps(*a)
        steps.append(time.perf_counter() - t0)
    view._run_steps = timed_step
    hb = Heartbeat()
    hb.start()
    t = time.perf_counter()
    view.set_graph(g, lay)  # paths at once, node items in chunks between events
    t_sync = time.perf_counter() - t
    if view.building:
        wait(view.built)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    view.fit_all()
    view.viewport().repaint()
    app.processEvents()
    t_fit = time.perf_counter() - t
    gap = hb.stop()
    stall = max(gap, t_sync, t_fit)
    print(f"  (heartbeat gap {gap * 1000:.0f} ms with {hb.gap_cpu * 1000:.0f} ms of GUI-thread CPU, "
          f"the longest garbage collection {hb.max_gc * 1000:.0f} ms; set_graph {t_sync * 1000:.0f} ms, "
          f"build steps {len(steps)}, longest {max(steps, default=0) * 1000:.0f} ms; "
          f"fit + paint {t_fit * 1000:.0f} ms)")
    node = next(iter(view.items_by_node))
    t = time.perf_counter()
    view.select_node(node)  # zoomed in: text is drawn
    view.viewport().repaint()
    app.processEvents()
    t_zoom = time.perf_counter() - t
    t = time.perf_counter()
    view.highlight(set(list(view.items_by_node)[:2000]), node)
    view.viewport().repaint()
    app.processEvents()
    t_hi = time.perf_counter() - t
    print(f"synthetic chain: {g.number_of_nodes()} nodes, {g.number_of_edges()} edges "
          f"(core analysis without probes {t_an:.1f} s)")
    print(f"  layout (worker thread) {t_lay * 1000:.0f} ms; scene build {t_build * 1000:.0f} ms "
          f"(longest step on the GUI thread {stall * 1000:.0f} ms); "
          f"first paint, whole graph {t_fit * 1000:.0f} ms; paint zoomed in {t_zoom * 1000:.0f} ms; "
          f"highlight 2000 nodes + repaint {t_hi * 1000:.0f} ms")
    print(f"  layout + render total {(t_lay + t_build + t_fit) * 1000:.0f} ms")


def bench_chain_window(w, n_nodes):
    """The synthetic chain opened in the window as a user would: analysis on a worker, then the
    graph, the group table (one row per Linear: n/2 groups), details and estimate on the GUI
    thread; the longest GUI-thread stall from open to the settled window."""
    model = Chain(n_nodes // 2).eval()
    hb = Heartbeat()
    hb.start()
    t = time.perf_counter()
    w.open_model(f"chain-{n_nodes}", "1,8", model=model)
    wait(w.modelReady)
    w.view.viewport().repaint()
    app.processEvents()
    total = time.perf_counter() - t
    settle_wait(w)
    if w.view.building:
        wait(w.view.built)
    app.processEvents()
    stall = hb.stop()
    print(f"chain in the window: {w.session.dg.graph.number_of_nodes()} nodes, "
          f"{w.groups.row_count()} groups: load -> graph on screen {total:.2f} s; max GUI stall "
          f"{stall * 1000:.0f} ms (of it GUI-thread CPU {hb.gap_cpu * 1000:.0f} ms) until settled; "
          f"longest garbage collection (any thread) {hb.max_gc * 1000:.0f} ms")


def bench_llm(w, layers=32):
    """A Llama-7B-sized configuration on the meta device: opens collapsed, then single decoder
    layers expand (laid out and drawn on the GUI thread: each is a stall as long as it takes)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers,
                      num_attention_heads=32, num_key_value_heads=32)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).eval()
    hb = Heartbeat()
    hb.start()
    t = time.perf_counter()
    w.open_model("llama-7b-config", "1,16", "int64", model=model, meta=True)
    wait(w.modelReady)
    w.view.viewport().repaint()
    app.processEvents()
    total = time.perf_counter() - t
    stall = hb.stop()
    s, v = w.session, w.view
    parts = ", ".join(f"{k} {val:.2f}s" for k, val in s.seconds.items())
    print(f"llama-7b config ({layers} layers, meta): load -> graph on screen {total:.2f} s "
          f"({s.dg.graph.number_of_nodes()} nodes shown as {len(v.layout_.pos)} items; {parts}); "
          f"max GUI stall {stall * 1000:.0f} ms")
    settle_wait(w)  # the collection after the first paint is not part of an expansion
    times = []
    for i in (0, layers // 2, layers - 1):
        block = f"model.layers.{i}"
        t = time.perf_counter()
        v.expand(block)
        v.viewport().repaint()
        app.processEvents()
        times.append(time.perf_counter() - t)
        assert block in v.frames, block
        v.collapse(block)
    print(f"llama-7b config: expand one decoder layer (layout + draw) "
          f"{', '.join(f'{x * 1000:.0f}' for x in times)} ms; longest garbage collection during the "
          f"load {hb.max_gc * 1000:.0f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default="resnet50,vit_b_16")
    ap.add_argument("--nodes", type=int, default=20_000)
    ap.add_argument("--llm-layers", type=int, default=32, help="0 skips the Llama configuration")
    ap.add_argument("--chain-only", type=int, default=0, metavar="RUNS",
                    help="only the synthetic chain (--nodes), this many runs")
    ap.add_argument("--chain-window", action="store_true",
                    help="only the synthetic chain opened in the window (group table included)")
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, platform {app.platformName()}")
    if a.chain_only:
        gcpolicy.configure()  # as the window does at start
        for _ in range(a.chain_only):
            bench_synthetic(a.nodes)
        return 0
    w = window()
    if a.chain_window:
        bench_chain_window(w, a.nodes)
        w.close()
        return 0
    models = a.models.split(",")[: 1 if a.quick else None]
    for m in models:
        bench_load(w, m)
    bench_prune_stall(w, models[-1])  # the model loaded last
    if a.llm_layers:
        bench_llm(w, a.llm_layers)
    bench_synthetic(4000 if a.quick else a.nodes)
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
