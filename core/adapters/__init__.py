"""Model families described to the ops and prune registries: attention specs, Hugging Face, RNNs, graph layers, norms."""
