"""Accuracy side: data, evaluation, group-sparsity regulariser, training loops, sensitivity, CLI."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from core.train.data import load_data
from core.errors import Cancelled, LoadError
from core.train.evaluate import evaluate, load_loss_fn
from core.pipeline import analyze_model, prune_model
from core.plan.planner import PlanSettings, make_plan
from core.train.sensitivity import group_sensitivity, ratios_from_sensitivity
from core.train.sparse import GroupSparsity
from core.models.digits import digits_cnn
from core.train.loop import TrainConfig, iterative_prune, sparse_train, train


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster than 2 threads on a busy 2-core machine
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    return load_data("digits", batch_size=64, seed=0)


@pytest.fixture(scope="module")
def trained(data, one_thread):
    r = train(digits_cnn(16, seed=0), data, TrainConfig(epochs=4, lr=0.05))
    ex = data.example_input(1)
    return r.model, analyze_model(r.model, ex), ex


def _params(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_digits_split_is_deterministic_and_real(data):
    assert len(data.train_set) + len(data.val_set) == 1797
    assert data.input_shape == "1,1,8,8"
    again = load_data("digits", seed=0)
    assert list(again.val_set.indices) == list(data.val_set.indices)
    assert list(load_data("digits", seed=1).val_set.indices) != list(data.val_set.indices)


def test_data_errors_name_the_culprit(tmp_path):
    with pytest.raises(LoadError, match="nope_folder"):
        load_data(str(tmp_path / "nope_folder"))
    (tmp_path / "imgs").mkdir()
    with pytest.raises(LoadError, match="no class sub-folders"):
        load_data(str(tmp_path / "imgs"))
    (tmp_path / "imgs" / "cat").mkdir()
    with pytest.raises(LoadError, match="cat"):
        load_data(str(tmp_path / "imgs"))
    with pytest.raises(LoadError, match="batch size"):
        load_data("digits", batch_size=0)
    with pytest.raises(LoadError, match="digits@"):
        load_data("digits@abc")
    f = tmp_path / "ds.py"
    f.write_text("def make():\n    return 42\n")
    with pytest.raises(LoadError, match="ds.py:make returned int|returned int"):
        load_data(f"{f}:make", trust=True)


def test_image_folder_and_factory(tmp_path):
    from PIL import Image
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    d = load_data(str(tmp_path / "imgs"), batch_size=4, val_fraction=0.2, image_size=16)
    assert d.num_classes == 2 and len(d.val_set) == 2
    x, y = next(iter(d.train_loader()))
    assert x.shape[1:] == (3, 16, 16)
    f = tmp_path / "fac.py"
    f.write_text("import torch\nfrom torch.utils.data import TensorDataset\n"
                 "def make():\n    return TensorDataset(torch.randn(20, 3), torch.randn(20, 2))\n"
                 "def loss(out, y):\n    return ((out - y) ** 2).mean()\n")
    d = load_data(f"{f}:make", trust=True, batch_size=5, val_fraction=0.25)
    assert len(d.val_set) == 5
    r = evaluate(torch.nn.Linear(3, 2), d.val_loader(), load_loss_fn(f"{f}:loss", True))
    assert r.top1 is None and r.loss > 0 and r.samples == 5


def test_evaluate_top1_top5(trained, data):
    model = trained[0]
    r = evaluate(model, data.val_loader())
    assert 0.9 < r.top1 <= r.top5 <= 1.0
    assert r.samples == len(data.val_set)
    rnd = evaluate(digits_cnn(16, seed=3), data.val_loader())
    assert rnd.top1 < 0.5 and rnd.top5 < 0.9 and rnd.loss > r.loss


def test_regulariser_pushes_low_importance_channels_down(trained):
    model, dg, _ = trained
    import copy
    m = copy.deepcopy(model)
    reg = GroupSparsity(m, dg, lam=1.0, alpha=4.0, schedule="constant")
    gid = reg.groups[0][0]
    before = reg.channel_norms()[gid]
    low, high = int(np.argmin(before)), int(np.argmax(before))
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    for _ in range(10):
        opt.zero_grad()
        reg.penalty().backward()
        opt.step()
    after = reg.channel_norms()[gid]
    assert after[low] < before[low] * 0.9
    # the least important channel shrinks by a larger factor than the most important one
    assert after[low] / before[low] < after[high] / before[high]
    # the original model is untouched by a regulariser built on a copy
    assert GroupSparsity(model, dg).channel_norms()[gid][low] == pytest.approx(before[low])


def test_sparse_training_increases_group_sparsity(trained, data):
    model, dg, _ = trained
    s0 = GroupSparsity(model, dg).sparsity()
    r = sparse_train(model, data, dg, TrainConfig(epochs=3, lr=0.05), lam=0.01)
    assert r.history[-1]["sparsity"] > s0 + 0.1
    assert r.history[-1]["sparsity"] >= r.history[0]["sparsity"]


def test_finetune_recovers_pruned_accuracy(trained, data):
    model, dg, ex = trained
    res = prune_model(model, ex, dg, PlanSettings(target_flops=0.5), latency=False)
    assert res.after.flops / res.before.flops < 0.6
    post = evaluate(res.model, data.val_loader()).top1
    ft = train(res.model, data, TrainConfig(epochs=1, lr=0.01), teacher=model)
    assert ft.final.top1 > post + 0.2
    assert ft.final.top1 > 0.85


def test_checkpoint_resume_continues_identically(trained, data, tmp_path):
    model = trained[0]
    cfg = TrainConfig(epochs=2, lr=0.02, max_batches=6)
    full = train(model, data, cfg)
    ck = str(tmp_path / "ck")
    stop = {"now": False}
    with pytest.raises(Cancelled):
        train(model, data, TrainConfig(epochs=2, lr=0.02, max_batches=6, checkpoint_dir=ck),
              on_epoch=lambda rec: stop.update(now=True), should_stop=lambda: stop["now"])
    state = torch.load(os.path.join(ck, "checkpoint.pt"), weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    resumed = train(model, data, TrainConfig(epochs=2, lr=0.02, max_batches=6, checkpoint_dir=ck,
                                             resume=True))
    assert resumed.resumed_from == 1 and len(resumed.history) == 2
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    assert torch.load(os.path.join(ck, "checkpoint.pt"), weights_only=True)["epoch"] == 2


def test_cancel_raises_and_leaves_model_unchanged(trained, data):
    model = trained[0]
    before = _params(model)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        train(model, data, TrainConfig(epochs=2, lr=0.5), should_stop=stop)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_sensitivity_and_ratios(trained, data):
    model, dg, _ = trained
    res = group_sensitivity(model, dg, data.val_loader(), ratios=(0.5, 0.75), max_batches=3)
    assert {g.gid for g in res.groups} == {g.id for g in dg.prunable_groups}
    for g in res.groups:
        assert len(g.deltas) == 2 and all(np.isfinite(g.deltas))
    assert any(g.score > 0 for g in res.groups)
    ov = ratios_from_sensitivity(res, dg, mean_ratio=0.4)
    by_score = sorted(res.groups, key=lambda g: g.score)
    least, most = by_score[0], by_score[-1]
    assert ov[least.root] > ov[most.root]
    plan = make_plan(dg, model, PlanSettings(overrides=ov))
    n_least = len(plan.removed.get(least.gid, []))
    n_most = len(plan.removed.get(most.gid, []))
    assert n_least / least.channels > n_most / most.channels


def test_iterative_pruning_reaches_target(trained, data):
    model, _, ex = trained
    r = iterative_prune(model, data, PlanSettings(target_flops=0.5), steps=2,
                        config=TrainConfig(epochs=1, lr=0.01, max_batches=8), inputs=ex)
    assert len(r.steps) == 2
    assert r.steps[0]["flops_fraction"] > r.steps[1]["flops_fraction"]
    assert abs(r.steps[-1]["flops_fraction"] - 0.5) < 0.08
    # fine-tuning recovers accuracy lost by the prune step (one short epoch: not all of it)
    last = r.steps[-1]
    assert last["finetuned"]["top1"] > max(last["pruned"]["top1"], 0.6)
    # kept indices compose to the original tensors' numbering
    w = dict(model.named_parameters())["stem.0.weight"]
    k = r.kept["stem.0.weight"][0]
    assert len(k) == dict(r.model.named_parameters())["stem.0.weight"].shape[0]
    assert max(k) < w.shape[0]


def test_cli_training_commands(tmp_path, capsys):
    from core.cli.train import main
    f = tmp_path / "net.py"
    f.write_text("from core.models.digits import digits_cnn\ndef make():\n    return digits_cnn(8)\n")
    out = tmp_path / "ft.pt"
    rc = main(["finetune", f"{f}:make", "--trust", "--data", "digits", "--epochs", "1", "--max-batches", "3",
               "--target-flops", "0.4", "--distill", "-o", str(out), "--report", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    assert out.exists() and (tmp_path / "r.json").exists()
    assert "FLOPs kept" in capsys.readouterr().out
    rc = main(["sparse-train", f"{f}:make", "--trust", "--data", "digits", "--epochs", "1", "--max-batches", "3",
               "--finetune-epochs", "1", "--ratio", "0.3", "-o", str(tmp_path / "sp.pstudio")])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "sp.pstudio").exists()
    from core.io.portable import load_portable
    m = load_portable(str(tmp_path / "sp.pstudio"), trust=True)
    assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    capsys.readouterr()
    assert main(["evaluate", f"{f}:make", "--trust", "--data", "digits"]) == 0
    assert "top-1" in capsys.readouterr().out
    assert main(["sensitivity", f"{f}:make", "--trust", "--data", "digits", "--ratios", "0.5",
                 "--max-batches", "2"]) == 0
    rc = main(["finetune", f"{f}:make", "--trust", "--data", str(tmp_path / "missing_dir")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "missing_dir" in err and len(err.splitlines()) == 1
    rc = main(["finetune", f"{f}:make", "--trust", "--data", "digits", "--resume"])
    assert rc == 2 and "checkpoint" in capsys.readouterr().err
