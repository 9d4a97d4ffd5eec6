"""The question asked before any code from a file runs (core/io/trust.py): it names exactly what
would run - the kind, the path and a short content hash of each file - with No as the default
button, and a "remember" box that the caller stores per content hash only when it is ticked."""
from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QMessageBox

TITLE = "Run code from these files?"


class TrustDialog(QMessageBox):
    """Yes/No (default and Escape: No) about ``refs`` (core.io.trust.CodeRef)."""

    def __init__(self, parent, refs, action: str = "Opening this"):
        super().__init__(QMessageBox.Warning, TITLE, "", QMessageBox.Yes | QMessageBox.No, parent)
        self.refs = list(refs)
        lines = "\n".join(f"• {r.kind}: {r.path}" + (f" → {r.name}()" if r.name else "")
                          + f"\n   sha256 {r.short}" for r in self.refs)
        self.setText(f"{action} runs Python code from {'this file' if len(self.refs) == 1 else 'these files'}:"
                     f"\n\n{lines}\n\nCode runs with your permissions. Run it only if you trust "
                     f"where it came from.")
        self.setDetailedText("\n".join(f"{r.describe()}\nsha256 {r.sha256}" for r in self.refs))
        self.setDefaultButton(QMessageBox.No)
        self.setEscapeButton(QMessageBox.No)
        self.remember = QCheckBox("Remember my answer for these exact files (by content hash)")
        self.setCheckBox(self.remember)

    def ask(self) -> tuple[bool, bool]:
        """(run it, remember) after the user answered."""
        yes = self.exec() == QMessageBox.Yes
        return yes, yes and self.remember.isChecked()
