"""Side panel: the coupled group(s) of the picked node, their members and index maps."""
from __future__ import annotations

from PySide6.QtWidgets import QLabel, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from core.analysis.groups import compress_index_map

from .. import theme as themes


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


class GroupDetails(QWidget):
    """Members are coloured by role (producer / consumer / pass-through), groups by their id."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.theme = themes.current()
        self._shown = None  # the last show_node/show_groups call, redrawn on a theme change
        self.header = QLabel("Pick a node to see its coupled group.")
        self.header.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["member", "role", "size", "index map (index → channel)"])
        self.tree.setColumnWidth(0, 190)
        self.tree.setColumnWidth(1, 40)
        self.tree.setColumnWidth(2, 44)
        self.tree.setMinimumWidth(340)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.header)
        lay.addWidget(self.tree)

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
        text = f"<b>{d.get('label')}</b> &nbsp;<i>{d.get('op')}</i> — scope {d.get('scope') or '&lt;root&gt;'}"
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
        for g in groups:
            top = QTreeWidgetItem([f"group {g.id} · root {g.root}", "", str(g.n_channels),
                                   f"{g.n_prunable} prunable, {len(g.members)} members"
                                   + ("" if g.exact[g.prunable].all() else ", approximate")])
            f = top.font(0)
            f.setBold(True)
            top.setFont(0, f)
            top.setIcon(0, self.theme.group_swatch(g.id))
            for m in g.members:
                it = QTreeWidgetItem(top, [m.name, m.slot.role, str(m.slot.size),
                                           format_index_map(m.index_map)])
                it.setForeground(1, self.theme.role_colour(m.slot.role))
            for r in g.blocked_reasons:
                QTreeWidgetItem(top, ["blocked", "", "", r])
            for r in g.approx_reasons:
                QTreeWidgetItem(top, ["approximate", "", "", r])
            self.tree.addTopLevelItem(top)
            top.setExpanded(expand)
