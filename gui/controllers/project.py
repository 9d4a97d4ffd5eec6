"""Projects (.psproj): save the model spec, input, settings, locks, analysis options and the
pruning plan; open one to load the same model again, restore the panel and re-apply the plan
(core.io.project does the work; the model must be the one that was saved).

A project never grants trust to itself: what opening it would run (``Project.code()``: the model
spec's factory file, pickle, recorded spec or Hugging Face custom code) is asked about first, and
a No opens nothing."""
from __future__ import annotations

import os

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from ..jobs import session as sess

FILTER = "PruneStudio project (*.psproj)"


class ProjectController(QObject):
    def __init__(self, ctx, models, pruning, parent=None):
        """``models`` shows a restored session (ModelController), ``pruning`` its result
        (PruneController)."""
        super().__init__(parent)
        self.ctx, self.models, self.pruning = ctx, models, pruning
        self._project = None

    def project(self):
        """The current work as a :class:`core.io.project.Project` (None without a model)."""
        from core.io import project as proj
        s, targets = self.ctx.session, self.ctx.ui.targets
        if s is None or s.meta:
            return None
        return proj.project_from(
            s.spec, targets.settings(), result=s.result, shape=s.shape, dtype=s.dtype,
            device=targets.device_name(), model=s.model, dg=s.dg,
            extra={"locked": list(targets.locked), "mode": targets.mode.currentData(),
                   "analysis": dict(s.dg.options)})

    # ---------------------------------------------------------------------- save
    def save_project_dialog(self):
        if self.ctx.session is None:
            return
        from .export import model_name
        name = f"{model_name(self.ctx.session.spec)}.psproj"  # in the last folder written to
        folder = self.ctx.settings.value("export/lastDir", "") or os.getcwd()
        path, _ = QFileDialog.getSaveFileName(self.ctx.ui.window, "Save project", os.path.join(folder, name),
                                              FILTER, options=QFileDialog.DontConfirmOverwrite)
        if path:
            if not path.endswith(".psproj"):
                path += ".psproj"
            self.save_project(path)

    def save_project(self, path: str) -> bool:
        from core.io import project as proj
        ctx = self.ctx
        p = self.project()
        if p is None:
            ctx.show_error("Save project", "nothing to save: open a model first")
            return False
        if not ctx.confirm_overwrite(path):
            return False
        try:
            proj.save_project(path, p, force=True)
        except Exception as e:  # noqa: BLE001
            ctx.show_error("Save project", str(e))
            return False
        ctx.exported(f"saved project {path}")
        return True

    # ---------------------------------------------------------------------- open
    def open_project_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self.ctx.ui.window, "Open project", "", FILTER)
        if path:
            self.open_project(path)

    def open_project(self, path: str):
        from core.io import project as proj
        ctx = self.ctx
        try:
            p = proj.load_project(path)
        except Exception as e:  # noqa: BLE001
            ctx.show_error("Open project", str(e))
            return None
        if p.inputs_fn:  # refused before asking about code that would not run anyway
            ctx.show_error("Open project", "projects with an inputs function open in the CLI only "
                                           "(python main.py)")
            return None
        try:
            refs = p.code()
        except Exception as e:  # noqa: BLE001 - unreadable: nothing is trusted, the load says why
            ctx.log(f"could not tell what {p.spec} would run: {e}")
            refs = []
        trust = ctx.consent(refs, f"Opening the project {os.path.basename(path)}")
        if trust is None:
            return None
        self.models.pending = (p.spec, p.shape, p.dtype)
        self.models.pending_options = None
        self.models.pending_trust = trust
        self._project = p
        return ctx.tasks.run(f"opening project {os.path.basename(path)}", sess.restore_project, p,
                             trust, ctx.ui.view.aspect(), on_done=self._on_restored,
                             on_failed=self.models.offer_meta)

    def _on_restored(self, sr):
        ctx, ui = self.ctx, self.ctx.ui
        s, result = sr
        p = self._project
        self.models.show_session(s)
        try:
            ui.targets.set_settings(p.plan_settings(), p.extra.get("mode"))
        except Exception as e:  # noqa: BLE001 - settings from a newer version: keep the defaults
            ctx.log(f"project settings not restored: {e}")
        locked = set(p.extra.get("locked") or p.settings.get("ignore") or [])
        for g in s.dg.groups:
            if g.root in locked:
                ui.groups.set_locked(g.id, True)
        ui.targets.locked = ui.groups.locked_roots()
        if p.device and ui.targets.device.findText(p.device) >= 0:
            ui.targets.device.setCurrentText(p.device)
        if result is not None:
            self.pruning.show_result(result)
        ctx.log(f"project restored: {p.spec}" + (", saved plan re-applied" if result else ""))
        ctx.projectRestored.emit()
