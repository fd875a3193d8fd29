"""Export a trained run: PyTorch -> ONNX (checked) -> simplified -> INT8 -> device bundle.

`export_run(run_dir, **options)` is the whole stage as one function (see pipeline.py and
docs/export.md); the modules here each do one step and take and return plain data.
"""

from __future__ import annotations


def export_run(run_dir, **options) -> dict:
    """Export the run in `run_dir`; returns the summary dict (also in RUN/export/parity.json)."""
    from edgeprune.export.pipeline import export_run as _export_run

    return _export_run(run_dir, **options)


__all__ = ["export_run"]
