"""PruneStudio desktop GUI (PySide6). View logic only: every pruning step is a call into core/."""
