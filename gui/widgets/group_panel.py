"""Sortable table of coupled groups (data: gui/widgets/group_model.py); picking rows highlights
them in the graph, and a lock box per group keeps its channels (fed to PlanSettings.ignore as the
group's root module)."""
from __future__ import annotations

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLineEdit, QTableView, QVBoxLayout,
                               QWidget)

from .. import theme as themes
from .group_model import COLUMNS, GroupModel
from .names import make_names_copyable


class GroupPanel(QWidget):
    groupsSelected = Signal(list)  # group ids
    locksChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.theme = themes.current()
        self.filter = QLineEdit(placeholderText="filter groups by root layer…")
        self.model = GroupModel(lambda gid: self.theme.group_swatch(gid), self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.Stretch)
        self.table.setAlternatingRowColors(True)
        # column widths from the first rows (Qt reads 1000 by default, each a Python call)
        self.table.horizontalHeader().setResizeContentsPrecision(100)
        # long module paths differ at the end ("layer1.0.downsample.0" / ".1"): keep both ends
        self.table.setWordWrap(False)
        make_names_copyable(self.table, self.selected_names, path_columns=(2,))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.filter)
        lay.addWidget(self.table)
        self.table.selectionModel().selectionChanged.connect(self._on_select)
        self.model.locksChanged.connect(self.locksChanged)
        # hidden rows are positions: a sort moves the rows under them
        self.model.layoutChanged.connect(lambda *_: self._apply_filter(self.filter.text()))
        self.filter.textChanged.connect(self._apply_filter)
        self._hidden = False  # some row is hidden by the filter

    def set_rows(self, rows: list[dict]):
        t = self.table
        t.setSortingEnabled(False)
        self.model.set_rows(rows)  # a new model's rows: nothing is picked in it
        t.horizontalHeader().setSortIndicator(1, Qt.AscendingOrder)
        t.setSortingEnabled(True)  # sorts by id, the order the rows come in
        t.resizeColumnsToContents()  # Qt sizes by the rows on screen, not all of them
        t.horizontalHeader().setSectionResizeMode(2, QHeaderView.Stretch)
        self._apply_filter(self.filter.text())

    def clear(self):
        self.model.set_rows([])

    @staticmethod
    def column(name: str) -> int:
        return COLUMNS.index(name)

    # -- reading cells (row: as shown, after sorting)
    def row_count(self) -> int:
        return len(self.model.rows)

    def value(self, row: int, name: str):
        return self.model.value(self.model.rows[row], name)

    def text(self, row: int, name: str) -> str:
        return self.model.text(self.model.rows[row], name)

    def tip(self, row: int, name: str) -> str | None:
        return self.model.tip(self.model.rows[row], name)

    def row_of(self, gid: int) -> int:
        return next(i for i, r in enumerate(self.model.rows) if r["id"] == gid)

    def selected_rows(self) -> list[int]:
        return sorted(ix.row() for ix in self.table.selectionModel().selectedRows())

    def selected_ids(self) -> list[int]:
        return sorted(self.model.rows[r]["id"] for r in self.selected_rows())

    def name_actions(self) -> list:
        return list(self.table.actions())

    def selected_names(self) -> str:
        """The full root names of the selected groups, one a line."""
        return "\n".join(self.model.rows[r]["root"] for r in self.selected_rows())

    def show_importance(self, imps: dict):
        """Fill in the importance column (group id -> value; NaN shows "–")."""
        self.model.set_importance(imps)
        self.table.resizeColumnToContents(self.column("importance"))

    def show_kept(self, removed: dict | None, channels: dict | None = None):
        """Kept channels per group after a prune (``removed``: group id -> removed indices, from
        the PruningPlan; ``channels``: group id -> channel count); None clears the column."""
        kept = {} if removed is None or channels is None else {
            gid: (n - len(removed.get(gid, ())), n) for gid, n in channels.items()}
        self.model.set_kept(kept)
        self.table.resizeColumnToContents(self.column("kept"))

    def apply_theme(self, theme):
        self.theme = theme
        self.model.refresh_swatches()

    def locked_roots(self) -> list[str]:
        ids = self.model.locked
        return sorted({r["root"] for r in self.model.rows if r["id"] in ids})

    def set_locked(self, group_id: int, locked: bool):
        self.model.set_locked(group_id, locked)

    def select_groups(self, gids):
        """Mirror a graph pick in the table without echoing it back."""
        t, want = self.table, set(gids)
        sel = QItemSelection()
        first = None
        for i, r in enumerate(self.model.rows):
            if r["id"] in want:
                sel.select(self.model.index(i, 0), self.model.index(i, len(COLUMNS) - 1))
                first = i if first is None else first
        sm = t.selectionModel()
        sm.blockSignals(True)
        sm.select(sel, QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)
        sm.blockSignals(False)
        t.viewport().update()
        if first is not None:
            t.scrollTo(self.model.index(first, 1))

    def _on_select(self, *_):
        self.groupsSelected.emit(self.selected_ids())

    def _apply_filter(self, text):
        text = text.lower().strip()
        t = self.table
        if not text and not self._hidden:
            return
        self._hidden = bool(text)
        for i, r in enumerate(self.model.rows):
            hide = bool(text) and text not in r["root"].lower()
            if hide != t.isRowHidden(i):
                t.setRowHidden(i, hide)
