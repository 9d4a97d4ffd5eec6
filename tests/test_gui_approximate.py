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


def test_approximate_result_is_refused_unless_accepted(qtbot, win, errors):
    _open(qtbot, win)
    assert not win.targets.accept_approx.isChecked()  # refused by default
    with qtbot.waitSignal(win.taskFailed, timeout=TIMEOUT):
        assert win.prune() is not None
    assert win.session.result is None
    assert errors and "accept approximate" in str(errors[-1])

    win.targets.accept_approx.setChecked(True)
    with qtbot.waitSignal(win.pruneFinished, timeout=TIMEOUT) as got:
        win.prune()
    r = got.args[0]
    assert not r.verify.expected_exact and r.verify.passed and r.verify.approximations
    assert win.session.result is r
