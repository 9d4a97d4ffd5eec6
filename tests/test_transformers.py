"""Hugging Face transformers (BERT, GPT-2, Llama with grouped-query attention) and a timm ViT:
small configurations, random weights, no downloads.

What is pruned: attention heads (q/k/v rows with the output projection's columns; for GQA a whole
key/value head with its query heads), the MLP intermediate width (gated: gate/up/down together) and
the hidden size (embeddings, every LayerNorm/RMSNorm, the heads). Heads and MLP widths are exact;
the hidden size is approximate by design (LayerNorm/RMSNorm statistics over the pruned channels).
Static attributes and the config follow (core/adapters/hf.py); uniform pruning round-trips through
save_pretrained/from_pretrained, non-uniform pruning through core.adapters.hf.load_pruned.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import check_oracle, randomize  # noqa: E402

transformers = pytest.importorskip("transformers")
from core.adapters import hf  # noqa: E402
from core.pipeline import analyze_model  # noqa: E402
from core.plan.planner import PlanSettings  # noqa: E402

IDS = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))


def bert():
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=64, num_labels=3)
    return transformers.BertForSequenceClassification(cfg), "bert.embeddings.word_embeddings"


def gpt2():
    cfg = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                  bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    return transformers.GPT2LMHeadModel(cfg), "transformer.wte"


def llama():
    cfg = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg), "model.embed_tokens"


FAMILIES = {"bert": bert, "gpt2": gpt2, "llama": llama}


def _build(name):
    m, emb = FAMILIES[name]()
    return randomize(m.eval()).double(), emb


def _logits(m, ids=IDS):
    with torch.no_grad():
        return m(ids).logits


@pytest.mark.parametrize("name", list(FAMILIES))
def test_heads_and_mlp_exact(name, tmp_path):
    """Hidden size kept (embedding ignored): heads + MLP widths are pruned exactly. Llama's config
    has an explicit head_dim, so it describes the result; BERT/GPT-2 derive the head size from
    hidden_size // num_attention_heads, so their config cannot: core.adapters.hf.load_pruned reloads."""
    m, emb = _build(name)
    dg, res = check_oracle(m, IDS, PlanSettings(ratio=0.5, ignore=[emb]), tol=1e-9,
                           expect_exact=True)
    assert not dg.blocked_ops
    assert res.after.flops < 0.8 * res.before.flops
    cfg = res.model.config
    assert cfg.prunestudio["uniform"] is (name == "llama")
    res.model.save_pretrained(tmp_path)
    m2 = hf.load_pruned(type(m), tmp_path).double()
    assert torch.equal(_logits(m2), _logits(res.model))
    if name == "llama":
        assert cfg.num_attention_heads == 2
        assert cfg.num_key_value_heads == 1 and cfg.head_dim == 8
        assert cfg.intermediate_size == 32
        for layer in res.model.model.layers:
            assert layer.self_attn.num_key_value_groups == 2
    elif name == "gpt2":
        for blk in res.model.transformer.h:
            assert blk.attn.num_heads == 2 and blk.attn.split_size == 16
            assert blk.attn.c_attn.nf == 48
    else:
        for layer in res.model.bert.encoder.layer:
            assert layer.attention.self.num_attention_heads == 2
            assert layer.attention.self.all_head_size == 16


@pytest.mark.parametrize("name", list(FAMILIES))
def test_hidden_size_approximate_and_reload(name, tmp_path):
    """Everything incl. the hidden size: approximate (norm statistics), and because it is uniform
    (hidden / heads stays the head size) the config describes it: save/reload is identical."""
    m, _ = _build(name)
    dg, res = check_oracle(m, IDS, PlanSettings(ratio=0.5), expect_exact=False)
    assert any("norm" in r or "mean" in r for r in res.verify.approximate_reasons)
    assert res.model.config.hidden_size == 16
    assert res.model.config.prunestudio["uniform"] is True
    res.model.save_pretrained(tmp_path)
    cls = type(m)
    m2 = cls.from_pretrained(tmp_path).double().eval()
    assert torch.equal(_logits(m2), _logits(res.model))


def test_llama_non_uniform_config(tmp_path):
    """Layers pruned differently: the config records per-tensor shapes and says it is not uniform;
    from_pretrained cannot rebuild it (HF stops on the size mismatch), load_pruned can."""
    m, emb = _build("llama")
    settings = PlanSettings(ratio=0.25, ignore=[emb], overrides={"model.layers.1.mlp.gate_proj": 0.5})
    dg, res = check_oracle(m, IDS, settings, tol=1e-9, expect_exact=True)
    rec = res.model.config.prunestudio
    assert rec["uniform"] is False
    assert rec["shapes"]["model.layers.1.mlp.up_proj.weight"][0] == 32
    assert rec["shapes"]["model.layers.0.mlp.up_proj.weight"][0] == 48
    res.model.save_pretrained(tmp_path)
    with pytest.raises(Exception):
        type(m).from_pretrained(tmp_path)
    m2 = hf.load_pruned(type(m), tmp_path).double()
    assert torch.equal(_logits(m2), _logits(res.model))


def test_llama_gqa_groups():
    """GQA: each head group is one kv head with its query heads (4 query heads, 2 kv heads)."""
    m, _ = _build("llama")
    dg = analyze_model(m, IDS)
    heads = [g for g in dg.prunable_groups if g.root.endswith("q_proj")]
    assert len(heads) == 2 and all(g.n_channels == 2 for g in heads)
    assert {"model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj",
            "model.layers.0.self_attn.o_proj"} <= set(heads[0].layers)


def test_llama_eager_attention_matches_sdpa():
    """The eager path (repeat_kv through expand/reshape) gives the same GQA groups."""
    m, emb = _build("llama")
    m.config._attn_implementation = "eager"
    dg, res = check_oracle(m, IDS, PlanSettings(ratio=0.5, ignore=[emb]), tol=1e-9,
                           expect_exact=True)
    assert res.model.config.num_key_value_heads == 1


def test_timm_vit():
    timm = pytest.importorskip("timm")
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10,
                          img_size=64).eval()
    m = randomize(m).double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dg, res = check_oracle(m, x, PlanSettings(ratio=0.5), expect_exact=None)
    assert res.after.flops < 0.8 * res.before.flops
    assert not dg.blocked_ops


# more Hugging Face families: the config is trusted only if it rebuilds the pruned shapes
MORE = {
    "qwen2": lambda: (transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)),
        "model.embed_tokens", IDS, True),
    "mistral": lambda: (transformers.MistralForCausalLM(transformers.MistralConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        sliding_window=4)), "model.embed_tokens", IDS, True),
    # BERT-style head size (hidden // heads) or an MLP width named differently (hidden_dim,
    # ffn_dim): the config cannot describe the pruned model, load_pruned reloads it
    "roberta": lambda: (transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=3)),
        "roberta.embeddings.word_embeddings", IDS, False),
    "distilbert": lambda: (transformers.DistilBertForSequenceClassification(
        transformers.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                      max_position_embeddings=64, num_labels=3)),
        "distilbert.embeddings.word_embeddings", IDS, False),
    "opt": lambda: (transformers.OPTForCausalLM(transformers.OPTConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=32)), "model.decoder.embed_tokens", IDS,
        False),
    "vit": lambda: (transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, num_labels=3)), "vit.embeddings.patch_embeddings.projection",
        torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), False),
}


@pytest.mark.parametrize("name", list(MORE))
def test_more_hf_families(name, tmp_path):
    m, emb, x, uniform = MORE[name]()
    m = randomize(m.eval()).double()
    x = x.double() if x.is_floating_point() else x
    dg, res = check_oracle(m, x, PlanSettings(ratio=0.5, ignore=[emb]), tol=1e-9, expect_exact=True)
    assert res.after.flops < 0.9 * res.before.flops
    assert res.model.config.prunestudio["uniform"] is uniform
    res.model.save_pretrained(tmp_path)
    with torch.no_grad():
        want = res.model(x).logits
        if uniform:  # the plain config describes the pruned model
            back = type(m).from_pretrained(tmp_path).double().eval()
        else:
            back = hf.load_pruned(type(m), tmp_path).double().eval()
        assert torch.equal(back(x).logits, want)
