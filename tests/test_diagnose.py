"""When the oracle fails, the pipeline names the groups responsible, leaves them out, and says so."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.errors import VerificationError
from core.pipeline import analyze_model, prune_model
from core.plan.planner import PlanSettings
from helpers import randomize


class ScaleByWidth(nn.Module):
    """Branch ``a`` divides by sqrt of its own channel count: a value no trace can follow."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)
        self.c, self.d = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 4, 1)

    def forward(self, x):
        h = self.a(x)
        h = h / math.sqrt(h.shape[1])
        return self.b(h) + self.d(self.c(x))


def _setup():
    model = randomize(ScaleByWidth().eval(), seed=7).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    return model, x, analyze_model(model, (x,))


def test_mismatching_group_is_excluded_and_reported():
    model, x, dg = _setup()
    assert {g.root for g in dg.prunable_groups} == {"a", "c"}  # the trace cannot see the scale
    res = prune_model(model, (x,), dg, PlanSettings(ratio=0.5), latency=False)
    assert list(res.excluded) == ["a"] and "channel count" in res.excluded["a"]
    assert res.verify.passed and res.verify.expected_exact and res.verify.max_rel_diff < 1e-12
    assert res.model.a.out_channels == 8 and res.model.c.out_channels == 3
    assert res.report(dg)["excluded_groups"] == res.excluded
    (a,) = [g for g in dg.groups if g.root == "a"]
    assert not a.prunable.any() and "channel count" in a.blocked_reasons[0]


def test_without_exclusion_the_mismatch_is_an_error():
    model, x, dg = _setup()
    with pytest.raises(VerificationError, match="MISMATCH"):
        prune_model(model, (x,), dg, PlanSettings(ratio=0.5), latency=False,
                    exclude_mismatches=False)


def test_cli_reports_excluded_group(tmp_path, capsys):
    import main as entry
    f = tmp_path / "scale.py"
    f.write_text("import math, torch\nfrom torch import nn\n"
                 "class M(nn.Module):\n"
                 "    def __init__(self):\n        super().__init__()\n"
                 "        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)\n"
                 "    def forward(self, x):\n        h = self.a(x)\n"
                 "        return self.b(h / math.sqrt(h.shape[1]))\n"
                 "def make():\n    torch.manual_seed(0)\n    return M()\n")
    rc = entry.main(["prune", f"{f}:make", "--trust", "--input-shape", "1,3,4,4", "--no-latency",
                     "-o", str(tmp_path / "out.pt"), "--trust"])
    out = capsys.readouterr().out
    assert rc == 0 and "excluded group a:" in out
