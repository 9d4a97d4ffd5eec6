"""Sortable table of coupled groups (rows from gui/jobs/group_rows.py); picking rows highlights
them in the graph, and a lock box per group keeps its channels (fed to PlanSettings.ignore as the
group's root module)."""
from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLineEdit, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from .. import theme as themes
from .names import make_names_copyable

COLUMNS = ["lock", "id", "root", "channels", "prunable", "kept", "params", "importance"]
TIPS = {"root": "the group's root layer (hover for the full name; Ctrl+C copies it)",
        "kept": "channels the last prune kept (removed in the tooltip); empty before a prune",
        "importance": "mean importance of the group's prunable channels (the chosen criterion)",
        "prunable": "channels the planner may remove (the rest are fixed by the model's structure)"}


class _Num(QTableWidgetItem):
    """Sorts by its numeric value, not its text."""

    def __init__(self, value, text=None):
        super().__init__(text if text is not None else str(value))
        self.value = value
        self.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)

    def __lt__(self, other):
        return self.value < getattr(other, "value", 0)


UNIT_TEXT = {"heads": ("{n} heads", "{n} attention heads: pruning removes whole heads"),
             "head_dim": ("{n} per head", "{n} dimensions in every head: pruning keeps every head "
                                          "and removes the same dimensions from each")}


class GroupPanel(QWidget):
    groupsSelected = Signal(list)  # group ids
    locksChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.theme = themes.current()
        self.filter = QLineEdit(placeholderText="filter groups by root layer…")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for name, tip in TIPS.items():
            self.table.horizontalHeaderItem(self.column(name)).setToolTip(tip)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.Stretch)
        self.table.setAlternatingRowColors(True)
        # long module paths differ at the end ("layer1.0.downsample.0" / ".1"): keep both ends
        self.table.setWordWrap(False)
        make_names_copyable(self.table, self.selected_names, path_columns=(2,))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.filter)
        lay.addWidget(self.table)
        self.table.itemSelectionChanged.connect(self._on_select)
        self.table.itemChanged.connect(self._on_item_changed)
        self.filter.textChanged.connect(self._apply_filter)
        self._filling = False

    def set_rows(self, rows: list[dict]):
        self._filling = True
        t = self.table
        t.setSortingEnabled(False)
        t.setRowCount(len(rows))
        for i, r in enumerate(rows):
            lock = _Num(0, "")
            lock.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsSelectable
                          | (Qt.ItemIsEnabled if r["is_prunable"] else Qt.NoItemFlags))
            lock.setCheckState(Qt.Unchecked)
            lock.setData(Qt.UserRole, r["root"])
            t.setItem(i, 0, lock)
            gid = _Num(r["id"])
            gid.setIcon(self.theme.group_swatch(r["id"]))
            t.setItem(i, 1, gid)
            root = QTableWidgetItem(r["root"])
            root.setToolTip(r["root"])
            t.setItem(i, 2, root)
            unit = UNIT_TEXT.get(r.get("unit"))
            ch = _Num(r["channels"], unit[0].format(n=r["channels"]) if unit else None)
            if unit:
                ch.setToolTip(unit[1].format(n=r["channels"]))
            t.setItem(i, 3, ch)
            t.setItem(i, 4, _Num(r["prunable"], f"{r['prunable']}" if r["is_prunable"] else "no"))
            t.setItem(i, 5, _Num(-1, ""))
            t.setItem(i, 6, _Num(r["params"], f"{r['params']:,}"))
            imp = r["importance"]
            t.setItem(i, 7, _Num(-1 if imp != imp else imp, "–" if imp != imp else f"{imp:.3g}"))
        t.clearSelection()  # rows of another model: nothing is picked in the new one
        t.setSortingEnabled(True)
        t.sortByColumn(1, Qt.AscendingOrder)
        t.resizeColumnsToContents()
        t.horizontalHeader().setSectionResizeMode(2, QHeaderView.Stretch)
        self._filling = False
        self._apply_filter(self.filter.text())

    def clear(self):
        self.table.setRowCount(0)

    @staticmethod
    def column(name: str) -> int:
        return COLUMNS.index(name)

    def name_actions(self) -> list:
        return list(self.table.actions())

    def selected_names(self) -> str:
        """The full root names of the selected groups, one a line."""
        t, col = self.table, self.column("root")
        return "\n".join(t.item(r, col).text() for r in sorted({i.row() for i in t.selectedItems()}))

    def show_importance(self, imps: dict):
        """Fill in the importance column (group id -> value; NaN shows "–")."""
        t, col = self.table, self.column("importance")
        sorting = t.isSortingEnabled()
        t.setSortingEnabled(False)
        for i in range(t.rowCount()):
            imp = imps.get(t.item(i, 1).value, float("nan"))
            it = t.item(i, col)
            it.value = -1 if imp != imp else imp
            it.setText("–" if imp != imp else f"{imp:.3g}")
        t.setSortingEnabled(sorting)
        t.resizeColumnToContents(col)

    def show_kept(self, removed: dict | None, channels: dict | None = None):
        """Kept channels per group after a prune (``removed``: group id -> removed indices, from
        the PruningPlan; ``channels``: group id -> channel count); None clears the column."""
        t, col = self.table, self.column("kept")
        sorting = t.isSortingEnabled()
        t.setSortingEnabled(False)
        for i in range(t.rowCount()):
            gid = t.item(i, 1).value
            it = t.item(i, col)
            if removed is None or channels is None or gid not in channels:
                it.value = -1
                it.setText("")
                it.setToolTip("")
                continue
            n, gone = channels[gid], len(removed.get(gid, ()))
            it.value = n - gone
            it.setText(f"{n - gone}" if gone == 0 else f"{n - gone} / {n}")
            it.setToolTip(f"{n - gone} of {n} channels kept, {gone} removed")
        t.setSortingEnabled(sorting)
        t.resizeColumnToContents(col)

    def apply_theme(self, theme):
        self.theme = theme
        for i in range(self.table.rowCount()):
            it = self.table.item(i, 1)
            it.setIcon(theme.group_swatch(it.value))

    def locked_roots(self) -> list[str]:
        t = self.table
        return sorted({t.item(i, 0).data(Qt.UserRole) for i in range(t.rowCount())
                       if t.item(i, 0) and t.item(i, 0).checkState() == Qt.Checked})

    def set_locked(self, group_id: int, locked: bool):
        for i in range(self.table.rowCount()):
            if self.table.item(i, 1).value == group_id:
                self.table.item(i, 0).setCheckState(Qt.Checked if locked else Qt.Unchecked)

    def select_groups(self, gids):
        """Mirror a graph pick in the table without echoing it back."""
        t = self.table
        t.blockSignals(True)
        t.clearSelection()
        first = None
        sm = t.selectionModel()
        for i in range(t.rowCount()):
            if t.item(i, 1).value in gids:
                sm.select(t.model().index(i, 0), QItemSelectionModel.Select | QItemSelectionModel.Rows)
                first = i if first is None else first
        if first is not None:
            t.scrollToItem(t.item(first, 1))
        t.blockSignals(False)

    def _on_select(self):
        rows = {i.row() for i in self.table.selectedItems()}
        self.groupsSelected.emit(sorted(self.table.item(r, 1).value for r in rows))

    def _on_item_changed(self, item):
        if not self._filling and item.column() == 0:
            item.value = 1 if item.checkState() == Qt.Checked else 0
            self.locksChanged.emit()

    def _apply_filter(self, text):
        text = text.lower().strip()
        for i in range(self.table.rowCount()):
            it = self.table.item(i, self.column("root"))
            self.table.setRowHidden(i, bool(text) and text not in it.text().lower())
