"""Bad-input matrix for the CLI: every case exits 2 with exactly one line naming the problem (the
layer, file or value at fault) and leaves no output, report, project or temporary file behind."""
import os
import re
import sys

import pytest
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import main as entry  # noqa: E402
from helpers import BAD_FORWARD_SRC  # noqa: E402
from core.models.demo import demo_model  # noqa: E402

FACTORY = os.path.join(ROOT, "tests", "models", "demo_factory.py")
SPEC = f"{FACTORY}:make"
SHAPE = ["--input-shape", "1,3,32,32"]
FAST = ["--no-latency", "--no-verify"]


class _Evil:
    """Unpickling this runs a shell command (it would create a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _files(t):
    """Create the bad inputs in t (a folder of its own, not the output folder)."""
    t.mkdir(exist_ok=True)
    whole = t / "whole.pt"
    torch.save(demo_model(), whole)
    data = whole.read_bytes()
    (t / "truncated.pt").write_bytes(data[: len(data) // 2])
    (t / "corrupt.pt").write_bytes(b"\x80\x02garbage that is not a checkpoint")
    (t / "empty.pt").write_bytes(b"")
    (t / "notes.pt").write_text("these are my notes, not a model\n")
    torch.save([1, 2, 3], t / "list.pt")
    torch.save(demo_model().state_dict(), t / "weights_only.pt")
    torch.save({"x": _Evil(str(t / "PWNED"))}, t / "evil.pt")
    sd = demo_model().state_dict()
    sd["stem.0.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(sd, t / "pruned_sd.pt")
    torch.save(nn.Linear(3, 4).state_dict(), t / "other_sd.pt")
    (t / "badfwd.py").write_text(BAD_FORWARD_SRC)
    return t


# case -> (argv from the inputs folder t, the exact error line (a regex when it starts with ^))
CASES = {
    "truncated_file": (lambda t: ["prune", str(t / "truncated.pt"), *SHAPE],
                       lambda t: f"error: {t / 'truncated.pt'} is not a readable PyTorch file "
                                 f"(corrupt or truncated?): the zip archive is truncated or damaged"),
    "corrupt_file": (lambda t: ["prune", str(t / "corrupt.pt"), *SHAPE],
                     lambda t: f"error: {t / 'corrupt.pt'} is not a readable PyTorch file (corrupt "
                               f"or truncated?): the data is not a PyTorch/pickle file"),
    "empty_file": (lambda t: ["prune", str(t / "empty.pt"), *SHAPE],
                   lambda t: f"error: {t / 'empty.pt'} is empty (0 bytes)"),
    "missing_file": (lambda t: ["prune", str(t / "absent.pt"), *SHAPE],
                     lambda t: f"error: file not found: {t / 'absent.pt'}"),
    "text_file_not_a_model": (lambda t: ["prune", str(t / "notes.pt"), *SHAPE],
                              lambda t: f"error: {t / 'notes.pt'} is not a readable PyTorch file "
                                        f"(corrupt or truncated?): the data is not a "
                                        f"PyTorch/pickle file"),
    "list_not_a_model": (lambda t: ["prune", str(t / "list.pt"), *SHAPE],
                         lambda t: f"error: {t / 'list.pt'} holds a list, not a torch.nn.Module or "
                                   f"a state dict"),
    "state_dict_as_model": (lambda t: ["prune", str(t / "weights_only.pt"), *SHAPE],
                            lambda t: f"error: {t / 'weights_only.pt'} holds only weights (a state "
                                      f"dict of 46 tensors), not a model: give the architecture "
                                      f"as MODEL (torchvision:NAME or file.py:factory) and this "
                                      f"file with --weights"),
    "state_dict_wrong_shapes": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--weights",
                                           str(t / "pruned_sd.pt")],
                                lambda t: f"error: the weights in {t / 'pruned_sd.pt'} do not fit "
                                          f"{SPEC}: shape mismatches: stem.0.weight (16, 3, 3, 3) "
                                          f"in the file vs (32, 3, 3, 3) in the model; was it "
                                          f"saved from a pruned model? keep pruned models in the "
                                          f"portable .pstudio form"),
    "state_dict_other_architecture": (
        lambda t: ["prune", SPEC, "--trust", *SHAPE, "--weights", str(t / "other_sd.pt")],
        lambda t: f"error: the weights in {t / 'other_sd.pt'} do not fit {SPEC}: missing keys: "
                  f"stem.0.weight, stem.1.weight, stem.1.bias, stem.1.running_mean, "
                  f"stem.1.running_var (+41 more); unexpected keys: weight, bias"),
    "pickle_that_runs_code": (lambda t: ["prune", str(t / "evil.pt"), *SHAPE],
                              lambda t: f"error: {t / 'evil.pt'} contains pickled code (it "
                                        f"references posix.system), which runs when loaded; load "
                                        f"it only if you trust its source: pass --trust "
                                        f"(trust=True)"),
    "pickled_model_untrusted": (lambda t: ["prune", str(t / "whole.pt"), *SHAPE],
                                lambda t: f"error: {t / 'whole.pt'} contains pickled code (it "
                                          f"references core.models.demo.DemoNet), which runs when "
                                          f"loaded; load it only if you trust its source: pass "
                                          f"--trust (trust=True)"),
    "factory_raises": (lambda t: ["prune", f"{FACTORY}:broken", "--trust", *SHAPE],
                       lambda t: f"error: {FACTORY}:broken() raised RuntimeError: factory "
                                 f"exploded on purpose"),
    "factory_missing": (lambda t: ["prune", f"{FACTORY}:nope", "--trust", *SHAPE],
                        lambda t: f"error: {FACTORY} has no model factory 'nope' (it defines: "
                                  f"broken, inputs, make, not_a_model)"),
    "factory_not_a_module": (lambda t: ["prune", f"{FACTORY}:not_a_model", "--trust", *SHAPE],
                             lambda t: f"error: {FACTORY}:not_a_model() returned int, not a "
                                       f"torch.nn.Module"),
    "input_wrong_channels": (lambda t: ["prune", SPEC, "--trust", "--input-shape", "1,5,32,32"],
                             lambda t: "error: the model's forward failed in layer 'stem.0' "
                                       "(Conv2d) on the example inputs ((1, 5, 32, 32) float32): "
                                       "RuntimeError: Given groups=1, weight of size [32, 3, 3, 3], "
                                       "expected input[1, 5, 32, 32] to have 3 channels, but got 5 "
                                       "channels instead"),
    "input_wrong_dtype_int": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--input-dtype", "int64"],
                              lambda t: "error: the model's forward failed in layer 'stem.0' "
                                        "(Conv2d) on the example inputs ((1, 3, 32, 32) int64): "
                                        "RuntimeError: expected scalar type Long but found Float; "
                                        "the example input is int64 but the model's weights are "
                                        "float32: check --input-dtype"),
    "input_wrong_dtype_half": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--input-dtype", "float16"],
                               # torch's own message differs between CPU kernels (oneDNN or not)
                               lambda t: r"^error: the model's forward failed in layer 'stem\.0' "
                                         r"\(Conv2d\) on the example inputs \(\(1, 3, 32, 32\) "
                                         r"float16\): RuntimeError: [^;]*(Half|float)[^;]*; "
                                         r"the example input is float16 but the model's weights "
                                         r"are float32: check --input-dtype"),
    "input_shape_text": (lambda t: ["prune", SPEC, "--trust", "--input-shape", "1,three"],
                         lambda t: "error: input shape '1,three' is not a comma-separated list of "
                                   "integers"),
    "input_missing": (lambda t: ["prune", SPEC, "--trust"],
                      lambda t: "error: the example input is missing: give --input-shape (e.g. "
                                "1,3,224,224) or --inputs file.py:function"),
    "forward_fails": (lambda t: ["prune", f"{t / 'badfwd.py'}:make", "--trust", *SHAPE],
                      lambda t: "error: the model's forward failed in layer 'fc' (Linear) on the "
                                "example inputs ((1, 3, 32, 32) float32): RuntimeError: mat1 and "
                                "mat2 shapes cannot be multiplied (1x7200 and 100x10)"),
    "ratio_above_one": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--ratio", "1.5"],
                        lambda t: "error: ratio must be in [0, 1), got 1.5"),
    "ratio_one": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--ratio", "1"],
                  lambda t: "error: ratio must be in [0, 1), got 1.0"),
    "ratio_negative": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--ratio", "-0.1"],
                       lambda t: "error: ratio must be in [0, 1), got -0.1"),
    "ratio_nan": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--ratio", "nan"],
                  lambda t: "error: ratio must be in [0, 1), got nan"),
    "ratio_not_a_number": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--ratio", "half"],
                           lambda t: "error: prunestudio prune: argument --ratio: 'half' is not a "
                                     "number"),
    "flops_target_one": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--target-flops", "1.0"],
                         lambda t: "error: target flops must be in [0, 1), got 1.0"),
    "target_unreachable": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--target-params", "0.9",
                                      "--max-group-ratio", "0.1"],
                           lambda t: "^error: the parameter reduction target 90% cannot be reached: "
                                     r"pruning every prunable group as far as allowed removes "
                                     r"\d+\.\d%"),
    "ignore_unknown_layer": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--ignore", "stem.9"],
                             lambda t: "error: --ignore: layer 'stem.9' does not exist in the "
                                       "model (did you mean stem.2, stem.1, stem.0?)"),
    "cuda_absent": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--device", "cuda"],
                    lambda t: "error: device 'cuda' was asked for, but no CUDA GPU is available "
                              "here"),
    "too_large_for_memory": (
        lambda t: ["prune", SPEC, "--trust", *SHAPE],
        lambda t: f"error: {SPEC} is too large for this machine's memory: its parameters take "
                  f"about 1.1 MB and analysing and pruning it needs about 3.3 MB, but only "
                  f"1.0 MB is available; analyse its structure on the meta device instead (no "
                  f"weights are loaded): python main.py graph {SPEC} --input-shape 1,3,32,32 "
                  f"--trust --meta"),
    "project_suffix": (lambda t: ["prune", SPEC, "--trust", *SHAPE, "--project", str(t / "p.json")],
                       lambda t: f"error: --project {t / 'p.json'}: the project file must end in "
                                 f".psproj"),
}


@pytest.fixture(scope="module")
def inputs_dir(tmp_path_factory):
    return _files(tmp_path_factory.mktemp("bad_inputs"))


def run(args, capsys):
    rc = entry.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_exact_line_and_no_files(case, inputs_dir, tmp_path, capsys, monkeypatch):
    if case == "cuda_absent" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    if case == "too_large_for_memory":
        monkeypatch.setenv("PRUNESTUDIO_AVAILABLE_MEMORY", str(2**20))
    make, expected = CASES[case]
    args = make(inputs_dir)
    inputs_before = sorted(os.listdir(inputs_dir))
    outs = [] if case == "project_suffix" else ["--project", str(tmp_path / "work.psproj")]
    rc, out, err = run([*args, "-o", str(tmp_path / "out.pt"), "--report",
                        str(tmp_path / "r.json"), *outs], capsys)
    assert rc == 2, (out, err)
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    want = expected(inputs_dir)
    if want.startswith("^"):
        assert re.fullmatch(want[1:], lines[0]), lines[0]
    else:
        assert lines[0] == want
    assert os.listdir(tmp_path) == []  # no output, report, project or temporary file
    assert sorted(os.listdir(inputs_dir)) == inputs_before  # no marker: the pickle never ran


def test_the_offered_meta_analysis_works_without_memory(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNESTUDIO_AVAILABLE_MEMORY", str(2**20))
    j = tmp_path / "g.json"
    rc, out, err = run(["graph", SPEC, "--trust", *SHAPE, "--meta", "--json", str(j)], capsys)
    assert rc == 0, err
    assert "meta device: structure only" in out and "prunable" in out and j.exists()
    # the meta analysis finds the same groups as the real one
    monkeypatch.delenv("PRUNESTUDIO_AVAILABLE_MEMORY")
    rc2, out2, err2 = run(["graph", SPEC, "--trust", *SHAPE], capsys)
    assert rc2 == 0, err2
    pick = lambda o: [ln for ln in o.splitlines() if ln.startswith(("groups:", "  #"))]  # noqa: E731
    assert pick(out) == pick(out2)


def test_trusted_evil_pickle_is_only_run_with_trust(inputs_dir, tmp_path, capsys):
    # the refusal above did not run it; with --trust the user takes responsibility (it runs, and
    # the result is still refused because it is not a model)
    rc, out, err = run(["prune", str(inputs_dir / "evil.pt"), "--trust", *SHAPE], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert err.strip() == (f"error: {inputs_dir / 'evil.pt'} holds a dict, not a torch.nn.Module "
                           f"or a state dict")
    os.remove(inputs_dir / "PWNED")


def test_existing_project_and_report_need_force(tmp_path, capsys):
    p, r = tmp_path / "work.psproj", tmp_path / "r.json"
    p.write_text("keep")
    r.write_text("keep too")
    rc, out, err = run(["prune", SPEC, "--trust", *SHAPE, *FAST, "--report", str(r), "--project", str(p)],
                       capsys)
    assert rc == 2 and err.strip().splitlines() == [
        f"error: {r} already exists; pass --force (force=True) to overwrite it"]
    assert p.read_text() == "keep" and r.read_text() == "keep too"
    r.unlink()
    rc, out, err = run(["prune", SPEC, "--trust", *SHAPE, *FAST, "--report", str(r), "--project", str(p)],
                       capsys)
    assert rc == 2 and err.strip() == (f"error: {p} already exists; pass --force (force=True) to "
                                       f"overwrite it")
    assert p.read_text() == "keep" and not r.exists()
    assert sorted(os.listdir(tmp_path)) == ["work.psproj"]


# Cases that fail AFTER a write has started: -o is written (and checked) when the report or the
# project cannot be written; nothing may be left in either folder, temporary files included.
LATE = {"report_disk_full": ("--report", "r.json", "size=64k", "No space left on device"),
        "project_disk_full": ("--project", "w.psproj", "size=64k", "No space left on device"),
        "project_read_only": ("--project", "w.psproj", "ro,size=64k", "Read-only file system")}


@pytest.mark.parametrize("case", sorted(LATE))
@pytest.mark.parametrize("suffix", [".pt", ".pstudio"])
def test_failing_after_a_write_started_leaves_no_files(case, suffix, tmp_path, capsys):
    from test_writes import fill, tmpfs
    flag, name, options, cause = LATE[case]
    out = tmp_path / "out"
    out.mkdir()
    with tmpfs(tmp_path / "bad", options) as bad:
        if "ro" not in options.split(","):
            fill(bad)
        before = sorted(os.listdir(bad))
        rc, o, err = run(["prune", SPEC, "--trust", *SHAPE, *FAST, "-o", str(out / f"m{suffix}"), flag,
                          str(bad / name)], capsys)
        assert rc == 2, (o, err)
        assert err.strip().splitlines() == [f"error: cannot write {bad / name}: {cause}"]
        assert os.listdir(out) == []  # no output, no temporary file
        assert sorted(os.listdir(bad)) == before
