"""The application's log file: every worker failure (with its traceback) and every error shown to
the user is written there, so a crash can be reported. ``PRUNESTUDIO_LOG`` overrides the path."""
from __future__ import annotations

import logging
import os

LOG_ENV = "PRUNESTUDIO_LOG"
_handler: logging.Handler | None = None


def log_path() -> str:
    env = os.environ.get(LOG_ENV)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    try:
        from PySide6.QtCore import QStandardPaths
        base = QStandardPaths.writableLocation(QStandardPaths.AppDataLocation)
    except Exception:  # noqa: BLE001
        base = ""
    if not base:
        base = os.path.join(os.path.expanduser("~"), ".prunestudio")
    return os.path.join(base, "prunestudio.log")


def setup_file_logging() -> str | None:
    """Attach (once per path) a file handler to the ``prunestudio`` logger; returns the path, or
    None if the file cannot be opened (the application still runs)."""
    global _handler
    path = log_path()
    if _handler is not None and getattr(_handler, "baseFilename", None) == path:
        return path
    logger = logging.getLogger("prunestudio")
    if _handler is not None:
        logger.removeHandler(_handler)
        _handler.close()
        _handler = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        h = logging.FileHandler(path, encoding="utf-8", delay=False)
    except OSError:
        return None
    h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    h.setLevel(logging.INFO)
    logger.addHandler(h)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    _handler = h
    return path


def flush():
    if _handler is not None:
        _handler.flush()
