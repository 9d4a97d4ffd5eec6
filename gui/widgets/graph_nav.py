"""Moving about the graph view: zoom (wheel, keys), fit, picking and finding nodes, export.
A mixin of :class:`gui.widgets.graph_view.GraphView` (kept apart to keep files short)."""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QImage, QPainter, QWheelEvent
from PySide6.QtWidgets import QGraphicsView

from . import graph_overlays
from .graph_items import FAR_LOD, OVERVIEW_LOD, BlockItem, NodeItem


HIDE_ABOVE = 3000  # far out, more node items than this are hidden behind the overview path
READABLE = 0.5  # the smallest zoom at which node names are drawn


class Navigation:
    # navigation -----------------------------------------------------------------------------
    def _apply_lod(self):
        z = self.transform().m11()
        self.setRenderHint(QPainter.Antialiasing, z >= FAR_LOD)  # AA costs most when far out
        if self._overview is not None:
            far = z < OVERVIEW_LOD
            self._overview.setVisible(far or self.building)
            # many plain nodes far out: the overview path draws them; skip the items altogether
            plain = self.overlay_kind is None and not self.colour_by_group and not self._highlighted
            # while a big build runs in chunks the overview path stands in for every node
            hide = self.building or (far and plain and len(self.items_by_node) > HIDE_ABOVE)
            self._show_layers(not hide)
        self.minimap.follow()

    def _show_layers(self, show: bool = True):
        """Node layers near the view opaque, the others transparent: a layer's change makes Qt
        revisit each of its children, and a transparent layer's children cost nothing to paint."""
        if not self._node_layers:
            return
        if show:
            seen = self.mapToScene(self.viewport().rect()).boundingRect()
            near = seen.adjusted(-seen.width(), -seen.height(), seen.width(), seen.height())
        for layer, bounds in self._node_layers:
            want = 1 if show and bounds.intersects(near) else 0
            if layer.opacity() != want:
                layer.setOpacity(want)

    def scale(self, sx, sy):
        QGraphicsView.scale(self, sx, sy)
        self._apply_lod()

    def resetTransform(self):
        QGraphicsView.resetTransform(self)
        self._apply_lod()

    def fitInView(self, *a, **k):
        QGraphicsView.fitInView(self, *a, **k)
        self._apply_lod()

    def zoom(self, f: float):
        z = self.transform().m11() * f
        if 0.002 < z < 8:
            self.scale(f, f)

    def zoom_in(self):
        self.zoom(1.25)

    def zoom_out(self):
        self.zoom(0.8)

    def wheelEvent(self, e: QWheelEvent):
        self.zoom(1.2 ** (e.angleDelta().y() / 120))

    def scrollContentsBy(self, dx, dy):
        QGraphicsView.scrollContentsBy(self, dx, dy)
        self._apply_lod()  # the node layers that came near the view turn opaque

    def resizeEvent(self, e):
        QGraphicsView.resizeEvent(self, e)
        graph_overlays.place(self)
        self._apply_lod()

    def keyPressEvent(self, e):
        if graph_overlays.handle_key(self, e):
            return
        QGraphicsView.keyPressEvent(self, e)

    def aspect(self) -> float:
        return max(0.5, min(4.0, self.viewport().width() / max(self.viewport().height(), 1)))

    def fit(self):
        """The whole graph when it can be read at that size, else the top of it at a readable
        zoom (the minimap shows the rest)."""
        if self._overview is None:  # nothing drawn (scene().items() would list 20k items)
            return
        for _ in range(2):  # again when the minimap's strip came or went: the view changed size
            size = self.viewport().size()
            self._fit_once()
            if self.viewport().size() == size:
                break

    def _fit_once(self):
        r = self.scene().sceneRect()
        self.fitInView(r, Qt.KeepAspectRatio)
        z = self.transform().m11()
        if z > 1.5 or z < READABLE:
            k = 1.5 if z > 1.5 else READABLE
            self.resetTransform()
            self.scale(k, k)
            if z > 1.5:
                self.centerOn(r.center())
            else:
                self.centerOn(QPointF(r.center().x(), r.top() + self.viewport().height() / (2 * k)))

    def fit_all(self):
        """The whole graph in view, however small."""
        if self._overview is not None:  # something is drawn (scene().items() lists 20k items)
            self.fitInView(self.scene().sceneRect(), Qt.KeepAspectRatio)

    def select_node(self, n, center=True):
        self.reveal(n)
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
        items = [it for it in (self.item_of(n) for n in nodes) if it is not None]
        if items:
            r = items[0].sceneBoundingRect()
            for it in items[1:]:
                r = r.united(it.sceneBoundingRect())
            self.centerOn(r.center())

    def find(self, text: str):
        """Select the next node whose label, op, module or scope contains ``text`` (its blocks
        open to show it): ``(node, number of matches, which match)`` or None."""
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
        return matches[self._match_i], len(matches), self._match_i + 1

    def selected_key(self):
        sel = self.scene().selectedItems()
        for it in sel:
            if isinstance(it, NodeItem):
                return it.node
            if isinstance(it, BlockItem):
                return it.block
        return None

    def selected_block(self):
        """The block of the current pick: a collapsed block, or the block holding a node."""
        k = self.selected_key()
        if isinstance(k, str) or k is None:
            return k
        return self.hierarchy.owner.get(k) if self.hierarchy else None

    def _on_selection(self):
        k = self.selected_key()
        if isinstance(k, str):
            self.blockSelected.emit(k)
            self.nodeSelected.emit(-1)
        else:
            self.nodeSelected.emit(k if k is not None else -1)
        self.crumbs.refresh()

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
