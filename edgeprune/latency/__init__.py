"""A latency model of one architecture on one machine: probes (the model at sampled widths, made
on the host with torch), a table of their measured latencies (made by `edgeprune bench
--latency-probes` with onnxruntime alone, on the host or on the device) and a fit that predicts
milliseconds from per-weight-tensor MACs (numpy alone). See docs/bench.md, "Latency tables".

This package imports neither torch nor onnx: `edgeprune.latency.model` runs in the runtime-only
install; `edgeprune.latency.probes` (torch) is imported only by whoever makes probes.
"""

from edgeprune.latency.model import (
    TABLE_FORMAT,
    TABLE_VERSION,
    LatencyModel,
    check_table,
    fingerprint,
    load_latency_model,
    read_table,
)

__all__ = [
    "TABLE_FORMAT",
    "TABLE_VERSION",
    "LatencyModel",
    "check_table",
    "fingerprint",
    "load_latency_model",
    "read_table",
]
