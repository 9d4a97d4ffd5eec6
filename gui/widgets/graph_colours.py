"""Colours of the graph view: group membership (block captions, colour by group) and value
overlays (fraction removed, sensitivity), on nodes and, aggregated, on collapsed blocks.
A mixin of :class:`gui.widgets.graph_view.GraphView`."""
from __future__ import annotations

from ..jobs.graph_groups import GroupStyle


class Colouring:
    # groups, colours, overlays --------------------------------------------------------------
    def set_groups(self, dg, node_groups: dict):
        """The analysis's groups: block captions, colour-by-group and role styles use them."""
        self.groups = GroupStyle(dg, node_groups)
        self._update_blocks()
        self._recolour()
        self.legend.refresh()

    def set_colour_by_group(self, on: bool):
        self.colour_by_group = bool(on)
        self._recolour()
        self.legend.refresh()

    def group_colour(self, gid: int):
        return self.theme.group_colour(gid)  # the group table's swatches use the same

    def _update_blocks(self):
        h = self.hierarchy
        for b, it in self.blocks_by_id.items():
            nodes = h.nodes_under(b)
            gids = self.groups.groups_of(nodes)
            it.info = f"{len(nodes)} nodes · {len(gids)} group{'s' if len(gids) != 1 else ''}"
            it.nodes = nodes
            it.update()

    def _recolour(self, fresh: bool = False):
        """Fills from the overlay, else the group colours, else the kind colours (``fresh``: the
        items were just made, so with neither there is nothing to do)."""
        vals, kind = self.overlay_values, self.overlay_kind
        paint = self._overlay_colour or self.theme.scale_colour
        none = self.theme.qcolor("graph.no_value")
        by_group = self.colour_by_group and self.groups.dg is not None
        plain = kind is None and not by_group
        if plain and fresh:
            return  # new items already wear their kind colours
        for n, it in self.items_by_node.items():
            band = None
            if kind is not None:
                fill = paint(vals[n]) if n in vals else none
            elif by_group:
                out_g, in_g = self.groups.colour_groups(n)
                fill = self.group_colour(out_g) if out_g is not None else it.base
                band = self.group_colour(in_g) if in_g is not None else None
            else:
                fill = it.base
            if fill != it.fill or band != it.band:  # repaint only what changed (20k items)
                it.fill, it.band = fill, band
                it.update()
        for b, it in self.blocks_by_id.items():
            nodes = getattr(it, "nodes", None) or self.hierarchy.nodes_under(b)
            got = [vals[n] for n in nodes if n in vals] if kind is not None else []
            if got:
                v = sum(got) / len(got) if kind == "removed" else max(got)
                it.fill = paint(v)
                it.removed = f"{v:.0%} removed" if kind == "removed" else f"sensitivity ≤ {v:.2f}"
            else:
                it.fill, it.removed = it.base, ""
            it.update()
        if not fresh:
            self.minimap.refresh()
        if not self.building:
            self._apply_lod()

    def set_overlay(self, removed: dict | None, colour=None, kind: str = "removed"):
        """Colour nodes by a value in [0, 1] ({node: value}; by default the fraction of channels
        removed, or e.g. a group's normalised sensitivity with ``kind="sensitivity"``) through
        ``colour`` (default: the theme's scale); nodes without a value turn the theme's
        no-value colour; a collapsed block shows its members' mean (removed) or max. None
        restores the kind colours."""
        self.overlay_kind = None if removed is None else kind
        self.overlay_values = dict(removed) if removed is not None else {}
        self._overlay_colour = colour
        self._recolour()
