"""The per-block latency chart in the window: one row per timed block, original and pruned bars
with quartile whiskers, device and threads stated, and 32+ blocks (a Llama) readable by scrolling."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from helpers import gui_prune  # noqa: E402

from core.metrics.blocks import BlockLatency, BlockTiming  # noqa: E402
from core.metrics.timing import Timing  # noqa: E402


def _t(ms):
    return Timing(ms, ms * 0.9, ms * 1.2, 5, 2, "cpu", "max runs")


def test_the_window_charts_one_row_per_block_after_a_prune(qtbot, win):
    r = gui_prune(qtbot, win)
    c = win.charts.blocks
    names = [b.name for b in r.blocks.blocks]
    assert names and [b.name for b in c.rows] == names
    assert [i for i, _ in c.ticks] == list(range(len(names)))
    title = c.plotItem.titleLabel.text
    assert "cpu" in title and f"{r.blocks.threads} thread" in title and "interleaved" in title
    assert "latency per block" in [win.charts.summary.item(i, 0).text()
                                   for i in range(win.charts.summary.rowCount())]
    assert names[0] in c.row_text(0) and "original:" in c.row_text(0) and "pruned:" in c.row_text(0)
    win.undo()
    assert c.rows == [] and c.result is None


def test_forty_blocks_show_as_many_rows_as_fit_and_scroll(qtbot, win):
    c = win.charts.blocks
    c.resize(400, 260)
    blocks = [BlockTiming(f"model.layers.{i}.a_rather_long_name", _t(1.0 + i), _t(0.5 + i))
              for i in range(40)]
    c.show_blocks(BlockLatency(blocks, "cpu", 2, 5, "max runs"))
    qtbot.wait(50)
    fit = c.rows_fitting()
    y0, y1 = c.getViewBox().viewRange()[1]
    assert len(c.rows) == 40 and fit < 40 and y1 - y0 == pytest.approx(fit)
    assert "40 blocks: scroll for more" in c.plotItem.titleLabel.text
    assert all(len(label) <= c.LABEL_CHARS for _, label in c.ticks)  # shortened, full on hover
    assert "model.layers.39.a_rather_long_name" in c.row_text(39)
    c.getViewBox().scroll_rows(1000)  # to the end, no further
    y0, y1 = c.getViewBox().viewRange()[1]
    assert y1 == pytest.approx(39.5) and y1 - y0 == pytest.approx(fit)


def test_no_block_figures_say_not_measured(qtbot, win):
    c = win.charts.blocks
    c.show_blocks(None)
    assert c.rows == [] and "not measured" in c.plotItem.titleLabel.text


def test_a_theme_change_redraws_the_block_chart_in_its_colours(qtbot, win):
    gui_prune(qtbot, win)
    c = win.charts.blocks
    n = len(c.rows)
    win.set_theme("dark")
    assert c.theme.color("charts.after") in c.plotItem.titleLabel.text and len(c.rows) == n
    win.undo()  # no result: the empty chart takes the theme too
    win.set_theme("light")
    assert c.backgroundBrush().color().name() == c.theme.color("charts.background").lower()


def test_the_channels_chart_keys_its_colours_in_the_title_not_a_legend_box(qtbot, win):
    """A legend box sat over the longest bars and was cut ("origi") in a narrow panel: the key is
    in the title, as in the block chart, and the scroll hint on a line of its own."""
    charts = win.charts
    charts.layers.resize(420, 260)
    charts._layers({f"model.layers.{i}.mlp.down_proj": (1376, 688) for i in range(40)})
    qtbot.wait(50)
    title = charts.layers.plotItem.titleLabel.text
    assert charts.layers.plotItem.legend is None
    assert "■</span> original" in title and "■</span> kept" in title
    assert "<br>" in title and "40 layers: scroll for more" in title


def test_the_block_charts_scroll_hint_has_a_line_of_its_own(qtbot, win):
    """Appended to "cpu · 2 threads · 9 interleaved runs · median, IQR" the hint ran past the right
    edge of the plot ("... scroll for mo") in the window's default layout."""
    import re
    c = win.charts.blocks
    c.resize(400, 260)
    c.show_blocks(BlockLatency([BlockTiming(f"b{i}", _t(1.0), _t(0.5)) for i in range(40)],
                               "cpu", 2, 5, "max runs"))
    qtbot.wait(50)
    lines = [re.sub("<[^>]+>", "", part).strip() for part in c.plotItem.titleLabel.text.split("<br>")]
    assert "40 blocks: scroll for more" in lines, lines


def test_the_channels_chart_scrolls_rows_and_fits_its_scale_to_the_rows_shown(qtbot, win):
    """A Llama's 32000-wide head set the scale for every row, so its 512-wide layers were slivers;
    and the wheel zoomed the rows instead of scrolling them, piling up the names."""
    charts = win.charts
    charts.layers.resize(420, 260)
    rows = {f"model.layers.{i}.mlp.down_proj": (512, 256) for i in range(40)}
    rows["lm_head"] = (32000, 32000)
    charts._layers(rows)
    qtbot.wait(50)
    vb = charts.layers.getViewBox()
    y0, y1 = vb.viewRange()[1]
    assert vb.viewRange()[0][1] < 600  # the rows shown are at most 512 wide
    vb.scroll_rows(1000)  # to the end: the head is shown
    (z0, z1) = vb.viewRange()[1]
    assert z1 - z0 == pytest.approx(y1 - y0) and z0 > y0  # scrolled, not zoomed
    assert vb.viewRange()[0][1] >= 32000


def test_the_block_charts_scale_fits_the_rows_shown(qtbot, win):
    c = win.charts.blocks
    c.resize(400, 260)
    blocks = [BlockTiming(f"b{i}", _t(1.0), _t(0.5)) for i in range(40)] + \
        [BlockTiming("lm_head", _t(100.0), _t(100.0))]
    c.show_blocks(BlockLatency(blocks, "cpu", 2, 5, "max runs"))
    qtbot.wait(50)
    assert c.getViewBox().viewRange()[0][1] < 2
    c.getViewBox().scroll_rows(1000)
    assert c.getViewBox().viewRange()[0][1] >= 100


def test_a_three_line_chart_title_is_not_cut(qtbot, win):
    """pyqtgraph gives a title one 30 px row: the block chart's third line pushed its first one
    ("latency per block") off the top."""
    c = win.charts.blocks
    c.resize(400, 260)
    c.show_blocks(BlockLatency([BlockTiming(f"b{i}", _t(1.0), _t(0.5)) for i in range(40)],
                               "cpu", 2, 5, "max runs"))
    qtbot.wait(50)
    label = c.plotItem.titleLabel
    assert label.text.count("<br>") == 2
    assert label.maximumHeight() >= label.item.boundingRect().height()
