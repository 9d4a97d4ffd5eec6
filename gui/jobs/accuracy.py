"""Accuracy jobs: per-group sensitivity and evaluation of the original and the pruned model,
run on the window's worker (core/ calls only), and the normalised scores the graph overlay and
the sensitivity chart colour by."""
from __future__ import annotations


# ----------------------------------------------------------------------------- data

def input_chw(session) -> tuple | None:
    """(C, H, W) of the session's first example input when it is an image batch, else None."""
    args = getattr(session.inputs, "args", None) or ()
    shape = tuple(args[0].shape) if args and hasattr(args[0], "shape") else ()
    return shape[1:] if len(shape) == 4 else None


def default_data_spec(session) -> str:
    """The built-in digits, resized to the model's example input (like the training view)."""
    chw = input_chw(session) if session is not None else None
    if chw and chw[0] in (1, 3) and chw[1] == chw[2] and 4 <= chw[1] <= 512:
        return f"digits@{chw[1]}x{chw[0]}"
    return "digits"


def load_for(spec, session, batch_size: int = 64, trust=None):
    """core.train.data.Data for ``spec`` (a Data passes through); image folders are resized to the
    model's input size; a dataset factory runs only as ``trust`` (the window's consent) allows."""
    from core.train.data import Data, load_data
    if isinstance(spec, Data):
        return spec
    chw = input_chw(session)
    size = int(chw[1]) if chw else 32
    return load_data(spec, batch_size=batch_size, image_size=size, trust=trust)


def device_of(model):
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else "cpu"


# ----------------------------------------------------------------------------- worker side

def run_sensitivity(session, spec, ratios=(0.25, 0.5, 0.75), max_batches=None, importance="l2",
                    progress=None, should_stop=None, trust=None):
    """Worker: load the data, then core.train.sensitivity.group_sensitivity on the original model.
    Returns ``(Data, SensitivityResult)``."""
    from core.errors import LoadError
    from core.train.sensitivity import group_sensitivity
    if progress:
        progress("data", 0, 1, f"loading {getattr(spec, 'name', spec)}")
    data = load_for(spec, session, trust=trust)
    loader = data.val_loader()
    if loader is None:
        raise LoadError(f"data {data.name} has no validation set to measure the loss on")
    res = group_sensitivity(session.model, session.dg, loader, ratios=ratios, importance=importance,
                            device=device_of(session.model), max_batches=max_batches,
                            progress=progress, should_stop=should_stop)
    return data, res


def evaluate_models(session, spec, pruned=None, max_batches=None, progress=None, should_stop=None,
                    trust=None):
    """Worker: evaluate the original and (when given) the pruned model on the validation set.
    Returns ``(Data, EvalResult before, EvalResult after or None)``."""
    from core.errors import LoadError
    from core.train.evaluate import evaluate
    data = load_for(spec, session, trust=trust)
    loader = data.val_loader()
    if loader is None:
        raise LoadError(f"data {data.name} has no validation set to evaluate on")

    def prog(what):
        return (lambda s, d, t, m="": progress("evaluate", d, t, f"{what}: {m}")) if progress else None

    before = evaluate(session.model, loader, device=device_of(session.model), max_batches=max_batches,
                      progress=prog("original"), should_stop=should_stop)
    after = None
    if pruned is not None:
        after = evaluate(pruned, loader, device=device_of(pruned), max_batches=max_batches,
                         progress=prog("pruned"), should_stop=should_stop)
    return data, before, after


# ----------------------------------------------------------------------------- overlay

def group_scores(result) -> dict:
    """{group id: score normalised to [0, 1]} (0 = least sensitive, 1 = most)."""
    scores = {g.gid: g.score for g in result.groups}
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo
    return {gid: ((s - lo) / span if span > 0 else 0.0) for gid, s in scores.items()}


def sensitivity_overlay(session, result) -> dict:
    """{graph node: normalised sensitivity} for the nodes of each measured group (a node in
    several groups takes the most sensitive)."""
    norm = group_scores(result)
    out: dict = {}
    for gid, v in norm.items():
        for n in session.dg.groups[gid].nodes:
            out[n] = max(out.get(n, 0.0), v)
    return out
