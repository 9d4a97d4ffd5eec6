"""The main window: menus, toolbar, docks, and the wiring between panels, worker and core."""
from __future__ import annotations

import logging
import os
import time

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QLabel, QLineEdit, QMainWindow,
                               QMessageBox, QPlainTextEdit, QProgressBar, QPushButton, QTabWidget,
                               QVBoxLayout, QWidget)

from core import pipeline
from core.models.demo import DEMO_INPUT_SHAPE

from . import accuracy, applog, model_io, session as sess, worker
from .charts import ChartsPanel
from .graph_view import GraphView
from .group_details import GroupDetails
from .group_panel import GroupPanel
from .load_dialog import LoadDialog
from .targets_panel import ATTENTION, TargetsPanel

log = logging.getLogger("prunestudio.gui")
MAX_RECENT = 8
ATTENTION_TEXT = dict(ATTENTION)  # "heads" -> "Whole heads", "head_dim" -> "Dimensions in every head"


class MainWindow(QMainWindow):
    modelReady = Signal()  # a model is loaded, analysed and drawn
    pruneFinished = Signal(object)  # PruneResult
    taskFailed = Signal(str)
    taskCancelled = Signal()
    estimateReady = Signal(object)  # (params, flops)
    exportFinished = Signal(str)  # message
    projectRestored = Signal()
    sensitivityFinished = Signal(object)  # core.train.sensitivity.SensitivityResult
    evaluationFinished = Signal(object)  # (data name, EvalResult original, EvalResult pruned or None)

    def __init__(self, settings_org: str | None = None):
        super().__init__()
        self.settings = QSettings(settings_org or os.environ.get("PRUNESTUDIO_SETTINGS_ORG", "PruneStudio"),
                                  "PruneStudio")
        self.session: sess.Session | None = None
        self.task: worker.Task | None = None
        self.latency_runs = 10
        self.headless = False  # --screenshot runs: no modal dialogs
        self._task_cb = None
        self._est_task: worker.Task | None = None
        self._est_pending = False
        self.log_file = applog.setup_file_logging()
        self._pending = None
        self._pending_options = None  # analysis options of the load in flight
        # accuracy: the dataset chosen for evaluation (a core.train.data spec or Data), sensitivity
        self.eval_data = None
        self.eval_max_batches: int | None = None  # None: the whole validation set
        self.sens_ratios = (0.25, 0.5, 0.75)
        self.sens_max_batches: int | None = 4
        self.sensitivity_result = None
        self._eval_task: worker.Task | None = None
        self._last_data_spec = None
        self.setWindowTitle("PruneStudio")
        self._build_widgets()
        self._build_actions()
        self._connect()
        self._update_actions()
        geo = self.settings.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(1600, 1000)
        self.resizeDocks([self._docks["targets"], self._docks["details"]], [330, 400], Qt.Horizontal)
        self.resizeDocks([self._docks["bottom"]], [290], Qt.Vertical)
        state = self.settings.value("windowState")
        if state is not None:
            self.restoreState(state)

    # ---------------------------------------------------------------------------------- layout
    def _build_widgets(self):
        self.view = GraphView()
        self.setCentralWidget(self.view)
        self.targets = TargetsPanel()
        self.prune_btn = QPushButton("Prune")
        self.prune_btn.setMinimumHeight(34)
        self.prune_btn.setStyleSheet("font-weight: bold")
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.addWidget(self.targets)
        lv.addWidget(self.prune_btn)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setTextFormat(Qt.RichText)
        lv.addWidget(self.info)
        self.overlay_legend = QLabel()
        self.overlay_legend.setWordWrap(True)
        self.overlay_legend.setStyleSheet("background: qlineargradient(x1:0, x2:1, stop:0 #d8f3dc, "
                                          "stop:0.5 #ffd166, stop:1 #e63946); padding: 4px")
        self.overlay_legend.hide()
        lv.addWidget(self.overlay_legend)
        lv.addStretch(1)
        self.details = GroupDetails()
        self.groups = GroupPanel()
        self.charts = ChartsPanel()
        self.sensitivity = accuracy.SensitivityPanel()
        self.logbox = QPlainTextEdit(readOnly=True)
        self.logbox.setMaximumBlockCount(5000)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.groups, "Groups")
        self.tabs.addTab(self.charts, "Charts")
        self.tabs.addTab(self.sensitivity, "Sensitivity")
        self.tabs.addTab(self.logbox, "Log")
        self._docks = {}
        for title, w, area, name in (("Targets", left, Qt.LeftDockWidgetArea, "targets"),
                                     ("Coupled group", self.details, Qt.RightDockWidgetArea, "details"),
                                     ("Groups · charts · sensitivity · log", self.tabs, Qt.BottomDockWidgetArea, "bottom")):
            d = QDockWidget(title, self)
            self._docks[name] = d
            d.setObjectName(name)  # needed by saveState
            d.setWidget(w)
            self.addDockWidget(area, d)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setVisible(False)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setVisible(False)
        self.status_label = QLabel()
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.cancel_btn)
        self.search = QLineEdit(placeholderText="find layer / op (Ctrl+F)")
        self.search.setMaximumWidth(240)

    def _act(self, text, slot, shortcut=None, tip=None):
        a = QAction(text, self)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
        if tip:
            a.setStatusTip(tip)
        a.triggered.connect(slot)
        return a

    def _build_actions(self):
        A = self._act
        self.a_open = A("&Open model…", self.open_dialog, "Ctrl+O", "load a model to prune")
        self.a_demo = A("Open &demo model", lambda: self.open_model("demo", DEMO_INPUT_SHAPE))
        self.a_prune = A("&Prune", self.prune, "Ctrl+P", "prune a copy of the model")
        self.a_cancel = A("&Cancel", self.cancel, "Esc")
        self.a_undo = A("&Undo pruning", self.undo, "Ctrl+Z", "back to the original model")
        self.a_export = A("&Export model…", self.export_dialog, "Ctrl+E", ".pt, .pstudio, .onnx")
        self.a_report = A("Export JSON &report…", self.export_report_dialog)
        self.a_png = A("Export graph as P&NG…", lambda: self.export_view_dialog("png"))
        self.a_svg = A("Export graph as &SVG…", lambda: self.export_view_dialog("svg"))
        self.a_fit = A("&Fit graph", self.view.fit, "F")
        self.a_find = A("F&ind…", self._focus_search, "Ctrl+F")
        self.a_quit = A("&Quit", self.close, "Ctrl+Q")
        self.a_save_project = A("&Save project…", self.save_project_dialog, "Ctrl+S",
                                "model, input, settings, plan and results in a .psproj file")
        self.a_open_project = A("Open pro&ject…", self.open_project_dialog, "Ctrl+Shift+O",
                                "carry on with saved work")
        mb = self.menuBar()
        m = mb.addMenu("&File")
        m.addActions([self.a_open, self.a_demo])
        self.recent_menu = m.addMenu("Open &recent")
        m.addSeparator()
        m.addActions([self.a_open_project, self.a_save_project])
        m.addSeparator()
        m.addActions([self.a_export, self.a_report, self.a_png, self.a_svg])
        m.addSeparator()
        m.addAction(self.a_quit)
        m = mb.addMenu("&Prune")
        m.addActions([self.a_prune, self.a_cancel, self.a_undo])
        self.a_train = A("&Training…", self.open_training, None, "sparse learning / fine-tuning")
        m.addAction(self.a_train)
        m.addSeparator()
        self.a_sensitivity = A("&Sensitivity…", self.sensitivity_dialog, None,
                               "loss change when each group alone is pruned, on a dataset")
        self.a_evaluate = A("&Evaluate on data…", self.evaluate_dialog, None,
                            "top-1/top-5/loss of the original and the pruned model")
        m.addActions([self.a_sensitivity, self.a_evaluate])
        m = mb.addMenu("&View")
        m.addActions([self.a_fit, self.a_find])
        tb = self.addToolBar("main")
        tb.setObjectName("toolbar")
        tb.addActions([self.a_open, self.a_prune, self.a_cancel, self.a_undo, self.a_export])
        tb.addSeparator()
        tb.addAction(self.a_fit)
        tb.addWidget(self.search)
        self._fill_recent()

    def _connect(self):
        self.prune_btn.clicked.connect(self.prune)
        self.cancel_btn.clicked.connect(self.cancel)
        self.view.nodeSelected.connect(self._on_node_selected)
        self.view.nodeHovered.connect(self._on_node_hovered)
        self.groups.groupsSelected.connect(self._on_groups_selected)
        self.groups.locksChanged.connect(self._on_locks)
        self.targets.settingsChanged.connect(self.update_estimate)
        self.targets.attentionChanged.connect(self.set_attention)
        self.search.returnPressed.connect(self._find)
        self.sensitivity.useForRatios.connect(self.use_sensitivity_ratios)
        self.sensitivity.showOnGraph.connect(self.show_sensitivity_overlay)

    def _update_actions(self):
        busy = self.task is not None
        ready = self.session is not None
        pruned = ready and self.session.result is not None
        weights = ready and not self.session.meta  # a meta-device session is structure only
        for a in (self.a_open, self.a_demo, self.a_open_project):
            a.setEnabled(not busy)
        self.a_save_project.setEnabled(weights and not busy)
        self.a_prune.setEnabled(weights and not busy)
        self.prune_btn.setEnabled(weights and not busy)
        self.a_cancel.setEnabled(busy)
        self.a_undo.setEnabled(pruned and not busy)
        self.a_export.setEnabled(weights and not busy)
        self.a_report.setEnabled(pruned and not busy)
        self.a_sensitivity.setEnabled(weights and not busy)
        self.a_evaluate.setEnabled(weights and not busy)
        self.sensitivity.use_btn.setEnabled(self.sensitivity_result is not None and ready)
        self.sensitivity.graph_btn.setEnabled(self.sensitivity_result is not None and ready)
        self.targets.attention.setEnabled(not busy and (not ready or self.targets.attention_available))
        self.progress.setVisible(busy)
        self.cancel_btn.setVisible(busy)

    # ---------------------------------------------------------------------------------- tasks
    def log(self, msg: str):
        log.info(msg)
        self.logbox.appendPlainText(time.strftime("%H:%M:%S  ") + msg)

    def show_error(self, title: str, msg: str):
        self.log(f"ERROR {title}: {msg}")
        self.status_label.setText(f"{title}: {msg}")
        if not self.headless:
            QMessageBox.critical(self, title, msg)

    def _run(self, name, fn, *args, on_done, with_callbacks=True, **kwargs) -> worker.Task | None:
        if self.task is not None:
            self.status_label.setText("busy: cancel the running task first")
            return None
        t = worker.Task(name, fn, *args, with_callbacks=with_callbacks, **kwargs)
        t.progress.connect(self._on_progress)
        t.finished.connect(self._on_task_finished)
        t.failed.connect(self._on_failed)
        t.cancelled.connect(self._on_cancelled)
        self.task, self._task_cb = t, on_done
        self.progress.setRange(0, 0)
        self.status_label.setText(f"{name}…")
        self._t0 = time.perf_counter()
        self._update_actions()
        worker.start(t)
        return t

    def _on_progress(self, stage, done, total, message):
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        self.status_label.setText(f"{stage}: {message}" if message else stage)
        if message:
            self.logbox.appendPlainText(time.strftime("%H:%M:%S  ") + f"[{stage}] {message}")

    def _on_task_finished(self, result):
        cb = self._task_cb
        self._on_task_done()  # free the window first: the callback's listeners may start the next task
        cb(result)

    def _on_failed(self, msg, tb):
        t = self.task
        name = t.name if t else "task"
        internal = bool(getattr(t, "internal", False))
        too_large = getattr(t, "error_type", None) == "TooLargeError"
        self._on_task_done()
        if internal:  # a crash, not bad input: the traceback goes to the log file
            log.error("%s crashed: %s\n%s", name, msg, tb)
            applog.flush()
            where = self.log_file or "the log"
            msg = f"internal error: {msg}\n\nThe details were written to {where}."
        self.taskFailed.emit(msg)
        self.show_error(f"{name} failed", msg)
        if too_large and self._pending and not self.headless:
            spec, shape, dtype = self._pending
            ans = QMessageBox.question(
                self, "Analyse without weights?",
                f"{spec} does not fit in memory. Analyse its structure on the meta device instead? "
                "(no weights are loaded: the graph and its groups are shown, pruning is off)",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
            if ans == QMessageBox.Yes:
                self.open_model(spec, shape, dtype, meta=True,
                                options=self._pending_options)

    def _on_cancelled(self):
        self._on_task_done()
        self.log("cancelled; the original model is unchanged")
        self.status_label.setText("cancelled")
        self.taskCancelled.emit()

    def _on_task_done(self):
        self.task, self._task_cb = None, None
        self._sync_attention()  # a failed or cancelled re-analysis leaves the old choice shown
        self._update_actions()

    def cancel(self):
        if self.task is not None:
            self.log(f"cancelling {self.task.name}…")
            self.task.cancel()
        elif self._eval_task is not None:
            self.log("cancelling the evaluation…")
            self._eval_task.cancel()

    # ---------------------------------------------------------------------------------- loading
    def open_dialog(self):
        dlg = LoadDialog(self, self.settings.value("lastShape", "1,3,224,224"),
                         attention=self.targets.attention_mode())
        if dlg.exec() != LoadDialog.Accepted or not dlg.spec():
            return
        self.settings.setValue("lastShape", dlg.shape.text())
        self.open_model(dlg.spec(), dlg.shape.text(), dlg.dtype.currentText(), options=dlg.options())

    def open_model(self, spec: str, shape: str, dtype: str = "float32", model=None,
                   meta: bool = False, trust: bool | None = None, options: dict | None = None):
        """Load and analyse on the worker. ``options``: analysis options (``{"attention":
        "heads" | "head_dim"}``); by default the targets panel's attention choice."""
        if options is None:
            options = {"attention": self.targets.attention_mode()}
        elif self.task is None:
            self.targets.set_attention(options.get("attention", "heads"), self.targets.attention_available)
        if trust is None:
            trust = False
        if model is None and not trust and model_io.needs_trust_prompt(spec):
            ans = QMessageBox.question(
                self, "Trust this file?",
                f"{os.path.basename(spec)} may contain pickled Python code, which runs when it is "
                "loaded. Load it only if you trust where it came from.\n\nTrust and load it?",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
            trust = ans == QMessageBox.Yes
        self._load_started = time.perf_counter()
        self._pending = (spec, shape, dtype)
        self._pending_options = dict(options)
        return self._run(f"loading {spec}", sess.load_and_analyse, spec, shape, dtype, trust, model,
                         self.view.aspect(), meta=meta, options=dict(options),
                         on_done=self._on_loaded)

    # ---------------------------------------------------------------------------------- analysis
    def set_attention(self, mode: str):
        """Analyse the loaded model again with attention grouped by ``mode`` ("heads": whole
        heads, "head_dim": dimensions inside every head) on the worker, like a load (progress,
        Cancel, errors in a dialog). The graph, groups and table are replaced; a pruned result of
        the old analysis is dropped, as its groups no longer exist. Without a model the choice
        applies to the next load."""
        s = self.session
        if s is None or sess.attention_mode(s) == mode:
            return None
        if self.task is not None:
            self.status_label.setText("busy: cancel the running task first")
            self._sync_attention()
            return None
        self._pending = None  # not a new model: nothing to add to File > Open recent
        t = self._run(f"analysing again ({ATTENTION_TEXT.get(mode, mode)})", sess.reanalyse, s,
                      {"attention": mode}, self.view.aspect(),
                      on_done=lambda new, old=s: self._on_reanalysed(old, new))
        if t is None:
            self._sync_attention()
        return t

    def _on_reanalysed(self, old: sess.Session, new: sess.Session):
        if self.session is not old:
            return
        locked = set(self.targets.locked)  # group roots: module names survive the new analysis
        self._on_loaded(new)
        for g in new.dg.groups:
            if g.root in locked:
                self.groups.set_locked(g.id, True)
        self.targets.locked = self.groups.locked_roots()
        mode = sess.attention_mode(new)
        msg = (f"attention pruned by {ATTENTION_TEXT.get(mode, mode).lower()}: "
               f"{len(new.dg.prunable_groups)} prunable groups")
        if old.result is not None:
            msg += "; the pruned result of the previous analysis was dropped (prune again)"
        self.log(msg)
        self.status_label.setText(msg)

    def _sync_attention(self):
        """The targets panel shows the loaded model's attention analysis."""
        s = self.session
        if s is not None:
            self.targets.set_attention(sess.attention_mode(s), s.n_attention > 0)

    def _on_loaded(self, s: sess.Session):
        t = time.perf_counter()
        self.session = s
        self.view.set_graph(s.dg.graph, s.layout)
        self.view.fit()
        s.seconds["draw"] = time.perf_counter() - t
        self.groups.set_rows(s.rows)
        self.charts.clear()
        self.details.show_node(None, None)
        self.targets.locked = []
        self.targets.clear_overrides()  # module names of the previous model
        self.sensitivity.clear()
        self.sensitivity_result = None
        self.eval_data = None
        self.overlay_legend.hide()
        n_nodes, n_groups = s.dg.graph.number_of_nodes(), len(s.dg.prunable_groups)
        blocked = s.dg.blocked_ops
        self.info.setText(
            f"<b>{s.spec}</b><br>input {s.inputs.describe()}<br>{n_nodes} nodes, {len(s.dg.groups)} groups, "
            f"{n_groups} prunable<br>" + (f"<span style='color:#c1121f'>blocked ops: {', '.join(blocked)}</span>"
                                          if blocked else "no blocked ops"))
        if s.n_attention:
            mode = sess.attention_mode(s)
            self.info.setText(self.info.text() + f"<br>attention: {s.n_attention} layer(s), pruned by "
                              f"{ATTENTION_TEXT.get(mode, mode).lower()}")
        if s.meta:
            self.info.setText(self.info.text() + "<br><b>meta device: structure only, no weights; "
                              "pruning is off</b>")
        self._sync_attention()
        self.setWindowTitle(f"PruneStudio — {s.spec}")
        self.log(f"loaded {s.spec}: {n_nodes} nodes, {n_groups} prunable groups "
                 f"({', '.join(f'{k} {v:.2f}s' for k, v in s.seconds.items())})")
        self.status_label.setText(f"{s.spec}: {n_nodes} nodes, {n_groups} prunable groups")
        if s.spec not in ("demo",) and not s.meta and self._pending:
            self._add_recent(s.spec, self._pending[1], self._pending[2])
        self.update_estimate()
        self._update_actions()
        self.modelReady.emit()

    # ---------------------------------------------------------------------------------- recent
    def _recent(self) -> list:
        r = self.settings.value("recent", [])
        return [r] if isinstance(r, str) else list(r or [])

    def _add_recent(self, spec, shape, dtype):
        item = f"{spec}|{shape}|{dtype}"
        r = [item] + [x for x in self._recent() if x != item]
        self.settings.setValue("recent", r[:MAX_RECENT])
        self._fill_recent()

    def _fill_recent(self):
        self.recent_menu.clear()
        for item in self._recent():
            spec, shape, dtype = (item.split("|") + ["", "", ""])[:3]
            self.recent_menu.addAction(f"{spec}  [{shape}]",
                                       lambda s=spec, sh=shape, d=dtype: self.open_model(s, sh, d or "float32"))
        self.recent_menu.setEnabled(bool(self._recent()))

    # ---------------------------------------------------------------------------------- graph
    def _groups_nodes(self, gids):
        nodes = set()
        for g in gids:
            nodes |= self.session.dg.groups[g].nodes
        return nodes

    def _on_node_selected(self, node):
        if self.session is None:
            return
        if node < 0:
            self.view.highlight(set())
            self.details.show_node(None, None)
            return
        gids = self.session.node_groups.get(node, [])
        self.view.highlight(self._groups_nodes(gids), node)
        self.details.show_node(self.session.dg, node)
        self.groups.select_groups(gids)

    def _on_node_hovered(self, node):
        # hovering previews a node's groups; leaving restores the selection's highlight
        if self.session is None:
            return
        if node < 0:
            sel = [it.node for it in self.view.scene().selectedItems() if hasattr(it, "node")]
            self._on_node_selected(sel[0] if sel else -1)
            return
        self.view.highlight(self._groups_nodes(self.session.node_groups.get(node, [])), node)
        self.details.show_node(self.session.dg, node)

    def _on_groups_selected(self, gids):
        if self.session is None or not gids:
            return
        nodes = self._groups_nodes(gids)
        self.view.highlight(nodes)
        self.view.center_on_nodes(nodes)
        self.details.header.setText(f"{len(gids)} group(s) selected in the table")
        self.details.show_groups(self.session.dg, [self.session.dg.groups[g] for g in gids])

    def select_first_group(self):
        """Pick the root layer of the first prunable group (a useful first view)."""
        s = self.session
        if s is None or not s.dg.prunable_groups:
            return
        nodes = s.dg.node_of_module(s.dg.prunable_groups[0].root)
        if nodes:
            self.view.select_node(nodes[0], center=False)

    def _on_locks(self):
        self.targets.locked = self.groups.locked_roots()
        self.update_estimate()

    def _focus_search(self):
        self.search.setFocus()
        self.search.selectAll()

    def _find(self):
        r = self.view.find(self.search.text())
        self.status_label.setText(f"match {r[0]} ({r[1]} found)" if r else f"no node matches '{self.search.text()}'")

    # ---------------------------------------------------------------------------------- estimate
    def update_estimate(self):
        """Estimate params/FLOPs of the current settings with core.pipeline.estimate on a worker
        (it plans the whole model: ~0.1-0.5 s on big nets). One runs at a time; the last
        setting wins and stale answers are dropped."""
        s = self.session
        if s is None or s.meta or s.cost is None:
            return
        if self._est_task is not None:
            self._est_pending = True
            return
        t = worker.Task("estimate", pipeline.estimate, s.dg, s.model, self.targets.settings(), s.cost,
                        with_callbacks=False)
        # bound slots (not lambdas): Qt drops them if the window is gone before the answer
        t.finished.connect(self._on_estimate)
        t.failed.connect(self._on_estimate_failed)
        t.done.connect(self._on_estimate_done)
        self._est_task, self._est_session = t, s
        worker.start(t)

    def _on_estimate(self, pf):
        s = self._est_session
        if s is not self.session or self._est_pending:
            return  # computed for an older model or setting
        self.targets.show_estimate(s.cost.base_params, s.cost.base_flops, *pf)
        self.estimateReady.emit(pf)

    def _on_estimate_failed(self, msg, _tb):
        if not self._est_pending:
            self.targets.show_estimate_error(msg)

    def _on_estimate_done(self):
        self._est_task = None
        if self._est_pending:
            self._est_pending = False
            self.update_estimate()

    # ---------------------------------------------------------------------------------- pruning
    def prune(self):
        s = self.session
        if s is None or self.task is not None:
            return None
        if s.meta:
            self.show_error("Prune", "this model was analysed on the meta device (structure only, "
                            "no weights): load it with its weights to prune it")
            return None
        settings = self.targets.settings()
        self.log(f"pruning with {settings.to_json()}")
        return self._run("pruning", sess.prune, s, settings, self.targets.device_name(), self.latency_runs,
                         on_done=self._on_pruned)

    def _on_pruned(self, result):
        s = self.session
        s.result = result
        self.view.set_overlay(sess.removed_fractions(s, result))
        self.charts.show_result(result)
        self.tabs.setCurrentWidget(self.charts)
        self.status_overlay = ("graph colours: fraction of channels removed "
                               "(green 0% · amber 50% · red 100%)")
        b, a = result.before, result.after
        sp = f", {b.latency_ms / a.latency_ms:.2f}× faster" if b.latency_ms and a.latency_ms else ""
        msg = (f"pruned: params {b.params:,} → {a.params:,}, FLOPs -{1 - a.flops / max(b.flops, 1):.0%}{sp}"
               f" — {result.verify.message if result.verify else 'not verified'}")
        self.log(msg)
        for root, why in (getattr(result, "excluded", {}) or {}).items():
            self.log(f"left unpruned: group {root} — {why}")
        self.status_label.setText(msg + "  (Ctrl+Z: back to the original)")
        self.overlay_legend.setText(self.status_overlay)
        self.overlay_legend.show()
        self._update_actions()
        self.pruneFinished.emit(result)
        if self.eval_data is not None:
            self.evaluate()

    def undo(self):
        if self.session is None or self.session.result is None:
            return
        self.session.result = None
        if self._eval_task is not None:
            self._eval_task.cancel()
        self.view.set_overlay(None)
        self.overlay_legend.hide()
        self.charts.clear()
        if self.sensitivity_result is not None:
            self.show_sensitivity_overlay()
        self.log("back to the original model")
        self.status_label.setText("original model")
        self._update_actions()

    def current_model(self):
        s = self.session
        return s.result.model if s.result is not None else s.model

    # ---------------------------------------------------------------------------------- export
    def export_dialog(self):
        if self.session is None:
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Export model", "pruned.pt",
            model_io.file_filter(),
            options=QFileDialog.DontConfirmOverwrite)  # export_model asks, also when scripted
        if path:
            self.export_model(path)

    def confirm_overwrite(self, path: str) -> bool:
        """True if ``path`` may be written: it does not exist, or the user said to replace it."""
        if not os.path.exists(path):
            return True
        if self.headless:
            self.show_error("Export", f"{path} already exists; not overwritten")
            return False
        ans = QMessageBox.question(self, "Replace file?",
                                   f"{path} already exists. Replace it?",
                                   QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        if ans != QMessageBox.Yes:
            self.log(f"kept the existing {path}")
            self.status_label.setText(f"not exported: {path} exists")
            return False
        return True

    def _source_files(self):
        from core.io.specs import spec_file
        f = spec_file(self.session.spec) if self.session else None
        return [f] if f else []

    def export_model(self, path: str):
        s = self.session
        if s is None or s.meta:
            return None
        model = self.current_model()
        exp = model_io.exporter_for(path)
        if exp.needs_plan and s.result is None:
            self.show_error("Export", f"{exp.needs_plan}: prune first")
            return None
        if not self.confirm_overwrite(path):
            return None
        src = self._source_files()
        return self._run(exp.task, model_io.export_model, path, model, s.inputs, s.spec, s.result, source=src,
                         on_done=lambda d: self._exported(f"exported {path}" if d is None else
                                                          f"exported {path} ({exp.checked_by} max |diff| {d:.2e})"))

    def _exported(self, msg):
        self.log(msg)
        self.status_label.setText(msg)
        self.exportFinished.emit(msg)

    def export_report_dialog(self):
        if self.session is None or self.session.result is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export report", "report.json", "JSON (*.json)",
                                              options=QFileDialog.DontConfirmOverwrite)
        if path:
            self.export_report(path)

    def export_report(self, path: str):
        if not self.confirm_overwrite(path):
            return
        try:
            model_io.save_report(self.session.result.report(self.session.dg), path)
        except Exception as e:  # noqa: BLE001
            self.show_error("Export report", str(e))
            return
        self._exported(f"wrote report {path}")

    def export_view_dialog(self, kind: str):
        path, _ = QFileDialog.getSaveFileName(self, "Export graph", f"graph.{kind}", f"{kind.upper()} (*.{kind})")
        if not path:
            return
        try:
            (self.view.export_svg if kind == "svg" else self.view.export_png)(path)
        except Exception as e:  # noqa: BLE001
            self.show_error("Export graph", str(e))
            return
        self._exported(f"saved graph {path}")

    # ---------------------------------------------------------------------------------- projects
    def project(self):
        """The current work as a :class:`core.io.project.Project` (None without a model)."""
        from core.io import project as proj
        s = self.session
        if s is None or s.meta:
            return None
        return proj.project_from(
            s.spec, self.targets.settings(), result=s.result, shape=s.shape, dtype=s.dtype,
            trust=s.trust, device=self.targets.device_name(), model=s.model, dg=s.dg,
            extra={"locked": list(self.targets.locked), "mode": self.targets.mode.currentData(),
                   "analysis": dict(s.dg.options)})

    def save_project_dialog(self):
        if self.session is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save project", "work.psproj",
                                              "PruneStudio project (*.psproj)",
                                              options=QFileDialog.DontConfirmOverwrite)
        if path:
            if not path.endswith(".psproj"):
                path += ".psproj"
            self.save_project(path)

    def save_project(self, path: str) -> bool:
        from core.io import project as proj
        p = self.project()
        if p is None:
            self.show_error("Save project", "nothing to save: open a model first")
            return False
        if not self.confirm_overwrite(path):
            return False
        try:
            proj.save_project(path, p, force=True)
        except Exception as e:  # noqa: BLE001
            self.show_error("Save project", str(e))
            return False
        self._exported(f"saved project {path}")
        return True

    def open_project_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open project", "", "PruneStudio project (*.psproj)")
        if path:
            self.open_project(path)

    def open_project(self, path: str):
        from core.io import project as proj
        try:
            p = proj.load_project(path)
        except Exception as e:  # noqa: BLE001
            self.show_error("Open project", str(e))
            return None
        if p.trust and model_io.needs_trust_prompt(p.spec):
            ans = QMessageBox.question(
                self, "Trust this file?",
                f"The project loads {os.path.basename(p.spec)}, which may contain pickled Python "
                "code that runs when it is loaded.\n\nTrust and load it?",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
            if ans != QMessageBox.Yes:
                return None
        self._pending = (p.spec, p.shape, p.dtype)
        self._pending_options = None
        self._project = p
        return self._run(f"opening project {os.path.basename(path)}", sess.restore_project, p,
                         self.view.aspect(), on_done=self._on_project_restored)

    def _on_project_restored(self, sr):
        s, result = sr
        p = self._project
        self._on_loaded(s)
        try:
            self.targets.set_settings(p.plan_settings(), p.extra.get("mode"))
        except Exception as e:  # noqa: BLE001 - settings from a newer version: keep the defaults
            self.log(f"project settings not restored: {e}")
        locked = set(p.extra.get("locked") or p.settings.get("ignore") or [])
        for g in s.dg.groups:
            if g.root in locked:
                self.groups.set_locked(g.id, True)
        self.targets.locked = self.groups.locked_roots()
        if p.device and self.targets.device.findText(p.device) >= 0:
            self.targets.device.setCurrentText(p.device)
        if result is not None:
            self._on_pruned(result)
        self.log(f"project restored: {p.spec}" + (", saved plan re-applied" if result else ""))
        self.projectRestored.emit()

    # ---------------------------------------------------------------------------------- close
    def open_training(self):
        from gui.training_view import TrainingView
        if getattr(self, "training_view", None) is None:
            self.training_view = TrainingView()
            self.training_view.resize(1200, 700)
        if self.session:
            # the built-in digits set, resized to the model's example input (C x H x W)
            shape = tuple(self.session.inputs.args[0].shape) if self.session.inputs.args else ()
            data = f"digits@{shape[2]}x{shape[1]}" if len(shape) == 4 else "digits"
            self.training_view.set_inputs(self.session.model, self.session.dg, data)
        self.training_view.show()

    # ---------------------------------------------------------------------------------- accuracy
    def _choose_data(self):
        spec = accuracy.choose_data(self, self.session, self._last_data_spec)
        if spec:
            self._last_data_spec = spec
        return spec

    def sensitivity_dialog(self):
        if self.session is None or self.session.meta or self.task is not None:
            return
        spec = self._choose_data()
        if spec:
            self.run_sensitivity(spec)

    def run_sensitivity(self, data=None, ratios=None, max_batches: int | None = -1):
        """Per-group sensitivity of the original model on ``data`` (a core.train.data spec or Data;
        default: the built-in digits at the model's input size) on the worker; the result goes to
        the Sensitivity tab and the graph, and ``data`` becomes the evaluation dataset."""
        s = self.session
        if s is None or s.meta:
            return None
        data = data or accuracy.default_data_spec(s)
        ratios = tuple(ratios or self.sens_ratios)
        mb = self.sens_max_batches if max_batches == -1 else max_batches
        self.log(f"sensitivity on {getattr(data, 'name', data)} at ratios "
                 f"{', '.join(f'{r:.0%}' for r in ratios)}" + (f", {mb} batches" if mb else ""))
        return self._run("sensitivity", accuracy.run_sensitivity, s, data, ratios, mb,
                         self.targets.criterion.currentText(),
                         on_done=lambda r, s=s: self._on_sensitivity(s, r))

    def _on_sensitivity(self, s, data_res):
        data, res = data_res
        if s is not self.session:
            return
        self.sensitivity_result = res
        self.eval_data = data
        self.sensitivity.show_result(res, data.name)
        if self.targets.mode.currentData() == "ratio":
            self.sensitivity.mean_ratio.setValue(min(0.9, self.targets.slider.value() / 100))
        self.tabs.setCurrentWidget(self.sensitivity)
        self.show_sensitivity_overlay()
        top = sorted(res.groups, key=lambda g: g.score, reverse=True)
        self.log(f"sensitivity: {len(res.groups)} groups, base loss {res.base_loss:.4f}; most sensitive "
                 + ", ".join(f"{g.root} (+{g.score:.4f})" for g in top[:3]))
        self.status_label.setText(f"sensitivity of {len(res.groups)} groups measured on {data.name}")
        self._update_actions()
        self.sensitivityFinished.emit(res)
        if s.result is not None:
            self.evaluate()

    def show_sensitivity_overlay(self):
        s, res = self.session, self.sensitivity_result
        if s is None or res is None:
            return
        self.view.set_overlay(accuracy.sensitivity_overlay(s, res), kind="sensitivity")
        self.overlay_legend.setText("graph colours: sensitivity of each group (loss rise when pruned "
                                    "alone) · green least · amber · red most")
        self.overlay_legend.show()

    def use_sensitivity_ratios(self, mean_ratio: float | None = None):
        """Per-group ratios from the sensitivity result into the targets panel: the least
        sensitive groups lose the most."""
        from core.train.sensitivity import ratios_from_sensitivity
        s, res = self.session, self.sensitivity_result
        if s is None or res is None:
            return {}
        if mean_ratio is None:
            mean_ratio = self.sensitivity.mean_ratio.value()
        try:
            ov = ratios_from_sensitivity(res, s.dg, float(mean_ratio))
        except Exception as e:  # noqa: BLE001
            self.show_error("Use for ratios", str(e))
            return {}
        i = self.targets.mode.findData("ratio")
        self.targets.mode.setCurrentIndex(i)  # a FLOPs target cannot move overridden groups
        self.targets.slider.setValue(int(round(mean_ratio * 100)))
        self.targets.set_overrides(ov, "sensitivity")
        self.log(f"per-group ratios from sensitivity (mean {mean_ratio:.0%}): "
                 + ", ".join(f"{k} {v:.0%}" for k, v in ov.items()))
        self.status_label.setText(f"per-group ratios set for {len(ov)} groups: prune to apply them")
        return ov

    def evaluate_dialog(self):
        if self.session is None or self.session.meta:
            return
        spec = self._choose_data()
        if spec:
            self.eval_data = spec
            self.evaluate()

    def evaluate(self, data=None):
        """Evaluate the original and (if pruned) the pruned model on the worker; the rows go to
        the summary table. Runs beside the window's other work; a newer request replaces it."""
        s = self.session
        if s is None or s.meta:
            return None
        if data is not None:
            self.eval_data = data
        if self.eval_data is None:
            self.eval_data = accuracy.default_data_spec(s)
        if self._eval_task is not None:
            self._eval_task.cancel()
        pruned = s.result.model if s.result is not None else None
        t = worker.Task("evaluation", accuracy.evaluate_models, s, self.eval_data, pruned,
                        self.eval_max_batches)
        t.finished.connect(self._on_evaluated)
        t.failed.connect(self._on_evaluate_failed)
        t.done.connect(self._on_evaluate_done)
        t.for_result = (s, s.result)
        self._eval_task = t
        self.status_label.setText(f"evaluating on {getattr(self.eval_data, 'name', self.eval_data)}…")
        worker.start(t)
        return t

    def _on_evaluated(self, out):
        t = self.sender()
        data, before, after = out
        if isinstance(self.eval_data, str) and self.eval_data == data.name:
            self.eval_data = data  # loaded once, reused next time
        s, result = getattr(t, "for_result", (None, None)) if t is not None else (None, None)
        if t is not None and (s is not self.session or result is not self.session.result):
            return  # for an older model or pruning
        if after is not None:
            self.charts.show_evaluation(data.name, before, after)
        msg = f"original: {before.describe()}" + (f"; pruned: {after.describe()}" if after else "")
        self.log(f"evaluation on {data.name}: {msg}")
        self.status_label.setText(msg)
        self.evaluationFinished.emit((data.name, before, after))

    def _on_evaluate_failed(self, msg, _tb):
        self.show_error("Evaluation failed", msg)

    def _on_evaluate_done(self):
        if self.sender() is self._eval_task:
            self._eval_task = None

    def closeEvent(self, e):
        if getattr(self, "training_view", None) is not None:
            self.training_view.shutdown()
        for t in (self.task, self._est_task, self._eval_task):
            if t is not None:
                t.cancel()
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("windowState", self.saveState())
        super().closeEvent(e)
