"""PruneStudio desktop GUI (PySide6). View logic only: every pruning step is a call into core/.

Layout: main_window.py is the shell (docks, menus and toolbar from actions.py, theme from
theme.py); controllers/ hold what the window does, widgets/ what it shows, jobs/ what runs on
worker threads."""
from . import compat  # noqa: F401  - must run before any widget paints (see compat)
