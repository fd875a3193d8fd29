"""A latency model measured here, for a model in hand (torch): probes, timed with onnxruntime at the
given threads and batch, fitted. What `edgeprune train --target-latency-ms` does when no
--latency-table from the device is given, and what the Python API offers:

    lm = host_latency_model(model, example_inputs, "latency/", threads=1)
    pruner = edgeprune.Pruner(model, example_inputs, optimizer, epochs=30,
                              target_latency_ms=0.05, latency_model=lm)
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.latency.model import LatencyModel, check_table, read_table
from edgeprune.prune.schedule import PruneSchedule

TABLE = "table.json"


def host_latency_model(
    model,
    example_inputs,
    out_dir: Path,
    threads: int | None = 1,
    batch: int = 1,
    n: int | None = None,
    round_to: int = PruneSchedule.round_to,
    min_width: int = PruneSchedule.min_width,
    meta: dict | None = None,
    progress=lambda s: None,
) -> tuple[LatencyModel, Path]:
    """(fitted latency model, its table's path): `n` probes of `model` at sampled widths (default: enough
    for a per-group fit, edgeprune.latency.probes.default_count) written to
    OUT_DIR/probes and timed here into OUT_DIR/table.json. A table already there for this model,
    threads and batch (a resumed run) is reused, not measured again."""
    from edgeprune.latency.probes import make_probes, model_fingerprint
    from edgeprune.latency.table import measure_probes
    from edgeprune.run import atomic_write_json

    out_dir = Path(out_dir)
    table_path = out_dir / TABLE
    fp = model_fingerprint(model, example_inputs)
    if table_path.is_file():
        table = read_table(table_path)
        check_table(table, fp, threads, batch, name=str(table_path))
        return LatencyModel.fit(table, name=str(table_path)), table_path
    probes = out_dir / "probes"
    made = make_probes(model, example_inputs, None, probes, n=n, round_to=round_to, min_width=min_width, meta=meta)
    count = len(made["probes"])
    progress(f"timing {count} latency probes with onnxruntime ({threads or 'all'} thread(s), batch {batch})")
    table = measure_probes(  # all in one interleaved set: drift between sets would not be interleaved away
        probes, threads=threads, batch=batch, command=["edgeprune", "train (latency table)"], at_once=count
    )
    atomic_write_json(table_path, table)
    return LatencyModel.fit(table, name=str(table_path)), table_path
