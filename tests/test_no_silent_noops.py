"""No silent no-ops (issue 11): a run that cannot do what was asked says so in one line (exit 2)
or with a ``warning:`` line, and never saves a broken model."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import main as entry  # noqa: E402
from core.errors import PruneStudioError  # noqa: E402

FACTORIES = os.path.join(ROOT, "tests", "models", "check_factories.py")
SMALL = f"{FACTORIES}:SmallNet"
SHAPE = ["--input-shape", "1,3,16,16"]
FAST = ["--no-latency", "--no-verify"]


def run(args, capsys):
    rc = entry.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def digits():
    from core.train.data import load_data
    return load_data("digits", batch_size=64, seed=0)


def test_training_stops_on_a_non_finite_loss(digits):
    from core.models.digits import digits_cnn
    from core.train.loop import TrainConfig, train
    with pytest.raises(PruneStudioError, match=r"^training diverged: the loss became (nan|inf) at "
                                               r"step \d+ \(epoch 1, batch \d+\); nothing was saved"):
        train(digits_cnn(8, seed=0), digits, TrainConfig(epochs=2, lr=1e30, max_batches=6))


def test_finetune_huge_lr_exits_2_and_saves_nothing(tmp_path, capsys):
    from core.cli.train import main
    f = tmp_path / "net.py"
    f.write_text("from core.models.digits import digits_cnn\ndef make():\n    return digits_cnn(8)\n")
    out, ck = tmp_path / "ft.pt", tmp_path / "ck"
    rc = main(["finetune", f"{f}:make", "--trust", "--data", "digits", "--epochs", "2", "--max-batches", "4",
               "--lr", "1e30", "-o", str(out), "--checkpoint", str(ck)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: training diverged: "), err
    assert len(err.splitlines()) == 1 and not out.exists()
    assert not (ck / "checkpoint.pt").exists()


def test_round_to_beyond_every_group_is_refused(capsys):
    rc, out, err = run(["prune", SMALL, "--trust", *SHAPE, *FAST, "--round-to", "100000"], capsys)
    assert rc == 2 and err == ("error: round-to 100000 leaves nothing to remove: kept channels must "
                               "be a multiple of it, and the widest prunable group has 16 "
                               "channels\n"), err


def test_a_target_not_reached_warns_with_what_was_reached(capsys):
    rc, out, err = run(["prune", "demo", "--no-latency", "--target-flops", "0.999", "--round-to", "1"],
                       capsys)  # exact counts: the figure below is round-to 1
    assert rc == 0
    assert err == ("warning: the FLOPs reduction target 99.9% was not reached: the pruned model has "
                   "99.4% fewer FLOPs (every prunable group is pruned as far as --max-group-ratio "
                   "allows)\n"), err


def test_a_plan_that_removes_nothing_warns(capsys):
    rc, out, err = run(["prune", SMALL, "--trust", *SHAPE, *FAST, "--ratio", "0.01"], capsys)
    assert rc == 0 and "0 channels removed" in out
    assert err.startswith("warning: nothing was removed: no prunable group allows removing "
                          "channels at these settings"), err


def test_a_target_reached_says_nothing(capsys):
    # round-to 1: with auto the demo's 16-32-channel groups step by 4-8 and land at 24 % (warned)
    rc, out, err = run(["prune", "demo", *FAST, "--target-flops", "0.3", "--round-to", "1"], capsys)
    assert rc == 0 and err == "", err


@pytest.mark.parametrize("argv", [["prune", f"{FACTORIES}:exits", "--trust", *SHAPE],
                                  ["finetune", f"{FACTORIES}:exits", "--trust", "--data", "digits"]])
def test_sys_exit_in_the_model_code_is_an_error(argv, capsys):
    rc, out, err = run(argv, capsys)
    assert rc == 2 and err == ("error: the run was stopped by a call to sys.exit(0) (in the model's "
                               "or the inputs' code?) before anything was written\n"), err


@pytest.mark.parametrize("device,line", [
    ("tpu9", "error: unknown device 'tpu9': use cpu, cuda or cuda:N"),
    ("meta", "error: device 'meta' is not available here: use cpu"),
])
def test_an_unknown_device_is_one_line(device, line, capsys):
    if torch.cuda.is_available():
        line = line.replace("use cpu", "use cpu, cuda or cuda:N") if device == "meta" else line
    rc, out, err = run(["prune", "demo", *FAST, "--device", device], capsys)
    assert rc == 2 and err == line + "\n", err


@pytest.fixture(scope="module")
def pstudio(tmp_path_factory):
    d = tmp_path_factory.mktemp("ps")
    p = d / "m.pstudio"
    assert entry.main(["prune", SMALL, "--trust", *SHAPE, *FAST, "-o", str(p)]) == 0
    return p


def _altered(pstudio, tmp_path, change):
    d = torch.load(pstudio, weights_only=True)
    change(d, tmp_path / "bad.pstudio")
    torch.save(d, tmp_path / "bad.pstudio")
    return tmp_path / "bad.pstudio"


def test_pstudio_with_a_negative_index(pstudio, tmp_path, capsys):
    def neg(d, _):
        d["kept"]["body.0.weight"][0][0] = -3
    bad = _altered(pstudio, tmp_path, neg)
    rc, out, err = run(["prune", str(bad), "--trust", *SHAPE, *FAST], capsys)
    assert rc == 2 and err.startswith(f"error: {bad}: the plan does not fit "), err
    assert "the plan's indices for body.0.weight dim 0 do not fit its shape (16, 3, 3, 3)" in err


def test_pstudio_naming_itself(pstudio, tmp_path, capsys):
    def self_ref(d, path):
        d["model_spec"] = str(path)
    bad = _altered(pstudio, tmp_path, self_ref)
    rc, out, err = run(["prune", str(bad), "--trust", *SHAPE, *FAST], capsys)
    assert rc == 2 and err.endswith(f"{bad} names itself (or a file that names it) as its original "
                                    f"model; a .pstudio must name the original architecture\n"), err
    assert "Recursion" not in err


def test_an_input_too_large_for_memory_is_refused_before_allocating(capsys, monkeypatch):
    monkeypatch.setenv("PRUNESTUDIO_AVAILABLE_MEMORY", str(20 * 2**30))
    rc, out, err = run(["prune", "demo", "--input-shape", "1,3,100000,100000"], capsys)
    assert rc == 2 and err == ("error: the input 1,3,100000,100000 (float32) takes 111.76 GB by "
                               "itself, but only 20.00 GB is available on cpu; use a smaller "
                               "--input-shape\n"), err


def test_activations_too_large_for_memory_are_refused(capsys, monkeypatch):
    monkeypatch.setenv("PRUNESTUDIO_AVAILABLE_MEMORY", str(50 * 2**20))
    rc, out, err = run(["prune", "demo", "--input-shape", "1,3,512,512", *FAST], capsys)
    assert rc == 2 and err == (
        "error: the input 1,3,512,512 (float32) needs about 67.0 MB for the input and activations "
        "(the largest: stem.0 output (1, 32, 512, 512), 32.0 MB), but only 50.0 MB is available "
        "on cpu; use a smaller --input-shape\n"), err
    monkeypatch.setenv("PRUNESTUDIO_AVAILABLE_MEMORY", str(2**30))
    rc, out, err = run(["prune", "demo", "--input-shape", "1,3,128,128", *FAST], capsys)
    assert rc == 0, err
