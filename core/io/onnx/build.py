"""Build an :class:`OnnxModel` from a checked ``onnx.ModelProto``: constant folding of
``Constant``/``Identity`` nodes, layers with constant weights turned into torch layers (with the
origin of each parameter recorded), every other node kept as a step for :mod:`core.io.onnx.ops`."""
from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from core.errors import LoadError
from core.io.onnx import shape_ops  # noqa: F401 - registers the shape operators in OPS
from core.io.onnx.ops import OPS, Ints, UnsupportedOnnxOp

LAYER_OPS = {"Conv", "ConvTranspose", "BatchNormalization", "Gemm", "MatMul", "LayerNormalization"}


def opset_of(model) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def input_shapes(model) -> list[tuple[str, list]]:
    """(name, dims) of each graph input that is not an initializer; a dynamic dim is its name
    (``'batch'``) or None."""
    inits = {t.name for t in model.graph.initializer}
    out = []
    for v in model.graph.input:
        if v.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in v.type.tensor_type.shape.dim]
        out.append((v.name, dims))
    return out


def _attrs(node, opset) -> dict:
    from onnx import helper, numpy_helper
    from onnx.helper import tensor_dtype_to_np_dtype
    at = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif hasattr(v, "dims"):  # a TensorProto (ConstantOfShape's value)
            v = torch.from_numpy(np.array(numpy_helper.to_array(v)))
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode() for x in v]
        at[a.name] = v
    if node.op_type == "Cast":
        at["to"] = _TORCH_DTYPES[np.dtype(tensor_dtype_to_np_dtype(at["to"])).name]
    at["_opset"] = opset
    return at


_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                 "int64": torch.int64, "int32": torch.int32, "int8": torch.int8,
                 "uint8": torch.uint8, "bool": torch.bool, "int16": torch.int16}


def _as_value(arr: np.ndarray):
    """An initializer or Constant: ints of rank <= 1 stay Python values (shape arithmetic)."""
    if arr.dtype.kind in "iu" and arr.ndim <= 1:
        return int(arr) if arr.ndim == 0 else Ints(int(v) for v in arr)
    return torch.from_numpy(np.array(arr))


_SEG = re.compile(r"[^0-9A-Za-z_]")


def _layer_name(init_name: str | None, fallback: str) -> list[str]:
    """Module path segments from a weight's name (``layer1.0.conv1.weight``)."""
    name = init_name or ""
    for suffix in (".weight", ".bias", ".scale"):
        if name.endswith(suffix):
            parts = [_SEG.sub("_", p) for p in name[:-len(suffix)].split(".")]
            if all(parts):
                return parts
    if fallback.startswith("/") and fallback.count("/") > 1:  # TorchScript: /layer1/layer1.0/conv1/Conv
        parts, prev = [], ""
        for scope in fallback.strip("/").split("/")[:-1]:
            parts.append(scope[len(prev) + 1:] if prev and scope.startswith(prev + ".") else scope)
            prev = scope
        parts = [_SEG.sub("_", p) for p in ".".join(parts).split(".")]
        if all(parts):
            return parts
    return [_SEG.sub("_", fallback) or "layer"]


class OnnxModel(nn.Module):
    """An imported ONNX graph: layer modules + buffers for float constants; :meth:`forward` runs
    the nodes in order. ``input_names``/``output_names`` are the graph's own."""

    def __init__(self):
        super().__init__()
        self.consts = nn.Module()
        self.steps: list[tuple] = []  # (op, input names, output names, attrs, module path)
        self.ints: dict = {}  # name -> int / Ints constants
        self.const_names: dict = {}  # ONNX value name -> buffer name in self.consts
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        # parameter/buffer qualified name -> (node index, input slot, ONNX value name, transposed,
        # ONNX shape); node index None: every use of the value
        self.origins: dict = {}

    def forward(self, *args):
        env = dict(zip(self.input_names, args))
        env.update(self.ints)
        for onnx_name, buf in self.const_names.items():
            env[onnx_name] = getattr(self.consts, buf)
        for op, ins, outs, at, path in self.steps:
            if path is not None:
                vals = [self.get_submodule(path)(env[ins[0]])]
            else:
                try:
                    vals = OPS[op]([env[i] if i else None for i in ins], at)
                except NotImplementedError as e:  # a form of the op the table does not run
                    raise UnsupportedOnnxOp(f"unsupported form of ONNX op '{op}' (output "
                                            f"'{outs[0]}'): {e}") from None
            for name, v in zip(outs, vals):
                if name:
                    env[name] = v
        res = [env[n] if isinstance(env[n], torch.Tensor) else torch.tensor(env[n])
               for n in self.output_names]
        return res[0] if len(res) == 1 else tuple(res)


def _place(root: nn.Module, parts: list[str], module: nn.Module) -> str:
    """Add ``module`` at the dotted path (made unique), creating plain containers on the way."""
    def free(segs: list[str]) -> bool:
        m = root
        for s in segs[:-1]:
            child = dict(m.named_children()).get(s)
            if child is None:
                return not hasattr(m, s)
            if type(child) is not nn.Module:
                return False  # a layer cannot hold other layers
            m = child
        return not hasattr(m, segs[-1])

    segs, k = list(parts), 1
    if not free(segs):
        segs = ["_".join(parts)]
        while not free(segs):
            segs, k = [f"{'_'.join(parts)}_{k}"], k + 1
    m = root
    for s in segs[:-1]:
        if s not in dict(m.named_children()):
            m.add_module(s, nn.Module())
        m = getattr(m, s)
    m.add_module(segs[-1], module)
    return ".".join(segs)


def _ranks(model) -> dict:
    import onnx
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - ranks are then unknown; layers needing one say so
        inferred = model
    g = inferred.graph
    return {v.name: len(v.type.tensor_type.shape.dim) for v in (*g.input, *g.value_info, *g.output)
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}


def _sym_pads(node, at, n) -> list[int]:
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise LoadError(f"ONNX node '{node.name}' ({node.op_type}) uses auto_pad={at['auto_pad']}, "
                        f"which PruneStudio does not import")
    pads = list(at.get("pads", [0] * 2 * n))
    if pads[:n] != pads[n:]:
        raise LoadError(f"ONNX node '{node.name}' ({node.op_type}) has asymmetric pads {pads}, "
                        f"which PruneStudio does not import")
    return pads[:n]


class _Builder:
    def __init__(self, model, path):
        from onnx import numpy_helper
        self.path, self.proto, self.g = path, model, model.graph
        self.opset = opset_of(model)
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.g.initializer}
        self.init_names = set(self.consts)
        self.const_node = {}  # value name -> index of the Constant node that made it
        self.m = OnnxModel()
        self.ranks = _ranks(model)
        self.users: dict[str, list[int]] = {}
        for i, n in enumerate(self.g.node):
            for v in n.input:
                self.users.setdefault(v, []).append(i)
        self.outputs = {o.name for o in self.g.output}
        self.skip: set[int] = set()

    def const(self, name):
        return self.consts.get(name) if name else None

    def origin(self, pname, idx, slot, transposed=False):
        name = self.g.node[idx].input[slot]
        self.m.origins[pname] = (idx, slot, name, transposed, tuple(self.consts[name].shape))

    # ------------------------------------------------------------------------- layers
    def layer(self, idx, node, at) -> bool:
        op, ins = node.op_type, list(node.input)
        W = self.const(ins[1]) if len(ins) > 1 else None
        if op in ("Conv", "ConvTranspose") and W is not None:
            return self.conv(idx, node, at, W)
        if op == "BatchNormalization" and all(self.const(v) is not None for v in ins[1:5]):
            if at.get("training_mode", 0) or any(o for o in node.output[1:]):
                return False
            return self.batchnorm(idx, node, at)
        if op == "Gemm" and W is not None and W.ndim == 2 and not at.get("transA", 0) \
                and at.get("alpha", 1.0) == 1.0 and at.get("beta", 1.0) == 1.0:
            C = self.const(ins[2]) if len(ins) > 2 else None
            n_out = W.shape[0] if at.get("transB", 0) else W.shape[1]
            if len(ins) > 2 and ins[2] and (C is None or C.size != n_out):
                return False
            return self.linear(idx, node, W, not at.get("transB", 0), (idx, 2) if C is not None else None)
        if op == "MatMul" and W is not None and W.ndim == 2 and self.const(ins[0]) is None:
            bias = self.fusable_bias(node, W.shape[1])
            return self.linear(idx, node, W, True, bias)
        if op == "LayerNormalization" and W is not None:
            return self.layernorm(idx, node, at, W)
        return False

    def fusable_bias(self, node, n_out):
        """(Add node index, slot) when the MatMul's only consumer adds a constant bias vector."""
        out = node.output[0]
        users = self.users.get(out, [])
        if out in self.outputs or len(users) != 1:
            return None
        add = self.g.node[users[0]]
        if add.op_type != "Add" or len(add.input) != 2:
            return None
        slot = 1 if add.input[0] == out else 0
        b = self.const(add.input[slot])
        if b is None or b.ndim != 1 or b.shape[0] != n_out or b.dtype.kind != "f":
            return None
        return users[0], slot

    def add_layer(self, idx, node, module, weight_name, outputs):
        path = _place(self.m, _layer_name(weight_name, node.name or node.output[0]), module)
        self.m.steps.append((node.op_type, [node.input[0]], outputs, {}, path))
        return path

    def conv(self, idx, node, at, W):
        n = W.ndim - 2
        if n not in (1, 2, 3):
            return False
        B = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and B is None:
            return False
        kw = dict(stride=list(at.get("strides", [1] * n)), padding=_sym_pads(node, at, n),
                  dilation=list(at.get("dilations", [1] * n)), groups=at.get("group", 1),
                  bias=B is not None)
        if node.op_type == "Conv":
            cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[n - 1]
            mod = cls(W.shape[1] * kw["groups"], W.shape[0], list(W.shape[2:]), **kw)
        else:
            if "output_shape" in at:
                return False
            cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[n - 1]
            mod = cls(W.shape[0], W.shape[1] * kw["groups"], list(W.shape[2:]),
                      output_padding=list(at.get("output_padding", [0] * n)), **kw)
        return self.weight_bias_layer(idx, node, mod, W, B)

    def weight_bias_layer(self, idx, node, mod, W, B) -> bool:
        """A layer whose weight and optional bias are the node's inputs 1 and 2."""
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(np.array(W)))
            if B is not None:
                mod.bias.copy_(torch.from_numpy(np.array(B)))
        path = self.add_layer(idx, node, mod, node.input[1], [node.output[0]])
        self.origin(f"{path}.weight", idx, 1)
        if B is not None:
            self.origin(f"{path}.bias", idx, 2)
        return True

    def batchnorm(self, idx, node, at):
        rank = self.ranks.get(node.input[0])
        if rank not in (2, 3, 4, 5):
            return False
        scale, bias, mean, var = (self.const(v) for v in node.input[1:5])
        cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[rank]
        mod = cls(scale.shape[0], eps=at.get("epsilon", 1e-5)).eval()
        with torch.no_grad():
            for attr, arr in zip(("weight", "bias", "running_mean", "running_var"),
                                 (scale, bias, mean, var)):
                getattr(mod, attr).copy_(torch.from_numpy(np.array(arr)))
        path = self.add_layer(idx, node, mod, node.input[1], [node.output[0]])
        for slot, attr in enumerate(("weight", "bias", "running_mean", "running_var"), 1):
            self.origin(f"{path}.{attr}", idx, slot)
        return True

    def linear(self, idx, node, W, transposed, bias):
        w = np.array(W).T if transposed else np.array(W)
        mod = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        outputs = [node.output[0]]
        name = node.input[1]
        if bias is not None:
            b_idx, b_slot = bias
            b_node = self.g.node[b_idx]
            with torch.no_grad():
                mod.bias.copy_(torch.from_numpy(np.array(self.const(b_node.input[b_slot])).reshape(-1)))
            if b_idx != idx:  # a fused Add: its output is the layer's
                outputs = [b_node.output[0]]
                self.skip.add(b_idx)
            if not name.endswith(".weight"):
                name = b_node.input[b_slot]
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
        path = self.add_layer(idx, node, mod, name, outputs)
        self.origin(f"{path}.weight", idx, 1, transposed)
        if bias is not None:
            self.origin(f"{path}.bias", *bias)
        return True

    def layernorm(self, idx, node, at, W):
        B = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        rank = self.ranks.get(node.input[0])
        axis = at.get("axis", -1)
        k = -axis if axis < 0 else (rank - axis if rank else None)
        if k != W.ndim or any(o for o in node.output[1:]) or (len(node.input) > 2 and
                                                               node.input[2] and B is None):
            return False
        mod = nn.LayerNorm(list(W.shape), eps=at.get("epsilon", 1e-5), bias=B is not None)
        return self.weight_bias_layer(idx, node, mod, W, B)

    # ------------------------------------------------------------------------- the rest
    def use_const(self, name):
        """A constant input of a generic step: ints as Python values, tensors as buffers."""
        if name in self.m.ints or name in self.m.const_names:
            return
        v = _as_value(self.consts[name])
        if isinstance(v, (int, Ints)):
            self.m.ints[name] = v
            return
        buf = f"c{len(self.m.const_names)}"
        self.m.consts.register_buffer(buf, v)
        self.m.const_names[name] = buf
        # every use of ``name`` (buffers are never zeroed by the oracle: recorded for completeness)
        self.m.origins[f"consts.{buf}"] = (None, None, name, False, tuple(v.shape))

    def build(self) -> OnnxModel:
        from onnx import numpy_helper
        self.m.input_names = [n for n, _ in input_shapes(self.proto)]
        self.m.output_names = [o.name for o in self.g.output]
        for idx, node in enumerate(self.g.node):
            if idx in self.skip:
                continue
            at = _attrs(node, self.opset)
            if node.op_type == "Constant":
                key, val = next(iter((k, v) for k, v in at.items() if k != "_opset"))
                arr = (numpy_helper.to_array(node.attribute[0].t) if key == "value"
                       else np.array(val, dtype=np.float32 if "float" in key else np.int64))
                self.consts[node.output[0]] = arr
                self.const_node[node.output[0]] = idx
                continue
            if node.op_type == "Identity" and node.input[0] in self.consts:
                self.consts[node.output[0]] = self.consts[node.input[0]]
                self.const_node[node.output[0]] = self.const_node.get(node.input[0], idx)
                if node.input[0] in self.init_names:
                    self.init_names.add(node.output[0])
                continue
            if node.op_type in LAYER_OPS and self.layer(idx, node, at):
                continue
            if node.op_type not in OPS:  # a layer in a form the table cannot run
                raise UnsupportedOnnxOp(
                    f"{self.path}: unsupported form of ONNX op '{node.op_type}' (node "
                    f"'{node.name or node.output[0]}': weights computed in the graph, training "
                    f"mode or attributes PruneStudio does not import)")
            at["_op"] = node.op_type
            ins = list(node.input)
            if node.op_type == "Clip":  # constant bounds as numbers: no data-dependent .item()
                for slot, key in ((1, "min"), (2, "max")):
                    if len(ins) > slot and ins[slot] in self.consts:
                        at[key], ins[slot] = float(np.asarray(self.consts[ins[slot]]).reshape(-1)[0]), ""
            for v in ins:
                if v and v in self.consts:
                    self.use_const(v)
            self.m.steps.append((node.op_type, ins, list(node.output), at, None))
        for o in self.m.output_names:
            if o in self.consts:
                self.use_const(o)
        return self.m.eval()


def build_onnx_model(model, path: str) -> OnnxModel:
    """The torch module of a checked ModelProto (:func:`core.io.onnx.importer.read_onnx`)."""
    return _Builder(model, path).build()
