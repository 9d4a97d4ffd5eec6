"""PruneStudio engine: DepGraph-style structural pruning for any PyTorch model (no Qt here)."""
