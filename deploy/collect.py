"""Split a device's `edgeprune bench --json` file into RUN/bench/<label>-<variant>.json.

    python deploy/collect.py DEVICE.json RUN_DIR

That is the layout `edgeprune bench` writes on the host when a bundle sits in a run directory,
so `edgeprune report RUN` shows the device rows beside the host's. Rows are renamed
<run>/<variant> as on the host (on the device the bundle is just /bundle). Needs only the
standard library.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def safe_label(text: str) -> str:
    """The same file-name-safe label as edgeprune.bench.settings.safe_label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "host"


def collect(device_json: Path, run_dir: Path) -> list[Path]:
    """Write one file per benchmarked variant; return their paths."""
    try:
        report = json.loads(Path(device_json).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"collect: cannot read {device_json} ({e}); the device run failed?") from None
    rows = report.get("results") or []
    if not rows:
        raise SystemExit(f"collect: {device_json} has no results; see the device's bench output.")
    label = safe_label(report.get("settings", {}).get("label") or report.get("machine", {}).get("label") or "device")
    out_dir = Path(run_dir) / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for row in rows:
        variant = row.get("variant") or str(row.get("name", "model")).rsplit("/", 1)[-1]
        row = dict(row, name=f"{Path(run_dir).resolve().name}/{variant}")
        path = out_dir / f"{label}-{safe_label(variant)}.json"
        path.write_text(json.dumps(dict(report, results=[row]), indent=2) + "\n")
        written.append(path)
    return written


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for path in collect(Path(sys.argv[1]), Path(sys.argv[2])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
