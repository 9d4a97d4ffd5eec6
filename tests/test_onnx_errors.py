"""ONNX files PruneStudio cannot or must not import: one clear line naming the problem (exit 2
on the CLI, no traceback); and the CLI's prune/graph/verify on an .onnx MODEL."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
pytest.importorskip("onnxruntime")

import main as entry  # noqa: E402
from core.errors import LoadError  # noqa: E402
from core.io.onnx.importer import UnsupportedOnnxOp  # noqa: E402
from core.io.sources import load_model  # noqa: E402
from tests.onnx_cases import helper_graph, ort_run  # noqa: E402


def _cli(args, capsys):
    rc = entry.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _with(tmp, node):
    return helper_graph(tmp / f"{node.op_type}.onnx", extra_node=node)


def test_custom_domain_op_is_named(tmp_path):
    from onnx import helper
    path = _with(tmp_path, helper.make_node("FusedGemm", ["y"], ["z"], name="fused",
                                            domain="com.microsoft"))
    with pytest.raises(UnsupportedOnnxOp, match=r"unsupported ONNX op 'com.microsoft::FusedGemm' \(node 'fused'\)"):
        load_model(path)


def test_unknown_standard_op_is_named_on_the_cli(tmp_path, capsys):
    from onnx import helper
    path = _with(tmp_path, helper.make_node("Hardmax", ["y"], ["z"], name="hm", axis=-1))
    for cmd in (["graph", path], ["prune", path, "--ratio", "0.3", "-o", str(tmp_path / "o.onnx")],
                ["verify", path, "--ratio", "0.3"]):
        rc, out, err = _cli(cmd, capsys)
        assert rc == 2, (cmd, out, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "unsupported ONNX op 'Hardmax'" in lines[0], err
        assert "Traceback" not in err + out
    assert not (tmp_path / "o.onnx").exists()


def test_external_data_outside_the_folder_is_refused(tmp_path):
    import onnx
    from onnx.external_data_helper import set_external_data
    path = helper_graph(tmp_path / "ext.onnx")
    m = onnx.load(path)
    t = next(t for t in m.graph.initializer if t.name == "fc.weight")
    set_external_data(t, location="../secret.bin")
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    (tmp_path / "sub").mkdir()
    onnx.save(m, str(tmp_path / "sub" / "ext.onnx"))
    with pytest.raises(LoadError, match="outside the model's folder"):
        load_model(str(tmp_path / "sub" / "ext.onnx"))


def test_not_an_onnx_file(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    rc, out, err = _cli(["graph", str(bad)], capsys)
    assert rc == 2 and "not a readable ONNX file" in err and "Traceback" not in err


def test_dynamic_dims_need_input_shape(tmp_path, capsys):
    path = helper_graph(tmp_path / "dyn.onnx", batch="N")
    rc, out, err = _cli(["graph", path], capsys)
    assert rc == 2 and "dynamic dims: give --input-shape (e.g. --input-shape 1,3,8,8)" in err
    rc, out, err = _cli(["graph", path, "--input-shape", "2,3,8,8"], capsys)
    assert rc == 0, err


def test_cli_prune_onnx_to_onnx(tmp_path, capsys):
    path = helper_graph(tmp_path / "net.onnx")
    out_path = tmp_path / "pruned.onnx"
    rc, out, err = _cli(["prune", path, "--ratio", "0.3", "-o", str(out_path)], capsys)
    assert rc == 0, err
    assert "input: (1, 3, 8, 8)" in out  # the graph's own input shape
    assert "onnx oracle: pruned file vs the original" in out
    x = torch.randn(3, 3, 8, 8)  # the export takes any batch
    assert ort_run(out_path, x)[0].shape == (3, 5)
    rc, out, err = _cli(["verify", path, "--ratio", "0.3"], capsys)
    assert rc == 0 and "exact" in out, out + err


def test_unsupported_form_of_a_known_op_is_named(tmp_path, capsys):
    """A Conv whose weight is computed in the graph cannot become a layer: refused by name."""
    import onnx
    from onnx import helper
    path = helper_graph(tmp_path / "net.onnx")
    m = onnx.load(path)
    m.graph.node.insert(0, helper.make_node("Neg", ["conv1.weight"], ["w_neg"], name="neg"))
    conv = next(n for n in m.graph.node if n.name == "conv1")
    conv.input[1] = "w_neg"
    onnx.save(m, str(tmp_path / "computed.onnx"))
    rc, out, err = _cli(["graph", str(tmp_path / "computed.onnx")], capsys)
    assert rc == 2 and "unsupported form of ONNX op 'Conv' (node 'conv1'" in err, err
    assert "Traceback" not in err


def test_unsupported_attribute_at_run_time_is_named(tmp_path, capsys):
    from onnx import helper
    path = _with(tmp_path, helper.make_node("Pad", ["y", "pads"], ["z"], name="pad", mode="reflect"))
    import onnx
    m = onnx.load(path)
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array([0, 1, 0, 1], np.int64), "pads"))
    onnx.save(m, path)
    rc, out, err = _cli(["graph", path], capsys)
    assert rc == 2 and "unsupported form of ONNX op 'Pad'" in err, err
    assert "Traceback" not in err
