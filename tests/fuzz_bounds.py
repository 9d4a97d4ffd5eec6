"""The stated bounds of approximate plans in the fuzzing property (tests/fuzz_models.py)."""


#: Approximate plans: the oracle's relative difference (max |zeroed - pruned| / max |zeroed|) must
#: stay below a bound per reason (the reason's text after the op's name). Removing channels that a
#: statistic is taken over rescales what follows; measured on conv -> norm -> relu -> conv networks
#: at ratios 0.1-0.8 the worst was 0.75 (softmax), 0.64 (layer_norm), 0.55 (group_norm), 0.52
#: (mean); the bound leaves 2.5x room. A coupling error or a broken model goes far beyond, and a
#: new reason must be given a bound here before the property accepts it.
APPROXIMATE_BOUNDS = {
    "normalisation statistics are computed over the pruned channels": 2.0,  # layer_norm
    "a single norm group: statistics are computed over the pruned channels": 2.0,  # group_norm
    "statistic over pruned channels": 2.0,  # mean / var / std over channels
    "normalises over pruned channels": 2.0,  # softmax / log_softmax over channels
    "normalises across neighbouring channels": 2.0,  # local_response_norm
    "sum over pruned channels": 2.0,
}


def check_approximate(rep) -> None:
    """An approximate plan stays within the bound of its loosest reason (every reason known)."""
    assert rep.approximate_reasons, "approximate plan without a reason"
    kinds = {r.split(": ", 1)[-1] for r in rep.approximate_reasons}
    unknown = sorted(kinds - set(APPROXIMATE_BOUNDS))
    assert not unknown, f"approximate reasons without a stated bound (APPROXIMATE_BOUNDS): {unknown}"
    bound = max(APPROXIMATE_BOUNDS[k] for k in kinds)
    assert rep.max_rel_diff <= bound, (
        f"approximate plan off by {rep.max_rel_diff:.3g} (relative), beyond the bound {bound:g} of "
        f"{sorted(kinds)}: {rep.message}")
