"""Physical pruning (slice tensors, module updaters), the zeroed-group oracle and mismatch diagnosis."""
