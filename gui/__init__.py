"""PruneStudio desktop GUI (PySide6). View logic only: every pruning step is a call into core/."""
from . import _compat  # noqa: F401  - must run before any widget paints (see _compat)
