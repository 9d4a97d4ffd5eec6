"""Latency lookup tables as plain data, and what a plan's widths cost by them.

A :class:`LatencyTable` holds, per timed layer (conv, linear), its forward time measured on one
device at a grid of (input, output) channel counts; between grid points it is interpolated
bilinearly, outside it clamped. The tables are measured by ``core.metrics.tables`` and handed to
the planner as data (the planner never times anything), so a table saved on one machine can plan
for it from another.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


from core.errors import PlanError

TABLE_VERSION = 1


def _interp(x: float, xs: list, ys: list) -> float:
    """Piecewise-linear through (xs, ys), clamped above the grid (xs ascending). Below the first
    point: the line through the first two (its intercept is the layer's fixed overhead), never
    under proportional scaling of the first - clamping there costed a ResNet-50 layer kept at 5 %
    as at 25 %, and the tables claimed 37 % removable where 95 % was measured."""
    if x <= xs[0]:
        if x >= xs[0] or len(xs) < 2 or xs[0] <= 0:
            return float(ys[0])
        slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        return float(max(ys[0] + slope * (x - xs[0]), ys[0] * x / xs[0]))
    for i in range(1, len(xs)):
        if x <= xs[i]:
            f = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
            return float(ys[i - 1] + f * (ys[i] - ys[i - 1]))
    return float(ys[-1])


@dataclass
class LayerTable:
    out_dim: int  # the weight dims that carry output and input channels
    in_dim: int
    size_out: int  # full widths
    size_in: int
    grid_out: list[int]
    grid_in: list[int]
    ms: list[list[float]]  # ms[i][j]: time at grid_in[i] inputs, grid_out[j] outputs
    tied: bool = False  # depthwise: input width follows output width (one grid axis)
    calls: int = 1  # forwards of the layer per model forward

    def at(self, w_in: float, w_out: float) -> float:
        key = (w_in, w_out)
        memo = self.__dict__.setdefault("_memo", {})  # the knapsack asks the same widths often
        if key not in memo:
            ms = self.ms
            row = [_interp(w_out, self.grid_out, ms[i]) for i in range(len(ms))]
            one = self.tied or len(self.grid_in) == 1
            memo[key] = (row[0] if one else _interp(w_in, self.grid_in, row)) * self.calls
        return memo[key]

    @property
    def full_ms(self) -> float:
        return self.at(self.size_in, self.size_out)


@dataclass
class LatencyTable:
    device: str
    threads: int
    model: str  # what it was measured for (a fingerprint of the model and inputs)
    input: str
    base_ms: float  # the whole model's measured median
    layers: dict[str, LayerTable] = field(default_factory=dict)  # weight tensor name -> table
    version: int = TABLE_VERSION

    def to_json(self) -> dict:
        return {**asdict(self), "layers": {k: asdict(v) for k, v in self.layers.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "LatencyTable":
        if not isinstance(d, dict) or d.get("version") != TABLE_VERSION or "layers" not in d:
            raise PlanError(f"not a PruneStudio latency table (version {TABLE_VERSION})")
        try:
            layers = {k: LayerTable(**v) for k, v in d["layers"].items()}
            return cls(**{**d, "layers": layers})
        except TypeError as e:
            raise PlanError(f"latency table: {e}") from None

    @classmethod
    def load(cls, path: str) -> "LatencyTable":
        """(Saving is the caller's: outputs are written atomically by core.io.)"""
        try:
            with open(path) as f:
                return cls.from_json(json.load(f))
        except (OSError, ValueError) as e:
            raise PlanError(f"cannot read the latency table {path}: {e}") from None

    @property
    def tabled_ms(self) -> float:
        return sum(t.full_ms for t in self.layers.values())


def widths(table: LayerTable, kept: dict, name: str) -> tuple[int, int]:
    """The (input, output) widths of a timed layer's weight under a plan's kept indices."""
    dims = kept.get(name, {})
    w_out = len(dims[table.out_dim]) if table.out_dim in dims else table.size_out
    w_in = w_out if table.tied else (len(dims[table.in_dim]) if table.in_dim in dims else table.size_in)
    return w_in, w_out


def estimate_ms(table: LatencyTable, kept: dict) -> float:
    """The model's latency under a plan, by the tables: the measured whole scaled by the share of
    the tabled layers' time that remains (the untimed rest - norms, activations, additions - is
    taken to shrink with them, as their widths do)."""
    full = table.tabled_ms
    if full <= 0:
        return table.base_ms
    now = sum(t.at(*widths(t, kept, n)) for n, t in table.layers.items())
    return table.base_ms * now / full


def proportional(table: LatencyTable) -> LatencyTable:
    """The same layers at their measured full-width times, each scaled in proportion to its
    widths (inputs x outputs; depthwise: outputs). The fallback when the measured shape of the
    tables cannot be right - cells timed while the machine was busy make a layer look as slow
    narrow as wide, and the tables then say little can be removed where a measurement finds more."""
    layers = {}
    for name, t in table.layers.items():
        full = t.full_ms / max(t.calls, 1)
        g_in = [t.size_in] if t.tied or len(t.grid_in) == 1 else list(t.grid_in)
        ms = [[full * (1.0 if t.tied or len(g_in) == 1 else gi / t.size_in) * go / t.size_out
               for go in t.grid_out] for gi in g_in]
        layers[name] = LayerTable(t.out_dim, t.in_dim, t.size_out, t.size_in, list(t.grid_out),
                                  g_in, ms, t.tied, t.calls)
    return LatencyTable(table.device, table.threads, table.model, table.input, table.base_ms,
                        layers)


def check_fits(table: LatencyTable, shapes: dict) -> None:
    """A loaded table must describe this model: every timed layer exists with its widths."""
    for name, t in table.layers.items():
        shp = shapes.get(name)
        if shp is None or len(shp) <= max(t.out_dim, t.in_dim) or shp[t.out_dim] != t.size_out:
            raise PlanError(f"the latency table does not fit this model: layer weight '{name}' "
                            f"{'is missing' if shp is None else f'has shape {tuple(shp)}'}")
