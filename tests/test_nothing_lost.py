"""Nothing lost: cancelling at any poll of any stage leaves the user's model exactly as it was
(every parameter, buffer, gradient and train/eval flag); exports cancelled leave no file; project
files restore the same pruned model; pruning is deterministic, also across a project round trip."""
import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import main as entry  # noqa: E402
from core.io import project as proj  # noqa: E402
from core.errors import Cancelled  # noqa: E402
from core.trace.inputs import make_inputs  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402
from core.models.digits import DigitsCNN  # noqa: E402

FACTORY = os.path.join(ROOT, "tests", "models", "demo_factory.py")


def small_model(train=False):
    torch.manual_seed(0)
    m = DigitsCNN(width=8)
    for mod in m.modules():  # non-trivial BN statistics, so a stray update would show
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
    return m.train(train)


def snapshot(model):
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "params": {k: (p.requires_grad, None if p.grad is None else p.grad.clone(), p.dtype,
                       p.device) for k, p in model.named_parameters()},
        "modes": {k: m.training for k, m in model.named_modules()},
        "ids": {k: id(v) for k, v in model.state_dict(keep_vars=True).items()},
    }


def assert_same(model, snap):
    now = snapshot(model)
    assert now["modes"] == snap["modes"]
    assert now["ids"] == snap["ids"]
    assert set(now["tensors"]) == set(snap["tensors"])
    for k, v in snap["tensors"].items():
        w = now["tensors"][k]
        assert w.dtype == v.dtype and w.shape == v.shape and torch.equal(w, v), k
    for k, (rg, g, dt, dev) in snap["params"].items():
        rg2, g2, dt2, dev2 = now["params"][k]
        assert (rg2, dt2, dev2) == (rg, dt, dev), k
        assert (g is None and g2 is None) or torch.equal(g, g2), k


class StopAfter:
    """should_stop() that answers True from its n-th poll on (n=0: at once); counts polls."""

    def __init__(self, n=None):
        self.n, self.polls = n, 0

    def __call__(self):
        self.polls += 1
        return self.n is not None and self.polls > self.n


EX = make_inputs("2,1,8,8")


def _count(fn):
    c = StopAfter()
    fn(c)
    return c.polls


@pytest.fixture(autouse=True)
def fixed_pair_count(monkeypatch):
    """Latency timing adds pairs until the spread is tight, so the number of cancellation polls
    depended on the machine's noise; here it stops at its minimum number of pairs."""
    from core.metrics import timing
    monkeypatch.setattr(timing, "_tight", lambda *a, **k: True)


@pytest.fixture(scope="module")
def analysed():
    m = small_model()
    return m, analyze_model(m, EX)


@pytest.mark.parametrize("train", [False, True])
def test_cancel_analysis_at_every_poll(train):
    m = small_model(train)
    snap = snapshot(m)
    total = _count(lambda s: analyze_model(m, EX, should_stop=s))
    assert total >= 2
    assert_same(m, snap)
    for n in range(total):
        with pytest.raises(Cancelled):
            analyze_model(m, EX, should_stop=StopAfter(n))
        assert_same(m, snap)


@pytest.mark.parametrize("settings", [
    PlanSettings(ratio=0.5, importance="l2"),
    PlanSettings(ratio=0.4, importance="taylor", global_ranking=True),
    PlanSettings(target_flops=0.4, importance="l1"),
], ids=["l2", "taylor", "flops"])
def test_cancel_pruning_at_every_poll(analysed, settings):
    """measure (latency) -> plan/score -> prune -> verify -> measure: cancel at each poll."""
    m, dg = analysed
    snap = snapshot(m)
    calib = (lambda: (EX, None)) if settings.importance == "taylor" else None

    def go(s):
        from core.metrics.timing import clear_baselines
        clear_baselines()  # every run times the original too: the same polls each time
        return prune_model(m, EX, dg, settings, latency=True, latency_runs=2, calibration=calib,
                           should_stop=s)
    total = _count(go)
    assert total >= 5
    assert_same(m, snap)
    for n in range(total):
        with pytest.raises(Cancelled):
            go(StopAfter(n))
        assert_same(m, snap)


def test_cancel_restoring_a_plan_and_every_export(analysed, tmp_path):
    from core.io.onnx.export import export_onnx
    from core.io.portable import save_portable
    from core.io.torchfile import save_whole
    m, dg = analysed
    snap = snapshot(m)
    r = prune_model(m, EX, dg, PlanSettings(ratio=0.5), latency=False)
    assert_same(m, snap)
    pruned_snap = snapshot(r.model)
    from core.metrics.timing import clear_baselines

    def restore(s):
        clear_baselines()  # the original is timed on every run: the same polls each time
        return proj.apply_plan(m, EX, dg, r.plan, latency=True, should_stop=s)
    total = _count(restore)
    for n in range(total):
        with pytest.raises(Cancelled):
            restore(StopAfter(n))
        assert_same(m, snap)
    writers = {
        "pt": lambda p, s: save_whole(r.model, p, should_stop=s),
        "pstudio": lambda p, s: save_portable(p, f"{FACTORY}:make", r.kept,
                                              r.model.state_dict(), should_stop=s,
                                              rebuild_check=False),
        "onnx": lambda p, s: export_onnx(r.model, EX, p, should_stop=s),
    }
    for suffix, write in writers.items():
        path = str(tmp_path / f"out.{suffix}")
        if suffix == "onnx":  # slow exporter: the polls before writing and before the rename
            polls = [0, 2]
        else:
            total = _count(lambda s: write(path, s))
            assert total >= 3 and os.path.exists(path)
            os.remove(path)
            polls = range(total)
        for n in polls:
            with pytest.raises(Cancelled):
                write(path, StopAfter(n))
            assert os.listdir(tmp_path) == [], (suffix, n)  # no file, no temporary left
            assert_same(m, snap)
            assert_same(r.model, pruned_snap)


# ----------------------------------------------------------------------------- determinism

def _plan_json(settings):
    m = small_model()
    dg = analyze_model(m, EX)
    r = prune_model(m, EX, dg, settings, latency=False, verify=False)
    return json.dumps(r.plan.to_json(), sort_keys=True), r


@pytest.mark.parametrize("settings", [
    PlanSettings(ratio=0.5, importance="l2"),
    PlanSettings(ratio=0.3, importance="random", seed=7, global_ranking=True),
    PlanSettings(target_params=0.4, importance="lamp", round_to=2),
], ids=["l2", "random", "lamp-params"])
def test_same_inputs_same_plan_and_channels(settings, tmp_path):
    a, ra = _plan_json(settings)
    b, rb = _plan_json(settings)
    assert a == b
    assert ra.kept == rb.kept and ra.channels == rb.channels
    for (k, v), (k2, v2) in zip(ra.model.state_dict().items(), rb.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    # across a project save and reload: the same plan again, and the same pruned model
    m = small_model()
    dg = analyze_model(m, EX)
    p = proj.project_from(f"{FACTORY}:make", settings, result=ra, shape="2,1,8,8", model=m, dg=dg)
    path = str(tmp_path / "w.psproj")
    proj.save_project(path, p)
    back = proj.load_project(path)
    assert json.dumps(back.plan, sort_keys=True) == a
    assert back.plan_settings() == settings
    r2 = prune_model(m, EX, dg, back.plan_settings(), latency=False, verify=False)
    assert json.dumps(r2.plan.to_json(), sort_keys=True) == a
    r3 = proj.apply_plan(m, EX, dg, _plan(back.plan))
    assert proj.fingerprint(r3.model) == proj.fingerprint(ra.model) == back.result_fingerprint


def _plan(d):
    from core.prune.apply import PruningPlan
    return PruningPlan.from_json(d)


# ----------------------------------------------------------------------------- project files

def test_cli_project_restores_the_same_pruned_model(tmp_path, capsys):
    p = tmp_path / "work.psproj"
    rc = entry.main(["prune", f"{FACTORY}:make", "--trust", "--input-shape", "1,3,32,32", "--ratio", "0.4",
                     "--importance", "l1", "--no-latency", "--project", str(p), "-o",
                     str(tmp_path / "m.pt")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"project: {p}" in out
    d = json.loads(p.read_text())
    assert d["format"] == "prunestudio.project" and d["settings"]["ratio"] == 0.4
    assert d["model"]["spec"] == f"{FACTORY}:make" and d["inputs"]["shape"] == "1,3,32,32"
    assert d["plan"]["removed"] and d["result"]["report"]["after"]["params"] > 0
    back = proj.load_project(str(p))
    model, ex, dg, result = proj.restore(back, trust=True)
    assert proj.fingerprint(result.model) == d["result"]["fingerprint"]
    saved = torch.load(tmp_path / "m.pt", weights_only=False)
    for (k, v), (k2, v2) in zip(saved.state_dict().items(), result.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert result.verify.passed


def test_project_refuses_a_changed_model_and_damaged_files(tmp_path):
    m = small_model()
    dg = analyze_model(m, EX)
    r = prune_model(m, EX, dg, PlanSettings(ratio=0.5), latency=False, verify=False)
    p = proj.project_from(f"{FACTORY}:make", PlanSettings(ratio=0.5), result=r, shape="2,1,8,8",
                          model=m, dg=dg)
    path = tmp_path / "w.psproj"
    proj.save_project(str(path), p)
    with pytest.raises(Exception) as e:  # an existing project is not overwritten silently
        proj.save_project(str(path), p)
    assert str(e.value) == f"{path} already exists; pass --force (force=True) to overwrite it"
    from core.errors import LoadError
    with pytest.raises(LoadError) as e:
        proj.restore(proj.load_project(str(path)), trust=True)  # demo_factory:make is not this model
    assert str(e.value) == (f"the model {FACTORY}:make has changed since the project was saved "
                            f"(its weights differ); the saved plan may not fit it any more")
    bad = tmp_path / "bad.psproj"
    bad.write_text("{not json")
    with pytest.raises(LoadError, match=r"bad\.psproj is not a PruneStudio project file \(not JSON"):
        proj.load_project(str(bad))
    bad.write_text('{"format": "something else"}')
    with pytest.raises(LoadError, match=r"bad\.psproj is not a PruneStudio project file$"):
        proj.load_project(str(bad))


def test_a_cli_project_of_the_demo_without_an_input_shape_reopens(tmp_path, capsys):
    """The demo's own input was used but not recorded: the project said "the project has no
    example input shape" when reopened (CLI or window)."""
    p = tmp_path / "demo.psproj"
    rc = entry.main(["prune", "demo", "--ratio", "0.3", "--no-latency", "--project", str(p)])
    _, err = capsys.readouterr()
    assert rc == 0, err
    model, ex, dg, result = proj.restore(proj.load_project(str(p)))
    assert tuple(ex.args[0].shape) == (1, 3, 32, 32)
    assert result.verify.passed
