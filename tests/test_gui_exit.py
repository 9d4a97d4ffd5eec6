"""Closing the window while an estimate still runs on a worker: the process ends quietly (the
worker's late signals have nowhere to go; no "Signal source has been deleted" traceback)."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import os, time
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    from gui.main_window import MainWindow
    from gui.jobs import session as sess
    real = sess.estimate
    def slow(*a, **k):  # still running when the window closes and the process ends
        time.sleep(1.5)
        return real(*a, **k)
    sess.estimate = slow
    w = MainWindow()
    w.show()
    w.open_model("demo", "1,3,32,32")
    def close():
        assert w.pruning._est_task is not None, "the estimate should still run"
        print("closing", flush=True)
        w.close()
        app.quit()
    w.ctx.settled.connect(lambda: QTimer.singleShot(300, close))
    app.exec()
""")


def test_closing_during_an_estimate_prints_no_traceback(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=ROOT, OMP_NUM_THREADS="1",
               PRUNESTUDIO_SETTINGS_ORG="prunestudio-test-exit")
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    out = r.stdout + r.stderr
    assert "closing" in r.stdout, out
    assert r.returncode == 0, out
    assert "Traceback" not in out and "has been deleted" not in out, out
