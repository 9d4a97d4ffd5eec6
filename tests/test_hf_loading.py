"""Loading ``hf:DIR`` (local Hugging Face model directories) and ``timm:NAME[@pretrained]`` (never
downloading), and exporting a pruned Hugging Face model as a ``save_pretrained`` directory
(``core.io.hf.directory.save_hf_dir``, CLI ``-o OUTDIR/``). Tiny random models saved into tmp_path."""
from __future__ import annotations

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

transformers = pytest.importorskip("transformers")

import main as entry  # noqa: E402
from core.pipeline import analyze_model, prune_model  # noqa: E402  (before core.adapters.hf)
from core.adapters import hf  # noqa: E402
from core.errors import LoadError, PruneStudioError  # noqa: E402
from core.trace.inputs import make_inputs  # noqa: E402
from core.io.inputs import fit_inputs  # noqa: E402
from core.io.memory import estimate_bytes  # noqa: E402
from core.io.sources import build_meta_model, load_model  # noqa: E402
from core.io.specs import normalize_spec, spec_kind  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402
from core.io.atomic import OutputExistsError  # noqa: E402
from core.io.hf.directory import load_hf_dir, save_hf_dir  # noqa: E402

IDS = ["--input-dtype", "int64", "--input-shape", "1,12"]


def _llama(vocab=40):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def _bert(vocab=60):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=64, num_labels=3)
    return transformers.BertForSequenceClassification(cfg).eval()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf")
    out = {}
    for name, build in (("llama", _llama), ("bert", _bert)):
        m = build()
        m.save_pretrained(d / name)
        out[name] = (d / name, m)
    return out


def _logits(m, ids):
    with torch.no_grad():
        return m(ids).logits


def run(args, capsys):
    rc = entry.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------------------------
# loading


def test_hf_dir_loads_pretrained_weights(dirs):
    path, ref = dirs["llama"]
    m = load_model(f"hf:{path}")
    assert type(m) is transformers.LlamaForCausalLM and not m.training
    sd, sd0 = m.state_dict(), ref.state_dict()
    assert all(torch.equal(sd[k], sd0[k]) for k in sd0)
    assert spec_kind(f"hf:{path}") == "hf"
    assert normalize_spec(f"hf:{os.path.relpath(path)}") == f"hf:{os.path.abspath(path)}"
    assert estimate_bytes(f"hf:{path}") > 0
    meta = build_meta_model(f"hf:{path}")
    assert all(p.is_meta for p in meta.parameters())


def test_hf_dir_errors(tmp_path, dirs):
    with pytest.raises(LoadError, match="no such directory"):
        load_model(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(LoadError, match="no config.json"):
        load_model(f"hf:{tmp_path}")
    with pytest.raises(LoadError, match="is a file"):
        load_model(f"hf:{dirs['llama'][0] / 'config.json'}")
    # config only, no weights: refused (nothing is invented or downloaded)
    nw = tmp_path / "noweights"
    dirs["bert"][1].config.save_pretrained(nw)
    with pytest.raises(LoadError, match="no weights"):
        load_model(f"hf:{nw}")
    # an unknown architecture is named
    bad = tmp_path / "badarch"
    cfg = transformers.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=8)
    cfg.architectures = ["NoSuchModelForAnything"]
    cfg.save_pretrained(bad)
    with pytest.raises(LoadError, match="NoSuchModelForAnything"):
        load_model(f"hf:{bad}")


def test_fit_inputs_small_vocab(dirs):
    m = load_model(f"hf:{dirs['llama'][0]}")  # vocabulary 40 < 100
    ex = make_inputs("2,30", "int64")
    assert int(ex.args[0].max()) >= 40
    fitted = fit_inputs(m, ex)
    assert int(fitted.args[0].max()) < 40
    assert torch.equal(fitted.args[0], ex.args[0] % 40)
    x = torch.randn(1, 3, 8, 8)
    assert fit_inputs(torch.nn.Conv2d(3, 3, 1), x).args[0] is x  # no vocabulary: unchanged


def test_timm_random_and_pretrained_only_from_cache(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    m = load_model("timm:resnet18")
    assert type(m).__name__ == "ResNet" and not m.training
    with pytest.raises(LoadError, match="timm has no model 'resnt18'.*resnet18"):
        load_model("timm:resnt18")
    with pytest.raises(LoadError, match="@pretrained"):
        load_model("timm:resnet18@imagenet")
    # nothing cached: a LoadError naming the missing file, and no download attempt
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)

    def no_download(*a, **k):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(LoadError, match="not in the local cache.*resnet18_a1_0-d63eafa0.pth"):
        load_model("timm:resnet18.a1_in1k@pretrained")
    # the weights in the torch hub cache: loaded from there
    ref = timm.create_model("resnet18", pretrained=False)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    ck = tmp_path / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    torch.save(ref.state_dict(), ck / "resnet18_a1_0-d63eafa0.pth")
    m = load_model("timm:resnet18.a1_in1k@pretrained")
    assert torch.equal(m.conv1.weight, ref.conv1.weight)
    assert torch.equal(m.fc.bias, ref.fc.bias)


# ------------------------------------------------------------------------------------------------
# export as a directory


def _prune(m, settings):
    ex = fit_inputs(m, make_inputs("1,12", "int64"))
    dg = analyze_model(m, ex)
    return prune_model(m, ex, dg, settings, latency=False, verify=False), ex


def test_save_hf_dir_uniform_and_non_uniform(tmp_path, dirs):
    m = load_model(f"hf:{dirs['llama'][0]}")
    res, ex = _prune(m, PlanSettings(ratio=0.5, ignore=["model.embed_tokens"]))
    assert res.model.config.prunestudio["uniform"] is True
    out = tmp_path / "uniform"
    save_hf_dir(res.model, str(out))
    assert (out / "config.json").is_file()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp dir left
    m2 = transformers.LlamaForCausalLM.from_pretrained(out).eval()  # plain HF reload
    assert torch.equal(_logits(m2, ex.args[0]), _logits(res.model, ex.args[0]))
    assert torch.equal(_logits(load_model(f"hf:{out}"), ex.args[0]), _logits(res.model, ex.args[0]))

    # overwrite rules: existing non-empty dir needs force; a non-HF folder is never replaced
    with pytest.raises(OutputExistsError):
        save_hf_dir(res.model, str(out))
    save_hf_dir(res.model, str(out) + "/", force=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(PruneStudioError, match="not a Hugging Face model directory"):
        save_hf_dir(res.model, str(other), force=True)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(PruneStudioError, match="input model"):
        save_hf_dir(res.model, str(dirs["llama"][0]), force=True, source=str(dirs["llama"][0]))
    with pytest.raises(PruneStudioError, match="Hugging Face models"):
        save_hf_dir(torch.nn.Linear(2, 2), str(tmp_path / "lin"))

    # non-uniform: layers pruned differently -> from_pretrained cannot, load_pruned / hf: can
    res2, ex2 = _prune(m, PlanSettings(ratio=0.25, ignore=["model.embed_tokens"],
                                       overrides={"model.layers.1.mlp.gate_proj": 0.5}))
    assert res2.model.config.prunestudio["uniform"] is False
    out2 = tmp_path / "nonuniform"
    save_hf_dir(res2.model, str(out2))
    with pytest.raises(Exception):
        transformers.LlamaForCausalLM.from_pretrained(out2)
    for m3 in (hf.load_pruned(transformers.LlamaForCausalLM, out2), load_hf_dir(str(out2)),
               load_model(f"hf:{out2}")):
        assert torch.equal(_logits(m3, ex2.args[0]), _logits(res2.model, ex2.args[0]))


def test_cli_prune_hf_dir_to_dir(tmp_path, dirs, capsys):
    """Uniform (Llama, vocabulary 40 < 100: token ids folded in) reloads with from_pretrained;
    BERT head pruning with the hidden size kept is not describable by its config: load_pruned."""
    src = dirs["llama"][0]
    out = tmp_path / "llama_pruned"
    rc, so, err = run(["prune", f"hf:{src}", *IDS, "--ratio", "0.5", "--no-latency",
                       "--accept-approximate", "-o", f"{out}/"], capsys)
    assert rc == 0, err
    assert err == ""
    assert "from_pretrained" in so and "saved:" in so
    m = transformers.LlamaForCausalLM.from_pretrained(out)
    assert m.config.hidden_size == 16 and m.config.prunestudio["uniform"] is True

    bsrc = dirs["bert"][0]
    bout = tmp_path / "bert_pruned"
    bout.mkdir()  # an existing empty directory is a directory output too
    rc, so, err = run(["prune", f"hf:{bsrc}", *IDS, "--ratio", "0.5", "--no-latency",
                       "--ignore", "bert.embeddings.word_embeddings", "-o", str(bout)], capsys)
    assert rc == 0, err
    assert "load_pruned" in so
    m2 = hf.load_pruned(transformers.BertForSequenceClassification, bout)
    assert m2.config.prunestudio["uniform"] is False
    assert m2.bert.encoder.layer[0].attention.self.num_attention_heads == 2
    ids = torch.randint(0, 60, (1, 12))
    m3 = load_model(f"hf:{bout}")
    assert torch.equal(_logits(m2, ids), _logits(m3, ids))

    # errors: existing non-empty dir without --force; a directory output for a non-HF model
    rc, so, err = run(["prune", f"hf:{bsrc}", *IDS, "--ratio", "0.5", "--no-latency",
                       "-o", f"{bout}/"], capsys)
    assert rc == 2 and "--force" in err and err.count("\n") == 1
    rc, so, err = run(["prune", "demo", "--ratio", "0.5", "--no-latency", "-o",
                       f"{tmp_path / 'demo_out'}/"], capsys)
    assert rc == 2 and "Hugging Face" in err
    assert not (tmp_path / "demo_out").exists()
    rc, so, err = run(["prune", f"hf:{bsrc}", *IDS, "--ratio", "0.5", "--no-latency",
                       "-o", f"{bsrc}/", "--force"], capsys)
    assert rc == 2 and "input model" in err


def test_an_hf_dir_without_an_input_shape_takes_token_ids(dirs, capsys):
    """A language model's example input is token ids: without --input-shape the CLI used to stop
    ("the example input is missing") and the window fed it a 1x3x224x224 image."""
    rc, out, err = run(["graph", f"hf:{dirs['llama'][0]}"], capsys)
    assert rc == 0, err
    assert "input: (1, 32) int64" in out
    from core.io.sources import default_input
    assert default_input(f"hf:{dirs['bert'][0]}") == ("1,32", "int64")
    assert default_input("torchvision:resnet18") is None


def test_an_hf_vision_config_takes_an_image(tmp_path):
    from core.io.sources import default_input
    cfg = transformers.ViTConfig(image_size=64, num_channels=1, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64)
    cfg.save_pretrained(tmp_path / "vit")
    assert default_input(f"hf:{tmp_path / 'vit'}") == ("1,1,64,64", "float32")


def test_an_input_dtype_given_alone_applies_to_the_suggested_shape(dirs, capsys):
    """``--input-dtype int32`` without ``--input-shape`` was dropped: argparse's float32 default
    could not be told from a typed one, so the suggested int64 always won."""
    rc, out, err = run(["graph", f"hf:{dirs['llama'][0]}", "--input-dtype", "int32"], capsys)
    assert rc == 0, err
    assert "input: (1, 32) int32" in out


def test_a_project_saved_with_the_suggested_input_reopens(tmp_path, dirs, capsys):
    """The project recorded ``--input-shape`` as typed (none) and float32, so reopening it said
    "the project has no example input shape"."""
    from core.io.project import load_project
    proj = tmp_path / "llama.psproj"
    rc, out, err = run(["prune", f"hf:{dirs['llama'][0]}", "--ratio", "0.25", "--no-latency",
                        "--accept-approximate", "--project", str(proj)], capsys)
    assert rc == 0, err
    p = load_project(str(proj))
    assert (p.shape, p.dtype) == ("1,32", "int64")
    ids = p.make_inputs()
    assert ids.args[0].dtype == torch.int64 and tuple(ids.args[0].shape) == (1, 32)


def test_cli_graph_says_when_a_channel_is_a_block_of_rows(dirs, capsys):
    """A Llama's attention group printed "2 ch" like any two channels; each is a key/value group
    of 16 query rows (4 heads of 8 over 2 key/value heads), as the window's table now says."""
    rc, out, err = run(["graph", f"hf:{dirs['llama'][0]}"], capsys)
    assert rc == 0, err
    [attn] = [ln for ln in out.splitlines() if "self_attn.q_proj" in ln and "#" in ln][:1]
    assert "2 ch ×16" in attn, attn
    [mlp] = [ln for ln in out.splitlines() if "mlp.gate_proj" in ln and "#" in ln][:1]
    assert "×" not in mlp.split("prunable")[0], mlp


def test_a_pruned_llama_exports_to_onnx(tmp_path, dirs, capsys):
    """Both exporters failed on the model's key/value cache output ("unsupported type:
    DynamicCache"): the file computes the logits; a cache is what generation loops keep."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "llama.onnx"
    rc, so, err = run(["prune", f"hf:{dirs['llama'][0]}", *IDS, "--ratio", "0.5", "--no-latency",
                       "--accept-approximate", "-o", str(out)], capsys)
    assert rc == 0, err
    assert out.exists() and "onnxruntime vs torch" in so
    assert dirs["llama"][1].config.use_cache  # the user's model is left as it was


def test_export_errors_carry_no_terminal_colour_codes():
    from core.io.onnx.export import _cut
    text = _cut(RuntimeError("Failed. \x1b[96mThis is step 1/3\x1b[0m of exporting"))
    assert "\x1b" not in text and "[96m" not in text and "This is step 1/3 of exporting" in text
