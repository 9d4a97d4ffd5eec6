"""QGraphicsView of the dependency graph (dg.graph), laid out by graph_layout on a worker.

Nodes are light custom items (one paint call, text skipped when zoomed out); all edges are a
single QPainterPath item so a 20k-node graph stays cheap to build and to repaint.
"""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QFont, QImage, QPainter, QPainterPath, QPen, QWheelEvent
from PySide6.QtWidgets import (QGraphicsItem, QGraphicsPathItem, QGraphicsScene, QGraphicsView,
                               QStyleOptionGraphicsItem)

from .. import theme as themes
from ..jobs.graph_layout import NODE_H, NODE_W, Layout, place

OVERVIEW_LOD = 0.12  # below this zoom plain nodes are drawn by one path item, not one by one
FAR_LOD = 0.3  # below this zoom: straight edges, no antialiasing
PAINT_KEYS = ("outline", "label", "sublabel", "label_on_dark", "sublabel_on_dark", "selected",
              "group", "blocked")


def node_colour(d: dict, theme=None):
    """A node's fill by kind and op family, from ``theme`` (default: the current one)."""
    return (theme or themes.current()).node_colour(d)


def removed_colour(frac: float, theme=None):
    """0 (nothing removed) -> low end of the theme's scale (green), 0.5 -> amber, 1 -> red."""
    return (theme or themes.current()).scale_colour(frac)


class PaintColours:
    """The graph colours NodeItem.paint needs, as QColors made once per theme (paint is hot)."""

    def __init__(self, theme):
        for k in PAINT_KEYS:
            setattr(self, k, theme.qcolor(f"graph.{k}"))


class NodeItem(QGraphicsItem):
    FONT = QFont("Sans", 9)
    SMALL = QFont("Sans", 7)
    RECT = QRectF(0, 0, NODE_W, NODE_H)

    def __init__(self, node, data: dict, view: "GraphView"):
        super().__init__()
        self.node, self.data, self.view = node, data, view
        self.base = view.theme.node_colour(data)
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
        c = self.view.colours
        if lod < OVERVIEW_LOD and not (self.highlight or sel or self.fill != self.base or self.unknown):
            return  # far out: the one overview path shows plain nodes much faster
        if self.highlight == 2 or sel:
            pen = QPen(c.selected, 3)
        elif self.highlight == 1:
            pen = QPen(c.group, 3)
        elif self.unknown:
            pen = QPen(c.blocked, 2, Qt.DashLine)
        else:
            pen = QPen(c.outline, 1)
        pen.setCosmetic(lod < 0.3)  # keep outlines visible when far out
        p.setPen(pen)
        fill = self.fill
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
        p.setPen(c.label_on_dark if dark else c.label)
        p.setFont(self.FONT)
        label = self.data.get("label", "")
        fm = p.fontMetrics()
        p.drawText(QRectF(6, 2, NODE_W - 12, 18), Qt.AlignLeft | Qt.AlignVCenter,
                   fm.elidedText(label, Qt.ElideMiddle, int(NODE_W - 12)))
        p.setFont(self.SMALL)
        op = self.data.get("op", "")
        if self.unknown:
            op = "⚠ blocked: " + op
            p.setPen(c.blocked)
        elif self.data.get("kind") == "op" or label != op:
            p.setPen(c.sublabel_on_dark if dark else c.sublabel)
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

    def __init__(self, curved: QPainterPath, straight: QPainterPath):
        super().__init__(curved)
        self.straight = straight

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
        self.theme = themes.current()
        self.colours = PaintColours(self.theme)
        self.setBackgroundBrush(self.theme.qcolor("graph.background"))
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
        self._overlay_colour = None  # None: the theme's scale
        self.scene().selectionChanged.connect(self._on_selection)

    def apply_theme(self, theme):
        """Recolour background, edges, nodes and the overlay (its values are kept)."""
        self.theme, self.colours = theme, PaintColours(theme)
        self.setBackgroundBrush(theme.qcolor("graph.background"))
        for it in self.items_by_node.values():
            it.base = theme.node_colour(it.data)
        if self._edges is not None:
            self._style_items()
        self.set_overlay(self.overlay_values if self.overlay_kind else None, self._overlay_colour,
                         self.overlay_kind or "removed")
        self.viewport().update()

    def _style_items(self):
        pen = QPen(self.theme.qcolor("graph.edge"), 1.2)
        pen.setCosmetic(True)
        self._edges.setPen(pen)
        self._overview.setBrush(self.theme.qcolor("graph.overview"))
        hpen = QPen(self.theme.qcolor("graph.group"), 2.5)
        hpen.setCosmetic(True)
        self._hi_edges.setPen(hpen)

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
        self._edges = EdgesItem(self._edge_path(graph.edges(), lay.pos),
                                self._edge_path(graph.edges(), lay.pos, straight=True))
        self._edges.setZValue(-1)
        sc.addItem(self._edges)
        over = QPainterPath()
        for x, y in lay.pos.values():
            over.addRect(x, y, NODE_W, NODE_H)
        self._overview = QGraphicsPathItem(over)
        self._overview.setPen(Qt.NoPen)
        self._overview.setZValue(-0.8)
        sc.addItem(self._overview)
        self._apply_lod()
        self._hi_edges = QGraphicsPathItem()
        self._hi_edges.setZValue(-0.5)
        self._style_items()
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

    def set_overlay(self, removed: dict | None, colour=None, kind: str = "removed"):
        """Colour nodes by a value in [0, 1] ({node: value}; by default the fraction of channels
        removed, or e.g. a group's normalised sensitivity with ``kind="sensitivity"``) through
        ``colour`` (default: the theme's scale); nodes without a value turn the theme's
        no-value colour. None restores the kind colours."""
        self.overlay_kind = None if removed is None else kind
        self.overlay_values = dict(removed) if removed is not None else {}
        self._overlay_colour = colour
        paint = colour or self.theme.scale_colour
        none = self.theme.qcolor("graph.no_value")
        for n, it in self.items_by_node.items():
            if removed is None:
                it.fill = it.base
            elif n in removed:
                it.fill = paint(removed[n])
            else:
                it.fill = none
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
        img.fill(self.theme.qcolor("graph.export_background"))
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
