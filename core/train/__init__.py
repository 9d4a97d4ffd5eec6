"""Data, evaluation, fine-tuning, sparse learning and sensitivity analysis."""
