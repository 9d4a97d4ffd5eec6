"""What the user points at: a node picked or hovered in the graph shows its coupled groups
(outlined in the graph by role, listed in the details, selected in the table); groups picked in
the table are outlined in the graph; a collapsed block lists the groups inside it; Find selects
matching nodes one after another (opening the blocks that hide them). Colour-by-group and the
group's paper view (DepGraph notation) start here too."""
from __future__ import annotations

from PySide6.QtCore import QObject


class SelectionController(QObject):
    def __init__(self, ctx, parent=None):
        super().__init__(parent)
        self.ctx = ctx
        ui = ctx.ui
        self.paper = None  # the group's paper view, made on first use
        self.current_groups: list = []  # the group ids the details show now
        ui.view.nodeSelected.connect(self.on_node_selected)
        ui.view.nodeHovered.connect(self.on_node_hovered)
        ui.view.blockSelected.connect(self.on_block_selected)
        ui.groups.groupsSelected.connect(self.on_groups_selected)
        ui.search.returnPressed.connect(self.find)
        ctx.sessionChanged.connect(self.on_session)

    def on_session(self, s):
        self.current_groups = []
        self.ctx.ui.view.set_groups(s.dg, s.node_groups)
        if self.paper is not None:
            self.paper.show_group(None, None)

    def _groups_nodes(self, gids) -> set:
        nodes = set()
        for g in gids:
            nodes |= self.ctx.session.dg.groups[g].nodes
        return nodes

    def _highlight(self, gids, node=None):
        view = self.ctx.ui.view
        view.highlight(self._groups_nodes(gids), node, roles=view.groups.roles_for((), gids), gids=gids)

    def on_node_selected(self, node):
        s, ui = self.ctx.session, self.ctx.ui
        if s is None:
            return
        if node < 0:
            ui.view.highlight(set())
            ui.details.show_node(None, None)
            ui.groups.select_groups([])  # the details say "Pick a node": the table agrees
            self.current_groups = []
            return
        gids = s.node_groups.get(node, [])
        roles = ui.view.groups
        # the group the node produces first: that is "its" group for the paper view
        self.current_groups = sorted(gids, key=lambda g: roles.roles(g).get(node) != "out")
        self._highlight(gids, node)
        ui.details.show_node(s.dg, node)
        ui.groups.select_groups(gids)
        self._follow_paper()
        details = ui.docks.get("details")
        if details is not None and ui.window.tabifiedDockWidgets(details):
            details.raise_()  # a small window's tab: a picked node shows its group

    def on_block_selected(self, block):
        s, ui = self.ctx.session, self.ctx.ui
        if s is None or ui.view.hierarchy is None:
            return
        nodes = ui.view.hierarchy.nodes_under(block)
        gids = sorted(ui.view.groups.groups_of(nodes))
        inside = [g for g in gids if s.dg.groups[g].nodes <= set(nodes)]
        ui.details.show_groups(s.dg, [s.dg.groups[g] for g in inside], expand=False)
        ui.details.header.setText(f"<b>{block}</b> (collapsed: double-click or + to open)<br>"
                                  f"{len(nodes)} nodes; {len(inside)} group(s) wholly inside, "
                                  f"{len(gids) - len(inside)} crossing its border")
        ui.groups.select_groups(inside)
        self.current_groups = inside

    def on_node_hovered(self, node):
        # hovering previews a node's groups; leaving restores the selection's highlight
        s, ui = self.ctx.session, self.ctx.ui
        if s is None:
            return
        if node < 0:
            k = ui.view.selected_key()
            if isinstance(k, str):
                self.on_block_selected(k)
            else:
                self.on_node_selected(k if k is not None else -1)
            return
        self._highlight(s.node_groups.get(node, []), node)
        ui.details.show_node(s.dg, node)

    def on_groups_selected(self, gids):
        s, ui = self.ctx.session, self.ctx.ui
        if s is None or not gids:
            return
        self.current_groups = list(gids)
        self._highlight(gids)
        ui.view.center_on_nodes(self._groups_nodes(gids))
        ui.details.header.setText(f"{len(gids)} group(s) selected in the table")
        ui.details.show_groups(s.dg, [s.dg.groups[g] for g in gids])
        self._follow_paper()

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
        if not r:
            self.ctx.status(f"no node matches '{text}'")
            return
        d = self.ctx.session.dg.graph.nodes[r[0]]  # the user sees names, never node ids
        self.ctx.status(f"match {r[2]} of {r[1]}: {d.get('label')} ({d.get('op')}, "
                        f"scope {d.get('scope') or 'model'})")

    # ------------------------------------------------------------------ colours, paper view
    def toggle_group_colours(self):
        view = self.ctx.ui.view
        view.set_colour_by_group(not view.colour_by_group)
        a = getattr(self.ctx.ui.window, "a_colour_groups", None)
        if a is not None:
            a.setChecked(view.colour_by_group)

    def open_group_view(self):
        """The picked group drawn as DepGraph draws it (f⁻ / f⁺ ends, index maps on edges)."""
        from ..widgets.group_paper_view import GroupPaperView
        s = self.ctx.session
        if self.paper is None:
            self.paper = GroupPaperView(self.ctx.ui.window)
        gid = self.current_groups[0] if self.current_groups else None
        if gid is None and s is not None and s.dg.prunable_groups:
            gid = s.dg.prunable_groups[0].id
        self.paper.show_group(s.dg if s else None, s.dg.groups[gid] if gid is not None else None)
        self.paper.show()
        self.paper.raise_()

    def _follow_paper(self):
        if self.paper is not None and self.paper.isVisible() and self.current_groups:
            s = self.ctx.session
            self.paper.show_group(s.dg, s.dg.groups[self.current_groups[0]])
