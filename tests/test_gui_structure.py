"""GUI structure (pytest-qt, offscreen): menus and toolbar come from the action table, the theme
(palette, stylesheet, graph colours) comes from resources/ and switches to dark, resources load
through importlib.resources and ship in the wheel, and gui/ keeps its layering."""
from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import uuid
from importlib import resources

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtGui import QKeySequence, QPalette  # noqa: E402
from PySide6.QtWidgets import QApplication, QMenu, QMessageBox  # noqa: E402

from core.models.demo import DEMO_INPUT_SHAPE  # noqa: E402
from gui import actions, theme  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUI = os.path.join(ROOT, "gui")
TIMEOUT = 60_000


@pytest.fixture
def org(monkeypatch):
    name = f"prunestudio-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PRUNESTUDIO_SETTINGS_ORG", name)
    monkeypatch.setattr(QMessageBox, "critical", staticmethod(lambda *a, **k: None))
    return name


@pytest.fixture
def win(qtbot, org):
    w = MainWindow()
    w.latency_runs = 1
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    with qtbot.waitSignal(w.modelReady, timeout=TIMEOUT):
        w.open_model("demo", DEMO_INPUT_SHAPE)
    yield w
    theme.apply(QApplication.instance(), theme.DEFAULT)
    w.settings.clear()


def _menu_actions(menu: QMenu, path=()):
    """(menu path, QAction) for every action under ``menu``, submenus included."""
    for a in menu.actions():
        if a.menu() is not None:
            yield from _menu_actions(a.menu(), path + (a.menu().title(),))
        elif not a.isSeparator():
            yield path, a


def test_every_action_of_the_table_is_in_its_menu_with_its_shortcut(win):
    found = {}
    for top in win.menuBar().actions():
        for path, a in _menu_actions(top.menu(), (top.menu().title(),)):
            found[a.objectName()] = ("/".join(path), a)
    specs = [s for s in actions.ACTIONS if isinstance(s, actions.ActionSpec)]
    assert len(specs) >= 15
    for spec in specs:
        assert f"action_{spec.id}" in found, spec.id
        path, a = found[f"action_{spec.id}"]
        assert path == spec.menu, spec.id
        assert a.text() == spec.text
        assert a.shortcut() == QKeySequence(spec.shortcut or ""), spec.id
        assert getattr(win, f"a_{spec.id}") is a  # window.a_<id>, as scripts use it
        if spec.icon:
            assert not a.icon().isNull(), spec.id
    assert {a.shortcut().toString() for a in (win.a_open, win.a_prune, win.a_cancel, win.a_undo,
                                             win.a_save_project, win.a_open_project, win.a_quit)} \
        == {"Ctrl+O", "Ctrl+P", "Esc", "Ctrl+Z", "Ctrl+S", "Ctrl+Shift+O", "Ctrl+Q"}
    # the toolbar: exactly the table's toolbar entries, in their order, then the search field
    want = [s.id for s in sorted((s for s in specs if s.toolbar), key=lambda s: s.toolbar)]
    got = [a.objectName().removeprefix("action_") for a in win.toolbar.actions()
           if a.objectName().startswith("action_")]
    assert got == want == ["open", "prune", "cancel", "undo", "export", "fit"]
    assert win.toolbar.widgetForAction(win.toolbar.actions()[-1]) is win.search
    # File > Open recent is the table's dynamic submenu
    assert any(a.menu() is win.models.recent_menu for a in win.menuBar().actions()[0].menu().actions())


def test_actions_follow_their_enabled_rules(qtbot, win):
    def enabled():
        return {s.id: win.action_map[s.id].isEnabled() for s in actions.ACTIONS
                if isinstance(s, actions.ActionSpec)}
    now = enabled()
    assert now["prune"] and now["export"] and now["open"] and not now["undo"] and not now["cancel"]
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT):
        assert win.prune() is not None
        busy = enabled()  # while the worker prunes
    assert busy["cancel"] and not busy["prune"] and not busy["open"] and busy["fit"]
    after = enabled()
    assert after["undo"] and after["report"] and not after["cancel"]
    win.a_undo.trigger()
    assert win.session.result is None and not win.a_undo.isEnabled()


def _hex(c) -> str:
    return c.name().lower()


def test_dark_theme_recolours_window_graph_and_panels(qtbot, win, org):
    light, dark = theme.load("light"), theme.load("dark")
    app = QApplication.instance()
    dg = win.session.dg
    conv = dg.node_of_module("stem.0")[0]
    inp = next(n for n, d in dg.graph.nodes(data=True) if d.get("kind") == "input")
    items = win.view.items_by_node
    assert _hex(items[conv].base) == light.color("nodes.conv")
    assert _hex(win.view.backgroundBrush().color()) == light.color("graph.background")
    assert win.a_theme_light.isChecked() and not win.a_theme_dark.isChecked()
    # the details list members coloured by role
    win.view.select_node(conv)
    top = win.details.tree.topLevelItem(0)
    roles = {top.child(i).text(1): _hex(top.child(i).foreground(1).color()) for i in range(top.childCount())}
    assert roles["out"] == light.color("roles.producer") and roles["in"] == light.color("roles.consumer")

    win.a_theme_dark.trigger()
    assert win.a_theme_dark.isChecked() and not win.a_theme_light.isChecked()
    assert _hex(app.palette().color(QPalette.Window)) == dark.color("ui.window")
    assert _hex(win.palette().color(QPalette.Base)) == dark.color("ui.panel")
    qss = app.styleSheet()
    assert dark.color("ui.header") in qss and light.color("ui.header") not in qss and "${" not in qss
    assert _hex(items[conv].base) == dark.color("nodes.conv") == _hex(items[conv].fill)
    assert _hex(items[inp].base) == dark.color("nodes.input")
    assert _hex(win.view.backgroundBrush().color()) == dark.color("graph.background")
    assert _hex(win.view.colours.selected) == dark.color("graph.selected")
    top = win.details.tree.topLevelItem(0)
    assert _hex(top.child(0).foreground(1).color()) in {dark.color(f"roles.{r}")
                                                        for r in ("producer", "consumer", "pass-through")}
    # overlays take the dark scale; undoing one restores the dark kind colours
    win.view.set_overlay({conv: 1.0})
    assert _hex(items[conv].fill) == dark.color("scale.2")
    assert _hex(items[inp].fill) == dark.color("graph.no_value")
    win.view.set_overlay(None)
    # charts: a pruned result is drawn in the dark chart colours
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT):
        win.prune()
    plot = win.charts.plots["params"]
    assert _hex(plot.backgroundBrush().color()) == dark.color("charts.background")
    bars = [i for i in plot.getPlotItem().items if hasattr(i, "opts")]
    assert [_hex(pg_brush(b)) for b in bars[0].opts["brushes"]] == [dark.color("charts.before"),
                                                                    dark.color("charts.after")]
    # remembered: a new window opens dark
    assert win.settings.value("theme") == "dark"
    other = MainWindow()
    qtbot.addWidget(other)
    assert other.a_theme_dark.isChecked() and theme.current().name == "dark"
    other.set_theme("light")
    assert _hex(app.palette().color(QPalette.Window)) == light.color("ui.window")


def pg_brush(b):
    import pyqtgraph as pg
    return pg.mkBrush(b).color()


def test_resources_load_through_importlib_and_ship_in_the_wheel(qapp):  # icons need a QApplication
    pkg = resources.files("resources")
    light = json.loads(pkg.joinpath("themes", "light.json").read_text(encoding="utf-8"))
    dark = json.loads(pkg.joinpath("themes", "dark.json").read_text(encoding="utf-8"))
    assert set(theme.flatten(light)) == set(theme.flatten(dark))  # a theme is complete or broken
    for name in theme.THEMES:
        t = theme.load(name)
        qss = t.stylesheet()
        assert "${" not in qss and t.color("ui.accent") in qss
        assert re.fullmatch(r"#[0-9a-f]{6}", t.color("graph.background"))
    icons = {s.icon for s in actions.ACTIONS if getattr(s, "icon", None)}
    for name in icons:
        svg = pkg.joinpath("icons", f"{name}.svg").read_text(encoding="utf-8")
        assert "currentColor" in svg  # drawn in the theme's icon colour
        img = theme.load("dark").icon(name).pixmap(24, 24).toImage()
        assert not img.isNull()
        assert any(img.pixelColor(x, y).alpha() for x in range(24) for y in range(24)), name
    with pytest.raises(ValueError):
        theme.load("no-such-theme")
    # gui/ reads resources by package, never by a path next to a source file
    for path in _gui_files():
        assert "__file__" not in open(path, encoding="utf-8").read(), path
    # every file in resources/ matches the package-data globs of pyproject.toml
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        cfg = tomllib.load(f)["tool"]["setuptools"]
    assert any(p.startswith("resources") for p in cfg["packages"]["find"]["include"])
    globs = cfg["package-data"]["resources"]
    base = os.path.join(ROOT, "resources")
    for d, _, files in os.walk(base):
        for fn in files:
            rel = os.path.relpath(os.path.join(d, fn), base).replace(os.sep, "/")
            if rel.endswith(".py") or "__pycache__" in rel:
                continue
            assert any(fnmatch.fnmatch(rel, g) for g in globs), rel


def _gui_files():
    for d, _, files in os.walk(GUI):
        for fn in files:
            if fn.endswith(".py"):
                yield os.path.join(d, fn)


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    pkg = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for a in node.names:
                yield base, a.name
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, ""


def test_gui_layers_and_no_hard_coded_colours():
    for path in _gui_files():
        rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
        src = open(path, encoding="utf-8").read()
        assert src.count("\n") <= 400, rel
        # colours live in resources/themes: none spelled out in code
        assert not re.search(r"['\"]#[0-9a-fA-F]{6}\b", src), rel
        for base, name in _imports(path):
            full = f"{base}.{name}" if name else base
            if name.startswith("_") and not name.startswith("__"):
                pytest.fail(f"{rel} imports the private {full}")
            if rel.startswith("gui/jobs/"):  # worker side: no widgets, no painting
                assert not re.match(r"PySide6\.(QtWidgets|QtGui)|pyqtgraph|gui\.(widgets|controllers)",
                                    full), f"{rel}: {full}"
            if rel.startswith("gui/widgets/"):
                assert not full.startswith(("gui.controllers", "gui.main_window")), f"{rel}: {full}"
            if rel.startswith("gui/controllers/"):
                assert not full.startswith("gui.main_window"), f"{rel}: {full}"
    main = open(os.path.join(GUI, "main_window.py"), encoding="utf-8").read()
    assert main.count("\n") < 250
