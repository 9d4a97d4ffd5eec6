"""Sortable table of coupled groups (rows from gui/jobs/group_rows.py); picking rows highlights
them in the graph, and a lock box per group keeps its channels (fed to PlanSettings.ignore as the
group's root module)."""
from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLineEdit, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from .. import theme as themes

COLUMNS = ["lock", "id", "root", "channels", "prunable", "params", "importance"]


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
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.Stretch)
        self.table.setAlternatingRowColors(True)
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
            t.setItem(i, 2, QTableWidgetItem(r["root"]))
            unit = UNIT_TEXT.get(r.get("unit"))
            ch = _Num(r["channels"], unit[0].format(n=r["channels"]) if unit else None)
            if unit:
                ch.setToolTip(unit[1].format(n=r["channels"]))
            t.setItem(i, 3, ch)
            t.setItem(i, 4, _Num(r["prunable"], f"{r['prunable']}" if r["is_prunable"] else "no"))
            t.setItem(i, 5, _Num(r["params"], f"{r['params']:,}"))
            imp = r["importance"]
            t.setItem(i, 6, _Num(-1 if imp != imp else imp, "–" if imp != imp else f"{imp:.3g}"))
        t.setSortingEnabled(True)
        t.sortByColumn(1, Qt.AscendingOrder)
        t.resizeColumnsToContents()
        t.horizontalHeader().setSectionResizeMode(2, QHeaderView.Stretch)
        self._filling = False
        self._apply_filter(self.filter.text())

    def clear(self):
        self.table.setRowCount(0)

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
            it = self.table.item(i, 2)
            self.table.setRowHidden(i, bool(text) and text not in it.text().lower())
