"""The layout rules of docs/ARCHITECTURE.md, checked: layer contracts (import-linter), lint (ruff,
including imports of other modules' private names), no import cycles, file sizes, and that every
module registering op semantics or updaters is listed in the one registration list."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from core import families

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "gui")
MAX_LINES = 400
REGISTERING_CALLS = {"register_op", "register_leaf_module", "register_module_updater",
                     "register_attention"}


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def _tool(name):
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert exe, f"{name} is not installed: pip install -e '.[test]'"
    return exe


def test_import_contracts():
    """core never imports Qt or gui; core's packages import only the layers below them."""
    r = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def test_ruff():
    r = subprocess.run([_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def _imports(name, path):
    """Project modules that ``name`` imports anywhere in its body (functions included)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def test_no_import_cycles():
    mods = dict(_modules())
    g = nx.DiGraph()
    for name, path in mods.items():
        g.add_node(name)
        for target in _imports(name, path):
            if target in mods and target != name and not name.startswith(target + "."):
                g.add_edge(name, target)
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_files_are_small_and_core_top_level_is_a_handful():
    big = [f"{p.relative_to(ROOT)} ({n} lines)" for _, p in _modules()
           if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not big, f"files over {MAX_LINES} lines: {big}"
    top = sorted(p.name for p in (ROOT / "core").glob("*.py"))
    assert len(top) <= 8, f"core/ top level should hold only a handful of modules: {top}"


def _registers(path) -> bool:
    """Whether a module registers anything when imported (a module-level decorator or call)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        calls = []
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            calls = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
        elif isinstance(node, (ast.Expr, ast.Assign)) and isinstance(node.value, ast.Call):
            calls = [node.value.func]
        elif isinstance(node, ast.For):
            calls = [n.func for n in ast.walk(node) if isinstance(n, ast.Call)]
        for c in calls:
            while isinstance(c, ast.Call):
                c = c.func
            if getattr(c, "id", getattr(c, "attr", None)) in REGISTERING_CALLS:
                return True
    return False


@pytest.mark.parametrize("name,path", [(n, p) for n, p in _modules() if n.startswith("core.")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_registering_modules_are_listed_once(name, path):
    """A module that registers op semantics or updaters but is missing from core.families would be
    silently ignored: the list is the one registration point."""
    listed = [m for m, _ in families.FAMILIES]
    if _registers(path):
        assert name in listed, f"{name} registers handlers but is not listed in core/families.py"
    assert listed.count(name) <= 1


def test_public_api_resolves_without_importing_torch_up_front():
    """Every name core/__init__ promises exists; importing core alone stays cheap."""
    code = ("import sys, core; assert 'torch' not in sys.modules, 'import core pulled in torch'\n"
            "missing = [n for n in core.__all__ if getattr(core, n, None) is None]\n"
            "assert not missing, missing")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
