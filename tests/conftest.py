"""Shared pytest set-up."""

# --- GUI tests (tests/test_gui.py): render offscreen unless a platform was chosen explicitly
import os as _os

_os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
