"""Evaluation: top-1/top-5 accuracy and loss for classifiers, loss for any task.

The loss is cross-entropy by default; any task can give its own ``loss_fn(output, target) ->
scalar`` (or ``loss_fn(output)`` when the data has no target), loaded from ``file.py:fn`` with
:func:`load_loss_fn`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.train.data import split_batch
from core.errors import Cancelled, LoadError

BUILTIN_LOSSES = ("cross_entropy", "mse", "l1")


@dataclass
class EvalResult:
    loss: float
    top1: float | None  # fraction in [0, 1]; None when the task is not classification
    top5: float | None
    samples: int
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        acc = (f"top-1 {self.top1:.2%}, top-5 {self.top5:.2%}, " if self.top1 is not None else "")
        return f"{acc}loss {self.loss:.4f} on {self.samples} samples"


def load_loss_fn(spec: str | None, trust=False):
    """None / 'cross_entropy' / 'mse' / 'l1' / 'file.py:fn' (the file is imported only if ``trust``,
    a :class:`core.io.trust.TrustPolicy` or bool, allows it)."""
    if spec is None or spec == "cross_entropy":
        return None
    if spec == "mse":
        return F.mse_loss
    if spec == "l1":
        return F.l1_loss
    from core.io.pyfile import get_function
    from core.io.specs import split_factory_spec
    fs = split_factory_spec(spec.strip())
    if not fs:
        raise LoadError(f"loss '{spec}': give {', '.join(BUILTIN_LOSSES)} or file.py:function")
    return get_function(fs[0], fs[1], "loss function", trust)


def to_device(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


def call_model(model, x):
    if isinstance(x, dict):
        return model(**x)
    if isinstance(x, (tuple, list)):
        return model(*x)
    return model(x)


def is_classification(out, y) -> bool:
    return (isinstance(out, torch.Tensor) and out.ndim == 2 and isinstance(y, torch.Tensor)
            and y.ndim == 1 and not y.is_floating_point() and y.shape[0] == out.shape[0])


def compute_loss(out, y, loss_fn=None) -> torch.Tensor:
    if loss_fn is not None:
        return loss_fn(out, y) if y is not None else loss_fn(out)
    if is_classification(out, y):
        return F.cross_entropy(out.float(), y)
    if y is None:
        raise LoadError("the data has no targets and no loss function was given (use --loss file.py:fn)")
    if isinstance(out, torch.Tensor) and isinstance(y, torch.Tensor) and out.shape == y.shape:
        return F.mse_loss(out.float(), y.float())
    raise LoadError(f"cannot compute a default loss between output "
                    f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__} and "
                    f"target {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}; "
                    f"give a loss function (file.py:fn)")


@torch.no_grad()
def evaluate(model: nn.Module, loader, loss_fn=None, device="cpu", max_batches: int | None = None,
             progress=None, should_stop=None) -> EvalResult:
    """Mean loss over samples and, for classifiers, top-1/top-5 accuracy. The model's train/eval
    mode is restored afterwards."""
    if loader is None:
        raise LoadError("no validation data to evaluate on")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    total_loss, n, c1, c5, classif = 0.0, 0, 0, 0, True
    try:
        total = len(loader) if max_batches is None else min(len(loader), max_batches)
    except TypeError:
        total = max_batches or 0
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            if should_stop is not None and should_stop():
                raise Cancelled("cancelled by the user")
            x, y = split_batch(batch)
            x, y = to_device(x, device), to_device(y, device)
            out = call_model(model, x)
            loss = compute_loss(out, y, loss_fn)
            bs = y.shape[0] if isinstance(y, torch.Tensor) and y.ndim > 0 else (
                x.shape[0] if isinstance(x, torch.Tensor) else 1)
            total_loss += float(loss) * bs
            n += bs
            if classif and is_classification(out, y):
                k = min(5, out.shape[1])
                top = out.topk(k, dim=1).indices
                hit = top == y[:, None]
                c1 += int(hit[:, 0].sum())
                c5 += int(hit.any(dim=1).sum())
            else:
                classif = False
            if progress is not None:
                progress("evaluate", i + 1, total, f"loss {total_loss / max(n, 1):.4f}")
    finally:
        model.train(was_training)
    if n == 0:
        raise LoadError("the validation data is empty")
    return EvalResult(total_loss / n, c1 / n if classif else None, c5 / n if classif else None, n,
                      time.perf_counter() - t0)
