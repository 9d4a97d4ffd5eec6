"""The coupled-group table on its own: numeric sorting that keeps the selection and the filter,
lock boxes, and a 10,000-group table filled without an item per cell."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from gui.widgets.group_panel import GroupPanel  # noqa: E402


def _rows(n):
    return [{"id": i, "root": f"layer{i}.conv", "channels": 8 * (i % 5 + 1), "prunable": 8,
             "is_prunable": i % 7 != 3, "params": 1000 * (n - i), "importance": float((i * 37) % 11),
             "unit": None} for i in range(n)]


@pytest.fixture
def panel(qtbot):
    p = GroupPanel()
    qtbot.addWidget(p)
    p.resize(700, 400)
    p.show()
    return p


def test_sorting_is_numeric_and_keeps_selection_and_filter(panel):
    panel.set_rows(_rows(30))
    assert [panel.value(i, "id") for i in range(3)] == [0, 1, 2]  # id order on arrival
    panel.select_groups([12])
    panel.filter.setText("layer1")  # layer1, layer10..19
    hidden = {panel.value(i, "id") for i in range(30) if panel.table.isRowHidden(i)}
    panel.table.sortByColumn(panel.column("params"), Qt.AscendingOrder)
    params = [panel.value(i, "params") for i in range(30)]
    assert params == sorted(params) and params[0] == 1000  # numbers, not text ("10000" < "2000")
    assert panel.selected_ids() == [12]  # the pick follows its group
    assert {panel.value(i, "id") for i in range(30) if panel.table.isRowHidden(i)} == hidden
    panel.table.sortByColumn(panel.column("importance"), Qt.DescendingOrder)
    imps = [panel.value(i, "importance") for i in range(30)]
    assert imps == sorted(imps, reverse=True)


def test_lock_boxes_lock_prunable_groups(panel, qtbot):
    panel.set_rows(_rows(10))
    m = panel.model
    with qtbot.waitSignal(panel.locksChanged):
        m.setData(m.index(panel.row_of(4), 0), Qt.Checked, Qt.CheckStateRole)
    assert panel.locked_roots() == ["layer4.conv"]
    assert not m.flags(m.index(panel.row_of(3), 0)) & Qt.ItemIsEnabled  # not prunable
    panel.set_locked(4, False)
    assert panel.locked_roots() == []
    panel.set_rows(_rows(10))  # another model's rows start unlocked and unpicked
    assert panel.locked_roots() == [] and panel.selected_ids() == []


def test_kept_and_importance_columns(panel):
    panel.set_rows(_rows(5))
    panel.show_kept({1: [0, 1, 2]}, {1: 16, 2: 24})
    assert panel.text(panel.row_of(1), "kept") == "13 / 16" and panel.value(panel.row_of(1), "kept") == 13
    assert panel.text(panel.row_of(2), "kept") == "24" and "0 removed" in panel.tip(panel.row_of(2), "kept")
    assert panel.text(panel.row_of(3), "kept") == ""
    panel.show_importance({0: float("nan"), 1: 2.5})
    assert panel.text(panel.row_of(0), "importance") == "–" and panel.value(panel.row_of(1), "importance") == 2.5
    panel.show_kept(None)
    assert all(panel.text(i, "kept") == "" for i in range(5))


def test_ten_thousand_groups_are_not_ten_thousand_rows_of_widgets(qtbot, monkeypatch):
    """A 20k-node chain has 10,000 groups: the table holds them as data and Qt asks only for
    the rows it shows or sizes columns by (a QTableWidget made 80,000 items on the GUI thread)."""
    import gui.widgets.group_panel as gp
    asked = []

    class Counting(gp.GroupModel):
        def data(self, index, role=Qt.DisplayRole):
            asked.append(index.row())
            return super().data(index, role)

    monkeypatch.setattr(gp, "GroupModel", Counting)
    panel = GroupPanel()
    qtbot.addWidget(panel)
    panel.resize(700, 400)
    panel.show()
    panel.set_rows(_rows(10_000))
    panel.table.viewport().repaint()
    assert panel.row_count() == 10_000 and asked and max(asked) < 200


def test_a_group_whose_channels_are_blocks_of_rows_says_so(panel):
    """A Llama's attention group (grouped-query: 2 key/value heads, 4 query heads of 8) has 2
    channels of 16 query rows each; the table said "2", which reads as 2 of its 32 rows."""
    import torch
    transformers = pytest.importorskip("transformers")
    from core.pipeline import analyze_model
    from gui.jobs.group_rows import group_rows
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    dg = analyze_model(model, (torch.randint(0, 40, (1, 8)),))
    rows = group_rows(dg, model, importance=False)
    panel.set_rows(rows)
    [attn] = [i for i, r in enumerate(rows) if r["root"].endswith("self_attn.q_proj")]
    assert rows[attn]["span"] == 16 and rows[attn]["channels"] == 2
    assert panel.text(attn, "channels") == "2 × 16"
    [mlp] = [i for i, r in enumerate(rows) if r["root"].endswith("mlp.gate_proj")]
    assert rows[mlp]["span"] == 1 and panel.text(mlp, "channels") == "64"
