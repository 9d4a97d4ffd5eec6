"""Project files (``.psproj``): the user's work saved as JSON so it can be closed and resumed.

A project stores *how* to get back to the same state, not the weights themselves::

    {"format": "prunestudio.project", "version": 1,
     "model":    {"spec", "weights", "seed", "fingerprint"},    # sha256 of the original state dict
     "inputs":   {"shape", "dtype", "function", "describe"},
     "settings": PlanSettings.to_json(), "device": "cpu",
     "plan":     PruningPlan.to_json() or null,
     "result":   {"fingerprint", "report"} or null,                # sha256 of the pruned state dict
     "extra":    {...}}                                             # e.g. the GUI's locked groups

Restoring loads the model from its spec, re-runs the analysis (deterministic), re-applies the saved
plan and checks, by fingerprint, that the original model and the rebuilt pruned model are the ones
that were saved (random weights are drawn from the recorded seed, so they are the same again). The
file is written atomically (temporary file, checked, renamed).

A project never grants trust to itself: the consent to run the code it names (a factory file, a
pickle, custom Hugging Face code, an inputs function; :meth:`Project.code` lists them) comes from
whoever opens it (``restore(project, trust=...)``). A ``trust`` field written by older versions is
ignored, and dropped when the project is saved again.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field

import torch

from core.errors import LoadError, PruneStudioError

PROJECT_FORMAT = "prunestudio.project"
PROJECT_VERSION = 1
PROJECT_SUFFIX = ".psproj"


def fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of every parameter and buffer."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        if not isinstance(v, torch.Tensor):
            continue
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{tuple(t.shape)}|{t.dtype}|".encode())
        if t.device.type != "meta":
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class Project:
    spec: str
    shape: str | None = None
    dtype: str = "float32"
    inputs_fn: str | None = None
    weights: str | None = None
    seed: int = 0  # random weights of the model (torchvision:NAME, timm:NAME, factories)
    settings: dict = field(default_factory=dict)
    device: str = "cpu"
    plan: dict | None = None
    model_fingerprint: str | None = None
    result_fingerprint: str | None = None
    report: dict | None = None
    describe: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": PROJECT_FORMAT, "version": PROJECT_VERSION,
                "model": {"spec": self.spec, "weights": self.weights, "seed": self.seed,
                          "fingerprint": self.model_fingerprint},
                "inputs": {"shape": self.shape, "dtype": self.dtype, "function": self.inputs_fn,
                           "describe": self.describe},
                "settings": self.settings, "device": self.device, "plan": self.plan,
                "result": (None if self.result_fingerprint is None and self.report is None else
                           {"fingerprint": self.result_fingerprint, "report": self.report}),
                "extra": self.extra}

    @classmethod
    def from_json(cls, d: dict, path: str = "project") -> "Project":
        if not isinstance(d, dict) or d.get("format") != PROJECT_FORMAT:
            raise LoadError(f"{path} is not a PruneStudio project file")
        if int(d.get("version", 0)) > PROJECT_VERSION:
            raise LoadError(f"{path} was written by a newer PruneStudio (project version "
                            f"{d['version']})")
        try:
            m, i = d["model"], d.get("inputs") or {}
            r = d.get("result") or {}
            if not isinstance(m["spec"], str):
                raise TypeError("the model spec is not text")
            # a stored "trust" is ignored: a file never grants trust to itself
            return cls(spec=m["spec"].strip(), weights=m.get("weights"),
                       seed=int(m.get("seed") or 0),
                       model_fingerprint=m.get("fingerprint"), shape=i.get("shape"),
                       dtype=i.get("dtype") or "float32",
                       inputs_fn=i["function"].strip() if isinstance(i.get("function"), str) else None,
                       describe=i.get("describe"), settings=dict(d.get("settings") or {}),
                       device=d.get("device") or "cpu", plan=d.get("plan"),
                       result_fingerprint=r.get("fingerprint"), report=r.get("report"),
                       extra=dict(d.get("extra") or {}))
        except (KeyError, TypeError, AttributeError) as e:
            raise LoadError(f"{path} is damaged: {type(e).__name__}: {e}") from None

    # ------------------------------------------------------------------ helpers
    def plan_settings(self):
        from core.plan.planner import PlanSettings
        known = set(PlanSettings.__dataclass_fields__)
        # saved before FLOPs targets were shaped for speed: those plans were uniform
        saved = {"flops_allocation": "uniform", **self.settings}
        s = PlanSettings(**{k: v for k, v in saved.items() if k in known})
        s.validate()
        return s

    def code(self) -> list:
        """What opening the project would run (:class:`core.io.trust.CodeRef` each): the model
        spec's code and the inputs function, found without running anything."""
        from core.io.sources import what_would_run
        from core.io.trust import function_ref
        refs = what_would_run(self.spec)
        if self.inputs_fn:
            try:
                ref = function_ref(self.inputs_fn, "inputs function")
            except LoadError:
                ref = None  # missing: loading says so
            refs += [ref] if ref is not None else []
        return list(dict.fromkeys(refs))

    def make_inputs(self, device: str = "cpu", trust=False):
        from core.trace.inputs import make_inputs
        from core.io.inputs import load_inputs
        if self.inputs_fn:
            return load_inputs(self.inputs_fn, trust).to(device)
        if not self.shape:
            raise LoadError("the project has no example input shape")
        return make_inputs(self.shape, self.dtype, device)

    def load_model(self, trust=False):
        """The model, running code only as ``trust`` (the opener's consent) allows."""
        from core.io.sources import load_model
        return load_model(self.spec, trust=trust, weights=self.weights, seed=self.seed)


def json_clean(o):
    """NaN/inf are not JSON: turn them into null (also used by the CLI's reports)."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): json_clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_clean(v) for v in o]
    return o


def _default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=str)
    return str(o)


def save_project(path: str, project: Project, force: bool = False) -> None:
    """Write ``project`` as JSON atomically; an existing file needs ``force``."""
    from core.io.atomic import atomic_write
    text = json.dumps(json_clean(json.loads(json.dumps(project.to_json(), default=_default))), indent=1)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    def check(tmp):
        with open(tmp, encoding="utf-8") as f:
            Project.from_json(json.load(f), path)

    from core.io.specs import spec_file
    atomic_write(path, write, check, force,
                 [f for f in (spec_file(project.spec), project.weights) if f])


def load_project(path: str) -> Project:
    if not os.path.exists(path):
        raise LoadError(f"file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoadError(f"{path} is not a PruneStudio project file (not JSON: {e})") from None
    return Project.from_json(d, path)


def project_from(spec: str, settings, plan=None, result=None, shape: str | None = None,
                 dtype: str = "float32", inputs_fn: str | None = None, weights: str | None = None,
                 device: str = "cpu", model=None, dg=None,
                 extra: dict | None = None, seed: int = 0) -> Project:
    """A project describing the current work (``result`` is a PruneResult or None)."""
    from core.io.specs import normalize_spec
    if result is not None and plan is None:
        plan = result.plan
    ex_desc = None
    report = None
    if result is not None:
        try:
            report = result.report(dg)
        except Exception:  # noqa: BLE001 - the report is informative only
            report = None
    return Project(
        spec=normalize_spec(spec), shape=shape, dtype=dtype,
        inputs_fn=normalize_spec(inputs_fn) if inputs_fn else None,
        weights=os.path.abspath(weights) if weights else None, seed=int(seed),
        settings=settings.to_json() if hasattr(settings, "to_json") else dict(settings or {}),
        device=device, plan=plan.to_json() if hasattr(plan, "to_json") else plan,
        model_fingerprint=fingerprint(model) if model is not None else None,
        result_fingerprint=fingerprint(result.model) if result is not None else None,
        report=report, describe=ex_desc, extra=dict(extra or {}))


def apply_plan(model, inputs, dg, plan, verify: bool = True, latency: bool = False,
               progress=None, should_stop=None):
    """Re-apply a saved :class:`PruningPlan` to (a copy of) ``model``: a PruneResult as
    :func:`core.pipeline.prune_model` makes it, without re-planning."""
    from core.errors import Cancelled, VerificationError
    from core.trace.inputs import as_example_inputs
    from core.metrics import measure
    from core.pipeline import PruneResult, channels_per_layer
    from core.prune.apply import apply_kept
    from core.prune.verify import verify_plan

    def check():
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled by the user")

    progress = progress or (lambda *a, **k: None)
    ex = as_example_inputs(inputs)
    progress("restore", 0, 3, "re-applying the saved plan")
    before = measure(model, ex, latency=latency, should_stop=check)
    check()
    kept = plan.kept_indices(dg)
    pruned = apply_kept(model, kept)
    check()
    report = None
    if verify:
        progress("restore", 1, 3, "checking the pruned model")
        # the plan's approximations were accepted when it was made: re-applying checks exactness
        report = verify_plan(model, ex, dg, plan, pruned=pruned, check_bounds=False)
        if not report.passed:
            raise VerificationError(f"the saved plan would change the model: {report.message}")
        check()
    after = measure(pruned, ex, latency=latency, should_stop=check)
    progress("restore", 3, 3, "done")
    return PruneResult(pruned, plan, kept, before, after, report, channels_per_layer(dg, kept), {})


def restore(project: Project, progress=None, should_stop=None, verify: bool = True,
            check_fingerprints: bool = True, trust=False):
    """Load, analyse and (if the project has a plan) re-apply it; code runs only as ``trust`` (a
    :class:`core.io.trust.TrustPolicy` or bool: the opener's consent) allows.
    Returns ``(model, inputs, dg, result or None)``."""
    from core.pipeline import analyze_model, device_of
    from core.prune.apply import PruningPlan
    device = device_of(project.device or "cpu")
    model = project.load_model(trust).to(device)
    if check_fingerprints and project.model_fingerprint and \
            fingerprint(model) != project.model_fingerprint:
        raise LoadError(f"the model {project.spec} has changed since the project was saved (its "
                        f"weights differ); the saved plan may not fit it any more")
    from core.io.inputs import fit_inputs
    ex = fit_inputs(model, project.make_inputs(str(device), trust))
    options = ((project.plan or {}).get("settings") or {}).get("analysis") or \
        (project.extra or {}).get("analysis")
    dg = analyze_model(model, ex, progress=progress, should_stop=should_stop, options=options)
    result = None
    if project.plan:
        plan = PruningPlan.from_json(project.plan)
        try:
            result = apply_plan(model, ex, dg, plan, verify=verify, progress=progress,
                                should_stop=should_stop)
        except PruneStudioError:
            raise
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"the saved plan no longer fits {project.spec}: "
                            f"{type(e).__name__}: {e}") from None
        if check_fingerprints and project.result_fingerprint and \
                fingerprint(result.model) != project.result_fingerprint:
            raise LoadError(f"re-applying the saved plan to {project.spec} did not give the saved "
                            f"pruned model (fingerprints differ)")
    return model, ex, dg, result
