"""When the oracle's check is weak: an output that does not depend on the input.

A model whose head is all zeros (torchvision's ``vit_b_16`` starts so) outputs the same values for
every input, so the zeroed original and the pruned model agree whatever the engine did: a check
that cannot fail. Such an output is found by running the zeroed original a second time on other
inputs (and by an output that is one constant). The report then says so (``warnings``) and the
oracle also compares the intermediate activations, collected with forward hooks on the zeroed
original and on the pruned model: every module output whose shape pruning keeps, and the outputs
of layers whose own output channels the plan slices (conv, linear, norms) at the kept indices,
and the inputs of conv and linear layers at the input channels they keep - what a functional op
(a softmax, a statistic) did between two modules shows there, in no module's output - so the check
still means something behind a dead head.
"""
from __future__ import annotations

import torch

from core.trace.inputs import ExampleInputs
from core.trace.tracer import flatten_outputs


def _tensors(out) -> list[torch.Tensor]:
    return [t for t in flatten_outputs(out) if isinstance(t, torch.Tensor)]


def other_inputs(ex: ExampleInputs, seed: int = 12345) -> ExampleInputs | None:
    """``ex`` with every floating-point tensor redrawn (None when it has none)."""
    g = torch.Generator().manual_seed(seed)
    found = []

    def redraw(t):
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
            found.append(t)
            return (torch.randn(t.shape, generator=g) * 2 + 0.5).to(t.dtype).to(t.device)
        return t

    new = ExampleInputs(tuple(redraw(a) for a in ex.args), {k: redraw(v) for k, v in ex.kwargs.items()})
    return new if found else None


def input_independent(model, ex: ExampleInputs, y) -> list[str]:
    """One line per output of ``model`` (already run on ``ex``, giving ``y``) that is constant or
    the same for other inputs."""
    ys = _tensors(y)
    y2 = None
    other = other_inputs(ex)
    if other is not None:
        try:
            with torch.no_grad():
                y2 = _tensors(other.call(model))
        except Exception:  # noqa: BLE001 - the model may not accept other values: constants only
            y2 = None
    if y2 is not None and [t.shape for t in y2] != [t.shape for t in ys]:
        y2 = None
    lines = []
    for i, t in enumerate(ys):
        if not t.numel() or not (t.is_floating_point() or t.is_complex()):
            continue
        name = f"output {i} {tuple(t.shape)}" if len(ys) > 1 else f"the output {tuple(t.shape)}"
        if t.numel() > 1 and bool((t == t.flatten()[0]).all()):
            lines.append(f"{name} is constant ({t.flatten()[0].item():.3g} everywhere)")
        elif y2 is not None and torch.equal(t, y2[i]):
            lines.append(f"{name} is the same for other inputs (it does not depend on the input)")
    return lines


IN = " (input)"  # store key suffix: a weight layer's first input


def _record(model, store: dict):
    """Forward hooks on every submodule: outputs go to ``store[name]`` (a list per call), a conv's
    or linear's first input to ``store[name + IN]``."""
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue
        weighted = _in_dim(mod) is not None

        def hook(_m, inp, out, name=name, weighted=weighted):
            store.setdefault(name, []).append([t.detach() for t in _tensors(out)])
            if weighted and inp and isinstance(inp[0], torch.Tensor):
                store.setdefault(name + IN, []).append([inp[0].detach()])

        handles.append(mod.register_forward_hook(hook))
    return handles


def _in_dim(mod) -> int | None:
    """The dim of a layer's input that holds the channels its weight's dim 1 reads (linear: the
    last, convolution: 1), or None for other modules and grouped convolutions."""
    if isinstance(mod, torch.nn.Linear):
        return -1
    conv = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    if isinstance(mod, conv) and mod.groups == 1:
        return 1
    return None


def _in_indices(model, name: str, kept: dict):
    """(input dim, original size, kept indices) of a conv's or linear's input channels as the
    plan slices its weight's dim 1, or None."""
    mod = dict(model.named_modules()).get(name)
    d = _in_dim(mod) if mod is not None else None
    k = kept.get(f"{name}.weight", {}).get(1)
    if d is None or k is None:
        return None
    return d, mod.weight.shape[1], k


def _out_indices(model, name: str, kept: dict):
    """(original size, kept indices) of the output channels of module ``name`` as the plan slices
    its own tensors (bias, else the weight's output dim), or None."""
    mod = dict(model.named_modules()).get(name)
    if mod is None:
        return None
    transposed = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
    dim = 1 if isinstance(mod, transposed) else 0
    for attr, d in (("bias", 0), ("weight", dim)):
        t = getattr(mod, attr, None)
        k = kept.get(f"{name}.{attr}", {}).get(d)
        if isinstance(t, torch.Tensor) and k is not None and d < t.ndim:
            return t.shape[d], k
    return None


def _match(zeroed, name, x, y, kept):
    """``x`` (zeroed original) cut to ``y``'s shape where pruning removed this module's output
    channels: the one dim whose size changed, at the indices the module's tensors keep."""
    if x.shape == y.shape:
        return x
    if x.ndim != y.ndim or not kept:
        return None
    dims = [d for d in range(x.ndim) if x.shape[d] != y.shape[d]]
    if name.endswith(IN):
        found = _in_indices(zeroed, name[:-len(IN)], kept)
        if found is not None and found[0] % x.ndim not in dims:
            return None
        found = found and found[1:]
    else:
        found = _out_indices(zeroed, name, kept)
    if len(dims) != 1 or found is None:
        return None
    n0, idx = found
    d = dims[0]
    if x.shape[d] != n0 or y.shape[d] != len(idx):
        return None
    return x.index_select(d, torch.as_tensor(idx, dtype=torch.long, device=x.device))


def run_hooked(model, ex: ExampleInputs, handles) -> None:
    """One forward of ``model`` without gradients while the forward ``handles`` record, which are
    removed afterwards whatever happens."""
    try:
        with torch.no_grad():
            ex.call(model)
    finally:
        for h in handles:
            h.remove()


def compare_activations(zeroed, pruned, ex: ExampleInputs, kept: dict | None = None):
    """(number of module outputs compared, worst relative difference, the module it is in): every
    module output of the same name and call in both models, whole where its shape is kept, at the
    kept indices where pruning sliced the module's own output channels (``kept``: the plan's
    kept indices)."""
    a, b = {}, {}
    for model, store in ((zeroed, a), (pruned, b)):
        run_hooked(model, ex, _record(model, store))
    pairs = []
    for name, calls in a.items():
        for k, outs in enumerate(calls):
            other = b.get(name, [])
            if k >= len(other) or len(other[k]) != len(outs):
                continue
            for x, y in zip(outs, other[k]):
                if not (x.numel() and x.is_floating_point() and y.is_floating_point()):
                    continue
                x = _match(zeroed, name, x, y, kept)
                if x is not None:
                    pairs.append((name, x.double(), y.double()))
    top = max((float(x.abs().max()) for _, x, _ in pairs if torch.isfinite(x).all()), default=0.0)
    worst, where = 0.0, None
    for name, x, y in pairs:
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            rel = 0.0 if torch.equal(x.isfinite(), y.isfinite()) and torch.equal(
                x.nan_to_num(), y.nan_to_num()) else float("inf")
        else:
            # a tensor far smaller than the others is judged on their scale (cancellations)
            scale = max(float(x.abs().max()), top * 1e-3, 1e-12)
            rel = float((x - y).abs().max()) / scale
        if where is None or rel > worst:
            worst, where = rel, name
    return len(pairs), worst, where


def check_activations(rep, zeroed, pruned, ex: ExampleInputs, kept, lines: list[str],
                      measured: tuple | None = None) -> None:
    """Warn in ``rep`` for each output that does not depend on the input (``lines``, from
    :func:`input_independent`), and then compare the intermediate activations (a mismatch there
    fails an exact plan)."""
    if not lines:
        return
    for line in lines:
        rep.warnings.append(f"{line}: comparing it cannot fail (a dead or zero head?)")
    try:  # ``measured``: what the caller's compare_activations already found (the bound check)
        n, worst, where = measured or compare_activations(zeroed, pruned, ex, kept)
    except Exception as e:  # noqa: BLE001 - hooks on exotic modules: keep the final verdict
        rep.warnings.append(f"the intermediate activations could not be compared "
                            f"({type(e).__name__}: {e}): the check is weak")
        return
    rep.intermediates_compared = n
    if n == 0:
        rep.warnings.append("no intermediate activation keeps its shape after pruning, so none "
                            "could be compared: the check is weak")
        return
    if rep.expected_exact and worst > rep.tolerance and rep.float32_rel_diff is not None:
        # the final verdict needed float64 (selections flip on rounding): flips show here too
        rep.warnings.append(f"the intermediate activations differ by {worst:.3g} (relative, "
                            f"module '{where}') in float32, where rounding flips selections")
        return
    if rep.expected_exact and worst > rep.tolerance:
        rep.passed = False
        rep.message = (f"MISMATCH in the intermediate activations: module '{where}' differs by "
                       f"{worst:.3g} (relative) from the zeroed original's, exceeding "
                       f"{rep.tolerance:g}; the final output does not depend on the input, so it "
                       f"could not show this")
        return
    rep.message += (f"; the output does not depend on the input, so {n} intermediate activations "
                    f"were compared too (max relative difference {worst:.3g})")
