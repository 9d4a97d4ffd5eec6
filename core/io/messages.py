"""One-line error text: every LoadError names the file and the problem on a single line, so the
CLI can print it as ``error: ...`` and the GUI in one dialog line."""
from __future__ import annotations

import re


def one_line(text, limit: int = 300) -> str:
    """``text`` without colour codes or line breaks, cut to ``limit`` characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exc_text(e: BaseException) -> str:
    """``"TypeName: message"`` on one line (just the type when the message is empty)."""
    msg = one_line(e)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
