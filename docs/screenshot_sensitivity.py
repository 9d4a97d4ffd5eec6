"""Render docs/screenshot-sensitivity.png: the demo model trained briefly on the built-in digits
(3x32x32), its per-group sensitivity (chart + graph overlay), per-group ratios from it, a prune
and the original-vs-pruned evaluation rows in the summary.

    QT_QPA_PLATFORM=offscreen python docs/screenshot_sensitivity.py [docs/screenshot-sensitivity.png]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def main(out: str) -> int:
    os.environ.setdefault("PRUNESTUDIO_SETTINGS_ORG", "prunestudio-screenshot")
    app = QApplication.instance() or QApplication([sys.argv[0]])
    from core.train.data import load_data
    from core.models.demo import DEMO_INPUT_SHAPE, demo_model
    from core.train.loop import TrainConfig, train
    from gui.main_window import MainWindow

    data = load_data("digits@32x3", batch_size=64)
    model = train(demo_model(), data, TrainConfig(epochs=3, lr=0.05, seed=0),
                  evaluate_each_epoch=False).model.eval()
    win = MainWindow()
    win.headless = True
    win.latency_runs = 3
    win.resize(1600, 1000)
    win.show()
    win.settings.clear()
    win.set_theme("light")  # whatever View > Theme was last: the README shots are light
    code = {"rc": 0}

    def fail(msg):
        print("failed:", msg, file=sys.stderr)
        code["rc"] = 1
        app.quit()

    def shoot(_=None):
        win.tabs.setCurrentWidget(win.sensitivity)
        win.show_sensitivity_overlay()  # the graph in sensitivity colours, the tab beside it
        win.view.fit()
        QTimer.singleShot(300, lambda: (win.grab().save(out), app.quit()))

    def pruned(_r):
        win.evaluationFinished.connect(shoot)

    win.taskFailed.connect(fail)
    win.modelReady.connect(lambda: win.run_sensitivity(data))
    win.sensitivityFinished.connect(lambda _r: (win.use_sensitivity_ratios(0.5), win.prune()))
    win.pruneFinished.connect(pruned)
    QTimer.singleShot(600_000, lambda: fail("timed out"))
    win.open_model("demo", DEMO_INPUT_SHAPE, model=model)
    app.exec()
    win.settings.clear()
    return code["rc"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else
                  os.path.join(os.path.dirname(os.path.abspath(__file__)), "screenshot-sensitivity.png")))
