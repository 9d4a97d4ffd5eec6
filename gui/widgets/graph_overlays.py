"""What goes with the graph view: a breadcrumb with expand/collapse-all (in a strip above), a minimap
with the viewport rectangle (in a strip right of the graph while part of it is out of view, click
or drag to go there) and a legend of node kinds and group roles (in a strip of its own below the
graph). None of them ever covers a node. Also the graph's keyboard: + / − / Enter on blocks, zoom keys."""
from __future__ import annotations

import html

from PySide6.QtCore import QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QImage, QPainter, QPen
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QWidget
from shiboken6 import isValid

from ..jobs.graph_layout import NODE_H

MINIMAP_W, MINIMAP_H = 170, 230
MARGIN = 8
LEGEND_GAP = 3  # above and below the legend in its strip


class Minimap(QWidget):
    """The whole visible graph small, drawn from the layout (cheap for 20k items)."""

    def __init__(self, view):
        super().__init__(view)
        self.view = view
        self.setFixedSize(MINIMAP_W, MINIMAP_H)
        self.setCursor(Qt.PointingHandCursor)
        self.setToolTip("overview: click or drag to move the view")
        self._img = None
        self._k, self._off = 1.0, QPointF()
        self.hide()

    def refresh(self):
        lay = self.view.layout_
        if lay is None or not lay.pos:
            self.hide()
            return
        r = self.view.scene().sceneRect()
        k = min((MINIMAP_W - 8) / max(r.width(), 1), (MINIMAP_H - 8) / max(r.height(), 1))
        self._k = k
        self._off = QPointF((MINIMAP_W - r.width() * k) / 2 - r.x() * k, (MINIMAP_H - r.height() * k) / 2 - r.y() * k)
        img = QImage(MINIMAP_W, MINIMAP_H, QImage.Format_ARGB32_Premultiplied)
        bg = self.view.theme.qcolor("graph.background")
        bg.setAlpha(235)
        img.fill(bg)
        p = QPainter(img)
        p.translate(self._off)
        p.scale(k, k)
        p.setPen(Qt.NoPen)
        frame = self.view.theme.qcolor("graph.overview")
        frame.setAlpha(90)
        for x, y, w, h in lay.frames.values():
            p.fillRect(QRectF(x, y, w, h), frame)
        many = len(self.view.items_by_node) > 3000
        if many:  # one path for the plain nodes: 20k rectangles one by one take too long
            colour = self.view.theme.qcolor("graph.outline")
            if NODE_H * k >= 1:
                p.fillPath(self.view.overview_path(), colour)
            else:  # nodes under a pixel high (a long chain) fill no pixel at all: outline them
                p.strokePath(self.view.overview_path(), QPen(colour, 0))
        items = list(self.view.blocks_by_id.values()) + ([] if many else list(self.view.items_by_node.values()))
        for item in items:
            w, h = lay.size[item.node if hasattr(item, "node") else item.block]
            p.fillRect(QRectF(item.x(), item.y(), max(w, 2 / k), max(h, 2 / k)), item.fill.darker(115))
        p.end()
        self._img = img
        self.update()
        self.follow()

    def wanted(self) -> bool:
        """While part of the graph is out of view (and the pane has room)."""
        v = self.view
        if v.layout_ is None or len(v.layout_.pos) < 2 or cramped(v):
            return False
        seen = v.mapToScene(v.viewport().rect()).boundingRect()
        return not seen.contains(v.scene().sceneRect().adjusted(60, 60, -60, -60))

    def follow(self):
        """Shown only while part of the graph is out of view, in a strip of its own right of the
        graph. Stable: the strip narrows the view, which keeps the graph out of view, and
        without it the view only grows."""
        if self.wanted() != self.isVisible():
            place(self.view)
        self.update()

    def paintEvent(self, e):
        p = QPainter(self)
        if self._img is not None:
            p.drawImage(0, 0, self._img)
        p.setPen(QPen(self.view.theme.qcolor("graph.outline"), 1))
        p.drawRect(0, 0, MINIMAP_W - 1, MINIMAP_H - 1)
        p.setPen(QPen(self.view.theme.qcolor("graph.selected"), 1.5))
        p.setBrush(Qt.NoBrush)
        p.drawRect(self.view_rect())

    def view_rect(self) -> QRectF:
        """Where the view is, in minimap pixels: at least 4 px a side (in a 20k chain it is a
        few hundredths of a pixel high)."""
        vr = self.view.mapToScene(self.view.viewport().rect()).boundingRect()
        r = QRectF(vr.x() * self._k + self._off.x(), vr.y() * self._k + self._off.y(),
                   vr.width() * self._k, vr.height() * self._k)
        grow_w, grow_h = max(0.0, 4 - r.width()) / 2, max(0.0, 4 - r.height()) / 2
        return r.adjusted(-grow_w, -grow_h, grow_w, grow_h)

    def scene_point(self, pt) -> QPointF:
        return QPointF((pt.x() - self._off.x()) / self._k, (pt.y() - self._off.y()) / self._k)

    def mousePressEvent(self, e):
        self.view.centerOn(self.scene_point(e.position()))
        self.update()

    mouseMoveEvent = mousePressEvent


class Breadcrumb(QFrame):
    """model › layer2 › layer2.1 for the current pick (a crumb folds that block), then
    collapse all / expand all / automatic buttons."""

    def __init__(self, view):
        super().__init__(view)
        self.view = view
        self.setObjectName("graphBreadcrumb")
        self.setAutoFillBackground(True)
        self.setFrameShape(QFrame.StyledPanel)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.setSpacing(2)
        self.path = QHBoxLayout()
        self.path.setSpacing(0)
        lay.addLayout(self.path)
        lay.addSpacing(8)
        for text, tip, fn in (("⊟ all", "collapse every block", view.collapse_all),
                              ("⊞ all", "expand every block", view.expand_all),
                              ("auto", "the opening view: a readable number of blocks", view.auto_expand)):
            b = QToolButton(self)
            b.setText(text)
            b.setToolTip(tip)
            b.setAutoRaise(True)
            b.clicked.connect(lambda _=False, fn=fn: fn())
            lay.addWidget(b)
        self.buttons: list = []
        self.hide()

    def refresh(self):
        v = self.view
        for b in self.buttons:
            self.path.removeWidget(b)
            b.hide()
            b.deleteLater()
        self.buttons = []
        if v.hierarchy is None:
            self.hide()
            return
        blk = v.selected_block() or ""
        path = v.hierarchy.block_path(blk) if blk in v.hierarchy.blocks else [""]
        for i, b in enumerate(path):
            btn = QToolButton(self)
            btn.setAutoRaise(True)
            name = v.hierarchy.blocks[b].short(path[i - 1] if i else None)
            btn.setText(("› " if i else "") + name)
            btn.setToolTip("fold this block" if b else "the whole model: collapse everything")
            btn.clicked.connect(lambda _=False, b=b: v.collapse(b) if b else v.collapse_all())
            self.path.addWidget(btn)
            self.buttons.append(btn)
        self.show()
        # the new crumbs' sizes count only once the layout has run: sized now, they elide to "…"
        QTimer.singleShot(0, self._fit)

    def _fit(self):
        if isValid(self):
            self.resize(self.sizeHint())


class Legend(QLabel):
    """Node kinds, the collapsed-block card and how group roles are drawn."""

    KINDS = (("input", "input"), ("output", "output"), ("conv", "conv"), ("linear", "linear"),
             ("norm", "norm"), ("embedding", "embedding"), ("layer", "other layer"), ("op", "op"))

    def __init__(self, view):
        super().__init__(view)
        self.view = view
        self.setObjectName("graphLegend")
        self.setAutoFillBackground(True)
        self.setFrameShape(QFrame.StyledPanel)
        self.setTextFormat(Qt.RichText)
        self.setMargin(4)
        self.setToolTip("legend: click to fold or unfold (L hides it)")
        self.setCursor(Qt.PointingHandCursor)
        self.folded = False

    def mousePressEvent(self, e):
        self.folded = not self.folded
        self.refresh()

    def refresh(self):
        t = self.view.theme
        if self.folded:
            self.setText("<b>legend ▸</b>")
            place(self.view)  # its strip follows its height
            return

        def sw(colour, text, mark="■"):
            return f"<span style='color:{colour}'>{mark}</span>&nbsp;{html.escape(text)}"
        kinds = [sw(t.color(f"nodes.{k}"), text) for k, text in self.KINDS]
        kinds.append(sw(t.color("ui.header"), "block ⊞"))
        rows = ["<b>nodes</b> " + " ".join(kinds[:5]), " ".join(kinds[5:])]
        role = t.data["roles"]
        rows.append("<b>selected group</b> " + " &nbsp;".join([
            sw(role["producer"], "producer (out)", "━━"),
            sw(role["consumer"], "consumer (in)", "╍╍"),
            sw(role["pass-through"], "pass-through", "┈┈"),
            sw(t.color("graph.selected"), "picked", "━━")]))
        if self.view.colour_by_group:
            rows.append("<b>colour by group</b>: fill = group on the output side, "
                        "top band = group on the input side")
        self.setText("<br>".join(rows))
        place(self.view)


def cramped(view) -> bool:
    """Too small a pane (200 % scaling, a small screen) for the minimap and legend: they would
    cover the graph they explain."""
    vp, m = view.viewport(), view.viewportMargins()  # its full size: the strips must not make it flip
    return vp.width() + m.right() < 3 * MINIMAP_W or vp.height() + m.bottom() < 2 * MINIMAP_H


def place(view):
    """Put the overlays in the view's corners; in a cramped pane only the breadcrumb stays.
    The breadcrumb and the legend get strips of their own above and below the graph (viewport
    margins), so they never cover a node, and fitting the graph fits it between them."""
    show = getattr(view, "legend_wanted", True) and not cramped(view)
    view.legend.setVisible(show)
    view.legend.adjustSize()
    strip = view.legend.height() + 2 * LEGEND_GAP if show else 0
    top = view.crumbs.sizeHint().height() + 2 * LEGEND_GAP  # the breadcrumb's own strip above
    mini = view.minimap.wanted()
    right = MINIMAP_W + 2 * MARGIN if mini else 0
    m = view.viewportMargins()
    if (m.top(), m.right(), m.bottom()) != (top, right, strip):
        view.setViewportMargins(0, top, right, strip)
    view.minimap.setVisible(mini)
    vp = view.viewport().geometry()
    view.crumbs.move(vp.left() + MARGIN, vp.top() - top + LEGEND_GAP)
    view.minimap.move(vp.right() + 1 + MARGIN, vp.bottom() - MINIMAP_H)
    view.legend.move(vp.left() + MARGIN, vp.bottom() + 1 + LEGEND_GAP)


def handle_key(view, e) -> bool:
    """+ / = expand the picked block, − collapse it (or the block of a picked node), Enter
    toggles; Ctrl+= / Ctrl+− zoom, Ctrl+0 fits; L shows or hides the legend."""
    key, mods = e.key(), e.modifiers()
    if mods & Qt.ControlModifier:
        if key in (Qt.Key_Equal, Qt.Key_Plus):
            view.zoom_in()
        elif key == Qt.Key_Minus:
            view.zoom_out()
        elif key == Qt.Key_0:
            view.fit_all()
        else:
            return False
        return True
    k = view.selected_key()
    if key in (Qt.Key_Plus, Qt.Key_Equal) and isinstance(k, str):
        view.expand(k)
    elif key == Qt.Key_Minus:
        b = view.selected_block()
        if b:
            view.collapse(b)
    elif key in (Qt.Key_Return, Qt.Key_Enter) and k is not None:
        view.expand(k) if isinstance(k, str) else view.collapse(view.selected_block() or "")
    elif key == Qt.Key_L:
        view.legend_wanted = not view.legend.isVisible()
        place(view)
    else:
        return False
    return True
