"""Example inputs: a tensor, a tuple of tensors, or a dict of keyword tensors."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from core.errors import PruneStudioError

DTYPES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16,
          "half": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
          "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "bool": torch.bool}


@dataclass
class ExampleInputs:
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def to(self, device) -> "ExampleInputs":
        mv = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return ExampleInputs(tuple(mv(a) for a in self.args), {k: mv(v) for k, v in self.kwargs.items()})

    def describe(self) -> str:
        def d(t):
            return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}" if isinstance(
                t, torch.Tensor) else type(t).__name__
        parts = [d(a) for a in self.args] + [f"{k}={d(v)}" for k, v in self.kwargs.items()]
        return ", ".join(parts) or "no inputs"

    def call(self, model):
        return model(*self.args, **self.kwargs)


def as_example_inputs(x) -> ExampleInputs:
    if isinstance(x, ExampleInputs):
        return x
    if isinstance(x, torch.Tensor):
        return ExampleInputs((x,))
    if isinstance(x, dict):
        return ExampleInputs((), dict(x))
    if isinstance(x, (tuple, list)):
        if len(x) == 2 and isinstance(x[0], tuple) and isinstance(x[1], dict):
            return ExampleInputs(x[0], x[1])
        return ExampleInputs(tuple(x))
    raise PruneStudioError(f"example inputs must be a tensor, a tuple of tensors or a dict, "
                           f"not {type(x).__name__}")


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise PruneStudioError(f"input shape '{text}' is not a comma-separated list of integers") from None
    if not shape or any(s <= 0 for s in shape):
        raise PruneStudioError(f"input shape '{text}' must have positive sizes")
    return shape


def make_inputs(shapes: str | list[str], dtype: str = "float32", device: str = "cpu",
                seed: int = 0) -> ExampleInputs:
    """Random example inputs from shape strings such as "1,3,224,224" (several separated by ';')."""
    if isinstance(shapes, str):
        shapes = [s for s in shapes.split(";") if s.strip()]
    if dtype not in DTYPES:
        raise PruneStudioError(f"unknown input dtype '{dtype}' (choose from {', '.join(DTYPES)})")
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        shape = parse_shape(s)
        if dt.is_floating_point:
            t = torch.randn(shape, generator=g).to(dt)
        elif dt == torch.bool:
            t = torch.randint(0, 2, shape, generator=g).bool()
        else:
            t = torch.randint(0, 100, shape, generator=g).to(dt)
        out.append(t.to(device))
    return ExampleInputs(tuple(out))
