"""Pruning: the live estimate of the targets, Prune on the worker (progress, Cancel), the result
on the graph and in the charts, and Undo back to the original model. The pruning itself is
core's (gui.jobs.session.prune calls core.pipeline.prune_model)."""
from __future__ import annotations

import os

from PySide6.QtCore import QObject

from core.metrics import speedup_text
from core.metrics.latency_target import LoopStep

from ..jobs import gcpolicy, session as sess, stream, worker

REMOVED_LEGEND = "graph colours: fraction of channels removed (green 0% · amber 50% · red 100%)"


class PruneController(QObject):
    def __init__(self, ctx, parent=None):
        super().__init__(parent)
        self.ctx = ctx
        self.latency_runs = 10  # pairs of interleaved runs at most
        self.latency_budget_s = 5.0  # seconds of timing at most (three pairs at least)
        self.threads: int | None = None  # torch's own count
        self._est_task: worker.Task | None = None
        self._est_pending = False
        self._est_session = None
        ui = ctx.ui
        ui.side.prune_btn.clicked.connect(self.prune)
        ui.targets.settingsChanged.connect(self.update_estimate)
        ui.groups.locksChanged.connect(self._on_locks)
        ctx.sessionChanged.connect(self._on_session)
        # a new model's first estimate (it counts the FLOPs: a forward) waits until its graph was
        # painted and the replaced model collected, so it never competes with the first paint
        ctx.settled.connect(self.update_estimate)
        ctx.stateChanged.connect(self._refresh)

    def _refresh(self):
        s = self.ctx.session
        ok = s is not None and (not s.meta or stream.streamable_dir(s) is not None)
        self.ctx.ui.side.prune_btn.setEnabled(ok and not self.ctx.busy)

    def _on_session(self, _s):
        self.ctx.ui.charts.clear()
        self.ctx.ui.side.hide_legend()

    def _on_locks(self):
        ui = self.ctx.ui
        ui.targets.locked = ui.groups.locked_roots()
        self.update_estimate()

    # ---------------------------------------------------------------------- estimate
    def update_estimate(self):
        """Estimate params/FLOPs of the current settings with core.pipeline.estimate on a worker
        (it plans the whole model: ~0.1-0.5 s on big nets). One runs at a time; the last
        setting wins and stale answers are dropped."""
        s = self.ctx.session
        if s is None or s.meta or self.ctx.settling:  # settled calls again
            return
        if self._est_task is not None:
            self._est_pending = True
            return
        t = worker.Task("estimate", sess.estimate, s, self.ctx.ui.targets.settings(),
                        with_callbacks=False)
        # bound slots (not lambdas): Qt drops them if the window is gone before the answer
        t.finished.connect(self._on_estimate)
        t.failed.connect(self._on_estimate_failed)
        t.done.connect(self._on_estimate_done)
        self._est_task, self._est_session = t, s
        worker.start(t)

    def _on_estimate(self, pf):
        s = self._est_session
        if s is not self.ctx.session or self._est_pending:
            return  # computed for an older model or setting
        targets = self.ctx.ui.targets
        if pf is None:  # a latency target before any table was measured
            targets.show_no_estimate("latency: per-layer tables are measured on the first prune "
                                     "(then the estimate is instant)")
            return
        params, flops, est_ms, base_ms = pf
        targets.show_estimate(s.cost.base_params, s.cost.base_flops, params, flops)
        if est_ms is not None and base_ms:
            targets.estimate.setText(targets.estimate.text() + (
                f"<br>latency {base_ms:.1f} → <b>{est_ms:.1f} ms</b> "
                f"({1 - est_ms / base_ms:.0%} less, by the tables)"))
        self.ctx.estimateReady.emit((params, flops))

    def _on_estimate_failed(self, msg, _tb):
        if not self._est_pending:
            self.ctx.ui.targets.show_estimate_error(msg)

    def _on_estimate_done(self):
        stale = self._est_session is not None and self._est_session is not self.ctx.session
        self._est_task, self._est_session = None, None
        if stale:  # it held a replaced model past the load's settle: freed now, or collected
            gcpolicy.settle(idle=not worker.busy())  # by the model controller once all jobs end
        if self._est_pending:
            self._est_pending = False
            self.update_estimate()

    # ---------------------------------------------------------------------- pruning
    def prune(self):
        ctx, s = self.ctx, self.ctx.session
        if s is None or ctx.busy:
            return None
        if s.meta and stream.streamable_dir(s) is not None:
            return self.stream_prune()  # a checkpoint too large to load: pruned from its shards
        if s.meta:
            ctx.show_error("Prune", "this model was analysed on the meta device (structure only, "
                           "no weights): load it with its weights to prune it")
            return None
        targets = ctx.ui.targets
        settings = targets.settings()
        ctx.log(f"pruning with {settings.to_json()}")
        return ctx.tasks.run("pruning", sess.prune, s, settings, targets.device_name(),
                             self.latency_runs, round_auto=targets.round_to.value() == 0,
                             threads=self.threads or worker.compute_threads(), latency_budget_s=self.latency_budget_s,
                             accept_approximate=targets.accept_approx.isChecked(),
                             on_done=self.show_result, recover=self._offer_approximate)

    def _offer_approximate(self, task) -> bool:
        """A result refused only because it is approximate by design (within its bounds): say what
        makes it approximate and offer to prune again accepting it (default No). True: handled."""
        if getattr(task, "error_type", None) != "ApproximateRefused":
            return False
        ctx, detail = self.ctx, task.error_detail or {}
        n = detail.get("groups", 0)
        lines = [f"• {k['what']}: relative difference {k['rel_diff']:.3g} (bound {k['bound']:g})"
                 for k in detail.get("kinds", [])]
        which = (f"{n} pruned groups feed a statistic over their own channels" if n != 1 else
                 "1 pruned group feeds a statistic over its own channels")
        text = (f"The pruned model is close to the original with the removed channels zeroed, but "
                f"not equal to it: {which}.\n\n" + "\n".join(lines) +
                "\n\nPrune again and accept approximate results? (Targets: “accept approximate "
                "results”; No keeps the original model.)")
        ctx.status("pruning stopped: the result is approximate by design")
        if ctx.ask("Approximate result", text):
            ctx.ui.targets.accept_approx.setChecked(True)
            ctx.log("approximate results accepted: pruning again")
            self.prune()
        else:
            ctx.log("approximate result discarded: the original model is kept")
            ctx.status("approximate result discarded (tick “accept approximate results” to keep one)")
        return True

    def stream_prune(self, mlp: float | None = None, kv: float | None = None,
                     out: str | None = None):
        """Prune the structure-only session's checkpoint from its shards into a new folder
        (core.io.hf.stream, as ``prune hf:DIR --stream``); without arguments a dialog asks."""
        ctx, s = self.ctx, self.ctx.session
        src = stream.streamable_dir(s)
        if src is None or ctx.busy:
            return None
        if out is None:
            from ..widgets.stream_dialog import StreamDialog
            dlg = StreamDialog(src, ctx.ui.window)
            if not dlg.exec():
                return None
            mlp, kv, out = dlg.values()
        if not ctx.confirm_overwrite(out):
            return None
        importance = ctx.ui.targets.settings().importance
        ctx.log(f"streamed pruning of {src} into {out}: MLP width -{mlp:.0%}, KV heads -{kv:.0%}")

        def done(summary):
            (b, a), sizes = summary["params"], summary["sizes"]
            how = "from_pretrained" if summary["uniform"] else "core.adapters.hf.load_pruned"
            ctx.exported(f"pruned checkpoint written to {summary['out']}: params {b:,} → {a:,}, "
                         + ", ".join(f"{k} {x} → {y}" for k, (x, y) in sizes.items())
                         + f" (reload with {how}, or open hf:{summary['out']})")
        return ctx.tasks.run("streamed pruning", stream.stream_prune, src, out,
                             mlp if mlp is not None else 0.5, kv if kv is not None else 0.0,
                             importance if importance in ("l1", "l2", "lamp") else "l2", s.trust,
                             force=os.path.exists(out), on_done=done)

    def show_result(self, result):
        """``result`` (a PruneResult of the current session) on the graph, charts and status."""
        ctx, ui, s = self.ctx, self.ctx.ui, self.ctx.session
        s.result = result
        ui.view.set_overlay(sess.removed_fractions(s, result))
        ui.charts.show_result(result)
        ui.tabs.setCurrentWidget(ui.charts)
        b, a = result.before, result.after
        sp = ""
        if b.latency_ms and a.latency_ms:
            sp = (f", {speedup_text(b.latency_ms, a.latency_ms)} ({a.device}, {a.latency_threads} "
                  f"threads, {a.latency_runs} interleaved runs"
                  f"{', original cached' if b.latency_stop == 'cached' else ''})")
        msg = (f"pruned: params {b.params:,} → {a.params:,}, FLOPs -{1 - a.flops / max(b.flops, 1):.0%}{sp}"
               f" — {result.verify.message if result.verify else 'not verified'}")
        ctx.log(msg)
        st = result.plan.settings
        if st.get("target_latency") is not None and b.latency_ms and a.latency_ms:
            for i, step in enumerate(st.get("latency_loop") or []):
                ctx.log(LoopStep(**step).line(i + 1))  # each measured plan, as on the command line
            ctx.log(f"latency target {st['target_latency']:.0%}: the tables estimated "
                    f"{st.get('estimated_latency_reduction', float('nan')):.0%}, measured "
                    f"{1 - a.latency_ms / b.latency_ms:.0%}")
        if getattr(result, "round_auto", None):
            ctx.log(f"round-to auto: multiples of {st.get('round_to')} on {a.device}")
        for root, why in (getattr(result, "excluded", {}) or {}).items():
            ctx.log(f"left unpruned: group {root} — {why}")
        for line in getattr(result, "warnings", None) or []:
            ctx.log(f"warning: {line}")
        ctx.status(msg + "  (Ctrl+Z: back to the original)")
        ui.side.show_legend(REMOVED_LEGEND)
        ctx.changed()
        ctx.pruneFinished.emit(result)
        ctx.resultChanged.emit(result)

    def undo(self):
        ctx, ui, s = self.ctx, self.ctx.ui, self.ctx.session
        if s is None or s.result is None:
            return
        s.result = None
        ui.view.set_overlay(None)
        ui.side.hide_legend()
        ui.charts.clear()
        ctx.resultChanged.emit(None)  # the accuracy controller drops its evaluation, shows its overlay
        ctx.log("back to the original model")
        ctx.status("original model")
        ctx.changed()

    def shutdown(self):
        if self._est_task is not None:
            self._est_task.cancel()
