"""The paper's view of one coupled group (View > Group in paper notation, Ctrl+G): each member
layer as its two ends, f⁻ (input) over f⁺ (output); ends in the group filled, the others hollow;
f⁻ ⇔ f⁺ drawn inside a layer that shares its pruning scheme; f⁺ᵢ → f⁻ⱼ between layers, with the
index map written on the edge when it is not channel k -> channel k. Below, every member's ends,
parameter slots and index maps as a list (copyable)."""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QFont, QPainterPath, QPen
from PySide6.QtWidgets import (QDialog, QGraphicsScene, QGraphicsView, QLabel, QSplitter,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout)

from .. import theme as themes
from ..jobs.group_paper import end_text, map_text, paper_group

BOX_W, HALF_H, GAP = 270.0, 24.0, 34.0
COLUMNS = ["layer", "op", "ends", "parameter", "size", "index map (index → channel)"]


class GroupPaperView(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Coupled group in DepGraph notation")
        self.resize(760, 860)
        self.theme = themes.current()
        self.header = QLabel("Pick a node or a group first.")
        self.header.setWordWrap(True)
        self.header.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.view = QGraphicsView(QGraphicsScene(self))
        self.view.setRenderHints(self.view.renderHints())
        self.view.setDragMode(QGraphicsView.ScrollHandDrag)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setColumnWidth(0, 280)
        self.tree.setColumnWidth(2, 70)
        self.tree.setColumnWidth(3, 190)
        self.tree.setSelectionMode(QTreeWidget.ExtendedSelection)
        split = QSplitter(Qt.Vertical)
        split.addWidget(self.view)
        split.addWidget(self.tree)
        split.setSizes([560, 260])
        lay = QVBoxLayout(self)
        lay.addWidget(self.header)
        lay.addWidget(split)
        self.paper = None

    def show_group(self, dg, group):
        self.view.scene().clear()
        self.tree.clear()
        self.paper = None
        if dg is None or group is None:
            self.header.setText("Pick a node or a group first.")
            return
        self.theme = themes.current()
        pg = self.paper = paper_group(dg, group)
        n_intra = sum(1 for la in pg.layers if la.intra)
        self.header.setText(
            f"<b>group {group.id}</b> · root {group.root} · {group.n_channels} channels "
            f"({group.n_prunable} prunable)<br>{len(pg.layers)} layers/ops: {len(pg.inter)} inter-layer "
            f"dependencies f⁺ᵢ ⇔ f⁻ⱼ, {n_intra} intra-layer f⁻ ⇔ f⁺. Filled ends are in the group; "
            f"removing channel k removes it at every filled end (index maps translate k).")
        self._draw(pg)
        self._fill_list(pg)

    # ------------------------------------------------------------------ drawing
    def _draw(self, pg):
        t, sc = self.theme, self.view.scene()
        prod, cons, pas = (t.role_colour(r) for r in ("out", "in", "pass"))
        outline, text = t.qcolor("graph.outline"), t.qcolor("graph.label")
        hollow = t.qcolor("graph.background")
        edge_pen = QPen(t.qcolor("graph.edge"), 1.6)
        font, small = QFont("Sans", 9), QFont("Sans", 8)
        top = {}
        for i, la in enumerate(pg.layers):
            y = i * (2 * HALF_H + GAP)
            top[i] = y
            for k, (side, colour, sym) in enumerate((("in", cons, "f⁻"), ("out", prod, "f⁺"))):
                r = QRectF(0, y + k * HALF_H, BOX_W, HALF_H)
                inside = side in la.ends
                fill = colour.lighter(170) if inside else hollow
                sc.addRect(r, QPen(colour if inside else outline, 2 if inside else 1,
                                   Qt.SolidLine if inside else Qt.DotLine), QBrush(fill))
                lab = sc.addSimpleText(f"{sym}  {la.name}" if k == 0 else f"{sym}  {la.op}", font if k == 0 else small)
                lab.setBrush(text)
                lab.setPos(8, y + k * HALF_H + 4)
            if la.intra:  # the layer maps channel k to channel k: its two ends move together
                x, y0, y1 = -12.0, y + HALF_H / 2, y + 1.5 * HALF_H
                arrow = QPainterPath(QPointF(x, y0))
                arrow.lineTo(x, y1)
                for yy, d in ((y0, 1), (y1, -1)):
                    arrow.moveTo(x - 4, yy + 6 * d)
                    arrow.lineTo(x, yy)
                    arrow.lineTo(x + 4, yy + 6 * d)
                sc.addPath(arrow, QPen(pas, 2.2))
                for yy in (y0, y1):
                    sc.addLine(x, yy, 0, yy, QPen(pas, 1.2, Qt.DotLine))
        arcs = 0
        for i, j, label in pg.inter:
            y0, y1 = top[i] + 2 * HALF_H, top[j]
            path = QPainterPath(QPointF(BOX_W / 2, y0))
            if j == i + 1:
                path.lineTo(BOX_W / 2, y1)
                lx, ly = BOX_W / 2 + 8, y0 + 4
            else:  # a skip: round the right side, one lane per edge
                arcs += 1
                x = BOX_W + 16 + 14 * (arcs % 12)
                path = QPainterPath(QPointF(BOX_W, top[i] + 1.5 * HALF_H))
                path.cubicTo(QPointF(x, top[i] + 1.5 * HALF_H), QPointF(x, top[i] + 1.5 * HALF_H), QPointF(x, top[i] + 2 * HALF_H + 8))
                path.lineTo(x, y1 + HALF_H / 2 - 8)
                path.cubicTo(QPointF(x, y1 + HALF_H / 2), QPointF(x, y1 + HALF_H / 2), QPointF(BOX_W, y1 + HALF_H / 2))
                lx, ly = x + 6, y1 - 14
            sc.addPath(path, edge_pen)
            end = path.currentPosition()
            head = QPainterPath(end)
            d = QPointF(0, -7) if j == i + 1 else QPointF(7, 0)
            n = QPointF(4, 0) if j == i + 1 else QPointF(0, 4)
            head.lineTo(end + d + n)
            head.lineTo(end + d - n)
            head.closeSubpath()
            sc.addPath(head, QPen(Qt.NoPen), QBrush(t.qcolor("graph.edge")))
            if label:
                lt = sc.addSimpleText(label, small)
                lt.setBrush(t.qcolor("graph.selected"))
                lt.setPos(lx, ly)
                lt.setToolTip(label)
        sc.setSceneRect(sc.itemsBoundingRect().adjusted(-10, -10, 10, 10))

    def _fill_list(self, pg):
        for la in pg.layers:
            top = QTreeWidgetItem([la.name, la.op, end_text(la), "", "", ""])
            top.setForeground(2, self.theme.role_colour(la.role))
            seen = set()
            for side in ("in", "out"):
                end = la.ends.get(side)
                for m in (end.slots if end else []):
                    if id(m) in seen:
                        continue
                    seen.add(id(m))
                    QTreeWidgetItem(top, ["", m.slot.role, {"in": "f⁻", "out": "f⁺"}.get(m.slot.role, "f⁻ ⇔ f⁺"),
                                          m.name, str(m.slot.size), map_text(m.index_map, 12)])
            self.tree.addTopLevelItem(top)
            top.setExpanded(True)
        for m in getattr(pg, "orphans", []):
            QTreeWidgetItem(self.tree, [m.slot.module_name or "(model)", "", m.slot.role, m.name,
                                        str(m.slot.size), map_text(m.index_map, 12)])

    def listed(self) -> list:
        """The rows of the member list as text (tests, copy)."""
        out = []
        for i in range(self.tree.topLevelItemCount()):
            top = self.tree.topLevelItem(i)
            out.append(tuple(top.text(c) for c in range(len(COLUMNS))))
            for k in range(top.childCount()):
                out.append(tuple(top.child(k).text(c) for c in range(len(COLUMNS))))
        return out
