"""QGraphicsView of the dependency graph (dg.graph), laid out by graph_layout on a worker.

Nodes are light custom items (one paint call, text skipped when zoomed out); all edges are a
single QPainterPath item so a 20k-node graph stays cheap to build and to repaint.
"""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (QBrush, QColor, QFont, QImage, QPainter, QPainterPath, QPen,
                           QWheelEvent)
from PySide6.QtWidgets import (QGraphicsItem, QGraphicsPathItem, QGraphicsScene, QGraphicsView,
                               QStyleOptionGraphicsItem)

from .graph_layout import NODE_H, NODE_W, Layout, place

KIND_COLOURS = {"input": "#8ecae6", "output": "#ffb703", "op": "#e9ecef"}
OP_COLOURS = {"conv": "#b9d7f0", "linear": "#d9c8ef", "norm": "#c9e8c4", "embedding": "#f5d6c6"}
LAYER_COLOUR = "#d8e2dc"
HILITE = QColor("#f77f00")
PRIMARY = QColor("#d62828")
BLOCKED = QColor("#c1121f")
OVERVIEW_LOD = 0.12  # below this zoom plain nodes are drawn by one path item, not one by one
FAR_LOD = 0.3  # below this zoom: straight edges, no antialiasing


def node_colour(d: dict) -> QColor:
    if d.get("kind") != "layer":
        return QColor(KIND_COLOURS.get(d.get("kind"), "#e9ecef"))
    op = d.get("op", "")
    for key, c in OP_COLOURS.items():
        if key in op:
            return QColor(c)
    return QColor(LAYER_COLOUR)


def removed_colour(frac: float) -> QColor:
    """0 (nothing removed) -> pale green, 0.5 -> amber, 1 (everything) -> red."""
    f = max(0.0, min(1.0, frac))
    stops = [QColor("#d8f3dc"), QColor("#ffd166"), QColor("#e63946")]
    lo, hi = (stops[0], stops[1]) if f <= 0.5 else (stops[1], stops[2])
    t = f * 2 if f <= 0.5 else f * 2 - 1
    return QColor(int(lo.red() + (hi.red() - lo.red()) * t), int(lo.green() + (hi.green() - lo.green()) * t),
                  int(lo.blue() + (hi.blue() - lo.blue()) * t))


class NodeItem(QGraphicsItem):
    FONT = QFont("Sans", 9)
    SMALL = QFont("Sans", 7)
    RECT = QRectF(0, 0, NODE_W, NODE_H)

    def __init__(self, node, data: dict, view: "GraphView"):
        super().__init__()
        self.node, self.data, self.view = node, data, view
        self.base = node_colour(data)
        self.fill = self.base
        self.highlight = 0  # 0 none, 1 member of the highlighted group(s), 2 the chosen node
        self.unknown = bool(data.get("unknown"))
        self.setFlag(QGraphicsItem.ItemIsSelectable)
        self.setAcceptHoverEvents(True)
        op, label = data.get("op", ""), data.get("label", "")
        shapes = data.get("shape") or []
        tip = f"{label}\nop: {op}\nscope: {data.get('scope') or '<root>'}"
        if shapes:
            tip += "\nout: " + ", ".join(str(tuple(s)) for s in shapes[:3])
        if self.unknown:
            tip += f"\nBLOCKED: '{op}' has no registered channel semantics, so channels through it stay"
        self.setToolTip(tip)

    def boundingRect(self):
        return self.RECT.adjusted(-3, -3, 3, 3)

    def paint(self, p: QPainter, opt: QStyleOptionGraphicsItem, widget=None):
        lod = QStyleOptionGraphicsItem.levelOfDetailFromTransform(p.worldTransform())
        sel = self.isSelected()
        if lod < OVERVIEW_LOD and not (self.highlight or sel or self.fill != self.base or self.unknown):
            return  # far out: the one overview path shows plain nodes much faster
        if self.highlight == 2 or sel:
            pen = QPen(PRIMARY, 3)
        elif self.highlight == 1:
            pen = QPen(HILITE, 3)
        elif self.unknown:
            pen = QPen(BLOCKED, 2, Qt.DashLine)
        else:
            pen = QPen(QColor("#6c757d"), 1)
        pen.setCosmetic(lod < 0.3)  # keep outlines visible when far out
        p.setPen(pen)
        fill = QColor(self.fill)
        if self.highlight:
            fill = fill.darker(112)
        p.setBrush(fill)
        if lod < 0.25:  # far out: a plain box is all one can see
            p.drawRect(self.RECT)
            return
        p.drawRoundedRect(self.RECT, 6, 6)
        if lod < 0.45:
            return
        # dark fills (the red end of an overlay): light text, else the labels drown
        dark = 0.299 * fill.red() + 0.587 * fill.green() + 0.114 * fill.blue() < 150
        p.setPen(QColor("#ffffff" if dark else "#212529"))
        p.setFont(self.FONT)
        label = self.data.get("label", "")
        fm = p.fontMetrics()
        p.drawText(QRectF(6, 2, NODE_W - 12, 18), Qt.AlignLeft | Qt.AlignVCenter,
                   fm.elidedText(label, Qt.ElideMiddle, int(NODE_W - 12)))
        p.setFont(self.SMALL)
        op = self.data.get("op", "")
        if self.unknown:
            op = "⚠ blocked: " + op
            p.setPen(BLOCKED)
        elif self.data.get("kind") == "op" or label != op:
            p.setPen(QColor("#f1f3f5" if dark else "#495057"))
        shp = self.data.get("shape") or []
        if shp and shp[0]:
            op += "  " + "×".join(str(s) for s in shp[0][1:])
        p.drawText(QRectF(6, 19, NODE_W - 12, 16), Qt.AlignLeft | Qt.AlignVCenter, op)

    def hoverEnterEvent(self, e):
        self.view.nodeHovered.emit(self.node)

    def hoverLeaveEvent(self, e):
        self.view.nodeHovered.emit(-1)


class EdgesItem(QGraphicsPathItem):
    """All edges in one item: curves when close, straight lines (far cheaper) when far out."""

    def __init__(self, curved: QPainterPath, straight: QPainterPath, pen: QPen):
        super().__init__(curved)
        self.straight = straight
        self.setPen(pen)

    def paint(self, p, opt, widget=None):
        if QStyleOptionGraphicsItem.levelOfDetailFromTransform(p.worldTransform()) < FAR_LOD:
            p.setPen(self.pen())
            p.drawPath(self.straight)
        else:
            super().paint(p, opt, widget)


class GraphView(QGraphicsView):
    nodeSelected = Signal(int)  # -1 when the selection is cleared
    nodeHovered = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.Antialiasing | QPainter.TextAntialiasing)
        self.setDragMode(QGraphicsView.ScrollHandDrag)  # drag the background to pan
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setViewportUpdateMode(QGraphicsView.SmartViewportUpdate)
        self.setBackgroundBrush(QColor("#fbfbfd"))
        self.items_by_node: dict = {}
        self._edges = None
        self._overview = None
        self._hi_edges = QGraphicsPathItem()
        self._highlighted: set = set()
        self._matches: list = []
        self._match_i = -1
        self.graph = None
        self.overlay_kind: str | None = None  # None, "removed" or "sensitivity"
        self.overlay_values: dict = {}
        self.scene().selectionChanged.connect(self._on_selection)

    # building -----------------------------------------------------------------------------
    def set_graph(self, graph, lay: Layout, wrap_to_view: bool = True):
        if wrap_to_view:  # re-wrap the bands for this viewport's shape (the worker guessed)
            lay = place(lay.layers, self.aspect())
        self.layout_ = lay
        sc = self.scene()
        sc.blockSignals(True)
        sc.clear()
        sc.blockSignals(False)
        self.graph, self.items_by_node, self._highlighted = graph, {}, set()
        self.overlay_kind, self.overlay_values = None, {}
        for n, d in graph.nodes(data=True):
            it = NodeItem(n, d, self)
            x, y = lay.pos[n]
            it.setPos(x, y)
            sc.addItem(it)
            self.items_by_node[n] = it
        pen = QPen(QColor("#8d99ae"), 1.2)
        pen.setCosmetic(True)
        self._edges = EdgesItem(self._edge_path(graph.edges(), lay.pos),
                                self._edge_path(graph.edges(), lay.pos, straight=True), pen)
        self._edges.setZValue(-1)
        sc.addItem(self._edges)
        over = QPainterPath()
        for x, y in lay.pos.values():
            over.addRect(x, y, NODE_W, NODE_H)
        self._overview = QGraphicsPathItem(over)
        self._overview.setBrush(QColor("#ced4da"))
        self._overview.setPen(Qt.NoPen)
        self._overview.setZValue(-0.8)
        sc.addItem(self._overview)
        self._apply_lod()
        self._hi_edges = QGraphicsPathItem()
        hpen = QPen(HILITE, 2.5)
        hpen.setCosmetic(True)
        self._hi_edges.setPen(hpen)
        self._hi_edges.setZValue(-0.5)
        sc.addItem(self._hi_edges)
        sc.setSceneRect(QRectF(-40, -40, lay.width + 80, lay.height + 80))

    @staticmethod
    def _edge_path(edges, pos, straight=False) -> QPainterPath:
        path = QPainterPath()
        for a, b in edges:
            (x1, y1), (x2, y2) = pos[a], pos[b]
            s, t = QPointF(x1 + NODE_W, y1 + NODE_H / 2), QPointF(x2, y2 + NODE_H / 2)
            path.moveTo(s)
            if straight:
                path.lineTo(t)
            elif t.x() > s.x():
                dx = (t.x() - s.x()) / 2
                path.cubicTo(QPointF(s.x() + dx, s.y()), QPointF(t.x() - dx, t.y()), t)
            else:  # into the next wrapped band: swing out right, come in from the left
                path.cubicTo(QPointF(s.x() + 90, s.y() + 40), QPointF(t.x() - 90, t.y() - 40), t)
        return path

    # highlighting ---------------------------------------------------------------------------
    def highlight(self, nodes, primary=None):
        """Outline ``nodes`` (a coupled group) and ``primary`` (the node the user picked)."""
        for n in self._highlighted:
            it = self.items_by_node.get(n)
            if it is not None:
                it.highlight = 0
                it.update()
        self._highlighted = set(nodes) | ({primary} if primary is not None else set())
        for n in self._highlighted:
            it = self.items_by_node.get(n)
            if it is not None:
                it.highlight = 2 if n == primary else 1
                it.update()
        if self.graph is not None:
            pos = {n: (it.x(), it.y()) for n, it in self.items_by_node.items() if n in self._highlighted}
            sub = [(a, b) for a, b in self.graph.subgraph(self._highlighted).edges()]
            self._hi_edges.setPath(self._edge_path(sub, pos))

    def highlighted(self) -> set:
        return {n for n, it in self.items_by_node.items() if it.highlight}

    def set_overlay(self, removed: dict | None, colour=removed_colour, kind: str = "removed"):
        """Colour nodes by a value in [0, 1] ({node: value}; by default the fraction of channels
        removed, or e.g. a group's normalised sensitivity with ``kind="sensitivity"``) through
        ``colour``; nodes without a value turn pale grey. None restores the kind colours."""
        self.overlay_kind = None if removed is None else kind
        self.overlay_values = dict(removed) if removed is not None else {}
        for n, it in self.items_by_node.items():
            if removed is None:
                it.fill = it.base
            elif n in removed:
                it.fill = colour(removed[n])
            else:
                it.fill = QColor("#f1f3f5")
            it.update()

    # navigation -----------------------------------------------------------------------------
    def _apply_lod(self):
        z = self.transform().m11()
        self.setRenderHint(QPainter.Antialiasing, z >= FAR_LOD)  # AA costs most when far out
        if getattr(self, "_overview", None) is not None:
            self._overview.setVisible(z < OVERVIEW_LOD)

    def scale(self, sx, sy):
        super().scale(sx, sy)
        self._apply_lod()

    def resetTransform(self):
        super().resetTransform()
        self._apply_lod()

    def fitInView(self, *a, **k):
        super().fitInView(*a, **k)
        self._apply_lod()

    def wheelEvent(self, e: QWheelEvent):
        f = 1.2 ** (e.angleDelta().y() / 120)
        z = self.transform().m11() * f
        if 0.002 < z < 8:
            self.scale(f, f)

    def aspect(self) -> float:
        return max(0.5, min(4.0, self.viewport().width() / max(self.viewport().height(), 1)))

    def fit(self):
        if self.scene().items():
            self.fitInView(self.scene().sceneRect(), Qt.KeepAspectRatio)
            if self.transform().m11() > 1.5:  # small graphs: do not blow text up
                self.resetTransform()
                self.scale(1.5, 1.5)
                self.centerOn(self.scene().sceneRect().center())

    def select_node(self, n, center=True):
        it = self.items_by_node.get(n)
        if it is None:
            return
        self.scene().clearSelection()
        it.setSelected(True)
        if center:
            if self.transform().m11() < 0.6:
                self.resetTransform()
                self.scale(0.9, 0.9)
            self.centerOn(it)

    def center_on_nodes(self, nodes):
        items = [self.items_by_node[n] for n in nodes if n in self.items_by_node]
        if items:
            r = items[0].sceneBoundingRect()
            for it in items[1:]:
                r = r.united(it.sceneBoundingRect())
            self.centerOn(r.center())

    def find(self, text: str):
        """Select the next node whose label, op, module or scope contains ``text``."""
        text = text.strip().lower()
        if not text or self.graph is None:
            return None
        matches = [n for n, d in self.graph.nodes(data=True)
                   if text in f"{d.get('label', '')} {d.get('op', '')} {d.get('module', '')} {d.get('scope', '')}".lower()]
        if matches != self._matches:
            self._matches, self._match_i = matches, -1
        if not matches:
            return None
        self._match_i = (self._match_i + 1) % len(matches)
        self.select_node(matches[self._match_i])
        return matches[self._match_i], len(matches)

    def _on_selection(self):
        sel = [it for it in self.scene().selectedItems() if isinstance(it, NodeItem)]
        self.nodeSelected.emit(sel[0].node if sel else -1)

    # export ----------------------------------------------------------------------------------
    def export_png(self, path: str, max_side: int = 8000):
        r = self.scene().sceneRect()
        k = min(1.0, max_side / max(r.width(), r.height(), 1))
        img = QImage(QSize(int(r.width() * k), int(r.height() * k)), QImage.Format_ARGB32)
        img.fill(QColor("white"))
        p = QPainter(img)
        p.setRenderHints(QPainter.Antialiasing | QPainter.TextAntialiasing)
        self.scene().render(p, QRectF(img.rect()), r)
        p.end()
        if not img.save(path):
            raise OSError(f"could not write image '{path}'")

    def export_svg(self, path: str):
        from PySide6.QtSvg import QSvgGenerator
        r = self.scene().sceneRect()
        gen = QSvgGenerator()
        gen.setFileName(path)
        gen.setSize(QSize(int(r.width()), int(r.height())))
        gen.setViewBox(QRectF(0, 0, r.width(), r.height()))
        gen.setTitle("PruneStudio dependency graph")
        p = QPainter(gen)
        self.scene().render(p, QRectF(0, 0, r.width(), r.height()), r)
        p.end()
