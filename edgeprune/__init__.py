"""edgeprune: prune while training, rebuild smaller, export to ONNX/INT8, measure on edge CPUs."""

__version__ = "0.1.0"
