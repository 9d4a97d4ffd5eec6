"""What the user points at: a node picked or hovered in the graph shows its coupled groups
(outlined in the graph, listed in the details, selected in the table); groups picked in the
table are outlined in the graph; Find selects matching nodes one after another."""
from __future__ import annotations

from PySide6.QtCore import QObject


class SelectionController(QObject):
    def __init__(self, ctx, parent=None):
        super().__init__(parent)
        self.ctx = ctx
        ui = ctx.ui
        ui.view.nodeSelected.connect(self.on_node_selected)
        ui.view.nodeHovered.connect(self.on_node_hovered)
        ui.groups.groupsSelected.connect(self.on_groups_selected)
        ui.search.returnPressed.connect(self.find)

    def _groups_nodes(self, gids) -> set:
        nodes = set()
        for g in gids:
            nodes |= self.ctx.session.dg.groups[g].nodes
        return nodes

    def on_node_selected(self, node):
        s, ui = self.ctx.session, self.ctx.ui
        if s is None:
            return
        if node < 0:
            ui.view.highlight(set())
            ui.details.show_node(None, None)
            return
        gids = s.node_groups.get(node, [])
        ui.view.highlight(self._groups_nodes(gids), node)
        ui.details.show_node(s.dg, node)
        ui.groups.select_groups(gids)

    def on_node_hovered(self, node):
        # hovering previews a node's groups; leaving restores the selection's highlight
        s, ui = self.ctx.session, self.ctx.ui
        if s is None:
            return
        if node < 0:
            sel = [it.node for it in ui.view.scene().selectedItems() if hasattr(it, "node")]
            self.on_node_selected(sel[0] if sel else -1)
            return
        ui.view.highlight(self._groups_nodes(s.node_groups.get(node, [])), node)
        ui.details.show_node(s.dg, node)

    def on_groups_selected(self, gids):
        s, ui = self.ctx.session, self.ctx.ui
        if s is None or not gids:
            return
        nodes = self._groups_nodes(gids)
        ui.view.highlight(nodes)
        ui.view.center_on_nodes(nodes)
        ui.details.header.setText(f"{len(gids)} group(s) selected in the table")
        ui.details.show_groups(s.dg, [s.dg.groups[g] for g in gids])

    def select_first_group(self):
        """Pick the root layer of the first prunable group (a useful first view)."""
        s = self.ctx.session
        if s is None or not s.dg.prunable_groups:
            return
        nodes = s.dg.node_of_module(s.dg.prunable_groups[0].root)
        if nodes:
            self.ctx.ui.view.select_node(nodes[0], center=False)

    def focus_search(self):
        self.ctx.ui.search.setFocus()
        self.ctx.ui.search.selectAll()

    def find(self):
        text = self.ctx.ui.search.text()
        r = self.ctx.ui.view.find(text)
        self.ctx.status(f"match {r[0]} ({r[1]} found)" if r else f"no node matches '{text}'")
