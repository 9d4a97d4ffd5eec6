"""Export: the current model (pruned if there is a result) in any form of core.io.exporters (chosen
by suffix) on the worker, the JSON report, and the graph as PNG or SVG. Existing files are replaced only after the
user said so; the input model file is never written over (core refuses)."""
from __future__ import annotations

import os
import re

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from ..jobs import model_io

LAST_DIR = "export/lastDir"


def model_name(spec: str) -> str:
    """A short name for files made from ``spec``: "torchvision:resnet50" -> "resnet50",
    "/nets/my model.pth" -> "my model", "f.py:make_net" -> "make_net", "hf:/m/bert/" -> "bert"."""
    s = str(spec or "model").strip().rstrip("/\\")
    kind, sep, rest = s.partition(":")
    if sep and len(kind) > 1 and not os.path.exists(s):  # a source prefix, not a Windows drive
        s = rest.rstrip("/\\") or kind
    if re.search(r"\.py:[A-Za-z_]\w*$", s):  # file.py:factory -> the factory's name
        s = s.rsplit(":", 1)[1]
    s = s.split("@", 1)[0]  # timm:NAME@pretrained
    base = os.path.basename(s)
    stem, ext = os.path.splitext(base)
    name = stem if ext.lower() in (".pt", ".pth", ".pstudio", ".onnx", ".py", ".bin") else base
    return re.sub(r"[<>:\"|?*]", "_", name) or "model"


def default_export_name(spec: str, pruned: bool = True, suffix: str = ".pt") -> str:
    return f"{model_name(spec)}-{'pruned' if pruned else 'original'}{suffix}"


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

    def default_path(self, name: str) -> str:
        """``name`` in the folder last exported to, else the model file's folder, else the
        current folder."""
        folder = self.ctx.settings.value(LAST_DIR, "") or ""
        if not folder or not os.path.isdir(folder):
            files = self._source_files()
            folder = os.path.dirname(os.path.abspath(files[0])) if files else os.getcwd()
        return os.path.join(folder, name)

    def _remember_dir(self, path: str):
        self.ctx.settings.setValue(LAST_DIR, os.path.dirname(os.path.abspath(path)))

    # ---------------------------------------------------------------------- model
    def export_dialog(self):
        s = self.ctx.session
        if s is None:
            return
        name = default_export_name(s.spec, pruned=s.result is not None)
        path, _ = QFileDialog.getSaveFileName(
            self.ctx.ui.window, "Export model", self.default_path(name), model_io.file_filter(),
            options=QFileDialog.DontConfirmOverwrite)  # export_model asks, also when scripted
        if path:
            self._remember_dir(path)
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
        # a pruned model's .onnx is timed against the original exported the same way
        original = s.model if s.result is not None else None

        def done(out):
            d, timings = out
            msg = f"exported {path}" if d is None else f"exported {path} ({exp.checked_by} max |diff| {d:.2e})"
            if timings is not None:
                from core.io.onnx.speed import speed_line
                msg += "; " + speed_line(timings)
            ctx.exported(msg)
        return ctx.tasks.run(
            exp.task, model_io.export_model, path, model, s.inputs, s.spec, s.result,
            source=self._source_files(), trust=s.trust, original=original, on_done=done)

    # ---------------------------------------------------------------------- report
    def export_report_dialog(self):
        s = self.ctx.session
        if s is None or s.result is None:
            return
        path, _ = QFileDialog.getSaveFileName(
            self.ctx.ui.window, "Export report", self.default_path(f"{model_name(s.spec)}-report.json"),
            "JSON (*.json)", options=QFileDialog.DontConfirmOverwrite)
        if path:
            self._remember_dir(path)
            self.export_report(path)

    def export_report(self, path: str):
        ctx = self.ctx
        if not ctx.confirm_overwrite(path):
            return
        try:
            s = ctx.session
            model_io.save_report(s.result.report(s.dg, spec=s.spec, inputs=s.inputs), path)
        except Exception as e:  # noqa: BLE001
            ctx.show_error("Export report", str(e))
            return
        ctx.exported(f"wrote report {path}")

    # ---------------------------------------------------------------------- graph image
    def export_view_dialog(self, kind: str):
        """The graph as ``kind`` ("png" or "svg")."""
        ctx = self.ctx
        name = f"{model_name(ctx.session.spec) if ctx.session else 'model'}-graph.{kind}"
        path, _ = QFileDialog.getSaveFileName(ctx.ui.window, "Export graph", self.default_path(name),
                                              f"{kind.upper()} (*.{kind})")
        if not path:
            return
        self._remember_dir(path)
        try:
            (ctx.ui.view.export_svg if kind == "svg" else ctx.ui.view.export_png)(path)
        except Exception as e:  # noqa: BLE001
            ctx.show_error("Export graph", str(e))
            return
        ctx.exported(f"saved graph {path}")
