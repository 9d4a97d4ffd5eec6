"""Hugging Face model families: static attributes and ``config`` follow the pruned shapes.

Pruning slices tensors; Hugging Face modules also keep sizes in Python attributes
(``Conv1D.nf``, ``GPT2Attention.split_size``/``num_heads``, ``BertSelfAttention.all_head_size``...) and
in the model's ``config``. During a trace of a ``PreTrainedModel`` every linear input (the channels
a pruning can remove) is coupled with a *virtual slot of the root module* ``""``: pruning any group
therefore touches the root, whose updater (:func:`sync_hf`) re-reads every size from the pruned
tensors and rewrites the attributes and the config.

Config semantics after pruning:

- uniform pruning (every layer keeps the same sizes) and a config that can describe it
  (``intermediate_size``/``n_inner``, ``num_attention_heads``, ``num_key_value_heads``,
  ``hidden_size``, and ``head_dim`` for Llama-style configs): the config is rewritten, and
  ``save_pretrained`` / ``from_pretrained`` round-trip unchanged.
- otherwise (sizes differ between layers, or BERT/GPT-2 head pruning, whose configs derive the
  head size as ``hidden_size // num_attention_heads``): the config keeps its original sizes and
  records the real shapes in ``config.prunestudio`` (``{"uniform": False, "shapes": {...}}``).
  Plain ``from_pretrained`` cannot rebuild such a model (it stops on the size mismatch); load it
  with :func:`load_pruned`, which rebuilds the model and reshapes it from ``config.prunestudio``.
"""
from __future__ import annotations

import contextlib
import sys

import torch
from torch import nn

from core import families
from core.ops.registry import OP_HANDLERS, register_op
from core.prune.apply import MODULE_UPDATERS, register_module_updater

families.load_before(__name__)  # the handlers and updaters this module wraps

_MISSING = object()


def _tf():
    return sys.modules.get("transformers")


def _hf_root(ctx):
    """The traced model when it is a Hugging Face ``PreTrainedModel`` (cached per trace), else None."""
    t = getattr(ctx, "tracer", None)
    if t is None:
        return None
    cached = t.__dict__.get("_ps_hf_root", _MISSING)
    if cached is not _MISSING:
        return cached
    root = None
    tf = _tf()
    if tf is not None and isinstance(t.root, tf.PreTrainedModel):
        root = t.root
    t.__dict__["_ps_hf_root"] = root
    t.__dict__["_ps_hf_seen"] = []
    return root


def _trigger(ctx, call, x):
    """Couple the channels of ``x``'s last dim with a virtual slot of the root module."""
    if _hf_root(ctx) is None or not isinstance(x, torch.Tensor) or x.ndim == 0:
        return
    d = x.ndim - 1
    for lab in ctx.labels(x):
        if lab.dims == (d,):
            seen = ctx.tracer.__dict__["_ps_hf_seen"]
            if any(a is lab.atoms for a in seen):
                return
            seen.append(lab.atoms)
            if (lab.atoms < 0).any():
                return
            slot = ctx.table.virtual_slot("", f"hf_config_{len(seen)}", int(x.shape[d]))
            ctx.table.join(lab.atoms, slot.atoms, ctx.reason(call, "model config"))
            return


def _wrap(name, x_of):
    base = OP_HANDLERS[name]

    def handler(ctx, call):
        base(ctx, call)
        try:
            x = x_of(call)
        except (IndexError, KeyError):
            return
        _trigger(ctx, call, x)

    register_op(name)(handler)


_wrap("linear", lambda call: call.args[0])
_wrap("addmm", lambda call: call.args[1])


# --------------------------------------------------------------------------------------------
# module updaters: one dispatcher for transformers classes (imported lazily)


def _next_updater(m):
    for typ, fn in MODULE_UPDATERS:
        if fn is not _dispatch and isinstance(m, typ):
            return fn
    return None


@register_module_updater(nn.Module)
def _dispatch(m, virtual):
    tf = _tf()
    if tf is not None:
        from transformers.pytorch_utils import Conv1D
        if isinstance(m, Conv1D):
            m.nf = m.weight.shape[1]
            return
        if isinstance(m, tf.PreTrainedModel):
            sync_hf(m)
            return
    fn = _next_updater(m)
    if fn is not None:
        fn(m, virtual)


def _rows(layer):
    w = layer.weight
    if type(layer).__name__ == "Conv1D":
        return w.shape[1]
    return w.shape[0]


def _layers(model):
    """Per decoder/encoder layer: (attention module, n_q_heads, n_kv_heads, head_dim, mlp width)."""
    out = []
    for name, m in model.named_modules():
        cls = type(m).__name__
        if hasattr(m, "q_proj") and hasattr(m, "k_proj") and hasattr(m, "head_dim"):  # Llama-like
            hd = m.head_dim
            out.append(("attn", name, m, _rows(m.q_proj) // hd, _rows(m.k_proj) // hd, hd))
        elif cls.endswith("SelfAttention") and hasattr(m, "attention_head_size"):  # BERT-like
            q = getattr(m, "query", None) or getattr(m, "q_lin", None)  # (DistilBERT: q_lin)
            if q is None:
                continue
            hd = m.attention_head_size
            n = _rows(q) // hd
            m.num_attention_heads, m.all_head_size = n, n * hd
            if hasattr(m, "n_heads"):
                m.n_heads = n
            out.append(("attn", name, m, n, n, hd))
        elif hasattr(m, "c_attn") and hasattr(m, "split_size"):  # GPT-2
            hd = m.head_dim
            inner = _rows(m.c_attn) // 3
            m.split_size, m.num_heads, m.embed_dim = inner, inner // hd, _rows(m.c_proj)
            out.append(("attn", name, m, inner // hd, inner // hd, hd))
        elif hasattr(m, "up_proj") and hasattr(m, "down_proj"):
            out.append(("mlp", name, m, _rows(m.up_proj)))
        elif cls.endswith("Intermediate") and hasattr(m, "dense"):
            out.append(("mlp", name, m, _rows(m.dense)))
        elif hasattr(m, "c_fc") and hasattr(m, "c_proj"):
            out.append(("mlp", name, m, _rows(m.c_fc)))
    return out


def block_kinds(model) -> dict[str, str]:
    """Module name -> ``"attn"`` (an attention block: its groups are heads, or key/value heads
    with their query heads) or ``"mlp"`` (a feed-forward block: its group is the intermediate
    width), for every block of a Hugging Face model (works on the meta device)."""
    return {x[1]: x[0] for x in _layers(model)}


def _uniform(vals):
    return vals[0] if vals and all(v == vals[0] for v in vals) else None


def sync_hf(model) -> dict:
    """Rewrite attributes and ``model.config`` from the (pruned) tensor shapes; returns the
    ``config.prunestudio`` record (``uniform`` tells whether the plain config describes the model)."""
    cfg = model.config
    rec = dict(getattr(cfg, "prunestudio", None) or {})
    rec.setdefault("original", {k: getattr(cfg, k, None) for k in (
        "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
        "n_inner")})
    layers = _layers(model)
    attn = [x for x in layers if x[0] == "attn"]
    mlp = [x for x in layers if x[0] == "mlp"]
    new = {}
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if isinstance(emb, nn.Embedding):  # (vision models embed patches with a conv instead)
        new["hidden_size"] = emb.weight.shape[1]
    nq, nkv = _uniform([a[3] for a in attn]), _uniform([a[4] for a in attn])
    widths = _uniform([m[3] for m in mlp])
    uniform = (not attn or (nq is not None and nkv is not None)) and (not mlp or widths is not None)
    kind = cfg.model_type
    if attn:
        hd = attn[0][5]
        if kind in ("bert", "gpt2", "roberta") and nq is not None:
            # the head size is derived from hidden_size // num_attention_heads
            if (new.get("hidden_size", cfg.hidden_size) != nq * hd):
                uniform = False
        if nq is not None:
            new["num_attention_heads"] = nq
        if nkv is not None and hasattr(cfg, "num_key_value_heads"):
            new["num_key_value_heads"] = nkv
        if kind not in ("bert", "gpt2", "roberta"):
            new["head_dim"] = hd
        for a in attn:
            m = a[2]
            if hasattr(m, "num_key_value_groups") and a[4]:
                m.num_key_value_groups = a[3] // a[4]
            if hasattr(m, "num_heads"):
                m.num_heads = a[3]
    if widths is not None:
        new["n_inner" if kind == "gpt2" else "intermediate_size"] = widths
    if uniform:
        absent = object()
        amap = getattr(cfg, "attribute_map", {}) or {}
        old = {amap.get(k, k): cfg.__dict__.get(amap.get(k, k), absent) for k in new}
        for k, v in new.items():
            setattr(cfg, k, v)
        if _config_describes(model, cfg):
            rec["uniform"] = True
            rec.pop("shapes", None)
        else:  # a config field this family names differently (OPT's ffn_dim...): keep the sizes
            for k, v in old.items():
                if v is absent:
                    cfg.__dict__.pop(k, None)
                else:
                    setattr(cfg, k, v)
            uniform = False
    if not uniform:
        rec["uniform"] = False
        rec["shapes"] = {n: list(p.shape) for n, p in model.state_dict().items()}
    rec["sizes"] = new  # what the model has, whether or not the config could take it
    cfg.prunestudio = rec
    return rec


def _config_describes(model, cfg) -> bool:
    """Whether ``type(model)(cfg)`` has exactly the pruned model's tensor shapes — the only
    reliable test that ``from_pretrained`` will rebuild it. Built on the meta device: no memory."""
    import copy
    import warnings

    validate = getattr(cfg, "validate", None)  # transformers 5: strict configs (e.g. Llama's
    if callable(validate):  # hidden_size % num_attention_heads) refuse to be saved or loaded
        try:
            validate()
        except Exception:  # noqa: BLE001
            return False
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = type(model)(copy.deepcopy(cfg))
    except Exception:  # noqa: BLE001 - a class that cannot be rebuilt from its config
        return False
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return {k: tuple(v.shape) for k, v in ref.state_dict().items()} == mine


def load_pruned(model_cls, path, **kwargs):
    """Load a pruned Hugging Face model saved with ``save_pretrained``, uniform or not.

    Non-uniform: the model is built from the original config with its parameters on the meta
    device (no memory), reshaped from ``config.prunestudio``, and the checkpoint's tensors are
    assigned shard by shard - memory holds the pruned model once, never the original size.
    ``dtype`` (or ``torch_dtype``): the floating dtype wanted ("auto": the checkpoint's; default:
    torch's default dtype, as ``model_cls(config)`` would have)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    rec = getattr(cfg, "prunestudio", None) or {}
    if rec.get("uniform", True):
        return model_cls.from_pretrained(path, **kwargs)
    for k, v in rec.get("original", {}).items():
        if v is not None:
            setattr(cfg, k, v)
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype")) or torch.get_default_dtype()
    with _parameters_on_meta():
        model = model_cls(cfg)
    owners = {}
    for mname, mod in model.named_modules():
        for a, p in list(mod._parameters.items()) + list(mod._buffers.items()):
            if p is not None:
                owners[f"{mname}.{a}" if mname else a] = (mod, a)
    for name, shape in rec["shapes"].items():
        if name in owners:
            mod, a = owners[name]
            t = getattr(mod, a)
            if list(t.shape) != shape:
                new = torch.zeros(shape, dtype=t.dtype, device=t.device)
                if isinstance(t, nn.Parameter):
                    mod._parameters[a] = nn.Parameter(new, requires_grad=t.requires_grad)
                else:
                    mod._buffers[a] = new
                from core.prune.apply import update_module
                update_module(mod, {})
    sync_hf(model)
    from safetensors.torch import load_file
    import glob
    import os
    loaded, unexpected = set(), []
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        sd = _checkpoint_names_to_model(model, load_file(f))
        if dtype != "auto":
            sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
        unexpected += model.load_state_dict(sd, strict=False, assign=True).unexpected_keys
        loaded.update(sd)
        del sd
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in model.state_dict() if k not in loaded and k not in tied
               and not any(k.startswith(t) for t in tied)]
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    missing += [n for n, p in model.named_parameters() if p.is_meta and n not in missing]
    if unexpected or missing:
        raise RuntimeError(f"load_pruned: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


@contextlib.contextmanager
def _parameters_on_meta():
    """Modules built inside get their parameters on the meta device (nothing allocated or
    initialised); buffers such as rotary frequencies, which no checkpoint holds, stay real."""
    register = nn.Module.register_parameter

    def on_meta(self, name, param):
        register(self, name, param)
        p = self._parameters.get(name)
        if p is not None and not p.is_meta:
            self._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _checkpoint_names_to_model(model, sd: dict) -> dict:
    """``save_pretrained`` may rename weights on the way out (transformers' weight conversions,
    e.g. ViT's ``layers.0.attention.q_proj`` is saved as ``encoder.layer.0.attention.attention.
    query``); map the saved names back by asking transformers how it would save this model."""
    try:
        from transformers.modeling_utils import revert_weight_conversion
    except ImportError:  # older transformers: names are saved as they are
        return sd
    mine = model.state_dict()
    try:
        saved = revert_weight_conversion(model, dict(mine))
    except Exception:  # noqa: BLE001 - a conversion that is not a plain renaming
        return sd
    by_id = {id(t): k for k, t in mine.items()}
    rename = {k: by_id[id(t)] for k, t in saved.items() if id(t) in by_id}
    return {rename.get(k, k): v for k, v in sd.items()}


class PrunedConfigError(RuntimeError):
    pass
