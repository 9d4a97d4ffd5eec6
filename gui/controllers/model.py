"""Loading and analysis: open a model (dialog, demo, recent files), analyse it on the worker,
analyse it again with another attention structure, and show the result in every panel.

Nothing from a file runs before consent: what loading a spec would run
(:func:`core.io.sources.what_would_run`: a factory file, a pickle's code, the spec a .pstudio
records, Hugging Face custom code) is asked about first (:meth:`Context.consent`); the worker
then loads with a policy allowing exactly those files' contents, and a No starts nothing."""
from __future__ import annotations

import os
import time
import weakref

from PySide6.QtCore import QEvent, QObject, QTimer

from core.models.demo import DEMO_INPUT_SHAPE
from core.prune.bounds import approximate_summary

from ..jobs import gcpolicy, model_io, session as sess, worker
from ..widgets.load_dialog import LoadDialog
from ..widgets.targets_panel import ATTENTION

MAX_RECENT = 8
# A full collection that frees a replaced model (gcpolicy.settle, when one is needed: ~0.3 s, it
# walks every live object) holds the GIL: it waits until the new graph was painted, then this long,
# so the frame reaches the screen first. Without a paint (a hidden window) it runs at the latest
# after SETTLE_LATEST_MS.
SETTLE_AFTER_PAINT_MS = 150
SETTLE_LATEST_MS = 3000
COLLECT_RETRY_MS = 500  # while a job still holds a replaced model
ATTENTION_TEXT = dict(ATTENTION)  # "heads" -> "Whole heads", "head_dim" -> "Dimensions in every head"


class ModelController(QObject):
    def __init__(self, ctx, parent=None):
        super().__init__(parent)
        self.ctx = ctx
        self.pending = None  # (spec, shape, dtype) of the load in flight: for File > Open recent
        self.pending_options = None  # analysis options of the load in flight
        self.pending_trust = None  # its TrustPolicy
        self.recent_menu = None
        self._retired = None  # a replaced session, freed after the new graph's first paint
        gcpolicy.configure()
        ctx.ui.targets.attentionChanged.connect(self.set_attention)
        ctx.tasks.idle.connect(self.sync_attention)  # a failed or cancelled re-analysis: old choice
        ctx.tasks.idle.connect(lambda: QTimer.singleShot(0, self._restore_estimate))
        self._replacing = None  # [session] being replaced by the load in flight
        self._importance_for = None  # the session whose importance column is being scored
        self._importance_task = None  # ... and its task, cancelled if that session is replaced
        ctx.stateChanged.connect(self._refresh)
        ctx.resultChanged.connect(self._show_kept)
        ctx.ui.view.viewport().installEventFilter(self)

    def _refresh(self):
        ctx, targets = self.ctx, self.ctx.ui.targets
        ready = ctx.session is not None
        targets.attention.setEnabled(not ctx.busy and (not ready or targets.attention_available))

    # ---------------------------------------------------------------------- loading
    def open_dialog(self):
        ctx = self.ctx
        dlg = LoadDialog(ctx.ui.window, ctx.settings.value("lastShape", "1,3,224,224"),
                         attention=ctx.ui.targets.attention_mode())
        if dlg.exec() != LoadDialog.Accepted or not dlg.spec():
            return
        ctx.settings.setValue("lastShape", dlg.shape.text())
        self.open_model(dlg.spec(), dlg.shape.text(), dlg.dtype.currentText(), options=dlg.options())

    @staticmethod
    def dropped_specs(mime) -> list[str]:
        """Model specs for the local files of a drag: a saved model, a project, a .py factory
        (its make_model) or a Hugging Face folder (config.json)."""
        out = []
        for url in mime.urls() if mime.hasUrls() else []:
            path = url.toLocalFile()
            if not path:
                continue
            if os.path.isdir(path):
                if os.path.exists(os.path.join(path, "config.json")):
                    out.append(f"hf:{path}")
            elif path.endswith(".py"):
                out.append(f"{path}:make_model")
            elif os.path.isfile(path):
                out.append(path)
        return out

    def open_dropped(self, spec: str):
        """Open a dropped model like File > Open would (code it would run is asked about first:
        open_model), with the input shape last used."""
        suggested = model_io.suggested_input(spec)  # token ids for a language model
        if suggested:
            return self.open_model(spec, *suggested)
        return self.open_model(spec, self.ctx.settings.value("lastShape", "1,3,224,224"))

    def open_demo(self):
        self.open_model("demo", DEMO_INPUT_SHAPE)

    def consent_for(self, spec: str, trust=None):
        """The TrustPolicy to load ``spec`` with: ``trust`` given by the caller (True: the
        application's --trust; False: run nothing; a policy), else what the user consents to
        after being shown what would run; None when the user said No."""
        from core.io.sources import what_would_run
        from core.io.trust import as_policy
        if trust is not None:
            return as_policy(trust)
        try:
            refs = what_would_run(spec)
        except Exception as e:  # noqa: BLE001 - unreadable: nothing is trusted, the load says why
            self.ctx.log(f"could not tell what {spec} would run: {e}")
            refs = []
        return self.ctx.consent(refs, f"Opening {os.path.basename(spec.strip().rstrip('/'))}")

    def open_model(self, spec: str, shape: str, dtype: str = "float32", model=None,
                   meta: bool = False, trust=None, options: dict | None = None):
        """Load and analyse on the worker. ``options``: analysis options (``{"attention":
        "heads" | "head_dim"}``); by default the targets panel's attention choice. ``trust``:
        see :meth:`consent_for`; a No loads nothing (None is returned)."""
        ctx, targets = self.ctx, self.ctx.ui.targets
        spec = spec.strip() if isinstance(spec, str) else spec
        if model is None:
            trust = self.consent_for(spec, trust)
            if trust is None:
                return None
        if options is None:
            options = {"attention": targets.attention_mode()}
        elif not ctx.busy:
            targets.set_attention(options.get("attention", "heads"), targets.attention_available)
        self.load_started = time.perf_counter()
        self.pending = (spec, shape, dtype)
        self.pending_options = dict(options)
        self.pending_trust = trust  # the consent given for this load (asked once)
        t = ctx.tasks.run(f"loading {spec}", sess.load_and_analyse, spec, shape, dtype, trust,
                          model, ctx.ui.view.aspect(), meta=meta, options=dict(options),
                          on_done=self.show_session, on_failed=self.offer_meta)
        if t is not None:  # the numbers shown are the old model's: never pass them off as the new one's
            self._replacing = [ctx.session]
            targets.mark_estimate_stale(clear=True)
        return t

    def _restore_estimate(self):
        """A load that failed or was cancelled: the old model stays, so estimate it again."""
        if self._replacing is None or self.ctx.busy:
            return
        old, self._replacing = self._replacing[0], None
        if self.ctx.session is old and self.ctx.ui.targets.estimate_stale:
            if old is None or old.meta:
                self.ctx.ui.targets.show_no_estimate()
            else:
                self.ctx.ui.targets.settingsChanged.emit()  # the prune controller re-estimates

    def offer_meta(self, task):
        """A model too large for memory: offer its structure alone (meta device, no weights)."""
        if getattr(task, "error_type", None) != "TooLargeError" or not self.pending or self.ctx.headless:
            return
        spec, shape, dtype = self.pending
        if self.ctx.ask("Analyse without weights?",
                        f"{spec} does not fit in memory. Analyse its structure on the meta device "
                        "instead? (no weights are loaded: the graph and its groups are shown, "
                        "pruning is off)", default_yes=True):
            self.open_model(spec, shape, dtype, meta=True, options=self.pending_options,
                            trust=self.pending_trust)

    # ---------------------------------------------------------------------- attention
    def set_attention(self, mode: str):
        """Analyse the loaded model again with attention grouped by ``mode`` ("heads": whole
        heads, "head_dim": dimensions inside every head) on the worker, like a load (progress,
        Cancel, errors in a dialog). The graph, groups and table are replaced; a pruned result of
        the old analysis is dropped, as its groups no longer exist. Without a model the choice
        applies to the next load."""
        ctx, s = self.ctx, self.ctx.session
        if s is None or sess.attention_mode(s) == mode:
            return None
        if ctx.busy:
            ctx.status("busy: cancel the running task first")
            self.sync_attention()
            return None
        self.pending = None  # not a new model: nothing to add to File > Open recent
        t = ctx.tasks.run(f"analysing again ({ATTENTION_TEXT.get(mode, mode)})", sess.reanalyse, s,
                          {"attention": mode}, ctx.ui.view.aspect(),
                          on_done=lambda new, old=s: self._on_reanalysed(old, new))
        if t is None:
            self.sync_attention()
        return t

    def _on_reanalysed(self, old, new):
        ctx, ui = self.ctx, self.ctx.ui
        if ctx.session is not old:
            return
        locked = set(ui.targets.locked)  # group roots: module names survive the new analysis
        self.show_session(new)
        for g in new.dg.groups:
            if g.root in locked:
                ui.groups.set_locked(g.id, True)
        ui.targets.locked = ui.groups.locked_roots()
        mode = sess.attention_mode(new)
        msg = (f"attention pruned by {ATTENTION_TEXT.get(mode, mode).lower()}: "
               f"{len(new.dg.prunable_groups)} prunable groups")
        if old.result is not None:
            msg += "; the pruned result of the previous analysis was dropped (prune again)"
        ctx.log(msg)
        ctx.status(msg)

    def sync_attention(self):
        """The targets panel shows the loaded model's attention analysis."""
        s = self.ctx.session
        if s is not None:
            self.ctx.ui.targets.set_attention(sess.attention_mode(s), s.n_attention > 0)

    # ---------------------------------------------------------------------- showing
    def show_session(self, s):
        """Make ``s`` (a gui.jobs.session.Session) the window's model: graph, tables, info."""
        ctx, ui = self.ctx, self.ctx.ui
        t = time.perf_counter()
        old = ctx.session
        if old is not None and old is not s:  # freed by reference counts, watched until settled
            if self._importance_task is not None:  # scoring the old model: its CPU goes to s
                self._importance_task.cancel()
            gcpolicy.replacing(old, old.model, old.dg.graph)
            # freeing a big model object by object takes ~90 ms (a 20k-node graph): after the
            # new graph is on screen, in _settle, not in this turn
            self._retired = old
        del old
        ctx.session = s
        ui.view.set_graph(s.dg.graph, s.layout)
        ui.view.fit()
        s.seconds["draw"] = time.perf_counter() - t
        ui.groups.set_rows(s.rows)
        ui.details.show_node(None, None)
        ui.targets.locked = []
        ui.targets.clear_overrides()  # module names of the previous model
        n_nodes, n_groups = s.dg.graph.number_of_nodes(), len(s.dg.prunable_groups)
        blocked = s.dg.blocked_ops
        lines = [(f"input {s.inputs.describe()}", ""),
                 (f"{n_nodes} nodes, {len(s.dg.groups)} groups, {n_groups} prunable", ""),
                 (f"blocked ops: {', '.join(blocked)}", "error") if blocked else ("no blocked ops", "")]
        approx = approximate_summary(s.dg)
        if approx:
            lines.append((approx + ": tick “accept approximate results” or lock them", ""))
        if s.n_attention:
            mode = sess.attention_mode(s)
            lines.append((f"attention: {s.n_attention} layer(s), pruned by "
                          f"{ATTENTION_TEXT.get(mode, mode).lower()}", ""))
        if s.meta:
            from ..jobs.stream import streamable_dir
            lines.append(("meta device: structure only, no weights; " + (
                "Prune writes a pruned copy from the shards" if streamable_dir(s) else
                "pruning is off"), "bold"))
        ui.side.show_info(s.spec, lines)
        self._replacing = None
        if s.meta:
            ui.targets.show_no_estimate("– (structure only: no estimate)")
        else:
            ui.targets.mark_estimate_stale(clear=True)  # the prune controller estimates the new model
        self.sync_attention()
        ui.window.setWindowTitle(f"PruneStudio — {s.spec}")
        ctx.log(f"loaded {s.spec}: {n_nodes} nodes, {n_groups} prunable groups "
                f"({', '.join(f'{k} {v:.2f}s' for k, v in s.seconds.items())})")
        ctx.status(f"{s.spec}: {n_nodes} nodes, {n_groups} prunable groups")
        if s.spec not in ("demo",) and not s.meta and self.pending:
            self.add_recent(s.spec, self.pending[1], self.pending[2])
        ctx.sessionChanged.emit(s)
        ctx.changed()
        # the old model's references are gone now: free it, and keep the collector off this one,
        # once the new graph is on screen
        self.ctx.settling = True
        QTimer.singleShot(SETTLE_LATEST_MS, self._settle)
        ctx.modelReady.emit()

    def _collect_replaced(self):
        """The replaced model outlived the settle: freed by reference counts once the job holding
        it ends; still alive with no job running, a cycle holds it and a full collection runs."""
        if not gcpolicy.pending():
            return
        if worker.busy():
            QTimer.singleShot(COLLECT_RETRY_MS, self._collect_replaced)
            return
        gcpolicy.settle()

    def eventFilter(self, obj, ev):  # noqa: N802 - Qt's name
        if self.ctx.settling and ev.type() == QEvent.Paint and not self.ctx.ui.view.building:
            QTimer.singleShot(SETTLE_AFTER_PAINT_MS, self._settle)
        return False

    def _settle(self):
        if not self.ctx.settling:
            return
        self.ctx.settling = False
        self._retired = None  # the replaced session's last reference here
        secs = gcpolicy.settle(idle=not worker.busy())
        if gcpolicy.pending():  # a job still holds the replaced model: collect once it ends
            QTimer.singleShot(COLLECT_RETRY_MS, self._collect_replaced)
        if self.ctx.session is not None:
            self.ctx.session.seconds["gc"] = secs
        self.ctx.settled.emit()
        s = self.ctx.session
        if s is not None and not s.meta:  # the importance column, scored on a worker
            t = worker.Task("importance", sess.ensure_importance, s)
            t.finished.connect(self._show_importance)
            self._importance_for = weakref.ref(s)  # never what keeps a replaced model alive
            # (kept after it ends: cancelling a finished task does nothing, and it has let go of
            # the session by then)
            self._importance_task = t
            worker.start(t)

    def _show_importance(self, imps):
        if self._importance_for is not None and self._importance_for() is self.ctx.session:
            self.ctx.ui.groups.show_importance(imps)
        self._importance_for = None

    def _show_kept(self, result):
        """Kept / removed channels per group in the group table (cleared by Undo)."""
        s, groups = self.ctx.session, self.ctx.ui.groups
        if result is None or s is None:
            groups.show_kept(None)
            return
        removed = {int(k): v for k, v in result.plan.removed.items()}
        groups.show_kept(removed, {g.id: g.n_channels for g in s.dg.groups})

    # ---------------------------------------------------------------------- recent files
    def recent(self) -> list:
        r = self.ctx.settings.value("recent", [])
        return [r] if isinstance(r, str) else list(r or [])

    def add_recent(self, spec, shape, dtype):
        item = f"{spec}|{shape}|{dtype}"
        r = [item] + [x for x in self.recent() if x != item]
        self.ctx.settings.setValue("recent", r[:MAX_RECENT])
        self.fill_recent()

    def set_recent_menu(self, menu):
        self.recent_menu = menu
        self.fill_recent()

    def fill_recent(self):
        if self.recent_menu is None:
            return
        self.recent_menu.clear()
        for item in self.recent():
            spec, shape, dtype = (item.split("|") + ["", "", ""])[:3]
            self.recent_menu.addAction(f"{spec}  [{shape}]",
                                       lambda s=spec, sh=shape, d=dtype: self.open_model(s, sh, d or "float32"))
        self.recent_menu.setEnabled(bool(self.recent()))
