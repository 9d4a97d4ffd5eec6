"""The window refuses an approximate result (LayerNorm over a pruned stream) unless the user ticks
"accept approximate results" in the targets panel; an exact model is unaffected."""
from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("pytestqt")

TIMEOUT = 120_000


class NormedMLP(nn.Module):
    """The LayerNorm's statistics run over the hidden channels the fc1 group removes."""

    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


def _open(qtbot, win):
    torch.manual_seed(0)
    with qtbot.waitSignal(win.modelReady, timeout=TIMEOUT):
        win.open_model("normed-mlp", "2,8", model=NormedMLP())
    win.targets.slider.setValue(50)


def test_approximate_result_is_refused_unless_accepted(qtbot, win, errors, monkeypatch):
    _open(qtbot, win)
    assert not win.targets.accept_approx.isChecked()  # refused by default
    monkeypatch.setattr(win.ctx, "ask", lambda *a, **k: False)
    with qtbot.waitSignal(win.taskFailed, timeout=TIMEOUT) as failed:
        assert win.prune() is not None
    assert win.session.result is None
    assert "accept approximate" in failed.args[0]

    win.targets.accept_approx.setChecked(True)
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT) as got:
        win.prune()
    r = got.args[0]
    assert not r.verify.expected_exact and r.verify.passed and r.verify.approximations
    assert win.session.result is r


def test_model_summary_says_which_groups_prune_approximately(qtbot, win):
    _open(qtbot, win)
    text = win.ctx.ui.side.info.text()
    assert "approximately" in text and "1 group" in text and "LayerNorm" in text


def test_refused_approximate_result_offers_to_prune_again(qtbot, win, errors, monkeypatch):
    _open(qtbot, win)
    asked = []
    monkeypatch.setattr(win.ctx, "ask", lambda title, text, **k: asked.append((title, text)) or True)
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT) as got:
        assert win.prune() is not None
    assert len(asked) == 1 and "LayerNorm" in asked[0][1] and "relative" in asked[0][1]
    assert not errors  # the question replaces the error dialog
    assert win.targets.accept_approx.isChecked()  # the choice is kept, as if ticked by hand
    r = got.args[0]
    assert r.verify.passed and not r.verify.expected_exact and win.session.result is r


def test_declining_the_approximate_result_keeps_the_original(qtbot, win, errors, monkeypatch):
    _open(qtbot, win)
    asked = []
    monkeypatch.setattr(win.ctx, "ask", lambda title, text, **k: asked.append(k) or False)
    with qtbot.waitSignal(win.taskFailed, timeout=TIMEOUT):
        assert win.prune() is not None
    qtbot.wait(50)
    assert asked == [{"default_yes": False}] or asked == [{}]  # No is the default answer
    assert not errors and win.session.result is None and not win.targets.accept_approx.isChecked()
    assert "discarded" in win.ctx.ui.logbox.toPlainText()
