"""The trust model (core/io/trust.py): nothing from a file the user opened runs before consent.

Every file here that would run code writes a marker file when it does; a refusal must leave no
marker. The GUI's side is in tests/test_gui_trust.py."""
import hashlib
import json
import os
import shutil

import pytest
import torch

from core.cli.main import main
from core.errors import LoadError
from core.io import project as proj
from core.io.inputs import load_inputs
from core.io.portable import save_portable
from core.io.pyfile import import_file
from core.io.sources import load_model, what_would_run
from core.io.trust import TrustPolicy, UntrustedCodeError
from core.train.data import load_data
from core.train.evaluate import load_loss_fn

EVIL = '''
import os
import torch
from torch import nn

MARK = {marker!r}


def _mark(what):
    with open(MARK, "a") as f:
        f.write(what + "\\n")


_mark("imported")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


def make():
    _mark("make")
    return Net()


def inputs():
    _mark("inputs")
    return torch.randn(1, 3, 8, 8)


def data():
    _mark("data")
    return torch.utils.data.TensorDataset(torch.randn(8, 3, 8, 8), torch.zeros(8, dtype=torch.long))


def loss(out, y):
    return out.mean()
'''


class Exec:
    """Unpickles as ``exec(code)``: what a hostile pickle does."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def evil_file(folder, marker, name="net.py"):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(EVIL.format(marker=str(marker)))
    return path


def evil_pickle(path, marker):
    torch.save({"x": Exec(f"open({str(marker)!r}, 'a').write('unpickled')")}, path)
    return str(path)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "MARKER"


# ----------------------------------------------------------------------------- factory files

def test_factory_spec_runs_only_with_consent_for_that_content(tmp_path, marker):
    f = evil_file(tmp_path / "src", marker)
    with pytest.raises(UntrustedCodeError) as e:
        load_model(f"{f}:make")
    msg = str(e.value)
    assert f in msg and sha(f)[:12] in msg and "--trust" in msg and "\n" not in msg
    assert e.value.ref.sha256 == sha(f) and e.value.ref.name == "make"
    with pytest.raises(UntrustedCodeError):
        load_model(f"{f}:make", trust=TrustPolicy(hashes={"0" * 64}))
    assert not marker.exists()
    assert isinstance(load_model(f"{f}:make", trust=TrustPolicy(hashes={sha(f)})), torch.nn.Module)
    assert marker.exists()
    with open(f, "a") as fh:  # changed since consent: asked again
        fh.write("\n# changed\n")
    with pytest.raises(UntrustedCodeError):
        load_model(f"{f}:make", trust=TrustPolicy(hashes={e.value.ref.sha256}))


def test_what_would_run_names_path_and_hash_without_running(tmp_path, marker):
    f = evil_file(tmp_path / "src", marker)
    [ref] = what_would_run(f"  {f}:make ")
    assert (ref.kind, ref.path, ref.sha256, ref.name) == ("model factory", f, sha(f), "make")
    assert f in ref.describe() and ref.short in ref.describe()
    assert what_would_run("demo") == [] and what_would_run("torchvision:resnet18") == []
    assert not marker.exists()


# ----------------------------------------------------------------------------- .pstudio

def _portable_of_factory(tmp_path, marker, folder="src"):
    f = evil_file(tmp_path / folder, marker)
    m = load_model(f"{f}:make", trust=True)
    p = str(tmp_path / "m.pstudio")
    kept = {"conv.weight": {0: [0, 1, 2, 3]}, "conv.bias": {0: [0, 1, 2, 3]},
            "head.weight": {1: [0, 1, 2, 3]}}
    from core.prune.apply import apply_kept
    save_portable(p, f"{f}:make", kept, apply_kept(m, kept).state_dict(), trust=True)
    marker.unlink()
    return f, p


def test_pstudio_recording_a_factory_runs_nothing_without_trust(tmp_path, marker):
    f, p = _portable_of_factory(tmp_path, marker)
    with pytest.raises(UntrustedCodeError, match="--trust") as e:
        load_model(p)
    assert f in str(e.value) and p in str(e.value)
    assert not marker.exists()
    assert [r.path for r in what_would_run(p)] == [f]
    assert load_model(p, trust=True).conv.out_channels == 4


def test_pstudio_never_resolves_its_factory_next_to_itself(tmp_path, marker):
    f, p = _portable_of_factory(tmp_path, marker)
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.move(p, shared / "m.pstudio")
    evil_file(shared, marker)  # same name as the recorded file, next to the .pstudio
    os.remove(f)
    with pytest.raises(LoadError) as e:
        load_model(str(shared / "m.pstudio"), trust=True)
    assert f in str(e.value) and "missing" in str(e.value)
    assert what_would_run(str(shared / "m.pstudio")) == []
    assert not marker.exists()


def test_hostile_pickle_needs_consent_whatever_its_suffix_or_spaces(tmp_path, marker):
    for name in ("evil.pt", "X.PT", "model.weights"):
        p = evil_pickle(tmp_path / name, marker)
        for spec in (p, p + " ", " " + p):
            with pytest.raises(UntrustedCodeError, match="pickled code"):
                load_model(spec)
            [ref] = what_would_run(spec)
            assert ref.kind == "pickled code" and ref.path == p and ref.sha256 == sha(p)
            assert "builtins.exec" in ref.describe()
    assert not marker.exists()


def test_uppercase_factory_suffix_is_a_factory_that_needs_consent(tmp_path, marker):
    f = evil_file(tmp_path, marker, "NET.PY")
    with pytest.raises(UntrustedCodeError):
        load_model(f"{f}:make")
    assert [r.kind for r in what_would_run(f"{f}:make")] == ["model factory"]
    assert not marker.exists()


# ----------------------------------------------------------------------------- .psproj

def _project(tmp_path, spec, **model):
    d = {"format": "prunestudio.project", "version": 1,
         "model": {"spec": spec, "weights": None, "trust": True, **model},
         "inputs": {"shape": "1,3,8,8", "dtype": "float32"}, "settings": {}, "device": "cpu"}
    path = tmp_path / "evil.psproj"
    path.write_text(json.dumps(d))
    return str(path)


def _hf_custom_dir(folder, marker):
    os.makedirs(folder)
    code = f"open({str(marker)!r}, 'a').write('custom code')\n"
    for name in ("configuration_x.py", "modeling_x.py"):
        with open(os.path.join(folder, name), "w") as f:
            f.write(code)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "custom_x", "architectures": ["CustomXModel"],
                   "auto_map": {"AutoConfig": "configuration_x.XConfig",
                                "AutoModel": "modeling_x.XModel"}}, f)
    return str(folder)


@pytest.mark.parametrize("kind", ["factory", "pstudio", "pickle_trailing_space", "pickle_odd_suffix",
                                  "hf_auto_map"])
def test_project_cannot_grant_itself_trust(tmp_path, marker, kind):
    if kind == "factory":
        spec = f"{evil_file(tmp_path / 'src', marker)}:make"
    elif kind == "pstudio":
        spec = _portable_of_factory(tmp_path, marker)[1]
    elif kind == "pickle_trailing_space":
        spec = evil_pickle(tmp_path / "evil.pt", marker) + " "
    elif kind == "pickle_odd_suffix":
        spec = evil_pickle(tmp_path / "evil.weights", marker)
    else:
        pytest.importorskip("transformers")
        spec = "hf:" + _hf_custom_dir(tmp_path / "hfdir", marker)
    path = _project(tmp_path, spec)
    p = proj.load_project(path)
    with pytest.raises(UntrustedCodeError, match="--trust"):
        proj.restore(p)
    assert not marker.exists()
    assert not hasattr(p, "trust") and "trust" not in p.to_json()["model"]
    assert len(p.code()) == 1


def test_project_inputs_function_needs_consent(tmp_path, marker):
    f = evil_file(tmp_path / "src", marker)
    path = _project(tmp_path, "demo")
    d = json.loads(open(path).read())
    d["inputs"] = {"function": f"{f}:inputs"}
    open(path, "w").write(json.dumps(d))
    p = proj.load_project(path)
    with pytest.raises(UntrustedCodeError):
        proj.restore(p)
    assert not marker.exists()
    assert [r.kind for r in p.code()] == ["inputs function"]


# ----------------------------------------------------------------------------- inputs, data, loss

def test_inputs_data_and_loss_functions_need_consent(tmp_path, marker):
    f = evil_file(tmp_path / "src", marker)
    with pytest.raises(UntrustedCodeError, match="inputs function"):
        load_inputs(f"{f}:inputs")
    with pytest.raises(UntrustedCodeError, match="dataset factory"):
        load_data(f"{f}:data")
    with pytest.raises(UntrustedCodeError, match="loss function"):
        load_loss_fn(f"{f}:loss")
    assert not marker.exists()
    ok = TrustPolicy(hashes={sha(f)})
    assert load_inputs(f"{f}:inputs", ok).args[0].shape == (1, 3, 8, 8)
    assert len(load_data(f"{f}:data", batch_size=2, trust=ok).train_set) > 0
    assert callable(load_loss_fn(f"{f}:loss", ok))


# ----------------------------------------------------------------------------- command line

def _cli(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("case", ["factory", "inputs", "pstudio", "finetune_data"])
def test_cli_refuses_code_without_trust(tmp_path, marker, capsys, case):
    if case == "pstudio":
        f, p = _portable_of_factory(tmp_path, marker)
        argv = ["prune", p, "--input-shape", "1,3,8,8"]
    else:
        f = evil_file(tmp_path / "src", marker)
        argv = {"factory": ["prune", f"{f}:make", "--input-shape", "1,3,8,8"],
                "inputs": ["prune", "demo", "--inputs", f"{f}:inputs"],
                "finetune_data": ["finetune", "demo", "--data", f"{f}:data", "--epochs", "0"]}[case]
    rc, out, err = _cli(argv, capsys)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f in lines[0] and "--trust" in lines[0] and sha(f)[:12] in lines[0]
    assert not marker.exists()


def test_factory_and_inputs_in_one_file_save_a_whole_model(tmp_path, marker, capsys):
    f = evil_file(tmp_path / "src", marker)
    assert import_file(f, True) is import_file(f, True)
    out = tmp_path / "out.pt"
    rc, _, err = _cli(["prune", f"{f}:make", "--inputs", f"{f}:inputs", "--trust", "--ratio", "0.5",
                       "--no-latency", "-o", str(out)], capsys)
    assert rc == 0, err
    back = load_model(str(out), trust=True)
    assert back.conv.out_channels == 4
