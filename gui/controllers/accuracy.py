"""Accuracy: per-group sensitivity on a dataset (chart, graph overlay, "Use for ratios"),
evaluation of the original and the pruned model (rows in the summary table), and the training
window. The measuring is core's (gui/jobs/accuracy.py calls core.train)."""
from __future__ import annotations

from PySide6.QtCore import QObject

from ..jobs import accuracy as jobs, worker
from ..widgets import data_choice

SENSITIVITY_LEGEND = ("graph colours: sensitivity of each group (loss rise when pruned alone) · "
                      "green least · amber · red most")


class AccuracyController(QObject):
    def __init__(self, ctx, parent=None):
        super().__init__(parent)
        self.ctx = ctx
        # the dataset chosen for evaluation (a core.train.data spec, or Data once loaded)
        self.eval_data = None
        self.eval_max_batches: int | None = None  # None: the whole validation set
        self.sens_ratios = (0.25, 0.5, 0.75)
        self.sens_max_batches: int | None = 4
        self.sensitivity_result = None
        self.training_view = None
        self._eval_task: worker.Task | None = None
        self._last_data_spec = None
        ui = ctx.ui
        ui.sensitivity.useForRatios.connect(self.use_sensitivity_ratios)
        ui.sensitivity.showOnGraph.connect(self.show_sensitivity_overlay)
        ctx.sessionChanged.connect(self._on_session)
        ctx.resultChanged.connect(self._on_result)
        ctx.stateChanged.connect(self._refresh)

    def _refresh(self):
        on = self.sensitivity_result is not None and self.ctx.session is not None
        self.ctx.ui.sensitivity.use_btn.setEnabled(on)
        self.ctx.ui.sensitivity.graph_btn.setEnabled(on)

    def data_consent(self, data):
        """The TrustPolicy to load ``data`` with: a dataset factory (``file.py:factory``) runs only
        after the user said Yes to exactly that file (None: No, load nothing)."""
        from core.io.trust import TrustPolicy, function_ref
        if not isinstance(data, str):
            return TrustPolicy()  # built-in data, or already loaded
        try:
            ref = function_ref(data.strip(), "dataset factory")
        except Exception:  # noqa: BLE001 - missing: loading says so
            ref = None
        return self.ctx.consent([ref] if ref is not None else [], "Loading this data")

    def _on_session(self, _s):
        self.ctx.ui.sensitivity.clear()
        self.sensitivity_result = None
        self.eval_data = None

    def _on_result(self, result):
        if result is None:  # undo: the evaluation of the pruned model is moot
            if self._eval_task is not None:
                self._eval_task.cancel()
            if self.sensitivity_result is not None:
                self.show_sensitivity_overlay()
        elif self.eval_data is not None:
            self.evaluate()

    # ---------------------------------------------------------------------- sensitivity
    def _choose_data(self):
        spec = data_choice.choose_data(self.ctx.ui.window, self.ctx.session, self._last_data_spec)
        if spec:
            self._last_data_spec = spec
        return spec

    def sensitivity_dialog(self):
        s = self.ctx.session
        if s is None or s.meta or self.ctx.busy:
            return
        spec = self._choose_data()
        if spec:
            self.run_sensitivity(spec)

    def run_sensitivity(self, data=None, ratios=None, max_batches: int | None = -1):
        """Per-group sensitivity of the original model on ``data`` (a core.train.data spec or Data;
        default: the built-in digits at the model's input size) on the worker; the result goes to
        the Sensitivity tab and the graph, and ``data`` becomes the evaluation dataset."""
        ctx, s = self.ctx, self.ctx.session
        if s is None or s.meta:
            return None
        data = data or jobs.default_data_spec(s)
        trust = self.data_consent(data)
        if trust is None:
            return None
        ratios = tuple(ratios or self.sens_ratios)
        mb = self.sens_max_batches if max_batches == -1 else max_batches
        ctx.log(f"sensitivity on {getattr(data, 'name', data)} at ratios "
                f"{', '.join(f'{r:.0%}' for r in ratios)}" + (f", {mb} batches" if mb else ""))
        return ctx.tasks.run("sensitivity", jobs.run_sensitivity, s, data, ratios, mb,
                             ctx.ui.targets.criterion.currentText(), trust=trust,
                             on_done=lambda r, s=s: self._on_sensitivity(s, r))

    def _on_sensitivity(self, s, data_res):
        ctx, ui = self.ctx, self.ctx.ui
        data, res = data_res
        if s is not ctx.session:
            return
        self.sensitivity_result = res
        self.eval_data = data
        ui.sensitivity.show_result(res, data.name)
        if ui.targets.mode.currentData() == "ratio":
            ui.sensitivity.mean_ratio.setValue(min(0.9, ui.targets.slider.value() / 100))
        ui.tabs.setCurrentWidget(ui.sensitivity)
        self.show_sensitivity_overlay()
        top = sorted(res.groups, key=lambda g: g.score, reverse=True)
        ctx.log(f"sensitivity: {len(res.groups)} groups, base loss {res.base_loss:.4f}; most sensitive "
                + ", ".join(f"{g.root} (+{g.score:.4f})" for g in top[:3]))
        ctx.status(f"sensitivity of {len(res.groups)} groups measured on {data.name}")
        ctx.changed()
        ctx.sensitivityFinished.emit(res)
        if s.result is not None:
            self.evaluate()

    def show_sensitivity_overlay(self):
        s, res, ui = self.ctx.session, self.sensitivity_result, self.ctx.ui
        if s is None or res is None:
            return
        ui.view.set_overlay(jobs.sensitivity_overlay(s, res), kind="sensitivity")
        ui.side.show_legend(SENSITIVITY_LEGEND)

    def use_sensitivity_ratios(self, mean_ratio: float | None = None):
        """Per-group ratios from the sensitivity result into the targets panel: the least
        sensitive groups lose the most."""
        from core.train.sensitivity import ratios_from_sensitivity
        ctx, s, res, targets = self.ctx, self.ctx.session, self.sensitivity_result, self.ctx.ui.targets
        if s is None or res is None:
            return {}
        if mean_ratio is None:
            mean_ratio = ctx.ui.sensitivity.mean_ratio.value()
        try:
            ov = ratios_from_sensitivity(res, s.dg, float(mean_ratio))
        except Exception as e:  # noqa: BLE001
            ctx.show_error("Use for ratios", str(e))
            return {}
        # a FLOPs target cannot move overridden groups
        targets.mode.setCurrentIndex(targets.mode.findData("ratio"))
        targets.slider.setValue(int(round(mean_ratio * 100)))
        targets.set_overrides(ov, "sensitivity")
        ctx.log(f"per-group ratios from sensitivity (mean {mean_ratio:.0%}): "
                + ", ".join(f"{k} {v:.0%}" for k, v in ov.items()))
        ctx.status(f"per-group ratios set for {len(ov)} groups: prune to apply them")
        return ov

    # ---------------------------------------------------------------------- evaluation
    def evaluate_dialog(self):
        s = self.ctx.session
        if s is None or s.meta:
            return
        spec = self._choose_data()
        if spec:
            self.eval_data = spec
            self.evaluate()

    def evaluate(self, data=None):
        """Evaluate the original and (if pruned) the pruned model on the worker; the rows go to
        the summary table. Runs beside the window's other work; a newer request replaces it."""
        s = self.ctx.session
        if s is None or s.meta:
            return None
        if data is not None:
            self.eval_data = data
        if self.eval_data is None:
            self.eval_data = jobs.default_data_spec(s)
        trust = self.data_consent(self.eval_data)
        if trust is None:
            return None
        if self._eval_task is not None:
            self._eval_task.cancel()
        pruned = s.result.model if s.result is not None else None
        t = worker.Task("evaluation", jobs.evaluate_models, s, self.eval_data, pruned,
                        self.eval_max_batches, trust=trust)
        t.finished.connect(self._on_evaluated)
        t.failed.connect(self._on_evaluate_failed)
        t.done.connect(self._on_evaluate_done)
        t.for_result = (s, s.result)
        self._eval_task = t
        self.ctx.status(f"evaluating on {getattr(self.eval_data, 'name', self.eval_data)}…")
        worker.start(t)
        return t

    def _on_evaluated(self, out):
        ctx, t = self.ctx, self.sender()
        data, before, after = out
        if isinstance(self.eval_data, str) and self.eval_data == data.name:
            self.eval_data = data  # loaded once, reused next time
        s, result = getattr(t, "for_result", (None, None)) if t is not None else (None, None)
        if t is not None and (s is not ctx.session or result is not ctx.session.result):
            return  # for an older model or pruning
        if after is not None:
            ctx.ui.charts.show_evaluation(data.name, before, after)
        msg = f"original: {before.describe()}" + (f"; pruned: {after.describe()}" if after else "")
        ctx.log(f"evaluation on {data.name}: {msg}")
        ctx.status(msg)
        ctx.evaluationFinished.emit((data.name, before, after))

    def _on_evaluate_failed(self, msg, _tb):
        self.ctx.show_error("Evaluation failed", msg)

    def _on_evaluate_done(self):
        if self.sender() is self._eval_task:
            self._eval_task = None

    def cancel_evaluation(self) -> bool:
        if self._eval_task is None:
            return False
        self.ctx.log("cancelling the evaluation…")
        self._eval_task.cancel()
        return True

    # ---------------------------------------------------------------------- training
    def open_training(self):
        from ..widgets.training_view import TrainingView
        s = self.ctx.session
        if self.training_view is None:
            self.training_view = TrainingView()
            self.training_view.resize(1200, 700)
        if s:
            # the built-in digits set, resized to the model's example input (C x H x W)
            shape = tuple(s.inputs.args[0].shape) if s.inputs.args else ()
            data = f"digits@{shape[2]}x{shape[1]}" if len(shape) == 4 else "digits"
            self.training_view.set_inputs(s.model, s.dg, data)
        self.training_view.show()

    def apply_theme(self, theme):
        if self.training_view is not None:
            self.training_view.apply_theme(theme)

    def shutdown(self):
        if self.training_view is not None:
            self.training_view.shutdown()
        if self._eval_task is not None:
            self._eval_task.cancel()
