"""apply_kept checks every tensor's kept indices against that tensor's own size, also when several
tensors are given the same indices (they are converted once)."""
import pytest
import torch
from torch import nn

from core.errors import PlanError
from core.prune.apply import apply_kept


def _net():
    return nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3))


@pytest.mark.parametrize("keep", [[0, 5], [-1, 2], [0, 9]])
def test_indices_outside_a_tensor_are_refused(keep):
    # 0.weight (6 rows) could take [0, 5]; 1.weight has 3 rows
    kept = {"0.weight": {0: keep if keep[0] >= 0 and keep[1] < 6 else [0, 1]}, "1.weight": {0: keep}}
    with pytest.raises(PlanError, match="1.weight dim 0"):
        apply_kept(_net(), kept)


def test_shared_indices_slice_every_tensor():
    net = _net()
    keep = [0, 2]
    out = apply_kept(net, {"0.weight": {0: keep}, "0.bias": {0: list(keep)}, "1.weight": {1: keep}})
    assert torch.equal(out[0].weight, net[0].weight[[0, 2]])
    assert torch.equal(out[0].bias, net[0].bias[[0, 2]])
    assert torch.equal(out[1].weight, net[1].weight[:, [0, 2]])
    assert out[0].out_features == 2 and out[1].in_features == 2
