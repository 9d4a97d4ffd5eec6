"""Training entry points shared by the GUI, the CLI and the tests: :func:`train` (the loop itself
lives in :mod:`core.train.trainer`), :func:`finetune`, :func:`sparse_train` and
:func:`iterative_prune` (several prune steps with fine-tuning between them).

Like the pipeline, they take ``progress(stage, done, total, message)`` and ``should_stop()`` (a
cancel raises :class:`~core.errors.Cancelled`), plus ``paused()``. They train a COPY: the model
passed in is never modified.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import Cancelled, PruneStudioError
from core.train.data import Data
from core.train.evaluate import evaluate
from core.train.trainer import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train", "finetune", "sparse_train", "IterativeResult",
           "compose_kept", "iterative_prune"]


def finetune(model, data, config=None, teacher=None, **kw) -> TrainResult:
    """Fine-tune (a copy of) a pruned model, optionally distilling from ``teacher``."""
    return train(model, data, config, teacher=teacher, **kw)


def sparse_train(model, data, dg, config=None, lam: float = 5e-4, alpha: float = 4.0, **kw) -> TrainResult:
    """Sparse learning: train with the group regulariser so unimportant groups shrink to zero."""
    cfg = copy.copy(config or TrainConfig())
    if cfg.sparse_lambda <= 0:
        cfg.sparse_lambda = lam
        cfg.sparse_alpha = alpha
    return train(model, data, cfg, dg=dg, **kw)


# ---- iterative pruning

@dataclass
class IterativeResult:
    model: nn.Module
    steps: list[dict]  # per step: target, params, flops, eval after pruning, eval after fine-tuning
    history: list[dict]
    kept: dict  # composed kept indices relative to the ORIGINAL model's tensors
    base_params: int
    base_flops: float


def compose_kept(prev: dict, new: dict) -> dict:
    """Kept indices of a second pruning step expressed in the original tensors' indices."""
    out = {k: {d: list(v) for d, v in dims.items()} for k, dims in prev.items()}
    for name, dims in new.items():
        for d, keep in dims.items():
            base = out.get(name, {}).get(d)
            out.setdefault(name, {})[d] = [base[i] for i in keep] if base is not None else list(keep)
    return out


def _step_settings(settings, steps: int, k: int):
    """Settings for step k (1-based): every step removes the same fraction of what is left."""
    s = copy.deepcopy(settings)

    def per_step(t):
        return 1.0 - (1.0 - t) ** (1.0 / steps)

    if s.target_flops is not None:
        s.target_flops = per_step(s.target_flops)
    elif s.target_params is not None:
        s.target_params = per_step(s.target_params)
    else:
        s.ratio = per_step(s.ratio or 0.0)
        s.overrides = {m: per_step(r) for m, r in s.overrides.items()}
    return s


def iterative_prune(model: nn.Module, data: Data, settings, steps: int = 3,
                    config: TrainConfig | None = None, inputs=None, loss_fn=None, distill: bool = False,
                    verify: bool = False, progress=None, should_stop=None, paused=None, on_epoch=None,
                    on_batch=None) -> IterativeResult:
    """Several prune steps towards the target (each removes the same share of what is left),
    fine-tuning ``config.epochs`` epochs between steps. The targets are relative to the original."""
    from core.metrics import count_flops, count_params
    from core.pipeline import analyze_model, prune_model
    from core.trace.inputs import as_example_inputs

    if steps < 1:
        raise PruneStudioError(f"iterative pruning needs at least one step, got {steps}")
    cfg = config or TrainConfig()
    ex = as_example_inputs(inputs if inputs is not None else data.example_input(1))
    device = torch.device(cfg.device)
    ex = ex.to(device)
    current = copy.deepcopy(model).to(device).eval()
    base_params, base_flops = count_params(current), count_flops(current, ex)
    teacher = model if distill else None
    kept_total: dict = {}
    records, history = [], []
    for k in range(1, steps + 1):
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled by the user")
        st = _step_settings(settings, steps, k)
        if progress:
            progress("iterative", k - 1, steps, f"prune step {k}/{steps}")
        dg = analyze_model(current, ex, should_stop=should_stop)
        res = prune_model(current, ex, dg, st, latency=False, verify=verify, should_stop=should_stop)
        kept_total = compose_kept(kept_total, res.kept)
        pruned = res.model
        rec = {"step": k, "params": res.after.params, "flops": res.after.flops,
               "flops_fraction": res.after.flops / max(base_flops, 1),
               "params_fraction": res.after.params / max(base_params, 1)}
        val = data.val_loader()
        if val is not None:
            rec["pruned"] = evaluate(pruned, val, loss_fn, device).to_json()
        if cfg.epochs > 0:
            step_cfg = copy.copy(cfg)
            if cfg.checkpoint_dir:
                step_cfg.checkpoint_dir = os.path.join(cfg.checkpoint_dir, f"step{k}")
            tr = train(pruned, data, step_cfg, loss_fn=loss_fn, teacher=teacher, progress=progress,
                       should_stop=should_stop, paused=paused, on_epoch=on_epoch, on_batch=on_batch)
            pruned = tr.model
            history += [{**h, "step": k} for h in tr.history]
            if tr.final is not None:
                rec["finetuned"] = tr.final.to_json()
        records.append(rec)
        current = pruned.eval()
    if progress:
        progress("iterative", steps, steps, "done")
    return IterativeResult(current, records, history, kept_total, base_params, base_flops)
