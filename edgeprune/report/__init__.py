"""The comparison a person reads: one table (and figures) across runs, variants and machines,
built only from the JSON artifacts of each run directory. Torch-free.

One row per (run, variant, machine). Variants are the float ONNX model and every INT8 recipe in
export/parity.json; machines are the `machine` blocks of RUN/bench/*.json. Every value is also
given as a ratio to the baseline's float model, on the same machine for machine-bound figures.

The package, one concern per module (each imports only the ones above it):
`load` reads run directories, `rows` makes the comparison's rows, `plots` draws the figures,
`text` writes values and the terminal and markdown reports, `html` the HTML page, and `stage`
builds the report and writes its files.
"""

from edgeprune.report.html import to_html
from edgeprune.report.load import Run, load_run, load_runs
from edgeprune.report.plots import FIGURES, draw_all
from edgeprune.report.rows import COLUMNS, FLOAT, budget_of, build_rows, machine_key
from edgeprune.report.stage import REPORT_FORMAT, build_report, guard_rows, write_report
from edgeprune.report.text import (
    DASH,
    HEADERS,
    LEGEND,
    batch_table,
    cell,
    fmt,
    fmt_ratio,
    label_of,
    render,
    table_cells,
    test_acc,
    to_markdown,
)

__all__ = [
    "COLUMNS",
    "DASH",
    "FIGURES",
    "FLOAT",
    "HEADERS",
    "LEGEND",
    "REPORT_FORMAT",
    "Run",
    "batch_table",
    "budget_of",
    "build_report",
    "build_rows",
    "cell",
    "draw_all",
    "fmt",
    "fmt_ratio",
    "guard_rows",
    "label_of",
    "load_run",
    "load_runs",
    "machine_key",
    "render",
    "table_cells",
    "test_acc",
    "to_html",
    "to_markdown",
    "write_report",
]
