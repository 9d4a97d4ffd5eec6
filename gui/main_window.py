"""The main window: a shell that lays out the widgets (widgets/workbench.py), builds menus and
toolbar from the action table (actions.py), applies the theme (theme.py) and hands every command
to a controller (controllers/). It holds no logic of its own."""
from __future__ import annotations

import os

from PySide6.QtCore import QSettings, QSize, Qt, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow

from . import actions as action_table, theme as themes
from .controllers.accuracy import AccuracyController
from .controllers.context import Context
from .controllers.export import ExportController
from .controllers.model import ModelController
from .controllers.project import ProjectController
from .controllers.prune import PruneController
from .controllers.selection import SelectionController
from .widgets import workbench


def forward(path: str, doc: str = ""):
    """A window attribute that is a controller's (``"pruning.latency_runs"``): scripts and
    tests keep using ``window.latency_runs`` while the state lives where it is used."""
    owner, name = path.split(".")
    return property(lambda self: getattr(getattr(self, owner), name),
                    lambda self, v: setattr(getattr(self, owner), name, v), doc=doc or path)


SMALL_WINDOW_W = 1100  # narrower (200 % scaling of 1920×1080): the side docks share a column


class MainWindow(QMainWindow):
    # the window's signals are the context's (see gui/controllers/context.py)
    modelReady = forward("ctx.modelReady")
    pruneFinished = forward("ctx.pruneFinished")
    taskFailed = forward("ctx.taskFailed")
    taskCancelled = forward("ctx.taskCancelled")
    estimateReady = forward("ctx.estimateReady")
    exportFinished = forward("ctx.exportFinished")
    projectRestored = forward("ctx.projectRestored")
    sensitivityFinished = forward("ctx.sensitivityFinished")
    evaluationFinished = forward("ctx.evaluationFinished")
    # state and commands scripts and tests reach through the window
    session = forward("ctx.session")
    headless = forward("ctx.headless")
    log_file = forward("ctx.log_file")
    log = forward("ctx.log")
    show_error = forward("ctx.show_error")
    confirm_overwrite = forward("ctx.confirm_overwrite")
    open_model = forward("models.open_model")
    open_dialog = forward("models.open_dialog")
    set_attention = forward("models.set_attention")
    select_first_group = forward("selection.select_first_group")
    _on_groups_selected = forward("selection.on_groups_selected")
    latency_runs = forward("pruning.latency_runs")
    prune = forward("pruning.prune")
    undo = forward("pruning.undo")
    update_estimate = forward("pruning.update_estimate")
    current_model = forward("exports.current_model")
    export_model = forward("exports.export_model")
    export_report = forward("exports.export_report")
    project = forward("projects.project")
    save_project = forward("projects.save_project")
    open_project = forward("projects.open_project")
    eval_data = forward("accuracy.eval_data")
    eval_max_batches = forward("accuracy.eval_max_batches")
    sens_ratios = forward("accuracy.sens_ratios")
    sens_max_batches = forward("accuracy.sens_max_batches")
    sensitivity_result = forward("accuracy.sensitivity_result")
    run_sensitivity = forward("accuracy.run_sensitivity")
    evaluate = forward("accuracy.evaluate")
    show_sensitivity_overlay = forward("accuracy.show_sensitivity_overlay")
    use_sensitivity_ratios = forward("accuracy.use_sensitivity_ratios")
    open_training = forward("accuracy.open_training")

    def __init__(self, settings_org: str | None = None):
        super().__init__()
        self.settings = QSettings(settings_org or os.environ.get("PRUNESTUDIO_SETTINGS_ORG", "PruneStudio"),
                                  "PruneStudio")
        self.setWindowTitle("PruneStudio")
        self.ui = ui = workbench.build(self)
        # the widgets under their usual names (tests and scripts use them)
        self.view, self.targets, self.details, self.groups = ui.view, ui.targets, ui.details, ui.groups
        self.charts, self.sensitivity, self.tabs, self.logbox = ui.charts, ui.sensitivity, ui.tabs, ui.logbox
        self.info, self.overlay_legend, self.prune_btn = ui.side.info, ui.side.overlay_legend, ui.side.prune_btn
        self.status_label, self.progress, self.cancel_btn, self.search = (
            ui.status_label, ui.progress, ui.cancel_btn, ui.search)
        self.ctx = ctx = Context(ui, self.settings, self)
        self.models = ModelController(ctx, self)
        self.selection = SelectionController(ctx, self)
        self.pruning = PruneController(ctx, self)
        self.exports = ExportController(ctx, self)
        self.projects = ProjectController(ctx, self.models, self.pruning, self)
        self.accuracy = AccuracyController(ctx, self)
        self._build_actions()
        ui.cancel_btn.clicked.connect(self.cancel)
        ctx.stateChanged.connect(self._refresh_actions)
        self.set_theme(self.settings.value("theme", themes.DEFAULT))
        ctx.changed()
        self._restore_layout()
        # a model file dropped anywhere on the window opens it (the graph would take drops itself)
        self.setAcceptDrops(True)
        for w in (ui.view, ui.view.viewport()):
            w.setAcceptDrops(False)

    # ---------------------------------------------------------------------------------- layout
    def _build_actions(self):
        tb = self.addToolBar("main")
        tb.setObjectName("toolbar")
        tb.setIconSize(QSize(20, 20))
        tb.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.action_map, menus = action_table.build(self, icon=themes.current().icon, toolbar=tb)
        for aid, a in self.action_map.items():
            setattr(self, f"a_{aid}", a)  # window.a_prune, window.a_undo, ...
        tb.addWidget(self.ui.search)
        self.toolbar = tb
        self.models.set_recent_menu(menus["recent"])

    def _restore_layout(self):
        """The saved geometry, else a size that suits the screen; never larger than the screen's
        available area (a 200 % scaled 1920×1080 screen has 960×540 of room)."""
        avail = self.screen().availableGeometry()
        geo = self.settings.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(int(avail.width() * 0.94), int(avail.height() * 0.92))
        state = self.settings.value("windowState")
        if state is not None:
            self.restoreState(state)
        else:
            QTimer.singleShot(0, self._default_docks)  # once laid out: sizes relative to the window
        # (restoreGeometry itself shrinks a geometry saved on a bigger or unscaled screen)

    def _default_docks(self):
        docks, w, h = self.ui.docks, self.width(), self.height()
        if w < SMALL_WINDOW_W:  # one column of side docks (tabs): the graph keeps the width
            self.tabifyDockWidget(docks["targets"], docks["details"])
            docks["targets"].raise_()
            self.resizeDocks([docks["targets"]], [max(260, w // 3)], Qt.Horizontal)
        else:
            self.resizeDocks([docks["targets"], docks["details"]], [max(280, w // 5), max(300, w // 4)],
                             Qt.Horizontal)
        self.resizeDocks([docks["bottom"]], [max(150, int(h * 0.3))], Qt.Vertical)

    def fit_to_screen(self):
        """Shrink and move the window into the screen's available area (a geometry saved on a
        bigger or unscaled screen would spill off this one)."""
        avail = self.screen().availableGeometry()
        frame = self.frameGeometry()
        extra_w, extra_h = frame.width() - self.width(), frame.height() - self.height()
        if frame.width() > avail.width() or frame.height() > avail.height():
            self.resize(min(self.width(), avail.width() - extra_w), min(self.height(), avail.height() - extra_h))
        frame = self.frameGeometry()
        if not avail.contains(frame):
            self.move(max(avail.left(), min(frame.left(), avail.right() - frame.width() + 1)),
                      max(avail.top(), min(frame.top(), avail.bottom() - frame.height() + 1)))

    def _refresh_actions(self):
        state = action_table.enabled_states(self.ctx.busy, self.ctx.session)
        for spec in action_table.ACTIONS:
            if spec.id in self.action_map:
                self.action_map[spec.id].setEnabled(state[spec.enabled])
        if self.ctx.tasks.cancel_pending:  # pressed once: the worker stops at its next check
            self.action_map["cancel"].setEnabled(False)

    # ---------------------------------------------------------------------------------- theme
    def set_theme(self, name: str):
        """Light or dark (View > Theme): palette, stylesheet, icons and every painted colour;
        remembered in the settings."""
        if name not in themes.THEMES:
            name = themes.DEFAULT
        t = themes.apply(QApplication.instance(), name)
        for w in self.ui.themed():
            w.apply_theme(t)
        self.accuracy.apply_theme(t)
        for spec in action_table.ACTIONS:
            a = self.action_map.get(spec.id)
            if a is not None and spec.icon:
                a.setIcon(t.icon(spec.icon))
        self.action_map[f"theme_{name}"].setChecked(True)
        self.settings.setValue("theme", name)
        self.theme = t

    # ---------------------------------------------------------------------------------- commands
    @property
    def task(self):
        return self.ctx.tasks.task

    def cancel(self):
        """Cancel the running task, else a running evaluation."""
        if not self.ctx.tasks.cancel():
            self.accuracy.cancel_evaluation()

    def dragEnterEvent(self, e):  # noqa: N802 - Qt's name
        if self.models.dropped_specs(e.mimeData()):
            e.acceptProposedAction()
        else:
            e.ignore()

    def dragMoveEvent(self, e):  # noqa: N802
        self.dragEnterEvent(e)

    def dropEvent(self, e):  # noqa: N802
        specs = self.models.dropped_specs(e.mimeData())
        if specs:
            e.acceptProposedAction()
            spec = specs[0]
            self.projects.open_project(spec) if spec.endswith(".psproj") else self.models.open_dropped(spec)

    def closeEvent(self, e):
        self.accuracy.shutdown()
        self.pruning.shutdown()
        self.ctx.tasks.cancel()
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("windowState", self.saveState())
        super().closeEvent(e)
