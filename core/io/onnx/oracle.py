"""The oracle on ONNX: the pruned ``.onnx`` file must compute, in onnxruntime, exactly what the
ORIGINAL ``.onnx`` file computes once the removed channels' weights are zeroed in its own
initializers.

The removed slices are found on the imported model (``core.prune.apply.zero_channels`` with the
plan's kept indices) and written back through :attr:`core.io.onnx.build.OnnxModel.origins` (ONNX
node, input slot, transposed or not) as new initializers the original nodes read; nothing else in
the original graph changes. Both files then run in onnxruntime on the same inputs."""
from __future__ import annotations

import numpy as np
import torch

from core.errors import VerificationError


def zeroed_onnx(path: str, imported, kept: dict):
    """The original ONNX model of ``path`` with every parameter slice the plan (``kept``) removes
    set to zero in its initializers; ``imported`` is the model :func:`import_onnx` made of it."""
    from onnx import numpy_helper

    from core.io.onnx.importer import read_onnx
    from core.prune.apply import zero_channels
    proto = read_onnx(path)  # the same reading as the import: node indices match
    g = proto.graph
    before = dict(imported.named_parameters())
    after = dict(zero_channels(imported, kept).named_parameters())
    for pname, (idx, slot, value, transposed, shape) in imported.origins.items():
        if pname not in after or torch.equal(after[pname], before[pname]):
            continue
        arr = after[pname].detach().cpu().numpy()
        arr = (arr.T if transposed else arr).reshape(shape)
        new = f"{value}__zeroed_{len(g.initializer)}"
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(arr), new))
        if idx is not None:
            g.node[idx].input[slot] = new  # this node only: a shared initializer stays as it was
            continue
        for node in g.node:
            for k, v in enumerate(node.input):
                if v == value:
                    node.input[k] = new
    return proto


def _session(model_or_path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _run(sess, feeds: list[np.ndarray]) -> list[np.ndarray]:
    names = [i.name for i in sess.get_inputs()]
    return [np.asarray(o) for o in sess.run(None, dict(zip(names, feeds)))]


def onnx_oracle(path: str, pruned_path: str, kept: dict, inputs,
                tolerance: float = 1e-4) -> tuple[float, list[str]]:
    """Compare the pruned file with the original file of ``path`` (its removed channels zeroed),
    both in onnxruntime, on ``inputs``. Returns (max abs difference, one line saying what was
    compared); raises :class:`VerificationError` when they differ by more than ``tolerance``
    relative to the output scale (or either side has NaN/inf)."""
    from core.io.onnx.importer import import_onnx
    from core.trace.inputs import as_example_inputs
    ex = as_example_inputs(inputs).to("cpu")
    feeds = [t.detach().numpy() for t in list(ex.args) + list(ex.kwargs.values())]
    imported = import_onnx(path)
    try:
        zeroed = _run(_session(zeroed_onnx(path, imported, kept)), feeds)
        pruned = _run(_session(pruned_path), feeds)
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors are of many kinds
        raise VerificationError(f"the ONNX oracle could not run: {type(e).__name__}: "
                                f"{' '.join(str(e).split())[:200]}") from None
    if [o.shape for o in zeroed] != [o.shape for o in pruned]:
        raise VerificationError(f"the pruned ONNX file's outputs {[o.shape for o in pruned]} do not "
                                f"have the original's shapes {[o.shape for o in zeroed]}")
    diff, scale = 0.0, 0.0
    for z, p in zip(zeroed, pruned):
        z, p = z.astype(np.float64), p.astype(np.float64)
        if not (np.isfinite(z).all() and np.isfinite(p).all()):
            raise VerificationError("the ONNX oracle met NaN or inf values: it cannot compare")
        if z.size:
            diff = max(diff, float(np.abs(z - p).max()))
            scale = max(scale, float(np.abs(z).max()))
    if diff > tolerance * max(scale, 1.0):
        raise VerificationError(f"the pruned ONNX file differs from the original ONNX file with the "
                                f"removed channels zeroed by {diff:.3g} (scale {scale:.3g}), both in "
                                f"onnxruntime")
    return diff, [f"onnx oracle: pruned file vs the original {path} with the removed channels "
                  f"zeroed, both in onnxruntime: max abs difference {diff:.3g} (relative "
                  f"{diff / scale if scale else 0.0:.3g}, scale {scale:.3g})"]
