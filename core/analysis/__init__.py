"""Coupled groups from the traced couplings, the dependency graph, and shape probes on a weightless copy."""
