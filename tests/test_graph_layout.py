"""The graph's hierarchy and layered layout (pure Python: gui/jobs, no Qt)."""
from __future__ import annotations

import pytest

torchvision = pytest.importorskip("torchvision")

from core import pipeline  # noqa: E402
from core.trace.inputs import make_inputs  # noqa: E402
from gui.jobs.graph_layout import layout  # noqa: E402
from core.analysis.hierarchy import Hierarchy  # noqa: E402


@pytest.fixture(scope="module")
def resnet():
    m = torchvision.models.resnet18().eval()
    return pipeline.analyze_model(m, make_inputs("1,3,64,64"), probe=False).graph


def _edges_connected(g, lay):
    vis = set(lay.pos)
    for a, b, *_ in lay.edges:
        assert a in vis and b in vis
    # every graph edge between different visible items has its aggregated edge
    pairs = {(a, b) for a, b, *_ in lay.edges}
    for a, b in g.edges():
        ra, rb = lay.rep[a], lay.rep[b]
        if ra != rb:
            assert (ra, rb) in pairs


def test_opens_collapsed_by_module_scope(resnet):
    lay = layout(resnet)
    blocks = [it for it in lay.pos if isinstance(it, str)]
    # the loose layers before and after the four stages fold into a stem and a head
    assert blocks == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert lay.hierarchy.blocks["stem"].synthetic and len(lay.pos) == 6
    _edges_connected(resnet, lay)
    # a collapsed block stands for every node under it
    h = lay.hierarchy
    assert {n for n, r in lay.rep.items() if r == "layer2"} == set(h.nodes_under("layer2"))


def test_expand_and_collapse_change_visible_items(resnet):
    h = Hierarchy(resnet)
    lay = layout(resnet, hierarchy=h)
    lay2 = layout(resnet, hierarchy=h, expanded=lay.expanded | {"layer2"}, previous=lay)
    assert "layer2" not in lay2.pos and "layer2.0" in lay2.pos and "layer2.1" in lay2.pos
    assert "layer2" in lay2.frames  # the open block is framed
    _edges_connected(resnet, lay2)
    lay3 = layout(resnet, hierarchy=h, expanded="all")
    assert set(lay3.pos) == set(resnet.nodes)
    _edges_connected(resnet, lay3)
    # leaf modules called twice (a block's relu) are not blocks of their own
    assert not any(b.endswith(".relu") for b in h.blocks)


def test_layers_read_top_to_bottom_without_wrapping(resnet):
    lay = layout(resnet, expanded="all")
    for a, b, _c, pts, back in lay.edges:
        if not back:
            assert lay.pos[b][1] > lay.pos[a][1], (a, b)
            ys = [p[1] for p in pts]
            assert ys == sorted(ys)  # routed downwards, never back up into an earlier row


def test_skip_edges_route_beside_the_chain(resnet):
    lay = layout(resnet, expanded="all")
    boxes = {it: (x, y, x + lay.size[it][0], y + lay.size[it][1]) for it, (x, y) in lay.pos.items()}
    long_edges = [e for e in lay.edges if len(e[3]) > 2]
    assert long_edges  # the residuals have dummy points
    for a, b, _c, pts, _back in long_edges:
        for (px, py) in pts[1:-1]:
            for it, (x0, y0, x1, y1) in boxes.items():
                assert not (x0 < px < x1 and y0 < py < y1), f"edge {a}->{b} runs through {it}"


def test_expansion_is_stable(resnet):
    h = Hierarchy(resnet)
    lay = layout(resnet, hierarchy=h)
    lay2 = layout(resnet, hierarchy=h, expanded=lay.expanded | {"layer3"}, previous=lay)
    both = [it for it in lay.pos if it in lay2.pos]
    order1 = sorted(both, key=lambda it: lay.pos[it][1])
    order2 = sorted(both, key=lambda it: lay2.pos[it][1])
    assert order1 == order2
    # what sits above the opened block does not move down
    above = [it for it in both if lay.pos[it][1] < lay.pos["layer3"][1]]
    assert all(lay2.pos[it][1] == lay.pos[it][1] for it in above)


def test_transformer_opens_as_its_layers():
    m = torchvision.models.VisionTransformer(32, 8, num_layers=6, num_heads=2, hidden_dim=32, mlp_dim=64).eval()
    g = pipeline.analyze_model(m, make_inputs("1,3,32,32"), probe=False).graph
    lay = layout(g)
    blocks = [it for it in lay.pos if isinstance(it, str)]
    assert blocks == ["stem"] + [f"encoder.layers.encoder_layer_{i}" for i in range(6)] + ["head"]
    _edges_connected(g, lay)


def test_a_module_list_run_by_the_parent_is_not_a_block():
    import torch
    from torch import nn

    class Chain(nn.Module):  # relu between the list's layers runs in the parent's scope
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(30))

        def forward(self, x):
            for lin in self.layers:
                x = torch.relu(lin(x))
            return x
    g = pipeline.analyze_model(Chain().eval(), make_inputs("1,4"), probe=False).graph
    lay = layout(g)
    assert "layers" not in lay.hierarchy.blocks  # folded it would sit in a cycle with the relus
    assert set(lay.pos) == set(g.nodes)
    assert all(not back for *_, back in lay.edges)


def _tiny_llama_graph(layers: int):
    """A small Llama's traced graph (meta device: no weights)."""
    transformers = pytest.importorskip("transformers")
    import torch
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=4, vocab_size=100)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg).eval()
        ids = torch.zeros(1, 8, dtype=torch.long)
    return pipeline.analyze_model(model, ids, probe=False).graph


def test_a_decoder_llm_opens_as_its_layers():
    g = _tiny_llama_graph(5)
    lay = layout(g)
    blocks = [it for it in lay.pos if isinstance(it, str)]
    assert [b for b in blocks if b.startswith("model.layers.")] == [f"model.layers.{i}" for i in range(5)]
    assert len(lay.pos) <= 48
    _edges_connected(g, lay)
    # one decoder layer opens on its own; the others stay folded
    lay2 = layout(g, hierarchy=lay.hierarchy, expanded=lay.expanded | {"model.layers.2"}, previous=lay)
    assert "model.layers.2" in lay2.frames and "model.layers.3" in lay2.pos
    _edges_connected(g, lay2)


def test_a_broadcast_input_does_not_bend_the_chain():
    """Rotary embeddings feed every decoder layer: their long edges run beside the chain of
    layers, which stays straight instead of drifting sideways one layer at a time."""
    transformers = pytest.importorskip("transformers")
    import torch
    n = 8
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=n,
                                   num_attention_heads=4, num_key_value_heads=4, vocab_size=100)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg).eval()
        ids = torch.zeros(1, 8, dtype=torch.long)
    g = pipeline.analyze_model(model, ids, probe=False).graph
    lay = layout(g)
    centres = [lay.pos[f"model.layers.{i}"][0] for i in range(n)]
    from gui.jobs.graph_layout import BLOCK_W
    assert max(centres) - min(centres) < BLOCK_W / 2, centres
    _edges_connected(g, lay)


def test_a_broadcast_source_feeds_its_consumers_through_one_trunk():
    """A source feeding many far layers (rotary embeddings: every decoder layer) drew one long
    line per consumer, a wall of parallel edges beside the chain. Its edges share one trunk and
    branch off at each consumer; the layout counts the consumers for the source's label."""
    import networkx as nx

    from gui.jobs.graph_layout import BROADCAST_MIN

    g = nx.DiGraph()  # trace order: the source, the input, then the chain of layers
    n = 3 * BROADCAST_MIN
    g.add_node(0, label="rotary", op="rotary", kind="op", scope="", module="")
    g.add_node(1, label="input", op="input", kind="input", scope="", module="")
    for i in range(2, n + 2):
        g.add_node(i, label=f"layers.{i}", op="linear", kind="layer", scope="", module=f"layers.{i}")
        g.add_edge(i - 1, i)
        g.add_edge(0, i)
    lay = layout(g, expanded="all")
    _edges_connected(g, lay)
    routes = [pts for a, b, _c, pts, _back in lay.edges if a == 0 and len(pts) > 2]
    assert len(routes) >= n - 2
    trunk_x = {round(x) for pts in routes for x, _y in pts[1:-1]}  # the bends between the ends
    assert len(trunk_x) == 1, trunk_x
    assert lay.fanout == {0: n}


def test_a_broadcast_sources_unary_steps_sit_by_their_use():
    """Rotary cos/sin feed one unsqueeze per decoder layer; layered by longest path, all those
    unsqueezes sat in one wide row under the source (each inside its own layer's frame, so the
    frames overlapped) with a wall of long edges down to the layers. Each now sits right above
    its use, and the source's edges share a trunk."""
    import networkx as nx

    from gui.jobs.graph_layout import BROADCAST_MIN, NODE_H, Y_GAP

    g = nx.DiGraph()  # trace order: the source, the input, then per layer: unsqueeze, layer
    n = 2 * BROADCAST_MIN
    g.add_node(0, label="cos", op="to", kind="op", scope="", module="")
    g.add_node(1, label="input", op="input", kind="input", scope="", module="")
    prev = 1
    for i in range(n):
        u, v = 2 + 2 * i, 3 + 2 * i
        g.add_node(u, label=f"layers.{i}.unsqueeze", op="unsqueeze", kind="op", scope="", module="")
        g.add_node(v, label=f"layers.{i}.mul", op="mul", kind="op", scope="", module="")
        g.add_edges_from([(0, u), (u, v), (prev, v)])
        prev = v
    lay = layout(g, expanded="all")
    _edges_connected(g, lay)
    for i in range(n):
        u, v = 2 + 2 * i, 3 + 2 * i
        assert lay.pos[v][1] - lay.pos[u][1] == NODE_H + Y_GAP, i  # the row right above
    assert lay.fanout == {0: n}


def test_two_trunks_side_by_side_never_braid():
    """Rotary cos and sin each feed every decoder layer: their two trunks keep one order down
    the fully opened graph (crossing-minimisation swapped them at every branch: a braid)."""
    g = _tiny_llama_graph(6)
    opening = layout(g)  # "expand all" from the opening view: its order is the starting point
    lay = layout(g, hierarchy=opening.hierarchy, expanded=opening.hierarchy.all_blocks(), previous=opening)
    assert len(lay.fanout) == 2 and set(lay.fanout.values()) == {6}
    at = {src: {} for src in lay.fanout}  # source -> {y: x of its trunk there}
    for a, _b, _c, pts, _back in lay.edges:
        if a in at:
            for x, y in pts[1:-1]:
                at[a][round(y)] = x
    p, q = at.values()
    signs = {p[y] < q[y] for y in set(p) & set(q)}
    assert len(signs) == 1, at
