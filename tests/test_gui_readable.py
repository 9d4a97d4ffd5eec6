"""Issue 12, the readable parts around the graph: names elided in the middle with the full name in a
tooltip and copyable; chart axes in SI units; per-layer charts that stay legible for 100+ layers;
speed-up wording; kept channels in the group table after a prune."""
from __future__ import annotations

import dataclasses
import types

import pytest

pytest.importorskip("pytestqt")

from helpers import gui_prune  # noqa: E402

from PySide6.QtCore import QPointF, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

TIMEOUT = 60_000


def _prune(qtbot, w):
    return gui_prune(qtbot, w, TIMEOUT)


def _row_of(panel, gid):
    return panel.row_of(gid)


def test_group_table_elides_in_the_middle_and_copies_the_full_name(qtbot, win):
    p, t = win.groups, win.groups.table
    assert t.textElideMode() == Qt.ElideMiddle  # "layer1.0.…downsample.0", not four identical heads
    for i in range(p.row_count()):
        assert p.tip(i, "root") == p.text(i, "root")  # the full name on hover
    g = win.session.dg.prunable_groups[1]
    t.selectRow(_row_of(p, g.id))
    QApplication.clipboard().clear()
    qtbot.keyClick(t, Qt.Key_C, Qt.ControlModifier)
    assert QApplication.clipboard().text() == g.root
    # the context menu offers the same
    acts = {a.text(): a for a in win.groups.name_actions()}
    assert "Copy name" in acts


def test_group_details_elide_in_the_middle_and_header_fits(qtbot, win):
    win.select_first_group()
    tree = win.details.tree
    assert tree.textElideMode() == Qt.ElideMiddle
    top = tree.topLevelItem(0)
    assert top is not None and top.childCount() > 0
    m = top.child(0)
    assert m.toolTip(0).startswith(m.text(0)) and "[dim " in m.toolTip(0)  # full name on hover
    # the index-map column's header is fully visible in the dock's width (in a narrow dock the
    # index maps stack under the names: the first header says so)
    hdr = tree.header()
    last = 0 if tree.stacked else tree.columnCount() - 1
    text = tree.headerItem().text(last)
    assert "index map" in text
    assert hdr.sectionSize(last) >= hdr.fontMetrics().horizontalAdvance(text) + 8, text
    tree.setCurrentItem(m)
    QApplication.clipboard().clear()
    qtbot.keyClick(tree, Qt.Key_C, Qt.ControlModifier)
    assert QApplication.clipboard().text() == m.text(0)


def test_paths_shorten_keeping_the_parts_that_tell_rows_apart():
    from gui.widgets.units import abbreviate_path
    name = "encoder.layers.encoder_layer_11.self_attention.out_proj.weight[dim 0]"
    assert abbreviate_path(name, lambda t: True) == name
    assert abbreviate_path(name, lambda t: len(t) <= 50) == "e.l.encoder_layer_11.s.out_proj.weight[dim 0]"
    assert abbreviate_path(name, lambda t: len(t) <= 40) == "e.l.encoder_layer_11.s.o.weight[dim 0]"
    assert abbreviate_path(name, lambda t: len(t) <= 36) == "…encoder_layer_11.s.o.weight[dim 0]"
    assert abbreviate_path(name, lambda t: len(t) <= 28) == "…e…11.s.o.weight[dim 0]"
    short = abbreviate_path(name, lambda t: len(t) <= 20)
    assert len(short) <= 20 and "…" in short and short.endswith("0]")


def test_si_numbers_with_units():
    from gui.widgets.units import duration_ms, si, speed_text
    assert si(25_557_032) == "25.6 M"
    assert si(8.18e9, "FLOPs") == "8.18 GFLOPs"
    assert si(0) == "0"
    assert si(950, "FLOPs") == "950 FLOPs"
    assert si(12.5, "ms") == "12.5 ms"
    assert duration_ms(850) == "850 ms" and duration_ms(1250) == "1.25 s" and duration_ms(0.042) == "42 µs"
    assert speed_text(10.0, 5.0) == "2.00× faster"
    assert speed_text(10.0, 13.0) == "1.30× slower"
    assert speed_text(10.0, 10.0) == "same speed"


def test_chart_axes_in_si_units_and_speed_wording(qtbot, win):
    r = _prune(qtbot, win)
    c = win.charts
    for k in ("params", "flops"):
        ax = c.plots[k].getAxis("left")
        ticks = ax.tickStrings([0.0, 2e7, 4e7], 1.0, 2e7)
        assert not any("e+" in s for s in ticks), ticks
    assert c.plots["flops"].getAxis("left").tickStrings([4e9], 1.0, 1e9) == ["4 GFLOPs"]
    assert c.plots["params"].getAxis("left").tickStrings([2e7], 1.0, 1e7) == ["20 M"]
    assert c.plots["latency"].getAxis("left").tickStrings([50.0, 1000.0], 1.0, 10.0) == ["50 ms", "1 s"]
    slow = dataclasses.replace(r, after=dataclasses.replace(r.after, latency_ms=r.before.latency_ms * 1.3))
    c.show_result(slow)
    title = c.plots["latency"].plotItem.titleLabel.text
    assert "1.30× slower" in title and "faster" not in title
    rows = {c.summary.item(i, 0).text(): c.summary.item(i, 1).text() for i in range(c.summary.rowCount())}
    assert "slower" in rows["latency"] and "speed-up" not in rows["latency"]


def test_latency_error_bars_from_quartiles(qtbot, win):
    import pyqtgraph as pg
    r = _prune(qtbot, win)

    def with_q(m, q1, q3):  # works before and after core.metrics.Metrics has the quartile fields
        d = dataclasses.asdict(m)
        d.update(latency_q1_ms=q1, latency_q3_ms=q3)
        return types.SimpleNamespace(**d)
    b, a = r.before, r.after
    res = types.SimpleNamespace(**{f.name: getattr(r, f.name) for f in dataclasses.fields(r)})
    res.before = with_q(b, b.latency_ms * 0.9, b.latency_ms * 1.2)
    res.after = with_q(a, a.latency_ms * 0.8, a.latency_ms * 1.1)
    win.charts.show_result(res)
    bars = [i for i in win.charts.plots["latency"].getPlotItem().items if isinstance(i, pg.ErrorBarItem)]
    assert len(bars) == 1
    top = list(bars[0].opts["top"])
    assert top == pytest.approx([b.latency_ms * 0.2, a.latency_ms * 0.1])
    # without quartiles: no error bars
    res.before, res.after = with_q(b, None, None), with_q(a, None, None)
    win.charts.show_result(res)
    assert not [i for i in win.charts.plots["latency"].getPlotItem().items
                if isinstance(i, pg.ErrorBarItem)]


def test_per_layer_chart_is_legible_for_many_layers(qtbot, win):
    r = _prune(qtbot, win)
    names = [f"encoder.layers.encoder_layer_{i}.mlp.linear_{i % 3}" for i in range(150)]
    channels = {n: [768, 384 + i] for i, n in enumerate(names)}
    c = win.charts
    c.show_result(dataclasses.replace(r, channels=channels))
    qtbot.wait(50)
    vb = c.layers.getViewBox()
    lo, hi = vb.viewRange()[1]
    rows = hi - lo
    fm = c.layers.fontMetrics()
    assert rows >= 3
    assert vb.height() / rows >= fm.height(), "labels would overlap"
    # labels are middle-elided (start and end of the name both visible), full names via the list
    shown = dict(c.layer_ticks)  # what the left axis was given
    assert all(len(s) <= c.LABEL_CHARS for s in shown.values())
    assert shown[0] == "e.l.encoder_layer_0.m.linear_0"  # the numbered parts stay readable
    assert c.layers.getAxis("bottom").tickStrings([256.0], 1.0, 256) == ["256"]
    # hovering a bar names its layer in full
    row0 = vb.mapViewToScene(QPointF(100, 0))
    c.layers.scene().sigMouseMoved.emit(row0)
    assert c.layers.toolTip().startswith(names[0] + "\n") and "384 of 768" in c.layers.toolTip()


def test_group_table_shows_kept_channels_after_prune(qtbot, win):
    p = win.groups
    assert all(p.text(i, "kept") in ("", "–") for i in range(p.row_count()))
    r = _prune(qtbot, win)
    dg = win.session.dg
    pruned = [g for g in dg.groups if r.plan.removed.get(g.id)]
    assert pruned
    for g in pruned:
        row = _row_of(p, g.id)
        kept = g.n_channels - len(r.plan.removed[g.id])
        assert p.value(row, "kept") == kept and str(kept) in p.text(row, "kept")
        assert str(len(r.plan.removed[g.id])) in p.tip(row, "kept")
    win.undo()
    assert all(p.text(i, "kept") in ("", "–") for i in range(p.row_count()))


def test_group_details_stack_in_a_narrow_dock(qtbot, win):
    """At 200 % scaling (or in a narrow dock) the member list stacks: the index map goes under the
    name and its column away, so whole member names fit; wide again, the columns come back."""
    from gui.widgets.group_details import DETAIL, MAP
    tree = win.details.tree
    win.details.resize(330, 500)
    qtbot.waitUntil(lambda: tree.stacked, timeout=5000)
    win.select_first_group()
    top = tree.topLevelItem(0)
    assert tree.isColumnHidden(MAP) and "members" in top.data(0, DETAIL)
    fm, hdr = tree.fontMetrics(), tree.header()
    for i in range(top.childCount()):
        m = top.child(i)
        assert m.data(0, DETAIL) == m.text(MAP) and "→" in m.data(0, DETAIL)
        # the whole name fits its column (indentation and padding aside)
        assert fm.horizontalAdvance(m.text(0)) + tree.indentation() + 16 <= hdr.sectionSize(0), m.text(0)
    win.details.resize(900, 500)
    qtbot.waitUntil(lambda: not tree.stacked, timeout=5000)
    top = tree.topLevelItem(0)
    assert not tree.isColumnHidden(MAP) and top.child(0).data(0, DETAIL) is None


def test_a_path_ending_in_its_numbered_part_shortens_the_parts_before_it():
    """Block names end in their number ("encoder.layers.encoder_layer_0"): the leading parts were
    kept whole and the tail elided ("encoder.l…oder_layer_0" in the block latency chart)."""
    from gui.widgets.units import abbreviate_path
    name = "encoder.layers.encoder_layer_0"
    assert abbreviate_path(name, lambda t: len(t) <= 22) == "e.l.encoder_layer_0"
    assert abbreviate_path(name, lambda t: len(t) <= 16) == "…encoder_layer_0"
    assert abbreviate_path("model.layers.31", lambda t: len(t) <= 10) == "m.l.31"
