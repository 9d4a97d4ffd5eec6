"""core.io writers (torchfile, portable, onnx, atomic): whole-model and portable round trips, ONNX
export, atomic writes."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.models.demo import demo_model  # noqa: E402
from core.errors import LoadError, PruneStudioError  # noqa: E402
from core.trace.inputs import make_inputs  # noqa: E402
from core.io.sources import load_model  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402
from core.io.atomic import OutputExistsError  # noqa: E402
from core.io.onnx.export import export_onnx  # noqa: E402
from core.io.portable import load_portable, read_portable, save_portable  # noqa: E402
from core.io.torchfile import save_whole  # noqa: E402

FACTORY = os.path.join(ROOT, "tests", "models", "demo_factory.py")
SPEC = f"{FACTORY}:make"


@pytest.fixture(scope="module")
def pruned():
    model = load_model(SPEC, trust=True)
    ex = make_inputs("1,3,32,32")
    dg = analyze_model(model, ex)
    res = prune_model(model, ex, dg, PlanSettings(ratio=0.4, importance="l1"), latency=False)
    assert res.plan.n_removed > 0
    return model, ex, res


def _listing(folder):
    return sorted(os.listdir(folder))


def test_whole_roundtrip(tmp_path, pruned):
    _, ex, res = pruned
    p = tmp_path / "m.pt"
    save_whole(res.model, str(p))
    with pytest.raises(LoadError, match="pickled code"):
        load_model(str(p))
    back = load_model(str(p), trust=True)
    with torch.no_grad():
        assert torch.equal(ex.call(back), ex.call(res.model))
    assert _listing(tmp_path) == ["m.pt"]


def test_portable_roundtrip_rebuilds_from_spec(tmp_path, pruned):
    _, ex, res = pruned
    p = tmp_path / "m.pstudio"
    save_portable(str(p), SPEC, res.kept, res.model.state_dict(), plan=res.plan, trust=True)
    # no pickled code: the safe loader reads it
    d = torch.load(p, weights_only=True)
    assert d["format"] == "prunestudio.portable" and d["kept"] and d["model_spec"].endswith(":make")
    back = load_portable(str(p), trust=True)
    with torch.no_grad():
        assert torch.equal(ex.call(back), ex.call(res.model))
    assert back.stem[0].out_channels == res.model.stem[0].out_channels < 32
    # the portable file is a MODEL spec of its own
    again = load_model(str(p), trust=True)
    assert sum(t.numel() for t in again.parameters()) == sum(t.numel() for t in res.model.parameters())


def test_portable_torchvision_roundtrip(tmp_path):
    import torchvision
    model = torchvision.models.resnet18().eval()
    ex = make_inputs("1,3,64,64")
    dg = analyze_model(model, ex)
    res = prune_model(model, ex, dg, PlanSettings(ratio=0.3, global_ranking=True), latency=False)
    p = tmp_path / "r18.pstudio"
    save_portable(str(p), "torchvision:resnet18", res.kept, res.model.state_dict())
    back = load_portable(str(p), trust=True)
    with torch.no_grad():
        assert torch.equal(ex.call(back), ex.call(res.model))


def test_portable_with_wrong_plan_names_the_problem(tmp_path, pruned):
    _, _, res = pruned
    p = tmp_path / "bad.pstudio"
    kept = {"no_such_layer.weight": {0: [0, 1]}}
    with pytest.raises(PruneStudioError, match="no_such_layer"):
        save_portable(str(p), SPEC, kept, res.model.state_dict(), trust=True)
    assert _listing(tmp_path) == []


def test_read_portable_rejects_other_files(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save({"a": torch.zeros(1)}, p)
    with pytest.raises(LoadError, match="not a PruneStudio portable file"):
        read_portable(str(p))


def test_onnx_export_matches_onnxruntime(tmp_path, pruned):
    _, ex, res = pruned
    p = tmp_path / "m.onnx"
    diff = export_onnx(res.model, ex, str(p))
    assert diff < 1e-4
    import onnxruntime as ort
    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: ex.args[0].numpy()})[0]
    with torch.no_grad():
        ref = ex.call(res.model).numpy()
    assert out.shape == ref.shape and abs(out - ref).max() < 1e-4
    assert _listing(tmp_path) == ["m.onnx"]  # self-contained: no external data, no temp file


def test_existing_file_is_not_overwritten_without_force(tmp_path, pruned):
    _, _, res = pruned
    p = tmp_path / "m.pt"
    p.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        save_whole(res.model, str(p))
    assert isinstance(OutputExistsError("x"), FileExistsError)
    assert p.read_bytes() == b"precious"
    with pytest.raises(OutputExistsError):
        save_portable(str(p), SPEC, res.kept, res.model.state_dict(), trust=True)
    assert p.read_bytes() == b"precious"
    save_whole(res.model, str(p), force=True)
    assert p.read_bytes() != b"precious"
    assert _listing(tmp_path) == ["m.pt"]


def test_never_writes_over_the_input_model(tmp_path, pruned):
    _, _, res = pruned
    src = tmp_path / "in.pt"
    torch.save(demo_model(), src)
    before = src.read_bytes()
    with pytest.raises(PruneStudioError, match="input file"):
        save_whole(res.model, str(src), force=True, source=str(src))
    assert src.read_bytes() == before


def test_failed_export_leaves_no_file(tmp_path, pruned, monkeypatch):
    _, ex, res = pruned

    def broken_export(*a, **k):
        raise RuntimeError("exporter blew up")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(PruneStudioError, match="exporter blew up"):
        export_onnx(res.model, ex, str(tmp_path / "m.onnx"))
    assert _listing(tmp_path) == []


def test_unrunnable_onnx_file_is_not_kept(tmp_path, pruned, monkeypatch):
    _, ex, res = pruned

    def garbage_export(model, args, f, **k):
        with open(f, "wb") as fh:
            fh.write(b"not an onnx graph")

    monkeypatch.setattr(torch.onnx, "export", garbage_export)
    with pytest.raises(PruneStudioError, match="onnxruntime"):
        export_onnx(res.model, ex, str(tmp_path / "m.onnx"))
    assert _listing(tmp_path) == []


def test_missing_output_folder(tmp_path, pruned):
    _, _, res = pruned
    with pytest.raises(PruneStudioError, match="does not exist"):
        save_whole(res.model, str(tmp_path / "nope" / "m.pt"))
