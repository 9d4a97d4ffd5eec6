"""Op semantics: channel atoms, the registry of how channels flow through each torch op, and one module per op family."""
