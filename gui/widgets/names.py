"""Names that stay readable and copyable in item views: middle elision (both ends of a module path
are what tell rows apart) and "Copy name" on the context menu and Ctrl+C."""
from __future__ import annotations

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QAbstractItemView, QApplication, QStyledItemDelegate

from .units import abbreviate_path


class PathDelegate(QStyledItemDelegate):
    """Draws a module path shortened the readable way (:func:`abbreviate_path`) when the column is
    too narrow: "e.l.encoder_layer_11.mlp.0.weight" rather than "encoder.lay…weight"."""

    def __init__(self, parent=None, leaves_only=False):
        super().__init__(parent)
        self.leaves_only = leaves_only  # a tree's top rows are titles, not paths

    def initStyleOption(self, option, index):  # noqa: N802 - Qt's name
        super().initStyleOption(option, index)
        if self.leaves_only and not index.parent().isValid():
            return
        room = option.rect.width() - 10
        if option.features & option.ViewItemFeature.HasDecoration:
            room -= option.decorationSize.width() + 6
        fm = option.fontMetrics
        option.text = abbreviate_path(option.text, lambda t: fm.horizontalAdvance(t) <= room)


class RightElide(QStyledItemDelegate):
    """Elides at the end: for lists such as index maps, whose beginning reads first."""

    def initStyleOption(self, option, index):  # noqa: N802 - Qt's name
        super().initStyleOption(option, index)
        option.textElideMode = Qt.ElideRight


def _paths_delegate(view, columns):
    d = PathDelegate(view, leaves_only=hasattr(view, "topLevelItem"))
    for c in columns:
        view.setItemDelegateForColumn(c, d)
    return d


class _CopyKey(QObject):
    """Ctrl+C on the view copies what ``fn`` returns (the item view's own Copy would copy the
    current cell's text, often an empty check-box column)."""

    def __init__(self, view, fn):
        super().__init__(view)
        self.fn = fn

    def eventFilter(self, obj, e):  # noqa: N802 - Qt's name
        if e.type() == e.Type.KeyPress and e.matches(QKeySequence.Copy):
            copy_text(self.fn())
            return True
        return False


def copy_text(text: str | None):
    if text:
        QApplication.clipboard().setText(text)


def elide_right(view: QAbstractItemView, column: int):
    view.right_delegate = RightElide(view)
    view.setItemDelegateForColumn(column, view.right_delegate)


def make_names_copyable(view: QAbstractItemView, names, path_columns=()) -> QAction:
    """Elide ``view``'s texts in the middle (``path_columns``: module paths, abbreviated first)
    and offer "Copy name" (context menu, Ctrl+C) copying ``names()`` (the full names of the picked
    rows, one a line)."""
    view.setTextElideMode(Qt.ElideMiddle)
    view.path_delegate = _paths_delegate(view, path_columns)  # kept alive with the view
    act = QAction("Copy name", view)
    act.setShortcut(QKeySequence.Copy)
    act.setShortcutContext(Qt.WidgetShortcut)
    act.triggered.connect(lambda: copy_text(names()))
    view.addAction(act)
    view.setContextMenuPolicy(Qt.ActionsContextMenu)
    view.installEventFilter(_CopyKey(view, names))
    return act
