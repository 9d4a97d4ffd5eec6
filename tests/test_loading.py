"""core.io.sources / core.io.inputs: model specs, the safe default for pickled files, state dicts,
input functions."""
import os
import sys

import pytest
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.models.demo import demo_model  # noqa: E402
from core.errors import LoadError  # noqa: E402
from core.io.inputs import load_inputs  # noqa: E402
from core.io.sources import load_model  # noqa: E402

FACTORY = os.path.join(ROOT, "tests", "models", "demo_factory.py")


def test_factory_spec_builds_the_model_in_eval_mode():
    m = load_model(f"{FACTORY}:make", trust=True)
    assert type(m).__name__ == "DemoNet" and not m.training
    ref = demo_model()
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ref.state_dict().values()))


def test_factory_that_raises_names_file_factory_and_exception():
    with pytest.raises(LoadError) as e:
        load_model(f"{FACTORY}:broken", trust=True)
    msg = str(e.value)
    assert "demo_factory.py" in msg and "broken" in msg and "factory exploded on purpose" in msg


def test_missing_factory_lists_what_the_file_defines():
    with pytest.raises(LoadError, match=r"no model factory 'nope'.*make"):
        load_model(f"{FACTORY}:nope", trust=True)


def test_factory_returning_a_non_module_is_refused():
    with pytest.raises(LoadError, match="returned int"):
        load_model(f"{FACTORY}:not_a_model", trust=True)


def test_factory_file_with_import_error_names_the_file(tmp_path):
    f = tmp_path / "bad_import.py"
    f.write_text("import no_such_module_xyz\n\ndef make():\n    pass\n")
    with pytest.raises(LoadError) as e:
        load_model(f"{f}:make", trust=True)
    assert "bad_import.py" in str(e.value) and "no_such_module_xyz" in str(e.value)


def test_factory_file_with_syntax_error(tmp_path):
    f = tmp_path / "syn.py"
    f.write_text("def make(:\n")
    with pytest.raises(LoadError, match=r"syn\.py has a syntax error at line 1"):
        load_model(f"{f}:make", trust=True)


def test_safe_default_refuses_pickled_module_and_trust_loads_it(tmp_path):
    p = tmp_path / "whole.pt"
    torch.save(demo_model(), p)
    with pytest.raises(LoadError) as e:
        load_model(str(p))
    msg = str(e.value)
    assert str(p) in msg and "pickled code" in msg and "--trust" in msg
    m = load_model(str(p), trust=True)
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(m(x), demo_model()(x))


def test_state_dict_alone_needs_an_architecture(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save(demo_model().state_dict(), p)
    with pytest.raises(LoadError, match="state dict.*--weights"):
        load_model(str(p))


def test_state_dict_loads_into_matching_architecture(tmp_path):
    p = tmp_path / "sd.pt"
    src = demo_model(seed=5)
    torch.save({"state_dict": src.state_dict()}, p)  # a checkpoint layout is accepted too
    m = load_model(f"{FACTORY}:make", trust=True, weights=str(p))
    assert torch.equal(m.stem[0].weight, src.stem[0].weight)


def test_state_dict_that_does_not_fit_names_keys(tmp_path):
    p = tmp_path / "sd.pt"
    sd = demo_model().state_dict()
    sd.pop("head.2.bias")
    sd["extra.weight"] = torch.zeros(3)
    sd["head.2.weight"] = torch.zeros(5, 256)
    torch.save(sd, p)
    with pytest.raises(LoadError) as e:
        load_model(f"{FACTORY}:make", trust=True, weights=str(p))
    msg = str(e.value)
    assert "head.2.bias" in msg and "extra.weight" in msg and "head.2.weight" in msg
    assert "(5, 256)" in msg and str(p) in msg


def test_torchvision_weights_that_do_not_fit(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save(demo_model().state_dict(), p)
    with pytest.raises(LoadError, match=r"missing keys: conv1\.weight.*unexpected keys: stem"):
        load_model("torchvision:resnet18", weights=str(p))


@pytest.mark.parametrize("content,what", [
    (b"", "empty"),
    (b"this is not a model at all", "not a readable PyTorch file"),
])
def test_garbage_files_are_named(tmp_path, content, what):
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    with pytest.raises(LoadError) as e:
        load_model(str(p))
    assert str(p) in str(e.value) and what in str(e.value)


def test_truncated_file_is_named(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(demo_model().state_dict(), good)
    data = good.read_bytes()
    p = tmp_path / "trunc.pt"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoadError, match=r"trunc\.pt.*(truncated|damaged)"):
        load_model(str(p))


def test_missing_file():
    with pytest.raises(LoadError, match="file not found: nowhere/model.pt"):
        load_model("nowhere/model.pt")


def test_unknown_torchvision_model_suggests_names():
    with pytest.raises(LoadError, match="did you mean resnet18"):
        load_model("torchvision:resnt18")


def test_torchvision_cached_weights_never_download(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    with pytest.raises(LoadError) as e:
        load_model("torchvision:resnet18@DEFAULT")
    assert "not in the torch hub cache" in str(e.value) and str(tmp_path) in str(e.value)
    assert not (tmp_path / "checkpoints").exists() or not os.listdir(tmp_path / "checkpoints")
    # put a file where the cache would be: it is used, with no network access
    w = torchvision.models.ResNet18_Weights.DEFAULT
    ref = torchvision.models.resnet18()
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    torch.save(ref.state_dict(), tmp_path / "checkpoints" / os.path.basename(w.url))
    m = load_model("torchvision:resnet18@IMAGENET1K_V1")
    assert torch.equal(m.conv1.weight, ref.conv1.weight)


def test_unknown_torchvision_weights_name():
    with pytest.raises(LoadError, match="no weights 'NOPE'.*DEFAULT"):
        load_model("torchvision:resnet18@NOPE")


def test_load_inputs_from_function():
    ex = load_inputs(f"{FACTORY}:inputs", True)
    assert tuple(ex.args[0].shape) == (2, 3, 32, 32)
    with pytest.raises(LoadError, match="file.py:function"):
        load_inputs("1,3,32,32")
    with pytest.raises(LoadError, match="returned int"):
        load_inputs(f"{FACTORY}:not_a_model", True)


def test_load_inputs_dict(tmp_path):
    f = tmp_path / "inp.py"
    f.write_text("import torch\n\ndef kw():\n    return {'x': torch.ones(1, 4)}\n")
    ex = load_inputs(f"{f}:kw", True)
    assert list(ex.kwargs) == ["x"] and ex.args == ()


def test_whole_model_file_with_model_key(tmp_path):
    p = tmp_path / "ckpt.pt"
    torch.save({"model": nn.Linear(2, 3), "epoch": 3}, p)
    with pytest.raises(LoadError, match="pickled code"):
        load_model(str(p))
    assert isinstance(load_model(str(p), trust=True), nn.Linear)


def test_trusted_pickle_of_a_user_class_finds_its_file_next_to_it(tmp_path):
    src = tmp_path / "code"
    src.mkdir()
    (src / "ps_user_net_abc.py").write_text(
        "from torch import nn\n\nclass UserNet(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.fc = nn.Linear(4, 2)\n\n"
        "    def forward(self, x):\n        return self.fc(x)\n\ndef make():\n    return UserNet()\n")
    m = load_model(f"{src / 'ps_user_net_abc.py'}:make", trust=True)
    assert type(m).__module__ == "ps_user_net_abc"
    away = tmp_path / "away"
    away.mkdir()
    torch.save(m, away / "m.pt")
    torch.save(m, src / "m.pt")
    sys.modules.pop("ps_user_net_abc")  # as in a fresh process
    with pytest.raises(LoadError, match="PYTHONPATH"):
        load_model(str(away / "m.pt"), trust=True)
    assert type(load_model(str(src / "m.pt"), trust=True)).__name__ == "UserNet"
    sys.modules.pop("ps_user_net_abc", None)
