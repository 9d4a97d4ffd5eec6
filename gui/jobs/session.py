"""What the window holds (original model, graph, result) and the worker-side steps that fill it.

These functions run on worker threads: they call core/ and prepare view data (layout, table rows)
so the GUI thread only builds widgets.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field

from core import pipeline
from core.trace.gcpause import gc_paused
from core.trace.inputs import make_inputs

from . import gcpolicy, model_io
from .graph_layout import Layout, layout
from .group_rows import group_rows, group_rows_meta, row_importance


@dataclass
class Session:
    spec: str
    model: object  # the original model: never modified
    inputs: object
    dg: object
    cost: object  # the CostModel; None until the first estimate counts it (see ensure_cost)
    layout: Layout
    rows: list
    node_groups: dict  # node -> [group ids], precomputed once (dg.groups_of_node scans all groups)
    seconds: dict = field(default_factory=dict)
    result: object = None  # the latest PruneResult (its .model is the pruned copy)
    shape: str = ""
    dtype: str = "float32"
    trust: object = None  # the core.io.trust.TrustPolicy it was loaded with (exports rebuild with it)
    meta: bool = False  # structure only (meta device): no weights, nothing to prune
    n_attention: int = 0  # attention layers whose pruning the "attention" analysis option chooses
    # device name -> (model, inputs) copied there once: the same copy keeps the timing of the
    # unchanged original cached between prunes (core.metrics.timing caches per model)
    device_copies: dict = field(default_factory=dict)
    before: object = None  # the original's sizes (params, FLOPs, memory), counted once


@gc_paused()  # a full collection on this worker would hold the GIL, and so the window
def load_and_analyse(spec: str, shape: str, dtype: str = "float32", trust=None, model=None,
                     aspect: float = 1.8, progress=None, should_stop=None, meta: bool = False,
                     options: dict | None = None, weights: str | None = None, seed: int = 0) -> Session:
    """Load (on the meta device when ``meta``), analyse with the analysis ``options``
    (``{"attention": "heads" | "head_dim"}``), lay out. A model too large for memory
    raises :class:`core.io.memory.TooLargeError` before anything big is allocated. Code from a
    file runs only as ``trust`` (the consent the window asked for) allows."""
    from core.io import inputs as loading_inputs, memory, sources
    secs = {}
    t = time.perf_counter()
    if progress:
        progress("load", 0, 1, f"loading {spec}")
    shape = model_io.input_shape_for(spec, shape)  # an ONNX graph's fixed input shape
    inputs = make_inputs(shape, dtype)
    if model is None:
        if meta:
            model = sources.build_meta_model(spec, trust=trust)
        else:
            memory.check_memory(spec, weights, input_hint=f"--input-shape {shape}", trust=trust)
            model = model_io.load_model(spec, trust=trust, weights=weights, seed=seed)
    inputs = loading_inputs.fit_inputs(model, inputs)  # token ids folded into the model's vocabulary
    if meta:
        inputs = inputs.to("meta")
    model.eval()
    secs["load"] = time.perf_counter() - t
    return analyse(spec, model, inputs, options, aspect=aspect, progress=progress,
                   should_stop=should_stop, seconds=secs, shape=shape, dtype=dtype, trust=trust,
                   meta=meta)


@gc_paused()
def analyse(spec: str, model, inputs, options: dict | None = None, aspect: float = 1.8,
            progress=None, should_stop=None, seconds: dict | None = None, **fields) -> Session:
    """Analyse a loaded model on its example inputs, lay out the graph, count costs and fill the
    group table: a new :class:`Session` (``fields``: shape, dtype, trust, meta)."""
    from core.io import inputs as loading
    from core.errors import TraceError
    meta = bool(fields.get("meta"))
    secs = dict(seconds or {})
    t = time.perf_counter()
    try:
        dg = pipeline.analyze_model(model, inputs, progress=progress, should_stop=should_stop,
                                    options=options)
    except TraceError as e:
        if "forward failed" not in str(e) or meta:
            raise
        raise loading.explain_forward_failure(model, inputs, e) from None
    secs["analyse"] = time.perf_counter() - t
    t = time.perf_counter()
    lay = layout(dg.graph, aspect=aspect, progress=progress, should_stop=should_stop)
    secs["layout"] = time.perf_counter() - t
    t = time.perf_counter()
    cost = None  # counted by the first estimate (ensure_cost), after the graph is on screen
    if meta:  # nothing runs on the meta device: counting is instant, or impossible
        try:
            cost = pipeline.cost_model(dg, model, inputs)
        except Exception:  # noqa: BLE001 - on the meta device some ops cannot be counted
            cost = None
    # importance (every weight scored) is filled in after the graph is on screen: ensure_importance
    rows = group_rows(dg, model, importance=False) if not meta else group_rows_meta(dg, model)
    secs["rows"] = time.perf_counter() - t
    node_groups: dict = {}
    for g in dg.groups:
        for n in g.nodes:
            node_groups.setdefault(n, []).append(g.id)
    n_attention = sum(1 for r in rows if r.get("unit"))
    gcpolicy.loaded()
    return Session(spec, model, inputs, dg, cost, lay, rows, node_groups, secs,
                   n_attention=n_attention, **fields)


def reanalyse(session: Session, options: dict, aspect: float = 1.8, progress=None,
              should_stop=None) -> Session:
    """The same model and inputs analysed again with other analysis options (e.g. attention by
    head dimension): a new Session without a pruning result, since the old result's groups belong
    to the old analysis. The given session is not modified."""
    return analyse(session.spec, session.model, session.inputs, options, aspect=aspect,
                   progress=progress, should_stop=should_stop, shape=session.shape,
                   dtype=session.dtype, trust=session.trust, meta=session.meta)


_cost_lock = threading.Lock()  # the estimate and a prune may both ask first


def ensure_cost(session: Session):
    """The session's cost model (the FLOPs and parameters estimates count with), counted on first
    use on a worker: one forward of the model under torch's FLOP counter, which the load leaves
    out of its path to the graph on screen. None on the meta device (no estimates there)."""
    with _cost_lock:
        if session.cost is None and not session.meta:
            t = time.perf_counter()
            session.cost = pipeline.cost_model(session.dg, session.model, session.inputs)
            session.seconds["cost"] = time.perf_counter() - t
    return session.cost


def ensure_importance(session: Session, progress=None, should_stop=None) -> dict:
    """Group id -> importance for the group table, scored once on a worker after the load (and
    written into ``session.rows``). Empty on the meta device (no weights)."""
    if session.meta:
        return {}
    imps = row_importance(session.dg, session.model, should_stop=should_stop)
    for r in session.rows:
        r["importance"] = imps.get(r["id"], float("nan"))
    return imps


def attention_mode(session: Session | None) -> str:
    """How the session's analysis groups attention: "heads" or "head_dim"."""
    opts = getattr(session.dg, "options", None) if session is not None else None
    return (opts or {}).get("attention", "heads")


def project_analysis(project) -> dict | None:
    """The analysis options a project was made with (as core.io.project.restore reads them: the
    plan's, else the project's own); an attention structure this version does not know is a
    LoadError."""
    from core.adapters.heads import MODES
    from core.errors import LoadError
    options = ((project.plan or {}).get("settings") or {}).get("analysis") or \
        (project.extra or {}).get("analysis")
    if options is None:
        return None
    if not isinstance(options, dict) or options.get("attention", "heads") not in MODES:
        raise LoadError(f"the project's analysis options {options!r} are not understood by this "
                        f"PruneStudio (attention: {' or '.join(MODES)})")
    return dict(options)


def restore_project(project, trust=None, aspect: float = 1.8, progress=None, should_stop=None):
    """Worker side of File > Open project: load and analyse as saved, re-apply the saved plan;
    code runs only as ``trust`` (the consent the window asked for, never the project's) allows.
    Returns ``(Session, PruneResult or None)``; the model must be the one that was saved."""
    from core.io import project as proj
    from core.errors import LoadError
    from core.prune.apply import PruningPlan
    if project.inputs_fn:
        raise LoadError("projects with an inputs function open in the CLI only (python main.py)")
    options = project_analysis(project)
    s = load_and_analyse(project.spec, project.shape, project.dtype, trust, aspect=aspect,
                         progress=progress, should_stop=should_stop, options=options,
                         weights=project.weights, seed=project.seed)
    if project.model_fingerprint and proj.fingerprint(s.model) != project.model_fingerprint:
        raise LoadError(f"the model {project.spec} has changed since the project was saved (its "
                        f"weights differ); the saved plan may not fit it any more")
    result = None
    if project.plan:
        result = proj.apply_plan(s.model, s.inputs, s.dg, PruningPlan.from_json(project.plan),
                                 progress=progress, should_stop=should_stop)
        if project.result_fingerprint and proj.fingerprint(result.model) != project.result_fingerprint:
            raise LoadError(f"re-applying the saved plan to {project.spec} did not give the saved "
                            f"pruned model")
    return s, result


def prune(session: Session, settings, device: str = "cpu", latency_runs: int = 10,
          progress=None, should_stop=None, round_auto: bool = False, threads: int | None = None,
          latency_budget_s: float = 5.0, accept_approximate: bool = False):
    """Prune on ``device`` (a copy made once per device), the original timed interleaved with
    the pruned model - or taken from the cache when unchanged. ``round_auto``: channel counts a
    multiple of the width measured fastest there (``result.round_auto`` says which)."""
    from dataclasses import replace
    model, inputs = session.model, session.inputs
    if device != "cpu":  # work on a device copy; the original stays where it is
        if device not in session.device_copies:
            dev = pipeline.device_of(device)
            session.device_copies[device] = (copy.deepcopy(model).to(dev), inputs.to(dev))
        model, inputs = session.device_copies[device]
    auto = None
    if round_auto:
        from core.metrics.widths import best_multiple
        if progress:
            progress("widths", 0, 1, f"finding the fastest channel multiple on {device}")
        multiple, auto = best_multiple(device, threads)
        settings = replace(settings, round_to=multiple, round_auto=True)
    table = getattr(session.cost, "latency", None) if device == "cpu" else None
    result = pipeline.prune_model(model, inputs, session.dg, settings, latency_runs=latency_runs,
                                  progress=progress, should_stop=should_stop,
                                  before=session.before if device == "cpu" else None,
                                  threads=threads, latency_budget_s=latency_budget_s,
                                  latency_table=table, accept_approximate=accept_approximate)
    if device == "cpu":
        session.before = session.before or result.before
        if result.latency_table is not None and ensure_cost(session) is not None:
            session.cost.latency = result.latency_table  # instant latency estimates from now on
    result.round_auto = auto
    return result


def estimate(session: Session, settings):
    """(params, FLOPs, estimated ms or None, the original's ms or None) of a setting. A latency
    target needs the tables, measured on the first prune with it (then this is instant)."""
    from core.plan.latency import estimate_ms
    table = getattr(ensure_cost(session), "latency", None)
    if settings.target_latency is not None and table is None:
        return None
    from core.plan.planner import make_plan
    kept = make_plan(session.dg, session.model, settings, cost=session.cost).kept_indices(session.dg)
    params, flops = session.cost.estimate(kept)
    if table is None:
        return params, flops, None, None
    return params, flops, estimate_ms(table, kept), table.base_ms


def removed_fractions(session: Session, result) -> dict:
    """Per graph node: the fraction of its channels removed (layers by their output channels,
    other nodes by the most-pruned group they carry)."""
    dg = session.dg
    by_group = {g.id: len(result.plan.removed.get(g.id, ())) / max(g.n_channels, 1) for g in dg.groups}
    out = {}
    for n, d in dg.graph.nodes(data=True):
        ch = result.channels.get(d.get("module"))
        if ch:
            out[n] = 1 - ch[1] / max(ch[0], 1)
        elif n in session.node_groups:
            out[n] = max(by_group[g] for g in session.node_groups[n])
    return out
