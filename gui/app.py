"""Application entry: ``gui.app.main(argv) -> int`` (called by main.py without a subcommand)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from core.models.demo import DEMO_INPUT_SHAPE

from .theme import THEMES


def _args(argv):
    p = argparse.ArgumentParser(prog="prunestudio", description="PruneStudio desktop application")
    p.add_argument("--model", default="demo", help="model spec to open (default: the built-in demo)")
    p.add_argument("--input-shape", default=None, help="example input shape, e.g. 1,3,224,224")
    p.add_argument("--dtype", default=None, help="example input dtype (default float32; token "
                   "ids, int64, for a Hugging Face language model)")
    p.add_argument("--attention", choices=["heads", "head-dim"], default=None,
                   help="prune attention by whole heads (default) or by dimensions inside every head")
    p.add_argument("--theme", choices=THEMES, default=None,
                   help="colour theme (default: the last one chosen in View > Theme)")
    p.add_argument("--screenshot", metavar="PATH", help="render the window to PNG once loaded, then quit")
    p.add_argument("--trust", action="store_true", help="run the code --model names (a factory file, "
                   "a pickle, ...) without asking; otherwise the window asks first")
    return p.parse_known_args(argv)[0]  # leave Qt's own options (-style, ...) alone


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    app = QApplication.instance() or QApplication([sys.argv[0]] + argv)
    app.setApplicationName("PruneStudio")
    app.setOrganizationName(os.environ.get("PRUNESTUDIO_SETTINGS_ORG", "PruneStudio"))
    from .jobs.worker import claim_compute_threads
    from .main_window import MainWindow  # after QApplication: pyqtgraph needs it
    claim_compute_threads()  # torch's threads to the window's compute thread, one to this one
    win = MainWindow()
    if args.theme:
        win.set_theme(args.theme)
    win.show()
    from .jobs.model_io import suggested_input
    suggested = None if args.input_shape or args.model == "demo" else suggested_input(args.model)
    shape = args.input_shape or (DEMO_INPUT_SHAPE if args.model == "demo" else
                                 suggested[0] if suggested else "1,3,224,224")
    dtype = args.dtype or (suggested[1] if suggested else "float32")
    code = {"rc": 0}
    if args.screenshot:
        win.resize(1600, 1000)  # a fixed, reproducible frame whatever the saved geometry
        def shoot():
            win.select_first_group()
            QTimer.singleShot(200, lambda: (win.grab().save(args.screenshot), app.quit()))
        win.modelReady.connect(shoot)
        win.taskFailed.connect(lambda _m: (code.update(rc=1), app.quit()))
        QTimer.singleShot(300_000, lambda: (code.update(rc=2), app.quit()))  # never hang a script
        win.headless = True  # errors go to the log and the exit code, never to a modal dialog
    options = {"attention": args.attention.replace("-", "_")} if args.attention else None
    win.open_model(args.model, shape, dtype, options=options, trust=True if args.trust else None)
    rc = app.exec()
    return code["rc"] or rc
