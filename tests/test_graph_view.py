"""The graph in the window (pytest-qt, offscreen): collapsing and expanding blocks, colour by
group, role styles, the group's paper view, and the selection the side panels share."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QRect, Qt  # noqa: E402


def _check_connected(view):
    vis = set(view.items_by_node) | set(view.blocks_by_id)
    assert vis == set(view.layout_.pos)
    for a, b, *_ in view.layout_.edges:
        assert a in vis and b in vis
    pairs = {(a, b) for a, b, *_ in view.layout_.edges}
    rep = view.layout_.rep
    for a, b in view.graph.edges():
        if rep[a] != rep[b]:
            assert (rep[a], rep[b]) in pairs


def test_collapse_and_expand_in_place(qtbot, win):
    view = win.view
    g = win.session.dg.graph
    assert set(view.items_by_node) == set(g.nodes)  # a small model opens fully expanded
    view.collapse_all()
    assert set(view.blocks_by_id) >= {"stem", "block1", "fuse", "head"}
    assert len(view.items_by_node) < len(g) / 2
    _check_connected(view)
    head = view.blocks_by_id["head"]
    assert "3 nodes" in head.info or "nodes" in head.info
    # double-click a block: it opens where it was
    pt = view.mapFromScene(head.sceneBoundingRect().center())
    with qtbot.waitSignal(view.layoutChanged, timeout=5000):
        qtbot.mouseDClick(view.viewport(), Qt.LeftButton, pos=pt)
    assert "head" not in view.blocks_by_id and "head" in view.frames
    assert set(win.session.dg.node_of_module("head.0")) <= set(view.items_by_node)
    _check_connected(view)
    # keyboard: − folds the block of the picked node, + opens a picked block
    node = win.session.dg.node_of_module("head.0")[0]
    view.select_node(node, center=False)
    view.setFocus()
    qtbot.keyClick(view, Qt.Key_Minus)
    assert "head" in view.blocks_by_id
    view.scene().clearSelection()
    view.blocks_by_id["fuse"].setSelected(True)
    qtbot.keyClick(view, Qt.Key_Plus)
    assert "fuse" in view.frames
    _check_connected(view)


def test_hidden_nodes_are_revealed_and_highlighted_through_blocks(win):
    view, dg = win.view, win.session.dg
    view.collapse_all()
    node = dg.node_of_module("block1.0")[0]
    gids = dg.groups_of_node(node)
    win._on_groups_selected([gids[0]])  # the group's nodes are inside collapsed blocks
    assert any(it.highlight for it in view.blocks_by_id.values())
    view.select_node(node)  # picking a hidden node opens its blocks
    assert node in view.items_by_node and view.items_by_node[node].highlight == 2


def test_selection_styles_roles_apart(win):
    view, dg = win.view, win.session.dg
    node = dg.node_of_module("block1.0")[0]  # a conv between two groups
    view.select_node(node)
    roles = {it.role for n, it in view.items_by_node.items() if it.highlight == 1}
    assert {"out", "in"} <= roles  # producers and consumers are drawn differently
    conv_in = next(n for n, it in view.items_by_node.items() if it.highlight == 1 and it.role == "out")
    assert view.items_by_node[conv_in].role != "in"


def test_colour_by_group_gives_distinct_colours(qtbot, win):
    view, dg = win.view, win.session.dg
    assert not view.colour_by_group
    win.a_colour_groups.trigger()
    assert view.colour_by_group and win.a_colour_groups.isChecked()
    colours = {g.id: view.group_colour(g.id).name() for g in dg.groups}
    assert len(set(colours.values())) == len(colours)
    many = {view.group_colour(i).name() for i in range(200)}
    assert len(many) == 200  # the palette cycles with new shades, never repeats
    seen = {}
    for n, it in view.items_by_node.items():
        out_g, in_g = view.groups.colour_groups(n)
        if out_g is not None:
            assert it.fill.name() == colours[out_g]
            seen.setdefault(colours[out_g], set()).add(out_g)
        if in_g is not None:
            assert it.band is not None and it.band.name() == colours[in_g]
    assert all(len(v) == 1 for v in seen.values())
    assert len(seen) >= 5
    win.a_colour_groups.trigger()
    assert all(it.fill == it.base for it in view.items_by_node.values())


def test_paper_view_lists_every_end_and_index_map(qtbot, win):
    dg = win.session.dg
    # the group fed by the concat: branch_a's conv output sits at channels 0-47 of fuse's input
    a = dg.node_of_module("branch_a.0")[0]
    gid = next(g for g in dg.groups_of_node(a) if any(m.slot.role == "out" and m.slot.module_name == "branch_a.0"
                                                      for m in dg.groups[g].members))
    win._on_groups_selected([gid])
    win.a_group_view.trigger()
    paper = win.selection.paper
    assert paper.isVisible() and paper.paper.gid == gid
    rows = paper.listed()
    group = dg.groups[gid]
    from gui.jobs.group_paper import map_text
    for m in group.members:  # every member slot, with its end and index map
        assert any(r[3] == m.name and r[5] == map_text(m.index_map, 12) for r in rows), m.name
    ends = {r[0]: r[2] for r in rows if r[0]}
    assert ends["branch_a.0"] == "f⁺" and ends["fuse.0"] == "f⁻"
    assert any(v == "f⁻ ⇔ f⁺" for v in ends.values())  # the relu / cat pass channels through
    labels = [lab for _i, _j, lab in paper.paper.inter if lab]
    assert "0-47 → ch 0-47, 48-95 → ·" in labels  # the concat's offset, written on the edge into fuse
    win.view.scene().clearSelection()


def test_pick_a_node_clears_the_group_table(win):
    view, dg = win.view, win.session.dg
    view.select_node(dg.node_of_module("block1.0")[0])
    assert win.groups.selected_ids()
    view.scene().clearSelection()
    assert "Pick a node" in win.details.header.text()
    assert not win.groups.selected_ids()


def test_find_names_the_node_not_its_id(win):
    win.search.setText("branch_b")
    win.selection.find()
    msg = win.status_label.text()
    assert "branch_b" in msg and "match 1 of" in msg


def test_group_table_swatches_match_the_graph_colours(qtbot, win):
    """One palette: the group table's swatch of every group is the graph's colour for it (also
    past the 8 base colours, where the graph turns to new shades), in both themes."""
    win.a_colour_groups.trigger()
    for name in ("light", "dark"):
        win.set_theme(name)
        t, view = win.groups.theme, win.view
        for gid in range(40):
            assert t.group_colour(gid).name() == view.group_colour(gid).name(), (name, gid)
        model = win.groups.model
        for row in range(model.rowCount()):
            gid = win.groups.value(row, "id")
            img = model.data(model.index(row, 1), Qt.DecorationRole).pixmap(12, 12).toImage()
            assert img.pixelColor(6, 6).name() == view.group_colour(gid).name(), (name, gid)


def test_overlays_step_aside_in_a_cramped_graph_view(qtbot, win):
    """At 200 % scaling the graph pane can be a few hundred pixels: the minimap and legend would
    cover the graph itself, so they are hidden there (and come back when there is room)."""
    from gui.widgets import graph_overlays

    view = win.view
    view.resize(420, 300)
    graph_overlays.place(view)
    view.minimap.follow()
    assert not view.minimap.isVisible() and not view.legend.isVisible()
    view.resize(1200, 900)
    graph_overlays.place(view)
    assert view.legend.isVisible()


def test_the_legend_never_covers_the_graph(qtbot, win):
    """The legend lies in a strip below the graph (the breadcrumb in one above), outside the
    area the graph is drawn (and fitted) in, folded or not; hidden, the legend's strip goes."""
    from gui.widgets import graph_overlays

    view = win.view
    view.resize(1200, 900)
    graph_overlays.place(view)
    for folded in (False, True):
        if view.legend.folded != folded:
            qtbot.mouseClick(view.legend, Qt.LeftButton)
        assert view.legend.isVisible()
        assert not view.legend.geometry().intersects(view.viewport().geometry())
        assert not view.crumbs.geometry().intersects(view.viewport().geometry())
        assert view.crumbs.geometry().top() >= 0
        assert view.legend.geometry().bottom() <= view.height()
    view.setFocus()
    full = view.viewport().height()
    qtbot.keyClick(view, Qt.Key_L)  # hide it: the graph takes the whole pane
    assert not view.legend.isVisible() and view.viewport().height() > full


def _chain_and_view(qtbot, n):
    """A chain of ``n`` plain layers and a shown 800x600 graph view (nothing drawn yet)."""
    import networkx as nx

    from gui.widgets.graph_view import GraphView

    g = nx.DiGraph()
    for i in range(n):
        g.add_node(i, label=f"layers.{i}", op="linear", kind="layer", scope="", module=f"layers.{i}")
    g.add_edges_from((i, i + 1) for i in range(n - 1))
    view = GraphView()
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    return g, view


def test_far_out_a_big_graph_skips_its_node_items_without_touching_each(qtbot):
    """Far out, thousands of plain nodes are drawn by the overview path alone: their layer turns
    transparent (one test skips them all). Hiding it instead visits every node and marks it for
    repaint, a long step on the GUI thread with 20k nodes (benchmarks/bench_gui.py)."""

    from gui.jobs.graph_layout import layout
    from gui.widgets import graph_items
    from gui.widgets.graph_nav import HIDE_ABOVE

    n = HIDE_ABOVE + 500
    g, view = _chain_and_view(qtbot, n)
    view.set_graph(g, layout(g, expanded="all"))
    if view.building:
        qtbot.waitSignal(view.built, timeout=60_000).wait()
    painted = []
    real = graph_items.NodeItem.plain  # far out, a node's paint asks this first
    graph_items.NodeItem.plain = lambda self: (painted.append(1), real(self))[1]
    try:
        view.fit_all()
        view.viewport().repaint()
        assert not painted  # far out: no node item paints
        assert all(it.isVisible() for it in list(view.items_by_node.values())[:50])
    finally:
        graph_items.NodeItem.plain = real


def test_a_chunked_build_does_not_paint_half_built_nodes(qtbot):
    """A big graph is added in chunks between events; a repaint between chunks would draw every
    node added so far (zoomed in, with text) — the long GUI-thread steps of bench_gui's 20k chain.
    The overview path stands in (the nodes are transparent: the scene skips them) until the last
    chunk; then the nodes show as usual."""

    from gui.jobs.graph_layout import layout
    from gui.widgets.graph_view import BUILD_CHUNK

    n = 8 * BUILD_CHUNK
    g, view = _chain_and_view(qtbot, n)
    try:
        view.set_graph(g, layout(g, expanded="all"))
        assert view.building
        qtbot.waitUntil(lambda: len(view.items_by_node) >= BUILD_CHUNK, timeout=60_000)
        assert view.building and view.items_by_node[0].effectiveOpacity() == 0
        view.resetTransform()  # zooming in meanwhile does not bring them back half-built
        assert view.building and view.items_by_node[0].effectiveOpacity() == 0
    finally:
        qtbot.waitUntil(lambda: not view.building, timeout=60_000)  # no step left for a dead view
    view.resetTransform()  # zoomed in
    assert view.items_by_node[0].effectiveOpacity() == 1


def test_only_the_node_layers_near_the_view_are_opaque(qtbot):
    """A big graph's nodes hang under one layer per build chunk; only the layers near the view
    are opaque, so a paint, a zoom or a level-of-detail change revisits a few hundred nodes, not
    all 20k (the first paint of bench_gui's 20k chain was one 100+ ms GUI-thread step)."""
    from gui.jobs.graph_layout import layout
    from gui.widgets.graph_view import BUILD_CHUNK

    n = 8 * BUILD_CHUNK
    g, view = _chain_and_view(qtbot, n)
    view.set_graph(g, layout(g, expanded="all"))
    qtbot.waitUntil(lambda: not view.building, timeout=60_000)
    first, last = view.items_by_node[0], view.items_by_node[n - 1]
    view.resetTransform()
    view.centerOn(first)
    assert first.effectiveOpacity() == 1 and last.effectiveOpacity() == 0
    view.centerOn(last)  # scrolling brings the far layer in
    assert last.effectiveOpacity() == 1 and first.effectiveOpacity() == 0
    assert last in view.items(view.mapFromScene(last.sceneBoundingRect().center()))


def test_node_bounds_come_from_qt_not_python(qtbot):
    """Qt asks every item for its bounding rect on each full scan; a Python override made that
    20k calls into Python. The rect item's own (C++) bounds still leave room for the 3-wide
    selection outline."""
    from gui.jobs.graph_layout import layout
    from gui.widgets.graph_items import NodeItem

    assert "boundingRect" not in vars(NodeItem)
    g, view = _chain_and_view(qtbot, 3)
    view.set_graph(g, layout(g, expanded="all"))
    assert view.items_by_node[0].boundingRect() == NodeItem.RECT.adjusted(-3, -3, 3, 3)


def test_the_minimap_never_covers_a_node(qtbot):
    """The minimap shows while part of the graph is out of view; it must not hide nodes of the
    part in view (it sat over the bottom-right corner of the graph): fitted or panned anywhere,
    no node or block lies under it."""
    import networkx as nx

    from gui.jobs.graph_layout import layout
    from gui.widgets.graph_items import BlockItem, NodeItem
    from gui.widgets.graph_view import GraphView

    g = nx.DiGraph()  # a wide graph: 24 branches of 12 layers side by side
    g.add_node(0, label="input", op="input", kind="input", scope="", module="")
    for b in range(24):
        prev = 0
        for i in range(12):
            n = 1 + b * 12 + i
            g.add_node(n, label=f"b{b}.l{i}", op="linear", kind="layer", scope="", module=f"b{b}.l{i}")
            g.add_edge(prev, n)
            prev = n
    view = GraphView()
    qtbot.addWidget(view)
    view.resize(1000, 700)
    view.show()
    view.set_graph(g, layout(g, expanded="all"))
    qtbot.waitUntil(lambda: not view.building, timeout=60_000)

    def covered():
        mm = view.minimap
        assert mm.isVisible()
        r = QRect(view.viewport().mapFrom(view, mm.geometry().topLeft()), mm.size())
        r = r.intersected(view.viewport().rect())
        return [it for it in (view.items(r) if not r.isEmpty() else [])
                if isinstance(it, (NodeItem, BlockItem))]

    view.fit()
    qtbot.wait(10)
    assert not covered()
    sr = view.scene().sceneRect()
    for pt in (sr.bottomRight(), sr.center(), sr.topRight(), sr.bottomLeft()):
        view.resetTransform()
        view.centerOn(pt)
        qtbot.wait(10)
        assert not covered(), pt


def test_a_broadcast_source_names_what_it_feeds(qtbot):
    """The edges of a source feeding many layers share one trunk (graph_layout), so the source
    says how many it feeds, on the node and in its tooltip."""
    import networkx as nx

    from gui.jobs.graph_layout import BROADCAST_MIN, layout

    g = nx.DiGraph()
    n = 2 * BROADCAST_MIN
    g.add_node(0, label="rotary", op="rotary", kind="op", scope="", module="")
    g.add_node(1, label="input", op="input", kind="input", scope="", module="")
    for i in range(2, n + 2):
        g.add_node(i, label=f"layers.{i}", op="linear", kind="layer", scope="", module=f"layers.{i}")
        g.add_edges_from([(i - 1, i), (0, i)])
    from gui.widgets.graph_view import GraphView
    view = GraphView()
    qtbot.addWidget(view)
    view.set_graph(g, layout(g, expanded="all"))
    src = view.items_by_node[0]
    assert src.fanout == f"→ {n} nodes" and f"feeds {n} nodes" in src.tip()
    assert view.items_by_node[2].fanout == ""


def test_the_minimap_shows_a_long_chain(qtbot):
    """Thousands of nodes in one column are each under a pixel high in the minimap: filled, they
    drew nothing (an empty minimap for bench_gui's 20k chain); outlined, they draw a line."""
    from gui.jobs.graph_layout import layout
    from gui.widgets.graph_nav import HIDE_ABOVE
    from gui.widgets.graph_overlays import MINIMAP_H

    n = HIDE_ABOVE + 500
    g, view = _chain_and_view(qtbot, n)
    view.set_graph(g, layout(g, expanded="all"))
    qtbot.waitUntil(lambda: not view.building, timeout=60_000)
    img = view.minimap._img
    bg = img.pixelColor(2, 2)
    drawn = {y for y in range(img.height()) for x in range(img.width()) if img.pixelColor(x, y) != bg}
    assert len(drawn) > MINIMAP_H // 2
    view.fit()  # the top at a readable zoom: a sliver of the chain, still a visible mark
    r = view.minimap.view_rect()
    assert r.width() >= 4 and r.height() >= 4


def test_a_big_scene_is_replaced_without_clearing_it_at_once(qtbot):
    """Expanding or collapsing lays the graph out again and draws it into a new scene; clearing
    the old one's 20k items at once held the GUI thread ~70 ms, so it goes a node layer per
    event-loop turn (and is gone in the end)."""
    import shiboken6

    from gui.jobs.graph_layout import layout
    from gui.widgets.graph_view import BUILD_CHUNK

    n = 4 * BUILD_CHUNK
    g, view = _chain_and_view(qtbot, n)
    lay = layout(g, expanded="all")
    view.set_graph(g, lay)
    qtbot.waitUntil(lambda: not view.building, timeout=60_000)
    old = view.scene()
    view.set_graph(g, lay)
    assert view.scene() is not old and shiboken6.isValid(old)
    assert len(old.items()) > BUILD_CHUNK  # not all gone in this turn
    qtbot.waitUntil(lambda: not shiboken6.isValid(old), timeout=60_000)
    qtbot.waitUntil(lambda: not view.building, timeout=60_000)
    assert len(view.items_by_node) == n and view.items_by_node[0].scene() is view.scene()


def test_a_view_closed_while_its_old_scene_goes_ends_quietly(qtbot):
    """The old scene's layers go over several turns; if the view (and the scene with it) is
    deleted meanwhile, the remaining steps do nothing."""
    import shiboken6

    from gui.jobs.graph_layout import layout
    from gui.widgets.graph_view import BUILD_CHUNK

    from gui.widgets.graph_view import GraphView

    n = 4 * BUILD_CHUNK
    g, _shown = _chain_and_view(qtbot, n)
    view = GraphView()  # not qtbot's: this test deletes it
    view.show()
    lay = layout(g, expanded="all")
    view.set_graph(g, lay)
    qtbot.waitUntil(lambda: not view.building, timeout=60_000)
    old = view.scene()
    view.set_graph(g, lay)
    shiboken6.delete(view)
    assert not shiboken6.isValid(old)
    qtbot.wait(50)  # the pending steps run and find nothing to do


def test_a_collapsed_blocks_text_stays_readable_when_the_view_is_fitted():
    """At the zoom a fitted ResNet or ConvNeXt opens with (0.5-0.9), a block's name and its line
    below ("27 nodes · 4 groups · 32 % removed") were 4-5 px on screen."""
    from gui.widgets.graph_items import block_text_sizes
    assert block_text_sizes(1.0) == (10.0, 7.0)  # full size: unchanged
    for lod in (0.5, 0.6, 0.75, 0.9):
        big, small = block_text_sizes(lod)
        assert big * lod >= 8.0 - 1e-9 and small * lod >= 6.0 - 1e-9
        assert big <= 16.0 and small <= 12.0  # within the card's rows
