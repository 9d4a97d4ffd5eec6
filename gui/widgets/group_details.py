"""Side panel: the coupled group(s) of the picked node, their members and index maps."""
from __future__ import annotations

import html

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (QHeaderView, QLabel, QStyle, QStyleOptionViewItem, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

from core.analysis.groups import compress_index_map

from .. import theme as themes
from .names import PathDelegate, elide_right, make_names_copyable

HEADERS = ["member", "role", "size", "index map"]
MAP = len(HEADERS) - 1  # the index-map column
DETAIL = Qt.UserRole + 1  # stacked rows: the line under the name (index map, group sizes)
STACK_BELOW_CHARS = 64  # with nothing shown, a narrower list stacks its rows
USUAL_DIM = {"out": 0, "pass": 0, "in": 1}  # a member on another dimension shows "[dim N]"
HEADER_TIPS = ["the member tensor; [dim N] is shown when the channels are not on the usual dimension "
               "for its role (0 for out and pass, 1 for in); hover for the full name, Ctrl+C copies",
               "out: produces the channels; in: consumes them; pass: carries them (norms, "
               "element-wise ops)", "channels of this member in the group",
               "which of the group's channels each index of the member holds (index → channel); "
               "· marks indices owned by another group"]


def format_index_map(index_map) -> str:
    """Runs such as "0-31 → ch 0-31" or "32-79 → ch 0-47"; -1 (another group) shown as '·'."""
    parts = []
    for start, stop, first, step in compress_index_map(index_map):
        n = stop - start
        idx = f"{start}" if n == 1 else f"{start}-{stop - 1}"
        if first < 0:
            parts.append(f"{idx} → ·")
        elif n == 1:
            parts.append(f"{idx} → {first}")
        else:
            parts.append(f"{idx} → ch {first}-{first + step * (n - 1)}" + ("" if step == 1 else f" step {step}"))
    if len(parts) > 6:
        parts = parts[:6] + [f"… ({len(parts) - 6} more runs)"]
    return ", ".join(parts)


def _breakable(name) -> str:
    """``name`` (HTML-escaped) that may wrap after its dots: a long module path must not force the
    dock wider than the screen."""
    return html.escape(str(name or ""), quote=False).replace(".", ".\u200b")


class _TwoLines(PathDelegate):
    """Stacked rows: the name as usual, and under it (muted, elided at the end) the row's
    DETAIL line: a member's index map, a group's sizes."""

    def sizeHint(self, option, index):  # noqa: N802 - Qt's name
        s = super().sizeHint(option, index)
        return QSize(s.width(), 2 * s.height()) if index.data(DETAIL) else s

    def paint(self, p, option, index):
        detail = index.data(DETAIL)
        if not detail:
            return super().paint(p, option, index)
        widget = option.widget
        style = widget.style() if widget else None
        if style and option.state & QStyle.State_Selected:  # the whole cell, both lines
            full = QStyleOptionViewItem(option)
            self.initStyleOption(full, index)
            full.text, full.icon = "", QIcon()
            style.drawPrimitive(QStyle.PE_PanelItemViewItem, full, p, widget)
        top = QStyleOptionViewItem(option)
        r, half = option.rect, option.rect.height() // 2
        top.rect = r.adjusted(0, 0, 0, -(r.height() - half))
        super().paint(p, top, index)
        bottom = r.adjusted(0, half, 0, 0)
        indent = 4 + (option.decorationSize.width() + 6 if index.data(Qt.DecorationRole) else 0)
        bottom.setLeft(bottom.left() + indent)
        p.save()
        selected = bool(option.state & QStyle.State_Selected)
        p.setPen((option.palette.highlightedText() if selected else option.palette.placeholderText()).color())
        p.drawText(bottom, Qt.AlignLeft | Qt.AlignVCenter,
                   option.fontMetrics.elidedText(detail, Qt.ElideRight, bottom.width() - 4))
        p.restore()
        return None


class _Tree(QTreeWidget):
    """Wide: the member name keeps at least 42 % of the width; the index map gets about a quarter
    (room for "0-255 → ch 0-255" when there is), never less than its header. Narrow (a narrow
    dock, 200 % scaling): ``stacked``, the index map goes under the name and its column away, so
    the names keep the width (``on_stack(bool)`` tells the panel to redraw)."""

    stacked = False
    on_stack = None
    wanted = None  # (widest member name, widest index map) in pixels, of the rows shown

    def resizeEvent(self, e):  # noqa: N802 - Qt's name
        super().resizeEvent(e)
        self.restack()

    def restack(self):
        """Stack when the shown names and index maps do not fit side by side in full."""
        hdr, fm = self.header(), self.header().fontMetrics()
        w = self.viewport().width()
        if self.wanted is None:
            need = STACK_BELOW_CHARS * fm.averageCharWidth()
        else:
            name, imap = self.wanted
            cap = fm.horizontalAdvance("000-000 → ch 000-000")  # longer maps may elide
            need = (name + self.indentation() + 24 + sum(hdr.sectionSize(i) for i in range(1, MAP))
                    + max(fm.horizontalAdvance(HEADERS[MAP]), min(imap, cap)) + 24)
        stacked = w < need
        if stacked != self.stacked:
            self.stacked = stacked
            self.setColumnHidden(MAP, stacked)
            self.headerItem().setText(0, "member · index map" if stacked else HEADERS[0])
            if self.on_stack is not None:
                self.on_stack(stacked)
        if stacked:
            return
        room = w - sum(hdr.sectionSize(i) for i in range(1, MAP)) - int(w * 0.42)  # the name keeps 42 %
        map_w = max(fm.horizontalAdvance("000-000 → ch 000-000") + 24, int(w * 0.26))
        if self.wanted is not None:  # just what the shown maps need: the rest is the names'
            map_w = min(self.wanted[1], fm.horizontalAdvance("000-000 → ch 000-000")) + 24
        hdr.resizeSection(MAP, max(fm.horizontalAdvance(HEADERS[MAP]) + 24, min(map_w, room)))


class GroupDetails(QWidget):
    """Members are coloured by role (producer / consumer / pass-through), groups by their id."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.theme = themes.current()
        self._shown = None  # the last show_node/show_groups call, redrawn on a theme change
        self.header = QLabel("Pick a node to see its coupled group.")
        self.header.setWordWrap(True)
        self.tree = _Tree()
        self.tree.setIndentation(12)
        self.tree.setHeaderLabels(HEADERS)
        for i, tip in enumerate(HEADER_TIPS):
            self.tree.headerItem().setToolTip(i, tip)
        # the name takes the room left; the other columns keep their header readable
        hdr = self.tree.header()
        hdr.setStretchLastSection(False)
        hdr.setSectionResizeMode(0, QHeaderView.Stretch)
        for i in range(1, MAP):
            hdr.setSectionResizeMode(i, QHeaderView.ResizeToContents)
        hdr.setSectionResizeMode(MAP, QHeaderView.Interactive)
        hdr.resizeSection(MAP, hdr.fontMetrics().horizontalAdvance(HEADERS[MAP]) + 24)
        self.tree.setMinimumWidth(300)
        make_names_copyable(self.tree, self.selected_names, path_columns=(0,))
        self.tree.path_delegate = _TwoLines(self.tree, leaves_only=True)
        self.tree.setItemDelegateForColumn(0, self.tree.path_delegate)
        self.tree.on_stack = self._restack
        elide_right(self.tree, MAP)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.header)
        lay.addWidget(self.tree)

    def _restack(self, _stacked):
        if self._shown is not None:
            fn, args = self._shown
            fn(*args)

    def selected_names(self) -> str:
        """Full names of the picked rows (a group's row: its root layer), one a line."""
        return "\n".join(it.data(0, Qt.UserRole) or it.text(0) for it in self.tree.selectedItems())

    def apply_theme(self, theme):
        self.theme = theme
        if self._shown is not None:
            fn, args = self._shown
            fn(*args)

    def show_node(self, dg, node):
        self._shown = (self.show_node, (dg, node))
        self.tree.clear()
        if dg is None or node is None or node < 0 or node not in dg.graph:
            self.header.setText("Pick a node to see its coupled group.")
            return
        d = dg.graph.nodes[node]
        gids = dg.groups_of_node(node)
        text = (f"<b>{_breakable(d.get('label'))}</b> &nbsp;<i>{d.get('op')}</i> — scope "
                f"{_breakable(d.get('scope')) or '&lt;root&gt;'}")
        if d.get("unknown"):
            text += (f"<br><span style='color:{self.theme.color('ui.error')}'>Blocked: the engine "
                     f"has no channel semantics for '{d.get('op')}', so every channel flowing "
                     "through it is kept. Register it with core.ops.registry.register_op to prune "
                     "around it.</span>")
        text += f"<br>{len(gids)} coupled group(s)" if gids else "<br>not part of any channel group"
        self.header.setText(text)
        self._show_groups(dg, [dg.groups[g] for g in gids], expand=len(gids) <= 2)

    def show_groups(self, dg, groups, expand=True):
        self._shown = (self.show_groups, (dg, groups, expand))
        self._show_groups(dg, groups, expand)

    def _show_groups(self, dg, groups, expand=True):
        self.tree.clear()
        stacked = self.tree.stacked
        for g in groups:
            # one line across the columns (two when stacked): name and sizes must not be elided away
            sizes = (f"{g.n_channels} ch, {g.n_prunable} prunable, {len(g.members)} members"
                     + ("" if g.exact[g.prunable].all() else ", approximate"))
            top = QTreeWidgetItem([f"group {g.id} · {g.root}" + ("" if stacked else f" · {sizes}")])
            if stacked:
                top.setData(0, DETAIL, sizes)
            f = top.font(0)
            f.setBold(True)
            top.setFont(0, f)
            top.setIcon(0, self.theme.group_swatch(g.id))
            top.setData(0, Qt.UserRole, g.root)
            top.setToolTip(0, f"group {g.id} · {g.root} · {sizes}")
            for m in g.members:
                # the name column is the scarce one: the usual dimension goes without saying
                name = m.slot.tensor_name if m.slot.dim == USUAL_DIM.get(m.slot.role) else m.name
                it = QTreeWidgetItem(top, [name, m.slot.role, str(m.slot.size),
                                           format_index_map(m.index_map)])
                it.setForeground(1, self.theme.role_colour(m.slot.role))
                if stacked:
                    it.setData(0, DETAIL, it.text(MAP))
                it.setToolTip(0, m.name)
                it.setToolTip(MAP, it.text(MAP))
            for kind, reasons in (("blocked", g.blocked_reasons), ("approximate", g.approx_reasons)):
                for r in reasons:
                    it = QTreeWidgetItem(top, [kind, "", "", r])
                    it.setToolTip(MAP, r)
                    if stacked:
                        it.setData(0, DETAIL, r)
            self.tree.addTopLevelItem(top)
            top.setFirstColumnSpanned(True)
            top.setExpanded(expand)
        fm = self.tree.fontMetrics()
        members = [top.child(i) for top in map(self.tree.topLevelItem, range(self.tree.topLevelItemCount()))
                   for i in range(top.childCount())]
        self.tree.wanted = (max((fm.horizontalAdvance(it.text(0)) for it in members), default=0),
                            max((fm.horizontalAdvance(it.text(MAP)) for it in members), default=0))
        self.tree.restack()  # may redraw stacked (or not) for these names
