"""Property-based fuzzing of the pruning engine on random architectures (issue 6).

For every generated network (tests/fuzz_models.py: convs plain/grouped/depthwise/transposed,
linears, Batch/Group/Layer/InstanceNorm, activations, residual add, mul, concat, split/chunk,
slicing, flatten/reshape, permute, channel and pixel shuffles, pooling, upsampling, several inputs
and outputs), a random ratio in [0.1, 0.8], a random criterion (taylor with a calibration batch)
and uniform or global ranking: prune with analyze_model + prune_model(latency=False, verify=True)
and require that the pruned model runs with unchanged output shapes, the oracle passes (exactly,
max rel diff < 1e-4, where the engine calls the plan exact; below the bound stated per reason in
tests/fuzz_bounds.py where it does not), no group is excluded by the oracle's mismatch diagnosis
(a coupling bug it would absorb; the generator makes no value-from-shape pattern), every kept
parameter equals the original at the kept indices, the original is unchanged, and something is
removed whenever a prunable group allows it at that ratio.

``FUZZ_EXAMPLES`` (default 40) sets the number of examples; the long run is
benchmarks/fuzz_long.py. Shrunk failures live on as tests/test_fuzz_regressions.py.
"""
from __future__ import annotations

import os
import sys

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_models as fm  # noqa: E402

N = int(os.environ.get("FUZZ_EXAMPLES", "40"))


@settings(max_examples=N, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fm.cases())
def test_random_network_prunes_exactly(case):
    spec, ratio, criterion, global_ranking, seed = case
    fm.run_case(spec, ratio, criterion, global_ranking, seed)


@settings(max_examples=max(N // 4, 5), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fm.net_specs(max_ops=6))
def test_generated_network_is_consistent(spec):
    """The generator itself: every spec builds, runs, and has the shapes it claims."""
    model = fm.build(spec)
    args = spec.make_inputs()
    got = [tuple(v.shape) for v in model.values(*args)]
    assert got == [(fm.BATCH, *v.shape) for v in spec.all_vals()], f"{spec}\nshapes: {got}"
    outs = model(*args)
    assert len(outs if isinstance(outs, tuple) else (outs,)) == len(spec.outputs)
