"""ONNX files for the tests and the benchmark, written into a folder the caller gives: torch models
exported by both of torch's exporters, and one graph built directly with ``onnx.helper``."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import torch
from torch import nn


def export(model: nn.Module, x: torch.Tensor, path, dynamo: bool = True) -> str:
    """``model`` exported to ``path`` with a dynamic batch (input ``x``, output ``logits``)."""
    model = model.eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False,
                              input_names=["x"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"],
                              output_names=["logits"],
                              dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return str(path)


def small_transformer(seed: int = 0) -> nn.Module:
    """Two encoder layers (width 32, 4 heads) and a head; each layer's weights distinct."""
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
    model = nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                          nn.Linear(32, 10))
    with torch.no_grad():
        for p in model.parameters():  # the copies start equal: the exporter would share them
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def helper_graph(path, seed: int = 0, batch: int | str = 1, extra_node=None) -> str:
    """Conv -> BatchNormalization -> Relu -> (Conv 3x3 | Conv 1x1) -> Concat -> Relu ->
    GlobalAveragePool -> Flatten -> Gemm, written with onnx.helper (no PyTorch involved);
    ``extra_node``: a NodeProto applied to the output (``y`` -> ``z``) to test refusals."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)

    def init(name, *shape, positive=False):
        a = rng.standard_normal(shape).astype(np.float32) * 0.5
        return numpy_helper.from_array(np.abs(a) + 0.5 if positive else a, name)

    inits = [init("conv1.weight", 8, 3, 3, 3), init("conv1.bias", 8),
             init("bn.scale", 8), init("bn.bias", 8), init("bn.mean", 8),
             init("bn.var", 8, positive=True),
             init("branch_a.weight", 6, 8, 3, 3), init("branch_a.bias", 6),
             init("branch_b.weight", 4, 8, 1, 1),
             init("fc.weight", 5, 10), init("fc.bias", 5)]
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name="conv1",
                         pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
                         ["b1"], name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "branch_a.weight", "branch_a.bias"], ["a"],
                         name="branch_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["r1", "branch_b.weight"], ["b"], name="branch_b"),
        helper.make_node("Concat", ["a", "b"], ["cat"], name="concat", axis=1),
        helper.make_node("Relu", ["cat"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], name="fc", transB=1),
    ]
    out_name = "y"
    opsets = [helper.make_opsetid("", 17)]
    if extra_node is not None:
        nodes.append(extra_node)
        out_name = extra_node.output[0]
        if extra_node.domain:
            opsets.append(helper.make_opsetid(extra_node.domain, 1))
    graph = helper.make_graph(
        nodes, "helper_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, 5])], inits)
    model = helper.make_model(graph, opset_imports=opsets, producer_name="onnx.helper")
    model.ir_version = 8
    if extra_node is None:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def ort_run(path, *xs) -> list[np.ndarray]:
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {n: x.detach().numpy() for n, x in zip(names, xs)})
