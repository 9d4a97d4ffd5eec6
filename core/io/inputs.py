"""Example inputs: read from the user's ``file.py:function``, fitted to the model's vocabulary, and
a forward that fails on them explained (which layer raised, a dtype mismatch)."""
from __future__ import annotations

import re
import warnings

import torch
from torch import nn

from core.errors import LoadError, TraceError
from core.io.messages import exc_text
from core.io.pyfile import call_factory
from core.io.specs import clean_spec, split_factory_spec
from core.trace.inputs import ExampleInputs, as_example_inputs


def load_inputs(spec: str, trust=False) -> ExampleInputs:
    """Example inputs from ``file.py:function``; the function returns a tensor, a tuple of tensors,
    a dict of keyword tensors or ``(args_tuple, kwargs_dict)``. The file runs only if ``trust`` (a
    :class:`~core.io.trust.TrustPolicy` or bool) allows it."""
    spec = clean_spec(spec or "")
    parts = split_factory_spec(spec)
    if parts is None:
        raise LoadError(f"inputs '{spec}' must be given as path/to/file.py:function")
    path, name = parts
    value = call_factory(path, name, "inputs function", trust)
    try:
        ex = as_example_inputs(value)
    except Exception as e:
        raise LoadError(f"{path}:{name}() returned {type(value).__name__}; example inputs must be a "
                        f"tensor, a tuple of tensors or a dict") from e
    if not ex.args and not ex.kwargs:
        raise LoadError(f"{path}:{name}() returned no inputs")
    return ex


def input_vocab_size(model: nn.Module) -> int | None:
    """The vocabulary of the model's input embedding (Hugging Face ``get_input_embeddings``),
    None when the model has none."""
    get = getattr(model, "get_input_embeddings", None)
    if get is None:
        return None
    try:
        emb = get()
    except Exception:  # noqa: BLE001
        return None
    n = getattr(emb, "num_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def fit_inputs(model: nn.Module, inputs) -> ExampleInputs:
    """Random integer example inputs (``make_inputs`` draws them in [0, 100)) folded into the
    model's vocabulary (``t % vocab``) when it is smaller, so token ids stay valid."""
    ex = as_example_inputs(inputs)
    n = input_vocab_size(model)
    if n is None:
        return ex

    def fit(t):
        if isinstance(t, torch.Tensor) and not t.is_floating_point() and t.dtype != torch.bool \
                and t.device.type != "meta" and t.numel() and int(t.max()) >= n:
            return t % n
        return t
    return ExampleInputs(tuple(fit(a) for a in ex.args), {k: fit(v) for k, v in ex.kwargs.items()})


def locate_forward_failure(model: nn.Module, inputs) -> tuple[str, str, BaseException] | None:
    """Run one forward with hooks and return ``(layer name, layer type, exception)`` for the
    innermost layer whose forward raised, or None if the forward runs."""
    ex = as_example_inputs(inputs)
    names = {id(m): n for n, m in model.named_modules()}
    stack: list = []
    culprit: list = []
    hooks = []

    def pre(mod, _args):
        stack.append(mod)

    def post(mod, _args, _out):
        if stack and stack[-1] is mod:
            stack.pop()

    for m in model.modules():
        hooks.append(m.register_forward_pre_hook(pre))
        hooks.append(m.register_forward_hook(post))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ex.call(model)
    except Exception as e:  # noqa: BLE001
        culprit = [stack[-1] if stack else model, e]
    finally:
        for h in hooks:
            h.remove()
    if not culprit:
        return None
    mod, e = culprit
    return names.get(id(mod), ""), type(mod).__name__, e


def _float_dtype(model: nn.Module):
    for p in list(model.parameters()) + list(model.buffers()):
        if p.is_floating_point():
            return p.dtype
    return None


def explain_forward_failure(model: nn.Module, inputs, error: BaseException) -> BaseException:
    """A clearer error for a forward that failed on the example inputs: it names the layer that
    raised and, when the input dtype differs from the weights', says so."""
    try:
        where = locate_forward_failure(model, inputs)
    except Exception:  # noqa: BLE001
        where = None
    if where is None:
        return error
    name, kind, e = where
    ex = as_example_inputs(inputs)
    layer = f"layer '{name}' ({kind})" if name else f"the top-level forward ({kind})"
    hint = ""
    wd = _float_dtype(model)
    dts = {t.dtype for t in list(ex.args) + list(ex.kwargs.values()) if isinstance(t, torch.Tensor)}
    mismatch = wd is not None and dts and (
        any(d.is_floating_point and d != wd for d in dts) or
        (all(not d.is_floating_point for d in dts) and
         re.search(r"scalar type|dtype|expected .*(Float|Half|Double)", str(e))))
    if mismatch:
        hint = (f"; the example input is {', '.join(sorted(str(d).replace('torch.', '') for d in dts))}"
                f" but the model's weights are {str(wd).replace('torch.', '')}: check --input-dtype")
    return TraceError(f"the model's forward failed in {layer} on the example inputs "
                      f"({ex.describe()}): {exc_text(e)}{hint}")
