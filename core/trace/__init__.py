"""Tracing: run the model once under a TorchFunctionMode and label every tensor dimension with channel atoms."""
