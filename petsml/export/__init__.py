"""Shipping a model to phones and edge boxes: ONNX export, its pre-processing contract, int8
quantization, parity with PyTorch, size and latency (no MLflow: the registry side is
``petsml.tracking.edge_export``).

``export_and_measure(model_dir, out_dir)`` (:mod:`petsml.export.measure`) is the entry point.
"""
