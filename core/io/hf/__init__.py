"""Hugging Face: the hf: source, pruned model directories, and checkpoints larger than memory
(shards read and written one tensor at a time, the streamed prune)."""
