"""The painted items of the graph view: layer/op nodes, collapsed blocks, frames around expanded
blocks, and all edges in one path item. Paint is hot (thousands of items): colours come
pre-made (:class:`PaintColours`) and text is skipped or simplified by level of detail."""
from __future__ import annotations

import shiboken6
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (QGraphicsItem, QGraphicsPathItem, QGraphicsRectItem,
                               QStyleOptionGraphicsItem)

from ..jobs.graph_layout import BLOCK_H, BLOCK_W, NODE_H, NODE_W

OVERVIEW_LOD = 0.12  # below this zoom plain nodes are drawn by one path item, not one by one
FAR_LOD = 0.3  # below this zoom: straight edges, no antialiasing
PAINT_KEYS = ("outline", "label", "sublabel", "label_on_dark", "sublabel_on_dark", "selected",
              "group", "blocked")
ROLE_PEN = {"out": Qt.SolidLine, "in": Qt.DashLine, "pass": Qt.DotLine}


def is_dark(c: QColor) -> bool:
    return 0.299 * c.red() + 0.587 * c.green() + 0.114 * c.blue() < 150


def lod_of(p: QPainter) -> float:
    return QStyleOptionGraphicsItem.levelOfDetailFromTransform(p.worldTransform())


class PaintColours:
    """The graph colours paint needs, as QColors made once per theme (paint is hot)."""

    def __init__(self, theme):
        for k in PAINT_KEYS:
            setattr(self, k, theme.qcolor(f"graph.{k}"))
        self.block = theme.qcolor("ui.header")
        self.frame = theme.qcolor("graph.overview")
        dark_bg = is_dark(theme.qcolor("graph.background"))
        self.frame_line = self.frame.lighter(170) if dark_bg else self.frame.darker(135)
        self.frame_text = theme.qcolor("ui.text")
        self.roles = {r: theme.role_colour(r) for r in ("out", "in", "pass")}


def _outline(item, c: PaintColours, lod: float, sel: bool) -> QPen:
    if item.highlight == 2 or sel:
        pen = QPen(c.selected, 3)
    elif item.highlight == 1:
        role = getattr(item, "role", None)
        pen = QPen(c.roles.get(role, c.group), 3, ROLE_PEN.get(role, Qt.SolidLine))
    elif getattr(item, "unknown", False):
        pen = QPen(c.blocked, 2, Qt.DashLine)
    else:
        pen = QPen(c.outline, 1)
    pen.setCosmetic(lod < 0.3)  # keep outlines visible when far out
    return pen


class NodeItem(QGraphicsRectItem):
    """A layer or op. Its bounding rect comes from the C++ rect item (a 6-wide pen: room for
    the 3-wide selection outline): Qt asks every item for it on each full scan of the scene,
    and 20k calls into Python made the first paint of a 20k graph a 200 ms step."""
    FONT = QFont("Sans", 9)
    SMALL = QFont("Sans", 7)
    RECT = QRectF(0, 0, NODE_W, NODE_H)
    BOUNDS_PEN = QPen(Qt.black, 6)

    def __init__(self, node, data: dict, view):
        super().__init__(self.RECT)
        self.setPen(self.BOUNDS_PEN)  # never drawn with: paint() below draws the node
        self.node, self.data, self.view = node, data, view
        self.base = view.theme.node_colour(data)
        self.fill = self.base
        self.band = None  # colour-by-group: the colour of the group on the node's input side
        self.highlight = 0  # 0 none, 1 member of the highlighted group(s), 2 the chosen node
        self.role = None  # with highlight 1: "out" producer, "in" consumer, "pass" pass-through
        self.unknown = bool(data.get("unknown"))
        self.fanout = ""  # a broadcast source: "→ 32 blocks" (its edges share one trunk)
        self.setFlag(QGraphicsItem.ItemIsSelectable)
        self.setAcceptHoverEvents(True)
        owner = view.hierarchy.owner.get(node) if view.hierarchy is not None else None
        label = data.get("label", "")
        # inside an open block its frame names the prefix: "layer1.0.conv1" reads "conv1"
        self.short = label[len(owner) + 1:] if owner and label.startswith(owner + ".") else label

    def tip(self) -> str:
        """The tooltip, made on the first hover (20k of them at build time cost a tenth of it)."""
        data = self.data
        op, label = data.get("op", ""), data.get("label", "")
        shapes = data.get("shape") or []
        tip = f"{label}\nop: {op}\nscope: {data.get('scope') or '<root>'}"
        if shapes:
            tip += "\nout: " + ", ".join(str(tuple(s)) for s in shapes[:3])
        if self.unknown:
            tip += f"\nBLOCKED: '{op}' has no registered channel semantics, so channels through it stay"
        if self.fanout:
            tip += f"\nfeeds {self.fanout[2:]}: its edges share one trunk"
        return tip

    def plain(self) -> bool:
        return not (self.highlight or self.isSelected() or self.fill != self.base or self.unknown)

    def paint(self, p: QPainter, opt, widget=None):
        lod = lod_of(p)
        if lod < OVERVIEW_LOD and self.plain():
            return  # far out: the one overview path shows plain nodes much faster
        c = self.view.colours
        p.setPen(_outline(self, c, lod, self.isSelected()))
        fill = self.fill.darker(112) if self.highlight else self.fill
        p.setBrush(fill)
        if lod < 0.25:  # far out: a plain box is all one can see
            p.drawRect(self.RECT)
            return
        p.drawRoundedRect(self.RECT, 6, 6)
        if self.band is not None:
            p.setPen(Qt.NoPen)
            p.setBrush(self.band)
            p.drawRect(QRectF(4, 1.5, NODE_W - 8, 4))
        dark = is_dark(fill)  # dark fills (the red end of an overlay): light text
        p.setPen(c.label_on_dark if dark else c.label)
        if lod < 0.7:  # middle distance (a fitted graph): the short name alone, readable
            if lod >= 0.28:
                f = QFont(self.FONT)
                f.setPointSizeF(7.5 / lod)
                p.setFont(f)
                p.drawText(self.RECT, Qt.AlignCenter,
                           p.fontMetrics().elidedText(self.short, Qt.ElideMiddle, int(NODE_W - 6)))
            return
        p.setFont(self.FONT)
        label = self.data.get("label", "")
        fm = p.fontMetrics()
        p.drawText(QRectF(6, 2, NODE_W - 12, 18), Qt.AlignLeft | Qt.AlignVCenter,
                   fm.elidedText(self.short, Qt.ElideMiddle, int(NODE_W - 12)))
        p.setFont(self.SMALL)
        op = self.data.get("op", "")
        if self.unknown:
            op = "⚠ blocked: " + op
            p.setPen(c.blocked)
        elif self.data.get("kind") == "op" or label != op:
            p.setPen(c.sublabel_on_dark if dark else c.sublabel)
        shp = self.data.get("shape") or []
        if self.fanout:
            op += "  " + self.fanout
        elif shp and shp[0]:
            op += "  " + "×".join(str(s) for s in shp[0][1:])
        p.drawText(QRectF(6, 19, NODE_W - 12, 16), Qt.AlignLeft | Qt.AlignVCenter, op)

    def hoverEnterEvent(self, e):
        if not self.toolTip():
            self.setToolTip(self.tip())
        self.view.nodeHovered.emit(self.node)

    def hoverLeaveEvent(self, e):
        self.view.nodeHovered.emit(-1)

    def mouseDoubleClickEvent(self, e):
        owner = self.view.hierarchy.owner.get(self.node) if self.view.hierarchy else None
        if owner:  # double-click a member: fold its block back
            self.view.collapse(owner)
        e.accept()


def block_text_sizes(lod: float) -> tuple[float, float]:
    """Point sizes (scene units) of a collapsed block's name and its line below at zoom ``lod``:
    10 and 7 at full size, grown as the view zooms out so that on screen they stay 8 and 6 points
    down to 0.5 (a fitted ResNet or ConvNeXt; their 4-5 px were unreadable), capped so that
    "81 nodes · 10 groups" still fits the card."""
    return min(16.0, max(10.0, 8.0 / lod)), min(12.0, max(7.0, 6.0 / lod))


class BlockItem(QGraphicsItem):
    """A collapsed module: a stacked card with its name, size, groups and what a plan removes."""
    FONT = QFont("Sans", 10, QFont.Bold)
    SMALL = QFont("Sans", 7)
    RECT = QRectF(0, 0, BLOCK_W, BLOCK_H)

    def __init__(self, block, view, title: str):
        super().__init__()
        self.block, self.view, self.title = block, view, title
        self.fill = self.base = view.colours.block
        self.highlight = 0
        self.role = None
        self.band = None
        self.info = ""  # "12 nodes · 3 groups"
        self.fanout = ""  # a broadcast source: "→ 32 blocks" (its edges share one trunk)
        self.removed = ""  # "42 % removed" with an overlay
        self.setFlag(QGraphicsItem.ItemIsSelectable)
        synthetic = getattr(view.hierarchy.blocks.get(block), "synthetic", False) if view.hierarchy else False
        what = "the model's own layers outside its blocks" if synthetic else f"module {block}"
        self.setToolTip(f"{what}\ndouble-click or + to expand")

    def boundingRect(self):  # far out the name may run wider than the card
        return self.RECT.adjusted(-BLOCK_W, -3, BLOCK_W, 9)

    def paint(self, p: QPainter, opt, widget=None):
        lod = lod_of(p)
        c = self.view.colours
        fill = self.fill.darker(112) if self.highlight else self.fill
        p.setPen(QPen(c.outline, 1))
        p.setBrush(fill.darker(108))
        p.drawRoundedRect(self.RECT.translated(5, 5), 7, 7)  # the card behind: there is more inside
        p.setPen(_outline(self, c, lod, self.isSelected()))
        p.setBrush(fill)
        p.drawRoundedRect(self.RECT, 7, 7)
        if self.band is not None:
            p.setPen(Qt.NoPen)
            p.setBrush(self.band)
            p.drawRect(QRectF(5, 2, BLOCK_W - 10, 5))
        dark = is_dark(fill)
        p.setPen(c.label_on_dark if dark else c.label)
        if lod < 0.45:  # far: the name alone, drawn at a size one can still read
            f = QFont(self.FONT)
            f.setPointSizeF(min(70.0, 8.5 / max(lod, 0.01)))
            p.setFont(f)
            wide = self.RECT.adjusted(-BLOCK_W, -40, BLOCK_W, 40)
            p.drawText(wide, Qt.AlignCenter,
                       p.fontMetrics().elidedText(self.title, Qt.ElideMiddle, int(3 * BLOCK_W)))
            return
        big, small = block_text_sizes(lod)
        f = QFont(self.FONT)
        f.setPointSizeF(big)
        p.setFont(f)
        p.drawText(QRectF(8, 3, BLOCK_W - 16, 22), Qt.AlignLeft | Qt.AlignVCenter,
                   p.fontMetrics().elidedText(self.title, Qt.ElideMiddle, int(BLOCK_W - 16)))
        f = QFont(self.SMALL)
        f.setPointSizeF(small)
        p.setFont(f)
        p.setPen(c.sublabel_on_dark if dark else c.sublabel)
        text = "⊞ " + self.info + (f"  ·  {self.removed}" if self.removed else "") + (
            f"  ·  {self.fanout}" if self.fanout else "")
        fm = p.fontMetrics()
        for short in (self.removed or self.fanout or self.info, self.info.split(" · ")[-1]):
            if fm.horizontalAdvance(text) <= BLOCK_W - 16:
                break
            text = short  # zoomed out: what matters most ("32 % removed", else "4 groups")
        p.drawText(QRectF(8, 25, BLOCK_W - 16, 20), Qt.AlignLeft | Qt.AlignVCenter,
                   fm.elidedText(text, Qt.ElideRight, int(BLOCK_W - 16)))

    def mouseDoubleClickEvent(self, e):
        self.view.expand(self.block)
        e.accept()


class FrameItem(QGraphicsItem):
    """The outline of an expanded block, its name on top; double-click the name to fold it."""
    FONT = QFont("Sans", 8, QFont.Bold)

    def __init__(self, block, rect: tuple, view, title: str):
        super().__init__()
        self.block, self.view, self.title = block, view, title
        self.rect = QRectF(*rect)
        self.setZValue(-2)
        self.setToolTip(f"{block}\ndouble-click the name (or −) to collapse")

    def boundingRect(self):
        return self.rect.adjusted(-2, -2, 2, 2)

    def shape(self):  # only the header takes clicks: the inside belongs to the members
        path = QPainterPath()
        path.addRect(QRectF(self.rect.x(), self.rect.y(), self.rect.width(), 18))
        return path

    def paint(self, p: QPainter, opt, widget=None):
        c = self.view.colours
        pen = QPen(c.frame_line, 1, Qt.DashLine)
        pen.setCosmetic(True)
        p.setPen(pen)
        fill = QColor(c.frame)
        fill.setAlpha(40)
        p.setBrush(fill)
        p.drawRoundedRect(self.rect, 8, 8)
        lod = lod_of(p)
        # the name grows as the view zooms out, but never past the frame's header: a bigger one
        # would cover the first member (far out, the folded blocks' own names take over)
        size = min(8.0 / max(lod, 0.005), 11.0)
        f = QFont(self.FONT)
        f.setPointSizeF(size)
        p.setFont(f)
        p.setPen(c.frame_text)
        head = QRectF(self.rect.x() + 6, self.rect.y() + 1, self.rect.width() - 12,
                      min(16.0, self.rect.height()))
        p.drawText(head, Qt.AlignLeft | Qt.AlignVCenter,
                   p.fontMetrics().elidedText("⊟ " + self.title, Qt.ElideMiddle, int(head.width())))

    def mouseDoubleClickEvent(self, e):
        self.view.collapse(self.block)
        e.accept()


def drop_scene(old, layers: list):
    """Delete a replaced scene: a big one a node layer per event-loop turn (clearing 20k items
    at once held the GUI thread ~70 ms on every expand or collapse of a big graph)."""
    old.blockSignals(True)
    if len(layers) < 2:
        old.deleteLater()
        return
    def drop():  # tied to the old scene: if the view takes it along first, nothing runs
        if layers:
            shiboken6.delete(layers.pop())
            QTimer.singleShot(0, old, drop)
        else:
            old.deleteLater()
    QTimer.singleShot(0, old, drop)


def mark_fanout(item, lay, it):
    """A broadcast source says how much it feeds: its edges share one trunk that branches off
    above each consumer (graph_layout), so the picture alone does not show the count."""
    targets = [b for a, b, *_ in lay.edges if a == it]
    word = "blocks" if all(isinstance(b, str) for b in targets) else "nodes"
    item.fanout = f"→ {lay.fanout[it]} {word}"
    if isinstance(item, BlockItem):  # a node makes its tooltip on the first hover (tip())
        item.setToolTip(item.toolTip() + f"\nfeeds {lay.fanout[it]} {word}: its edges share one trunk")


def route_path(routes, straight=False) -> QPainterPath:
    """Edges as polylines through their dummy points, smoothed with vertical tangents."""
    path = QPainterPath()
    for pts in routes:
        path.moveTo(QPointF(*pts[0]))
        for (x1, y1), (x2, y2) in zip(pts, pts[1:]):
            if straight or x1 == x2:
                path.lineTo(x2, y2)
            else:
                dy = (y2 - y1) / 2
                path.cubicTo(QPointF(x1, y1 + dy), QPointF(x2, y2 - dy), QPointF(x2, y2))
    return path


def arrow_heads(routes) -> QPainterPath:
    path = QPainterPath()
    for pts in routes:
        x, y = pts[-1]
        px, py = pts[-2] if len(pts) > 1 else (x, y - 1)
        d = 1 if y >= py else -1
        path.moveTo(x, y)
        path.lineTo(x - 4, y - 7 * d)
        path.lineTo(x + 4, y - 7 * d)
        path.closeSubpath()
    return path


class EdgesItem(QGraphicsPathItem):
    """All edges in one item: curves when close, straight lines (far cheaper) when far out."""

    def __init__(self, curved: QPainterPath, straight: QPainterPath):
        super().__init__(curved)
        self.straight = straight

    def paint(self, p, opt, widget=None):
        if lod_of(p) < FAR_LOD:
            p.setPen(self.pen())
            p.drawPath(self.straight)
        else:
            super().paint(p, opt, widget)
