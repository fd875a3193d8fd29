"""A latency model of one architecture on one machine: probes (the model at sampled widths, made
on the host with torch), a table of their measured latencies (made by `edgeprune bench
--latency-probes` with onnxruntime alone, on the host or on the device) and a fit that predicts
milliseconds from per-weight-tensor MACs (numpy alone). See docs/bench.md, "Latency tables".

This package imports neither torch nor onnx: `edgeprune.latency.model` and `edgeprune.latency.table`
(which times probes with bench/'s machinery) run in the runtime-only install; `edgeprune.latency.probes`
and `edgeprune.latency.host` (torch) are imported only by whoever makes probes.
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
