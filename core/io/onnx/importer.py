"""Read an ``.onnx`` file into a torch module the engine analyses and prunes like any other.

Layers with constant weights become the torch layers they are (``Conv`` -> ``nn.Conv2d``,
``BatchNormalization`` -> ``nn.BatchNorm2d``, ``Gemm``/``MatMul`` (+ ``Add`` of a bias) ->
``nn.Linear``, ``LayerNormalization`` -> ``nn.LayerNorm``), named after their ONNX weights
(``layer1.0.conv1.weight`` -> module ``layer1.0.conv1``), so the graph groups by the original
hierarchy. Every other node runs as plain torch calls (:mod:`core.io.onnx.ops`) in
:meth:`OnnxModel.forward`, which walks the ONNX node list. Nothing in the file is executed: an ONNX
file is data; an operator outside the default domain or missing from the table is refused with one
line naming it, and external-data files must lie inside the model's folder.

Each parameter remembers where it came from (:attr:`OnnxModel.origins`: ONNX node, input slot,
initializer, transposed or not), so a pruning plan can be replayed on the original file
(:func:`core.io.onnx.oracle.zeroed_onnx`).
"""
from __future__ import annotations

import os

import numpy as np

from core.errors import LoadError
from core.io.onnx.build import LAYER_OPS, build_onnx_model, opset_of
from core.io.onnx.ops import OPS, UnsupportedOnnxOp

__all__ = ["UnsupportedOnnxOp", "declared_input_shape", "import_onnx", "read_onnx"]

#: the newest default-domain opset whose operator semantics the table follows
MAX_OPSET = 23
MIN_OPSET = 13  # older files are upgraded with onnx.version_converter first


def _resolve_external(model, path: str) -> None:
    """Load external tensor data, refusing a location outside the model's folder (an absolute
    path or ``..`` could make a crafted file read any file on the machine)."""
    import onnx
    from onnx.external_data_helper import uses_external_data
    base = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    for t in model.graph.initializer:
        if not uses_external_data(t):
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        full = os.path.realpath(os.path.join(base, loc))
        if os.path.isabs(loc) or os.path.commonpath([base, full]) != base:
            raise LoadError(f"{path}: tensor '{t.name}' keeps its data in '{loc}', outside the "
                            f"model's folder; refusing to read it")
        if not os.path.isfile(full):
            raise LoadError(f"{path}: tensor '{t.name}' needs its external data file '{loc}', "
                            f"which is missing")
    onnx.load_external_data_for_model(model, base)


def read_onnx(path: str):
    """The checked ``onnx.ModelProto`` of ``path`` (opset >= 13, local functions inlined, every
    operator known), or :class:`~core.errors.LoadError` with one line."""
    import onnx
    if not os.path.isfile(path):
        raise LoadError(f"{path}: no such file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file
        raise LoadError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
    _resolve_external(model, path)
    if model.functions:
        from onnx import inliner
        model = inliner.inline_local_functions(model)
    opset = opset_of(model)
    if opset is None:
        raise LoadError(f"{path}: the file declares no default-domain opset")
    if opset > MAX_OPSET:
        raise LoadError(f"{path}: opset {opset} is newer than this importer knows ({MAX_OPSET})")
    if opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as e:  # noqa: BLE001
            raise LoadError(f"{path}: opset {opset} could not be upgraded to {MIN_OPSET} "
                            f"({type(e).__name__})") from None
    for node in model.graph.node:
        unsupported = node.domain not in ("", "ai.onnx") or (
            node.op_type not in OPS and node.op_type not in LAYER_OPS and node.op_type != "Constant")
        if unsupported:
            where = f"{node.domain}::" if node.domain not in ("", "ai.onnx") else ""
            raise UnsupportedOnnxOp(f"{path}: unsupported ONNX op '{where}{node.op_type}' (node "
                                    f"'{node.name or node.output[0]}'); PruneStudio cannot import "
                                    f"this model")
    return model




def import_onnx(path: str):
    """The :class:`~core.io.onnx.build.OnnxModel` of the ONNX file ``path``, in eval mode."""
    return build_onnx_model(read_onnx(path), path)


def declared_input_shape(path: str) -> str:
    """The graph inputs' shapes as ``--input-shape`` takes them (``1,3,224,224;1,10``); a
    dynamic dim (``batch``) cannot be guessed: :class:`~core.errors.LoadError` says which and
    suggests a value."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # noqa: BLE001
        raise LoadError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
    from core.io.onnx.build import input_shapes
    shapes, dynamic = [], []
    for name, dims in input_shapes(model):
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            dynamic.append(f"'{name}' [{', '.join(str(d or '?') for d in dims)}]")
        shapes.append(",".join(str(d) if isinstance(d, int) and d > 0 else "1" for d in dims))
    elem = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    kinds = {np.dtype(tensor_dtype_to_np_dtype(t)).kind for t in elem.values() if t}
    hint = "" if kinds <= {"f"} else " and --input-dtype (the graph takes integer inputs)"
    if dynamic:
        raise LoadError(f"{path}: input {', '.join(dynamic)} has dynamic dims: give --input-shape "
                        f"(e.g. --input-shape {';'.join(shapes)}){hint}")
    return ";".join(shapes)
