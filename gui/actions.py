"""Every menu entry and toolbar button as one declarative table.

The window builds its menus and toolbar from ACTIONS (:func:`build`) and enables each action by
its ``enabled`` rule (:func:`enabled_states`), so adding a command is one line here and one
method on a controller. Order in the table is order in the menu; a change of ``group`` inside a
menu draws a separator.
"""
from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QAction, QActionGroup, QKeySequence

from gui.jobs.stream import streamable_dir


@dataclass(frozen=True)
class ActionSpec:
    id: str  # the window's attribute is a_<id>
    menu: str  # menu path: "&File", "&View/&Theme"
    text: str
    callback: str  # dotted path from the window: "models.open_dialog", "close"
    shortcut: str | None = None
    enabled: str = "always"  # a key of enabled_states()
    tip: str = ""
    icon: str | None = None  # resources/icons/<icon>.svg
    args: tuple = ()  # passed to the callback
    group: int = 0  # separators between groups of one menu
    toolbar: tuple | None = None  # (section, position) in the toolbar; None: menu only
    check_group: str | None = None  # checkable, one checked per group (e.g. the theme)
    checkable: bool = False  # an on/off switch of its own (e.g. colour by group)


@dataclass(frozen=True)
class SubMenu:
    """A submenu a controller fills at run time (File > Open recent)."""
    id: str
    menu: str
    text: str
    group: int = 0


ACTIONS: list[ActionSpec | SubMenu] = [
    # File
    ActionSpec("open", "&File", "&Open model…", "models.open_dialog", "Ctrl+O", "idle",
               "load a model to prune", "open", toolbar=(0, 0)),
    ActionSpec("demo", "&File", "Open &demo model", "models.open_demo", None, "idle",
               "the built-in demo network", "demo"),
    SubMenu("recent", "&File", "Open &recent"),
    ActionSpec("open_project", "&File", "Open pro&ject…", "projects.open_project_dialog",
               "Ctrl+Shift+O", "idle", "carry on with saved work", "project", group=1),
    ActionSpec("save_project", "&File", "&Save project…", "projects.save_project_dialog", "Ctrl+S",
               "model", "model, input, settings, plan and results in a .psproj file", "save", group=1),
    ActionSpec("export", "&File", "&Export model…", "exports.export_dialog", "Ctrl+E", "model",
               ".pt, .pstudio, .onnx", "export", group=2, toolbar=(0, 4)),
    ActionSpec("report", "&File", "Export JSON &report…", "exports.export_report_dialog", None,
               "pruned", "parameters, FLOPs, latency and channels before and after", "report", group=2),
    ActionSpec("png", "&File", "Export graph as P&NG…", "exports.export_view_dialog", None,
               tip="the dependency graph as an image", icon="image", args=("png",), group=2),
    ActionSpec("svg", "&File", "Export graph as &SVG…", "exports.export_view_dialog", None,
               tip="the dependency graph as vector graphics", icon="image", args=("svg",), group=2),
    ActionSpec("quit", "&File", "&Quit", "close", "Ctrl+Q", icon="quit", group=3),
    # Prune
    ActionSpec("prune", "&Prune", "&Prune", "pruning.prune", "Ctrl+P", "prunable",
               "prune a copy of the model", "prune", toolbar=(0, 1)),
    ActionSpec("cancel", "&Prune", "&Cancel", "cancel", "Esc", "busy",
               "stop the running task; the model stays as it was", "cancel", toolbar=(0, 2)),
    ActionSpec("undo", "&Prune", "&Undo pruning", "pruning.undo", "Ctrl+Z", "pruned",
               "back to the original model", "undo", toolbar=(0, 3)),
    ActionSpec("train", "&Prune", "&Training…", "accuracy.open_training", None,
               tip="sparse learning / fine-tuning", icon="train"),
    ActionSpec("sensitivity", "&Prune", "&Sensitivity…", "accuracy.sensitivity_dialog", None, "model",
               "loss change when each group alone is pruned, on a dataset", "sensitivity", group=1),
    ActionSpec("evaluate", "&Prune", "&Evaluate on data…", "accuracy.evaluate_dialog", None, "model",
               "top-1/top-5/loss of the original and the pruned model", "evaluate", group=1),
    # View
    ActionSpec("fit", "&View", "&Fit graph", "view.fit", "F", tip="the whole graph in view",
               icon="fit", toolbar=(1, 0)),
    ActionSpec("find", "&View", "F&ind…", "selection.focus_search", "Ctrl+F",
               tip="find a layer or op by name", icon="find"),
    ActionSpec("zoom_in", "&View", "Zoom &in", "view.zoom_in", "Ctrl+=", tip="closer to the graph"),
    ActionSpec("zoom_out", "&View", "Zoom &out", "view.zoom_out", "Ctrl+-", tip="further from the graph"),
    ActionSpec("zoom_fit", "&View", "&Whole graph", "view.fit_all", "Ctrl+0",
               tip="the whole graph in view, however small"),
    ActionSpec("expand_all", "&View", "&Expand all blocks", "view.expand_all", "Ctrl+Shift+=",
               tip="every module open (double-click or + opens one)", group=2),
    ActionSpec("collapse_all", "&View", "&Collapse all blocks", "view.collapse_all", "Ctrl+Shift+-",
               tip="every module folded (double-click a frame or − folds one)", group=2),
    ActionSpec("colour_groups", "&View", "Colour by &group", "selection.toggle_group_colours", "G",
               tip="each coupled group its own colour", group=3, checkable=True),
    ActionSpec("group_view", "&View", "Group in &paper notation…", "selection.open_group_view",
               "Ctrl+G", "model_any", "the picked group as DepGraph draws it: f⁻/f⁺ ends, index maps",
               group=3),
    ActionSpec("theme_light", "&View/&Theme", "&Light", "set_theme", tip="light colours",
               args=("light",), group=1, check_group="theme"),
    ActionSpec("theme_dark", "&View/&Theme", "&Dark", "set_theme", tip="dark colours",
               args=("dark",), group=1, check_group="theme"),
]


def enabled_states(busy: bool, session) -> dict:
    """The ``enabled`` rules: which actions make sense now."""
    ready = session is not None
    weights = ready and not session.meta  # a meta-device session is structure only
    pruned = ready and session.result is not None
    # a structure-only Hugging Face checkpoint with safetensors shards prunes from its shards
    streamed = ready and session.meta and streamable_dir(session) is not None
    return {"always": True, "idle": not busy, "busy": busy, "model_any": ready,
            "model": weights and not busy, "pruned": pruned and not busy,
            "prunable": (weights or streamed) and not busy}


def resolve(root, dotted: str):
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def build(window, table=ACTIONS, icon=None, toolbar=None) -> tuple[dict, dict]:
    """Menus (on ``window.menuBar()``) and ``toolbar`` entries from ``table``; ``icon(name)``
    gives each action its QIcon. Returns ({id: QAction}, {menu path or SubMenu id: QMenu})."""
    actions, menus, last_group, check_groups = {}, {}, {}, {}

    def menu_for(path):
        if path not in menus:
            parent, _, text = path.rpartition("/")
            menus[path] = (menu_for(parent) if parent else window.menuBar()).addMenu(text)
        return menus[path]

    for spec in table:
        m = menu_for(spec.menu)
        if spec.menu in last_group and last_group[spec.menu] != spec.group:
            m.addSeparator()
        last_group[spec.menu] = spec.group
        if isinstance(spec, SubMenu):
            menus[spec.id] = m.addMenu(spec.text)
            continue
        a = QAction(spec.text, window)
        a.setObjectName(f"action_{spec.id}")
        if spec.shortcut:
            a.setShortcut(QKeySequence(spec.shortcut))
        plain = spec.text.replace("&", "").rstrip("…")
        a.setToolTip(f"{plain} ({spec.shortcut})" if spec.shortcut else plain)
        if spec.tip:
            a.setStatusTip(spec.tip)
        if spec.icon and icon is not None:
            a.setIcon(icon(spec.icon))
        if spec.checkable:
            a.setCheckable(True)
        if spec.check_group:
            a.setCheckable(True)
            if spec.check_group not in check_groups:
                check_groups[spec.check_group] = QActionGroup(window)
            check_groups[spec.check_group].addAction(a)
        fn = resolve(window, spec.callback)
        a.triggered.connect(lambda _checked=False, fn=fn, args=spec.args: fn(*args))
        m.addAction(a)
        actions[spec.id] = a
    if toolbar is not None:
        placed = sorted((s.toolbar, s.id) for s in table if getattr(s, "toolbar", None) is not None)
        section = None
        for (sec, _pos), aid in placed:
            if section is not None and sec != section:
                toolbar.addSeparator()
            section = sec
            toolbar.addAction(actions[aid])
    return actions, menus
