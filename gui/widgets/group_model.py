"""The group table's data as a Qt item model (rows from gui/jobs/group_rows.py).

A model, not a QTableWidget: a 20k-node chain has 10,000 groups, and an item per cell took the
GUI thread 2-3 s to fill. Here filling is one list assignment; Qt asks only for the rows on
screen, and sorting is one Python sort of that list."""
from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal

COLUMNS = ["lock", "id", "root", "channels", "prunable", "kept", "params", "importance"]
TIPS = {"root": "the group's root layer (hover for the full name; Ctrl+C copies it)",
        "kept": "channels the last prune kept (removed in the tooltip); empty before a prune",
        "importance": "mean importance of the group's prunable channels (the chosen criterion)",
        "prunable": "channels the planner may remove (the rest are fixed by the model's structure)"}
UNIT_TEXT = {"heads": ("{n} heads", "{n} attention heads: pruning removes whole heads"),
             "head_dim": ("{n} per head", "{n} dimensions in every head: pruning keeps every head "
                                          "and removes the same dimensions from each")}
SORT_ROLE = Qt.UserRole + 1  # the value a column sorts by (numbers as numbers)
_RIGHT = Qt.AlignRight | Qt.AlignVCenter
_DISPLAY, _TIP, _CHECK, _DECORATION, _ALIGN, _USER, _SORT = (
    int(r.value) if hasattr(r, "value") else int(r) for r in (
        Qt.DisplayRole, Qt.ToolTipRole, Qt.CheckStateRole, Qt.DecorationRole,
        Qt.TextAlignmentRole, Qt.UserRole, SORT_ROLE))
_ROLES = {_DISPLAY, _TIP, _CHECK, _DECORATION, _ALIGN, _USER, _SORT}
_CHECKED, _UNCHECKED = Qt.Checked, Qt.Unchecked


def _nan(x) -> bool:
    return x != x


class GroupModel(QAbstractTableModel):
    locksChanged = Signal()

    def __init__(self, swatch, parent=None):
        super().__init__(parent)
        self.swatch = swatch  # group id -> QIcon (the theme's colour for it)
        self.rows: list[dict] = []
        self.kept: dict[int, tuple[int, int]] = {}  # group id -> (kept, of channels)
        self.locked: set[int] = set()

    # -- filling
    def set_rows(self, rows: list[dict]) -> None:
        self.beginResetModel()
        self.rows, self.kept, self.locked = list(rows), {}, set()
        self.endResetModel()

    def set_importance(self, imps: dict) -> None:
        for r in self.rows:
            r["importance"] = imps.get(r["id"], float("nan"))
        self._column_changed("importance")

    def set_kept(self, kept: dict[int, tuple[int, int]]) -> None:
        self.kept = dict(kept)
        self._column_changed("kept")

    def refresh_swatches(self) -> None:
        self._column_changed("id")

    def set_locked(self, gid: int, locked: bool) -> None:
        row = next((i for i, r in enumerate(self.rows) if r["id"] == gid), None)
        if row is not None:
            self.setData(self.index(row, 0), Qt.Checked if locked else Qt.Unchecked,
                         Qt.CheckStateRole)

    def _column_changed(self, name: str) -> None:
        if self.rows:
            col = COLUMNS.index(name)
            self.dataChanged.emit(self.index(0, col), self.index(len(self.rows) - 1, col))

    # -- Qt's model interface
    def rowCount(self, parent=QModelIndex()):  # noqa: N802, B008 - Qt's names
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()):  # noqa: N802, B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802
        if orientation != Qt.Horizontal:
            return None
        if role == Qt.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ToolTipRole:
            return TIPS.get(COLUMNS[section])
        return None

    def flags(self, index):
        r = self.rows[index.row()]
        if index.column() == 0:
            return Qt.ItemIsUserCheckable | Qt.ItemIsSelectable | (
                Qt.ItemIsEnabled if r["is_prunable"] else Qt.NoItemFlags)
        return Qt.ItemIsSelectable | Qt.ItemIsEnabled

    def data(self, index, role=_DISPLAY):
        role = int(role)  # Qt enum comparisons cost microseconds; this runs per cell and role
        if role not in _ROLES:
            return None
        r, name = self.rows[index.row()], COLUMNS[index.column()]
        if role == _DISPLAY:
            return self.text(r, name)
        if role == _SORT:
            return self.value(r, name)
        if role == _TIP:
            return self.tip(r, name)
        if role == _CHECK:
            return (_CHECKED if r["id"] in self.locked else _UNCHECKED) if name == "lock" else None
        if role == _DECORATION:
            return self.swatch(r["id"]) if name == "id" else None
        if role == _ALIGN:
            return None if name in ("lock", "root") else _RIGHT
        return r["root"] if name == "lock" else None  # UserRole

    def setData(self, index, value, role=Qt.EditRole):  # noqa: N802
        if role != Qt.CheckStateRole or index.column() != 0:
            return False
        gid = self.rows[index.row()]["id"]
        on = value in (Qt.Checked, Qt.Checked.value, 2)
        if on == (gid in self.locked):
            return True
        (self.locked.add if on else self.locked.discard)(gid)
        self.dataChanged.emit(index, index, [Qt.CheckStateRole])
        self.locksChanged.emit()
        return True

    def sort(self, column, order=Qt.AscendingOrder):
        name = COLUMNS[column]
        key = [self.value(r, name) for r in self.rows]
        order = sorted(range(len(key)), key=key.__getitem__, reverse=order == Qt.DescendingOrder)
        if order == list(range(len(key))):
            return  # already in order (rows arrive by id): nothing moves
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        where = {was: now for now, was in enumerate(order)}
        self.rows = [self.rows[i] for i in order]
        self.changePersistentIndexList(old, [self.index(where[ix.row()], ix.column()) for ix in old])
        self.layoutChanged.emit()

    # -- cell contents (also what the tests read)
    def value(self, r: dict, name: str):
        if name == "lock":
            return 1 if r["id"] in self.locked else 0
        if name == "root":
            return r["root"]
        if name == "kept":
            return self.kept[r["id"]][0] if r["id"] in self.kept else -1
        if name == "importance":
            return -1.0 if _nan(r["importance"]) else r["importance"]
        return r[name]

    def text(self, r: dict, name: str) -> str:
        if name == "lock":
            return ""
        if name == "channels":
            unit = UNIT_TEXT.get(r.get("unit"))
            if unit:
                return unit[0].format(n=r["channels"])
            span = r.get("span", 1)
            return f"{r['channels']} × {span}" if span > 1 else str(r["channels"])
        if name == "prunable":
            return str(r["prunable"]) if r["is_prunable"] else "no"
        if name == "kept":
            if r["id"] not in self.kept:
                return ""
            k, n = self.kept[r["id"]]
            return str(k) if k == n else f"{k} / {n}"
        if name == "params":
            return f"{r['params']:,}"
        if name == "importance":
            return "–" if _nan(r["importance"]) else f"{r['importance']:.3g}"
        return str(r[name])

    def tip(self, r: dict, name: str) -> str | None:
        if name == "root":
            return r["root"]
        if name == "channels":
            unit = UNIT_TEXT.get(r.get("unit"))
            if unit:
                return unit[1].format(n=r["channels"])
            span = r.get("span", 1)
            return (f"{r['channels']} channels, each a block of {span} rows of {r['root']} that "
                    f"are pruned together (attention heads, key/value groups, shuffled channel "
                    f"groups)") if span > 1 else None
        if name == "kept" and r["id"] in self.kept:
            k, n = self.kept[r["id"]]
            return f"{k} of {n} channels kept, {n - k} removed"
        return None
