"""The window's widgets and where they sit: the graph in the middle, targets on the left, the
coupled group on the right, groups / charts / sensitivity / log tabs at the bottom, progress and
Cancel in the status bar. :class:`Ui` is what the controllers may touch."""
from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QDockWidget, QFrame, QLabel, QLineEdit, QMainWindow, QPlainTextEdit,
                               QProgressBar, QPushButton, QScrollArea, QTabWidget)

from .charts import ChartsPanel
from .graph_view import GraphView
from .group_details import GroupDetails
from .group_panel import GroupPanel
from .sensitivity_panel import SensitivityPanel
from .side_panel import SidePanel
from .targets_panel import TargetsPanel


@dataclass
class Ui:
    window: QMainWindow  # parent of dialogs
    view: GraphView
    side: SidePanel
    targets: TargetsPanel
    details: GroupDetails
    groups: GroupPanel
    charts: ChartsPanel
    sensitivity: SensitivityPanel
    logbox: QPlainTextEdit
    tabs: QTabWidget
    status_label: QLabel
    progress: QProgressBar
    cancel_btn: QPushButton
    search: QLineEdit
    docks: dict = field(default_factory=dict)

    def themed(self) -> list:
        """The widgets that repaint their own items when the theme changes."""
        return [self.view, self.side, self.details, self.groups, self.charts, self.sensitivity]


def scrollable(w):
    """``w`` in a vertical scroll area: a small or scaled screen scrolls the panel instead of
    making the window taller than the screen."""
    area = QScrollArea()
    area.setWidget(w)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    area.setMinimumWidth(w.minimumSizeHint().width() + area.verticalScrollBar().sizeHint().width())
    return area


def build(win: QMainWindow) -> Ui:
    view = GraphView()
    win.setCentralWidget(view)
    side = SidePanel()
    logbox = QPlainTextEdit(readOnly=True)
    logbox.setMaximumBlockCount(5000)
    ui = Ui(window=win, view=view, side=side, targets=side.targets, details=GroupDetails(),
            groups=GroupPanel(), charts=ChartsPanel(), sensitivity=SensitivityPanel(),
            logbox=logbox, tabs=QTabWidget(), status_label=QLabel(), progress=QProgressBar(),
            cancel_btn=QPushButton("Cancel"),
            search=QLineEdit(placeholderText="find layer / op (Ctrl+F)"))
    for w, title in ((ui.groups, "Groups"), (ui.charts, "Charts"), (ui.sensitivity, "Sensitivity"),
                     (ui.logbox, "Log")):
        ui.tabs.addTab(w, title)
    for title, w, area, name in (("Targets", scrollable(side), Qt.LeftDockWidgetArea, "targets"),
                                 ("Coupled group", ui.details, Qt.RightDockWidgetArea, "details"),
                                 ("Groups · charts · sensitivity · log", ui.tabs,
                                  Qt.BottomDockWidgetArea, "bottom")):
        d = QDockWidget(title, win)
        d.setObjectName(name)  # needed by saveState
        d.setWidget(w)
        win.addDockWidget(area, d)
        ui.docks[name] = d
    ui.progress.setMaximumWidth(260)
    ui.progress.setVisible(False)
    ui.cancel_btn.setVisible(False)
    win.statusBar().addWidget(ui.status_label, 1)
    win.statusBar().addPermanentWidget(ui.progress)
    win.statusBar().addPermanentWidget(ui.cancel_btn)
    ui.search.setMaximumWidth(240)
    return ui
