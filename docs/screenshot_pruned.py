"""Render docs/screenshot-pruned.png: the demo model pruned at the default 50% channel ratio, the
graph coloured by the fraction of channels removed and the before/after charts beside it.

    QT_QPA_PLATFORM=offscreen python docs/screenshot_pruned.py [OUT.png] [--theme light|dark]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def main(out: str, theme: str = "light") -> int:
    os.environ.setdefault("PRUNESTUDIO_SETTINGS_ORG", "prunestudio-screenshot")
    app = QApplication.instance() or QApplication([sys.argv[0]])
    from core.models.demo import DEMO_INPUT_SHAPE
    from gui.main_window import MainWindow

    win = MainWindow()
    win.settings.clear()
    win.set_theme(theme)
    win.headless = True
    win.latency_runs = 3
    win.resize(1600, 1000)
    win.show()
    code = {"rc": 0}

    def fail(msg):
        print("failed:", msg, file=sys.stderr)
        code["rc"] = 1
        app.quit()

    def shoot(_r):
        win.tabs.setCurrentWidget(win.charts)
        win.view.fit()
        QTimer.singleShot(300, lambda: (win.grab().save(out), app.quit()))

    win.taskFailed.connect(fail)
    win.modelReady.connect(win.prune)
    win.pruneFinished.connect(shoot)
    QTimer.singleShot(300_000, lambda: fail("timed out"))
    win.open_model("demo", DEMO_INPUT_SHAPE)
    app.exec()
    win.settings.clear()
    return code["rc"]


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                          "screenshot-pruned.png"))
    p.add_argument("--theme", choices=("light", "dark"), default="light")
    a = p.parse_args()
    sys.exit(main(a.out, a.theme))
