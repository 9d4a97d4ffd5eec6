"""ONNX in and out: the importer (importer, build, ops, shape_ops), the exporter and its
onnxruntime check (export, names), and the oracle on the original file (oracle)."""
