"""What an exported ONNX file's interface looks like: input/output names a person can read and a
dynamic batch dimension (:func:`core.io.onnx.export.export_onnx` uses these).

Names: an imported ONNX model keeps its graph's own names; otherwise inputs are named after the
``forward`` parameters (``x``, ``input_ids``) and outputs after the keys of a dict/dataclass
output, else ``output`` (one tensor) or ``output_0``, ``output_1``...
"""
from __future__ import annotations

import dataclasses
import inspect

import torch


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}_{k}")
    return out


def input_names(model, ex) -> list[str]:
    """One name per example input (positional args first, then keywords)."""
    own = getattr(model, "input_names", None)
    if isinstance(own, list) and len(own) == len(ex.args) and not ex.kwargs:
        return list(own)
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    n = len(ex.args)
    if len(positional) >= n:
        names = positional[:n]
    else:
        names = ["input"] if n == 1 else [f"input_{i}" for i in range(n)]
    return _unique(names + list(ex.kwargs))


def _keys(out) -> list[str] | None:
    """Output names from a dict or dataclass output whose values are all tensors."""
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        items = [(f.name, getattr(out, f.name)) for f in dataclasses.fields(out)]
    elif isinstance(out, dict):
        items = list(out.items())
    else:
        return None
    items = [(k, v) for k, v in items if v is not None]
    if all(isinstance(v, torch.Tensor) for _, v in items) and items:
        return [str(k) for k, _ in items]
    return None


def output_names(model, out, n: int) -> list[str]:
    """``n`` names for the flattened tensors of the output ``out``."""
    own = getattr(model, "output_names", None)
    if isinstance(own, list) and len(own) == n:
        return list(own)
    keys = _keys(out)
    if keys is not None and len(keys) == n:
        return _unique(keys)
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def batch_size(feeds: list[torch.Tensor]) -> int | None:
    """The shared leading size of the inputs (None when an input has no leading dim)."""
    sizes = {int(t.shape[0]) for t in feeds if t.dim() >= 1}
    if len(sizes) != 1 or any(t.dim() == 0 for t in feeds):
        return None
    return sizes.pop()


def dynamic_shapes(model, ex):
    """torch.export's ``dynamic_shapes`` marking dim 0 of every input as the batch (``Dim.AUTO``:
    the exporter keeps it symbolic unless the model fixes it), shaped like ``forward``'s
    parameters (a ``*args`` forward takes one tuple)."""
    spec = {0: torch.export.Dim.AUTO}
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    args = tuple(spec for _ in ex.args)
    if params and params[0].kind == params[0].VAR_POSITIONAL:
        args = (args,)
    if ex.kwargs:
        return None  # keyword inputs: keep static shapes (the structures must match exactly)
    return args


def with_batch(ex, b: int, seed: int = 0):
    """The example inputs resized to batch ``b`` (random floats, the integers repeated)."""
    from core.trace.inputs import ExampleInputs
    g = torch.Generator().manual_seed(seed)

    def resize(t):
        if t.is_floating_point():
            return torch.randn((b, *t.shape[1:]), generator=g, dtype=t.dtype)
        reps = -(-b // t.shape[0])
        return t.repeat(reps, *([1] * (t.dim() - 1)))[:b].clone()
    return ExampleInputs(tuple(resize(t) for t in ex.args),
                         {k: resize(v) for k, v in ex.kwargs.items()})


def is_dynamic(path: str, n_inputs: int) -> bool:
    """Whether dim 0 of every input of the ONNX file is symbolic."""
    import onnx
    try:
        g = onnx.load(path, load_external_data=False).graph
    except Exception:  # noqa: BLE001 - not an ONNX file: the onnxruntime check will say so
        return False
    inits = {t.name for t in g.initializer}
    ins = [v for v in g.input if v.name not in inits][:n_inputs]
    return bool(ins) and all(v.type.tensor_type.shape.dim and
                             not v.type.tensor_type.shape.dim[0].HasField("dim_value") for v in ins)


def name_batch_dim(path: str, n_inputs: int) -> None:
    """Rename the exporter's symbol for the batch (``s77``) to ``batch`` everywhere in the file."""
    import onnx
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - not an ONNX file: the onnxruntime check will say so
        return
    g = model.graph
    inits = {t.name for t in g.initializer}
    first = [v for v in g.input if v.name not in inits][:n_inputs]
    syms = {v.type.tensor_type.shape.dim[0].dim_param for v in first
            if v.type.tensor_type.shape.dim}
    syms.discard("")
    if len(syms) != 1 or "batch" in syms:
        return
    sym = syms.pop()
    for v in (*g.input, *g.output, *g.value_info):
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param == sym:
                d.dim_param = "batch"
    onnx.save(model, path)
