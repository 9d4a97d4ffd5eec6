"""Names that stay readable and copyable in item views: middle elision (both ends of a module path
are what tell rows apart) and "Copy name" on the context menu and Ctrl+C."""
from __future__ import annotations

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QAbstractItemView, QApplication


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


def make_names_copyable(view: QAbstractItemView, names) -> QAction:
    """Elide ``view``'s texts in the middle and offer "Copy name" (context menu, Ctrl+C) copying
    ``names()`` (the full names of the picked rows, one a line)."""
    view.setTextElideMode(Qt.ElideMiddle)
    act = QAction("Copy name", view)
    act.setShortcut(QKeySequence.Copy)
    act.setShortcutContext(Qt.WidgetShortcut)
    act.triggered.connect(lambda: copy_text(names()))
    view.addAction(act)
    view.setContextMenuPolicy(Qt.ActionsContextMenu)
    view.installEventFilter(_CopyKey(view, names))
    return act
