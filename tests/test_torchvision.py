"""Every torchvision classification family: traced, pruned at ratio 0.5 to a real FLOPs reduction,
forward OK, zeroed-group oracle exact where the math allows (approximate plans carry reasons).

Each case runs in its own interpreter with a 12 GB address-space cap (see helpers.run_isolated),
so a blow-up fails one case, not the machine. Heavy families are marked ``slow`` (deselected by
default; run them with ``pytest -m slow tests/test_torchvision.py``).
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import run_isolated  # noqa: E402
from tv_cases import ALL, SIZES  # noqa: E402

# families whose every op is exactly prunable (no LayerNorm / attention statistics)
EXACT = {"resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "densenet121", "vgg11_bn",
         "alexnet", "squeezenet1_0", "googlenet", "inception_v3", "mobilenet_v2",
         "mobilenet_v3_small", "mobilenet_v3_large", "mnasnet0_5", "shufflenet_v2_x0_5",
         "efficientnet_b0", "efficientnet_v2_s", "regnet_y_400mf", "regnet_x_400mf"}
# quick enough for the default run (~4 min on 2 cores in total)
FAST = {"resnet18", "squeezenet1_0", "googlenet", "mobilenet_v3_small", "shufflenet_v2_x0_5",
        "mnasnet0_5"}


def _param(name):
    return pytest.param(name, marks=() if name in FAST else (pytest.mark.slow,), id=name)


@pytest.mark.parametrize("name", [_param(n) for n in ALL])
def test_torchvision_family(name):
    r = run_isolated("tv_cases", "tv_case", {"name": name, "size": SIZES[name]}, timeout=1200)
    f0, f1 = r["flops"]
    p0, p1 = r["params"]
    # every family loses ~3/4 of its FLOPs at ratio 0.5: CNNs, and since attention modules are
    # traced as one op (core.adapters.torchvision_attention) also ViT, Swin and MaxViT (heads + MLP + stream)
    limit = 0.75
    assert f1 <= limit * f0, f"{name}: FLOPs only {f0:.3g} -> {f1:.3g} at ratio 0.5"
    assert p1 < p0
    assert r["prunable_groups"] > 0
    if name in EXACT:
        assert r["exact"], f"{name}: expected an exact plan, got reasons {r['approx_reasons']}"
    if not r["exact"]:
        assert r["approx_reasons"], f"{name}: approximate without a reason"
