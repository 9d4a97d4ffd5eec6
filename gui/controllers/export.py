"""Export: the current model (pruned if there is a result) in any form of core.io.exporters (chosen
by suffix) on the worker, the JSON report, and the graph as PNG or SVG. Existing files are replaced only after the
user said so; the input model file is never written over (core refuses)."""
from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from ..jobs import model_io

class ExportController(QObject):
    def __init__(self, ctx, parent=None):
        super().__init__(parent)
        self.ctx = ctx

    def current_model(self):
        s = self.ctx.session
        return s.result.model if s.result is not None else s.model

    def _source_files(self):
        from core.io.specs import spec_file
        f = spec_file(self.ctx.session.spec) if self.ctx.session else None
        return [f] if f else []

    # ---------------------------------------------------------------------- model
    def export_dialog(self):
        if self.ctx.session is None:
            return
        path, _ = QFileDialog.getSaveFileName(
            self.ctx.ui.window, "Export model", "pruned.pt", model_io.file_filter(),
            options=QFileDialog.DontConfirmOverwrite)  # export_model asks, also when scripted
        if path:
            self.export_model(path)

    def export_model(self, path: str):
        ctx, s = self.ctx, self.ctx.session
        if s is None or s.meta:
            return None
        model = self.current_model()
        exp = model_io.exporter_for(path)  # the form is chosen by suffix (core.io.exporters)
        if exp.needs_plan and s.result is None:
            ctx.show_error("Export", f"{exp.needs_plan}: prune first")
            return None
        if not ctx.confirm_overwrite(path):
            return None
        return ctx.tasks.run(
            exp.task, model_io.export_model, path, model, s.inputs, s.spec, s.result,
            source=self._source_files(), trust=s.trust,
            on_done=lambda d: ctx.exported(f"exported {path}" if d is None else
                                           f"exported {path} ({exp.checked_by} max |diff| {d:.2e})"))

    # ---------------------------------------------------------------------- report
    def export_report_dialog(self):
        s = self.ctx.session
        if s is None or s.result is None:
            return
        path, _ = QFileDialog.getSaveFileName(self.ctx.ui.window, "Export report", "report.json",
                                              "JSON (*.json)", options=QFileDialog.DontConfirmOverwrite)
        if path:
            self.export_report(path)

    def export_report(self, path: str):
        ctx = self.ctx
        if not ctx.confirm_overwrite(path):
            return
        try:
            model_io.save_report(ctx.session.result.report(ctx.session.dg), path)
        except Exception as e:  # noqa: BLE001
            ctx.show_error("Export report", str(e))
            return
        ctx.exported(f"wrote report {path}")

    # ---------------------------------------------------------------------- graph image
    def export_view_dialog(self, kind: str):
        """The graph as ``kind`` ("png" or "svg")."""
        ctx = self.ctx
        path, _ = QFileDialog.getSaveFileName(ctx.ui.window, "Export graph", f"graph.{kind}",
                                              f"{kind.upper()} (*.{kind})")
        if not path:
            return
        try:
            (ctx.ui.view.export_svg if kind == "svg" else ctx.ui.view.export_png)(path)
        except Exception as e:  # noqa: BLE001
            ctx.show_error("Export graph", str(e))
            return
        ctx.exported(f"saved graph {path}")
