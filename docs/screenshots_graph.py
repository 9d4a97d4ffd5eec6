"""Render the graph screenshots of docs/: the demo (light and dark), ResNet-50 collapsed and
pruned, one of its blocks expanded with its residual, DenseNet-121's concat group in paper
notation.

    Xvfb :93 -screen 0 1920x1080x24 &  DISPLAY=:93 python docs/screenshots_graph.py [OUTDIR]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def wait(signal=None, ms=600_000):
    loop = QEventLoop()
    if signal is not None:
        signal.connect(loop.quit)
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def settle(ms=600):
    wait(None, ms)


def main(out: str) -> int:
    os.environ.setdefault("PRUNESTUDIO_SETTINGS_ORG", "prunestudio-screenshot")
    app = QApplication.instance() or QApplication([sys.argv[0]])
    from core.models.demo import DEMO_INPUT_SHAPE
    from gui.main_window import MainWindow

    win = MainWindow()
    win.settings.clear()
    win.headless = True
    win.resize(1600, 1000)
    win.show()

    def shot(name, widget=None):
        settle()
        (widget or win).grab().save(os.path.join(out, name))
        print("wrote", name, flush=True)

    win.open_model("demo", DEMO_INPUT_SHAPE)
    wait(win.modelReady)
    win.select_first_group()
    shot("screenshot-main.png")
    win.set_theme("dark")
    shot("screenshot-dark.png")
    win.set_theme("light")

    win.open_model("torchvision:resnet50", "1,3,224,224")
    wait(win.modelReady)
    win.prune()
    wait(win.pruneFinished)
    v = win.view
    v.fit()
    win.select_first_group()
    v.fit()
    shot("screenshot-collapsed.png")
    g = win.session.dg.graph
    node = next(n for n in g.nodes if g.nodes[n].get("module") == "layer1.0.conv3")
    v.select_node(node)  # opens layer1 and its first bottleneck (conv1-3 beside the residual)
    v.centerOn(v.items_by_node[node])
    shot("screenshot-expanded.png")

    win.open_model("torchvision:densenet121", "1,3,224,224")
    wait(win.modelReady)
    sel, s = win.selection, win.session
    g = next(g for g in s.dg.groups if g.root == "features.denseblock1.denselayer5.conv2")
    sel.open_group_view()
    sel.paper.show_group(s.dg, g)
    sel.paper.resize(760, 860)
    shot("screenshot-group-view.png", sel.paper)
    win.close()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))))
