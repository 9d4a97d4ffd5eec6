"""torchvision cases, run in a capped subprocess by tests/test_torchvision.py and the benchmark."""
from __future__ import annotations

import time

import torch
import torchvision

from helpers import check_oracle, randomize, to_jsonable
from core.pipeline import analyze_model
from core.plan.planner import PlanSettings

# name -> smallest comfortable input side for the correctness tests
SIZES = {
    "resnet18": 64, "resnet50": 64, "resnext50_32x4d": 64, "wide_resnet50_2": 64,
    "densenet121": 64, "vgg11_bn": 64, "alexnet": 64, "squeezenet1_0": 64, "googlenet": 64,
    "inception_v3": 139, "mobilenet_v2": 64, "mobilenet_v3_small": 64, "mobilenet_v3_large": 64,
    "mnasnet0_5": 64, "shufflenet_v2_x0_5": 64, "efficientnet_b0": 64, "efficientnet_v2_s": 64,
    "regnet_y_400mf": 64, "regnet_x_400mf": 64, "convnext_tiny": 64, "vit_b_16": 224,
    "swin_t": 64, "maxvit_t": 224,
}
ALL = list(SIZES)


def build(name: str, num_classes: int = 10) -> torch.nn.Module:
    kw = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        kw.update(aux_logits=False, init_weights=False)
    m = getattr(torchvision.models, name)(**kw)
    return m.eval()


def tv_case(name: str, size: int | None = None, ratio: float = 0.5, seed: int = 0,
            dtype: str = "float64", tol: float = 1e-5, train_check: bool = True) -> dict:
    """Build, randomise, analyse, prune at ``ratio``, check with the oracle; returns a summary.

    float64 by default: pruning half the channels of an early layer puts every later BatchNorm's
    running statistics off, so deep nets (EfficientNetV2: 1e13 activations) become chaotic and
    float32 rounding alone gives relative differences near 1 between two correct models.
    """
    torch.manual_seed(seed)
    size = size or SIZES[name]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    model = randomize(build(name), seed, inputs=x)
    if dtype == "float64":
        model, x = model.double(), x.double()
    t0 = time.perf_counter()
    dg = analyze_model(model, x)
    t_an = time.perf_counter() - t0
    dg_, res = check_oracle(model, x, PlanSettings(ratio=ratio), tol=tol, expect_exact=None,
                            train_check=train_check, dg=dg)
    rep = res.verify
    return to_jsonable({
        "model": name, "size": size, "groups": len(dg.groups),
        "prunable_groups": len(dg.prunable_groups), "nodes": dg.graph.number_of_nodes(),
        "blocked_ops": dg.blocked_ops,
        "params": [res.before.params, res.after.params], "flops": [res.before.flops, res.after.flops],
        "exact": rep.expected_exact, "max_rel_diff": rep.max_rel_diff,
        "approx_reasons": rep.approximate_reasons[:5], "analysis_s": t_an,
        "seconds": {**dg.seconds, **res.seconds},
    })
