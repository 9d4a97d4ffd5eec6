"""Which coupled groups each graph node belongs to, and in which role (pure Python, no Qt).

A member's role comes from its parameter slots: "out" (a producer: the layer's output channels),
"in" (a consumer: its input channels) or "pass" (norms, depthwise convs, element-wise ops: the
same channels in and out). Nodes without parameters in a group (add, relu, cat) pass channels on.
"""
from __future__ import annotations

PRIORITY = {"out": 0, "in": 1, "pass": 2}


def member_roles(dg, group) -> dict:
    """{node: role} for the graph nodes of ``group``."""
    by_module: dict = {}
    for m in group.members:
        by_module.setdefault(m.slot.module_name, set()).add(m.slot.role)
    out = {}
    for n in group.nodes:
        rs = by_module.get(dg.graph.nodes[n].get("module") or None, set()) if n in dg.graph else set()
        if not rs or rs == {"pass"} or {"in", "out"} <= rs:
            out[n] = "pass"
        else:
            out[n] = "out" if "out" in rs else "in"
    return out


class GroupStyle:
    """Group membership and roles per node, computed once per analysis."""

    def __init__(self, dg=None, node_groups: dict | None = None):
        self.dg = dg
        self.node_groups = node_groups or {}
        self._roles: dict = {}  # gid -> {node: role}, filled lazily

    def roles(self, gid: int) -> dict:
        r = self._roles.get(gid)
        if r is None:
            r = self._roles[gid] = member_roles(self.dg, self.dg.groups[gid])
        return r

    def groups_of(self, nodes) -> set:
        out = set()
        for n in nodes:
            out.update(self.node_groups.get(n, ()))
        return out

    def colour_groups(self, node) -> tuple:
        """(the group on the node's output side, the group on its input side), either None."""
        out_g = in_g = None
        for g in self.node_groups.get(node, ()):
            role = self.roles(g).get(node, "pass")
            if role == "in":
                in_g = g if in_g is None else in_g
            elif out_g is None or (role == "out" and self.roles(out_g).get(node) != "out"):
                out_g = g
        return out_g, in_g

    def roles_for(self, nodes, gids=None) -> dict:
        """{node: role} over the groups ``gids`` (default: the groups lying wholly in ``nodes``);
        a node in several of them takes its strongest role (producer, consumer, pass-through)."""
        if self.dg is None:
            return {}
        nodes = set(nodes)
        if gids is None:
            gids = {g for g in self.groups_of(nodes) if self.dg.groups[g].nodes <= nodes}
        out: dict = {}
        for g in gids:
            for n, r in self.roles(g).items():
                if n not in out or PRIORITY[r] < PRIORITY[out[n]]:
                    out[n] = r
        return out
