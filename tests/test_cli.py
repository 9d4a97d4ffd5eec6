"""The headless CLI: in-process ``main.main([...])`` and real ``python main.py`` subprocesses."""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import main as entry  # noqa: E402
from core.models.demo import demo_model  # noqa: E402
from core.io.sources import load_model  # noqa: E402

FACTORY = os.path.join(ROOT, "tests", "models", "demo_factory.py")
SPEC = f"{FACTORY}:make"
SHAPE = ["--input-shape", "1,3,32,32"]


def run(args, capsys):
    rc = entry.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _pyproc(args, cwd, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    out, rep = d / "pruned.pt", d / "report.json"
    rc = entry.main(["prune", SPEC, "--trust", *SHAPE, "--ratio", "0.5", "--importance", "l1", "-o", str(out),
                     "--report", str(rep)])
    return rc, out, rep


def test_prune_writes_a_loadable_smaller_model(pruned_run):
    rc, out, _ = pruned_run
    assert rc == 0 and out.exists()
    m = load_model(str(out), trust=True)
    ref = demo_model()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert m(x).shape == ref(x).shape == (1, 10)
    assert sum(p.numel() for p in m.parameters()) < sum(p.numel() for p in ref.parameters()) * 0.6


def test_report_has_the_fields(pruned_run):
    rc, _, rep = pruned_run
    r = json.loads(rep.read_text())
    for side in ("before", "after"):
        assert r[side]["params"] > 0 and r[side]["flops"] > 0
        assert r[side]["latency_ms"] is not None and r[side]["latency_ms"] > 0
    assert r["after"]["params"] < r["before"]["params"]
    assert r["after"]["flops"] < r["before"]["flops"]
    assert r["groups"] >= r["prunable_groups"] > 0
    assert r["channels_per_layer"]["stem.0"][0] == 32 and r["channels_per_layer"]["stem.0"][1] < 32
    for phase in ("load", "trace", "plan", "prune", "verify", "save", "total"):
        assert r["seconds"][phase] >= 0, phase
    assert r["verify"]["passed"] and r["verify"]["expected_exact"]
    assert r["settings"]["ratio"] == 0.5 and r["settings"]["importance"] == "l1"


def test_success_output_is_quiet_on_stderr_when_not_a_tty(tmp_path, capsys):
    rc, out, err = run(["prune", "demo", "--ratio", "0.3", "--no-latency", "--no-verify"], capsys)
    assert rc == 0 and err == ""
    assert "params:" in out and "FLOPs:" in out


def test_prune_to_portable_and_onnx(tmp_path, capsys):
    p, o = tmp_path / "m.pstudio", tmp_path / "m.onnx"
    rc, out, err = run(["prune", SPEC, "--trust", *SHAPE, "--target-flops", "0.4", "--global", "--round-to", "4",
                        "--no-latency", "-o", str(p)], capsys)
    assert rc == 0, err
    from core.io.portable import load_portable
    m = load_portable(str(p), trust=True)
    assert all(c.out_channels % 4 == 0 for c in m.modules() if isinstance(c, torch.nn.Conv2d)
               and c.groups == 1 and c.out_channels != 10)
    rc, out, err = run(["prune", SPEC, "--trust", *SHAPE, "--ratio", "0.3", "--no-latency", "-o", str(o)], capsys)
    assert rc == 0, err
    assert "onnxruntime vs torch max abs difference" in out
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.pstudio"]


def test_graph_json(tmp_path, capsys):
    j = tmp_path / "g.json"
    rc, out, err = run(["graph", SPEC, "--trust", *SHAPE, "--json", str(j)], capsys)
    assert rc == 0, err
    g = json.loads(j.read_text())
    assert g["nodes"] and g["edges"] and g["groups"]
    grp = next(x for x in g["groups"] if x["prunable_channels"] > 0)
    assert grp["channels"] > 0 and grp["members"]
    assert {"tensor", "dim", "index_map"} <= set(grp["members"][0])
    assert "groups:" in out


def test_verify_passes_and_says_exact(capsys):
    rc, out, err = run(["verify", SPEC, "--trust", *SHAPE, "--ratio", "0.3"], capsys)
    assert rc == 0, err
    assert "expected: exact" in out and "max abs difference" in out and "PASS" in out


def test_verify_mismatch_exits_nonzero(capsys, monkeypatch):
    import core.prune.verify as cv
    real = cv.verify_plan

    def tampered(*a, **k):
        rep = real(*a, **k)
        rep.passed, rep.max_abs_diff, rep.message = False, 0.5, "MISMATCH: max difference 0.5"
        return rep

    monkeypatch.setattr(cv, "verify_plan", tampered)
    rc, out, err = run(["verify", SPEC, "--trust", *SHAPE, "--ratio", "0.3"], capsys)
    assert rc == 1
    assert "max abs difference: 0.5" in out and "MISMATCH" in err
    assert len(err.strip().splitlines()) == 1


def _corrupt(tmp_path):
    p = tmp_path / "corrupt.pt"
    p.write_bytes(b"\x80\x02garbage that is not a checkpoint")
    return str(p)


def _pickled(tmp_path):
    p = tmp_path / "whole.pt"
    torch.save(demo_model(), p)
    return str(p)


BAD = {
    "ratio": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--ratio", "1.5"], "ratio must be in [0, 1), got 1.5"),
    "ignore": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--ignore", "no.such.layer"], "no.such.layer"),
    "missing": (lambda t: ["prune", str(t / "absent.pt"), *SHAPE], "file not found"),
    "missing_factory_file": (lambda t: ["prune", str(t / "absent.py") + ":make", "--trust", *SHAPE],
                             "file not found"),
    "corrupt": (lambda t: ["prune", _corrupt(t), *SHAPE], "corrupt.pt"),
    "pickled": (lambda t: ["prune", _pickled(t), *SHAPE], "--trust"),
    "shape": (lambda t: ["prune", SPEC, "--trust", "--input-shape", "1,5,32,32"], "forward failed"),
    "bad_shape_text": (lambda t: ["prune", SPEC, "--trust", "--input-shape", "1,three"], "input shape"),
    "no_shape": (lambda t: ["prune", SPEC, "--trust"], "--input-shape"),
    "suffix": (lambda t: ["prune", SPEC, "--trust", *SHAPE], "unknown suffix"),
    "factory_raises": (lambda t: ["prune", f"{FACTORY}:broken", "--trust", *SHAPE], "factory exploded"),
    "unknown_option": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--frobnicate"], "--frobnicate"),
    "two_targets": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--ratio", "0.2", "--target-flops", "0.2"],
                    "not allowed with"),
    "unreachable": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--target-params", "0.9",
                               "--max-group-ratio", "0.1"], "cannot be reached"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_line_and_no_file(tmp_path, capsys, case):
    make, needle = BAD[case]
    args = make(tmp_path)
    before = set(os.listdir(tmp_path))
    out_file = tmp_path / ("out.txt" if case == "suffix" else "out.pt")
    rc, out, err = run([*args, "-o", str(out_file), "--report", str(tmp_path / "r.json")], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0]
    assert set(os.listdir(tmp_path)) == before  # no output, no report, no temp file


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu(tmp_path, capsys):
    rc, out, err = run(["prune", SPEC, "--trust", *SHAPE, "--device", "cuda", "-o", str(tmp_path / "o.pt")], capsys)
    assert rc == 2 and err.count("\n") == 1 and "CUDA" in err
    assert os.listdir(tmp_path) == []


def test_existing_output_needs_force(tmp_path, capsys):
    o = tmp_path / "o.pt"
    o.write_bytes(b"keep me")
    rc, out, err = run(["prune", SPEC, "--trust", *SHAPE, "--no-latency", "-o", str(o)], capsys)
    assert rc == 2 and "already exists" in err and o.read_bytes() == b"keep me"
    rc, out, err = run(["prune", SPEC, "--trust", *SHAPE, "--no-latency", "-o", str(o), "--force"], capsys)
    assert rc == 0 and o.read_bytes() != b"keep me"


def test_refuses_to_write_over_the_input(tmp_path, capsys):
    src = _pickled(tmp_path)
    before = open(src, "rb").read()
    rc, out, err = run(["prune", src, "--trust", *SHAPE, "-o", src, "--force"], capsys)
    assert rc == 2 and "input file" in err
    assert open(src, "rb").read() == before


def test_trusted_pickled_model_prunes(tmp_path, capsys):
    src = _pickled(tmp_path)
    rc, out, err = run(["prune", src, "--trust", *SHAPE, "--no-latency", "-o",
                        str(tmp_path / "o.pt")], capsys)
    assert rc == 0, err


def test_inputs_function(tmp_path, capsys):
    rc, out, err = run(["prune", SPEC, "--trust", "--inputs", f"{FACTORY}:inputs", "--no-latency"], capsys)
    assert rc == 0, err
    assert "(2, 3, 32, 32)" in out


def test_help_in_process(capsys):
    rc, out, err = run(["--help"], capsys)
    assert rc == 0 and "prune" in out and "graph" in out and "verify" in out


def test_subprocess_prune_resnet18(tmp_path):
    out = tmp_path / "r18.pt"
    p = _pyproc(["prune", "torchvision:resnet18", "--input-shape", "1,3,64,64", "--ratio", "0.5",
                 "--no-latency", "-o", str(out), "--report", str(tmp_path / "r.json")], tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""  # no progress bar when stderr is not a terminal
    assert "verify: exact" in p.stdout
    m = load_model(str(out), trust=True)
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["after"]["params"] < 0.5 * r["before"]["params"]


def test_subprocess_error_and_help(tmp_path):
    p = _pyproc(["prune", "torchvision:resnet18", "--input-shape", "1,3,64,64", "--ratio", "1.5",
                 "-o", str(tmp_path / "x.pt")], tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["error: ratio must be in [0, 1), got 1.5"]
    assert os.listdir(tmp_path) == []
    h = _pyproc(["--help"], tmp_path)
    assert h.returncode == 0 and "usage:" in h.stdout and "--ratio" not in h.stderr


def test_help_and_usage_errors_answer_before_torch_is_imported(tmp_path):
    """Parsing and help import no torch (seconds to load): only a running command does."""
    code = ("import sys, main\n"
            "rc = [main.main(['--help']), main.main(['frobnicate'])]\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "sys.exit(0 if rc == [0, 2] else 1)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "output (-o) by suffix:" in p.stdout and "invalid choice" in p.stderr
