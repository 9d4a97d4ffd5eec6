"""Streamed pruning of a sharded Hugging Face checkpoint (core.io.hf.stream): a tiny Llama with
grouped-query attention saved in >= 3 safetensors shards. The streamed result must equal, tensor for
tensor, the in-memory prune of the loaded model with the same plan, and that prune must pass the
zeroed-group oracle in float64. The 7B-sized evidence (peak RSS) is benchmarks/bench_llm_stream.py,
never a test."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import weakref

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import main as entry  # noqa: E402
from core.pipeline import analyze_model  # noqa: E402
from core.errors import Cancelled, LoadError, PlanError  # noqa: E402
from core.io.hf import shards, stream as hf_stream  # noqa: E402
from core.io.hf.stream import StreamSettings, make_stream_plan, stream_prune_hf  # noqa: E402
from core.io.hf.shards import open_shard  # noqa: E402
from core.plan.criteria import group_scores  # noqa: E402
from core.plan.planner import PlanSettings, plan_for_ratio  # noqa: E402
from core.prune.apply import apply_kept, zero_channels  # noqa: E402

IDS = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(1))


def _config():
    return transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                    max_position_embeddings=64)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    torch.manual_seed(0)
    m = transformers.LlamaForCausalLM(_config()).eval()
    with torch.no_grad():  # distinct scores: no ties for the plans to break differently
        for p in m.parameters():
            p.normal_(0, 0.2)
    d = tmp_path_factory.mktemp("llama") / "src"
    m.save_pretrained(d, max_shard_size="80KB", safe_serialization=True)
    (d / "tokenizer.json").write_text('{"fake": "tokenizer"}')
    assert len([f for f in os.listdir(d) if f.endswith(".safetensors")]) >= 3
    return d


def _hashes(d):
    return {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in sorted(os.listdir(d))}


def _output_tensors(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            with open_shard(str(d / f)) as h:
                out.update({k: h.get_tensor(k) for k in h.keys()})
    return out


def _in_memory(src, sp, dtype=None):
    """The loaded model, analysed with real weights; the plan the engine makes from its scores."""
    m = transformers.LlamaForCausalLM.from_pretrained(src).eval()
    if dtype is not None:
        m = m.to(dtype)
    dg = analyze_model(m, IDS, probe=False)
    return m, dg


SETTINGS = StreamSettings(mlp_ratio=0.5, kv_ratio=0.5)


def test_streamed_equals_in_memory_prune_and_loads(src, tmp_path):
    before = _hashes(src)
    out = tmp_path / "out"
    sp = stream_prune_hf(str(src), str(out), SETTINGS)
    assert _hashes(src) == before  # the input is only read
    assert sp.widths() == {"intermediate_size": (128, 64), "num_attention_heads": (4, 2),
                           "num_key_value_heads": (2, 1)}
    assert sp.uniform and sorted(set(sp.kinds.values())) == ["kv", "mlp"]

    m, dg = _in_memory(src, sp)
    # same groups, same scores (the engine's criterion on the loaded model), same plan
    assert [g.root for g in dg.groups] == [g.root for g in sp.dg.groups]
    ref = group_scores(dg, m, "l2")
    for gid in sp.kinds:
        assert np.array_equal(sp.scores[gid], ref[gid]), dg.groups[gid].root
    ps = PlanSettings(ratio=0.0, overrides={dg.groups[g].root: 0.5 for g in sp.kinds})
    assert plan_for_ratio(dg, ref, 0.0, ps).removed == sp.plan.removed
    kept = sp.plan.kept_indices(dg)
    assert kept == sp.kept

    # identical tensors, every key
    pruned = apply_kept(m, kept)
    got, want = _output_tensors(out), pruned.state_dict()
    assert set(got) == {k for k in want if "rotary" not in k}
    for k, t in got.items():
        assert t.dtype == want[k].dtype and torch.equal(t, want[k]), k

    # index, config, other files
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(got)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in got.values())
    assert (out / "tokenizer.json").read_text() == '{"fake": "tokenizer"}'
    assert (out / "generation_config.json").is_file()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp dir left

    # plain from_pretrained, forward equal to the in-memory pruned model
    back = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    cfg = back.config
    assert (cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.head_dim) == (64, 2, 1, 16)
    with torch.no_grad():
        assert torch.equal(back(IDS).logits, pruned(IDS).logits)


def test_in_memory_prune_passes_the_oracle_float64(src):
    """The prune the streamed one equals removes exactly what zeroing removes (float64)."""
    sp = make_stream_plan(str(src), SETTINGS)
    m, dg = _in_memory(src, sp, torch.float64)
    kept = sp.plan.kept_indices(dg)
    pruned, zeroed = apply_kept(m, kept), zero_channels(m, kept)
    with torch.no_grad():
        a, b, full = pruned(IDS).logits, zeroed(IDS).logits, m(IDS).logits
    assert torch.isfinite(a).all()
    assert (a - b).abs().max() <= 1e-10 * b.abs().max()
    assert (full - b).abs().max() > 1e-3 * b.abs().max()  # the zeroing did change the model


def test_one_tensor_at_a_time(src, tmp_path, monkeypatch):
    """Every tensor read from the shards is released before the next one is read, and each is read
    through a handle of its own (a mapped shard's pages stay resident while its handle is open)."""
    live, reads = [], [0]
    real = shards.open_shard

    class Spy:
        def __init__(self, path):
            self.h = real(path)
            self.gets = 0

        def __enter__(self):
            self.h.__enter__()
            return self

        def __exit__(self, *a):
            return self.h.__exit__(*a)

        def get_tensor(self, k):
            assert all(r() is None for r in live), "a previous tensor is still held"
            self.gets += 1
            assert self.gets == 1, "several tensors read through one shard handle"
            t = self.h.get_tensor(k)
            live.append(weakref.ref(t))
            reads[0] += 1
            return t

        def __getattr__(self, name):
            return getattr(self.h, name)

    monkeypatch.setattr(shards, "open_shard", Spy)
    monkeypatch.setattr(hf_stream, "open_shard", Spy)
    stream_prune_hf(str(src), str(tmp_path / "out"), SETTINGS)
    n_keys = len(json.loads((src / "model.safetensors.index.json").read_text())["weight_map"])
    # scoring reads the tensors of the pruned groups once; writing reads every tensor once
    assert n_keys < reads[0] < 2 * n_keys


def test_single_file_and_round_to(tmp_path):
    torch.manual_seed(3)
    m = transformers.LlamaForCausalLM(_config()).eval()
    m.save_pretrained(tmp_path / "one")  # one model.safetensors, no index
    sp = stream_prune_hf(str(tmp_path / "one"), str(tmp_path / "out"),
                         StreamSettings(mlp_ratio=0.3, kv_ratio=0.5, round_to=16))
    # 128 - 38 -> rounded up to 96; the head count is not rounded (1 of 2 KV heads removed)
    assert sp.widths() == {"intermediate_size": (128, 96), "num_attention_heads": (4, 2),
                           "num_key_value_heads": (2, 1)}
    assert not (tmp_path / "out" / "model.safetensors.index.json").exists()
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out")
    assert back.model.layers[1].mlp.up_proj.weight.shape == (96, 64)


def test_errors_and_cancel(src, tmp_path):
    with pytest.raises(PlanError, match="nothing to prune"):
        stream_prune_hf(str(src), str(tmp_path / "a"), StreamSettings(0.0, 0.0))
    with pytest.raises(PlanError, match="taylor"):
        stream_prune_hf(str(src), str(tmp_path / "a"), StreamSettings(importance="taylor"))
    binary = tmp_path / "bin"
    cfg = _config()
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.save_pretrained(binary)
    torch.save(transformers.LlamaForCausalLM(_config()).state_dict(), binary / "pytorch_model.bin")
    with pytest.raises(LoadError, match="safetensors"):
        stream_prune_hf(str(binary), str(tmp_path / "a"), SETTINGS)
    with pytest.raises(LoadError, match="no such directory"):
        stream_prune_hf(str(tmp_path / "missing"), str(tmp_path / "a"), SETTINGS)
    with pytest.raises(Cancelled):
        stream_prune_hf(str(src), str(tmp_path / "c"), SETTINGS, should_stop=lambda: True)
    assert not (tmp_path / "c").exists() and not [p for p in os.listdir(tmp_path)
                                                 if p.startswith(".")]


def run(args, capsys):
    rc = entry.main(list(args))
    o, e = capsys.readouterr()
    return rc, o, e


def test_cli_stream(src, tmp_path, capsys):
    out = tmp_path / "cli"
    rc, so, err = run(["prune", f"hf:{src}", "--stream", "--mlp-ratio", "0.5", "--kv-ratio", "0.5",
                       "-o", f"{out}/"], capsys)
    assert rc == 0, err
    assert "intermediate_size 128 -> 64" in so and "from_pretrained" in so
    assert transformers.LlamaForCausalLM.from_pretrained(out).config.num_key_value_heads == 1
    capsys.readouterr()  # (transformers' own loading bar)
    bad = [
        (["prune", "demo", "--stream", "-o", f"{tmp_path}/x/"], "hf:DIR"),
        (["prune", f"hf:{src}", "--stream", "--mlp-ratio", "0.5"], "-o"),
        (["prune", f"hf:{src}", "--stream", "--ratio", "0.5", "-o", f"{tmp_path}/x/"], "--ratio"),
        (["prune", f"hf:{src}", "--stream", "--mlp-ratio", "1.5", "-o", f"{tmp_path}/x/"], "mlp"),
        (["prune", f"hf:{src}", "--stream", "-o", f"{out}/"], "--force"),
        (["prune", f"hf:{src}", "--mlp-ratio", "0.5", "-o", f"{tmp_path}/x/"], "--stream"),
    ]
    for args, word in bad:
        rc, so, err = run(args, capsys)
        assert rc == 2 and word in err and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "x").exists()


def test_heads_the_config_cannot_describe_load_with_load_pruned(tmp_path):
    """4 of 4 KV heads -> 3: transformers 5 refuses a Llama config whose hidden size (64) is not a
    multiple of the head count, so the config keeps its sizes and records the shapes; the streamed
    output (and the in-memory engine's save_hf_dir) reload with load_pruned, parameters assigned
    from the shards (built on the meta device, never at the original size)."""
    from core.adapters.hf import load_pruned
    from core.io.hf.directory import load_hf_dir, save_hf_dir
    cfg = _config()
    cfg.num_key_value_heads = 4
    torch.manual_seed(5)
    m = transformers.LlamaForCausalLM(cfg).eval()
    m.save_pretrained(tmp_path / "src", max_shard_size="80KB")
    sp = stream_prune_hf(str(tmp_path / "src"), str(tmp_path / "out"),
                         StreamSettings(mlp_ratio=0.25, kv_ratio=0.25))
    assert not sp.uniform
    assert sp.widths() == {"intermediate_size": (128, 96), "num_attention_heads": (4, 3),
                           "num_key_value_heads": (4, 3)}
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["num_attention_heads"] == 4 and saved["prunestudio"]["uniform"] is False
    dg = analyze_model(m, IDS, probe=False)
    pruned = apply_kept(m, sp.plan.kept_indices(dg))
    assert pruned.config.prunestudio["uniform"] is False
    back = load_pruned(transformers.LlamaForCausalLM, str(tmp_path / "out"))
    assert back.model.layers[0].self_attn.q_proj.weight.shape == (48, 64)
    with torch.no_grad():
        want = pruned(IDS).logits
        assert torch.equal(back(IDS).logits, want)
        save_hf_dir(pruned, str(tmp_path / "mem"))  # the in-memory path writes it too
        assert torch.equal(load_hf_dir(str(tmp_path / "mem"))(IDS).logits, want)
    with pytest.raises(LoadError, match="pruned unevenly"):  # its config keeps the old sizes
        stream_prune_hf(str(tmp_path / "out"), str(tmp_path / "again"), SETTINGS)
    half = load_pruned(transformers.LlamaForCausalLM, str(tmp_path / "out"), dtype=torch.bfloat16)
    assert half.lm_head.weight.dtype == torch.bfloat16 and not any(p.is_meta for p in
                                                                  half.parameters())


def test_gui_opens_structure_only_and_prunes_from_shards(win, qtbot, src, tmp_path, monkeypatch):
    """The window opens the checkpoint on the meta device without reading a weight, and Prune
    writes the pruned checkpoint from the shards on the worker (core.io.hf.stream)."""
    import safetensors
    import safetensors.torch

    def refuse(*_a, **_k):
        raise AssertionError("weights were read while opening")

    asked = []
    with monkeypatch.context() as mp:
        mp.setattr(safetensors, "safe_open", refuse)
        mp.setattr(safetensors.torch, "load_file", refuse)
        mp.setenv("PRUNESTUDIO_AVAILABLE_MEMORY", str(2**20))  # "does not fit in memory"
        mp.setattr(win.ctx, "ask", lambda title, *a, **k: asked.append(title) or True)
        with qtbot.waitSignal(win.modelReady, timeout=60_000):
            win.open_model(f"hf:{src}", "1,8", "int64")
    assert asked == ["Analyse without weights?"]
    s = win.session
    assert s.meta and all(p.is_meta for p in s.model.parameters())
    assert win.a_prune.isEnabled() and win.prune_btn.isEnabled()
    assert "Prune writes a pruned copy from the shards" in win.info.text()
    from gui.widgets.stream_dialog import StreamDialog
    dlg = StreamDialog(str(src), win)  # what Prune asks when no arguments are given
    assert dlg.values() == (0.5, 0.25, f"{src}-pruned")
    dlg.deleteLater()
    out = tmp_path / "gui_out"
    with qtbot.waitSignal(win.exportFinished, timeout=120_000) as sig:
        assert win.pruning.stream_prune(0.5, 0.5, str(out)) is not None
    assert "num_key_value_heads 2 → 1" in sig.args[0] and "from_pretrained" in sig.args[0]
    back = transformers.LlamaForCausalLM.from_pretrained(out)
    assert back.config.intermediate_size == 64 and back.config.num_attention_heads == 2


def test_qwen2_biases_and_tied_embeddings(tmp_path):
    """Qwen2: q/k/v biases (pruned with their heads) and a tied lm_head (absent from the
    checkpoint): still the in-memory prune, tensor for tensor, and from_pretrained reloads it."""
    cfg = transformers.Qwen2Config(vocab_size=100, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    m = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    m.save_pretrained(tmp_path / "src", max_shard_size="80KB")
    sp = stream_prune_hf(str(tmp_path / "src"), str(tmp_path / "out"), SETTINGS)
    pruned = apply_kept(m, sp.plan.kept_indices(analyze_model(m, IDS, probe=False)))
    got, want = _output_tensors(tmp_path / "out"), pruned.state_dict()
    assert "model.layers.0.self_attn.k_proj.bias" in got and "lm_head.weight" not in got
    assert all(torch.equal(t, want[k]) for k, t in got.items())
    back = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        assert torch.equal(back(IDS).logits, pruned(IDS).logits)
