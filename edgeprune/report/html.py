"""report.html: one self-contained page (styles inline, figures embedded as data: URLs)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from edgeprune.report.plots import FIGURES
from edgeprune.report.rows import COLUMNS, FLOAT
from edgeprune.report.text import (
    BATCH_HEADERS,
    BATCH_LEGEND,
    DASH,
    GUARD_HEAD,
    HEADERS,
    LEGEND,
    batch_table,
    fmt,
    fmt_ratio,
    guard_caption,
    test_acc,
)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
  max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f5f5f5}td.l,th.l{text-align:left}tr.ref{font-weight:600;background:#fafaf0}
.ratio{color:#777;font-size:12px}.pareto{color:#b5651d}.note{color:#555}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f4f4f4;padding:0 3px}
"""


def _html_cell(row: dict, key: str, kind: str) -> str:
    text = html.escape(fmt(row[key], kind))
    ratio = row["ratios"].get(key)
    if row["reference"] or ratio is None:
        return text
    return f"{text} <span class=ratio>({html.escape(fmt_ratio(ratio))})</span>"


def _html_runs(result: dict) -> str:
    e = html.escape
    head = (
        "run",
        "role",
        "dataset",
        "model",
        "epochs",
        "limit",
        "pruning",
        "test acc (n)",
        "test macro-F1",
        "params",
        "train s",
    )
    out = [
        "<h2>Runs</h2><table><tr>"
        + "".join(f"<th class={'l' if i < 4 or i == 6 else 'r'}>{h}</th>" for i, h in enumerate(head))
        + "</tr>"
    ]
    for r in result["runs"]:
        m = r["metrics"] or {}
        cells = [
            r["name"],
            r["role"],
            r["dataset"],
            r["model"],
            r["epochs"],
            r["limit"] if r["limit"] is not None else "all",
            r["pruning"],
            test_acc(m),
            fmt(m.get("test_f1"), "score"),
            fmt(m.get("params"), "int"),
            fmt(m.get("train_seconds"), "rate"),
        ]
        out.append(
            "<tr>"
            + "".join(f"<td{' class=l' if i < 4 or i == 6 else ''}>{e(str(c))}</td>" for i, c in enumerate(cells))
            + "</tr>"
        )
    return "".join(out) + "</table>"


def to_html(result: dict, out_dir: Path) -> str:
    """report.html, the figures already written in `out_dir` embedded, so the file stands alone."""
    e = html.escape
    p = [
        (
            f"<!doctype html><html><head><meta charset=utf-8><title>edgeprune report</title><style>{CSS}</style>"
            "</head><body><h1>edgeprune report</h1>"
        ),
        f"<p>Generated {e(result['generated'])} from "
        + ", ".join(f"<code>{e(r['path'])}</code> ({e(r['role'])})" for r in result["runs"])
        + ".</p>",
        _html_runs(result),
        *(
            f"<p>{e(guard_caption(r))}</p><table><tr>"
            + "".join(f"<th>{h}</th>" for h in GUARD_HEAD)
            + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in r["guard"])
            + "</table>"
            for r in result["runs"]
            if r.get("guard")
        ),
        "<h2>Comparison</h2><table><tr>"
        + "".join(f"<th class={'l' if i < 3 else 'r'}>{e(h)}</th>" for i, h in enumerate(HEADERS))
        + "</tr>",
    ]
    for row in result["rows"]:
        variant = (
            e(row["variant"])
            + (" <span class=pareto>*</span>" if row["pareto"] else "")
            + ("" if row["in_bundle"] or row["variant"] == FLOAT else " †")
        )
        cells = [e(row["run"]), variant, e(row["machine"] or DASH)] + [
            _html_cell(row, k, kind) for k, _, kind, _ in COLUMNS
        ]
        p.append(
            f"<tr{' class=ref' if row['reference'] else ''}>"
            + "".join(f"<td{' class=l' if i < 3 else ''}>{c}</td>" for i, c in enumerate(cells))
            + "</tr>"
        )
    p.append(f"</table><p class=note>{e(LEGEND)}</p>")
    batches = batch_table(result)
    if batches:
        p.append(
            "<h2>Larger batches</h2><table><tr>"
            + "".join(f"<th class={'l' if i < 3 else 'r'}>{e(h)}</th>" for i, h in enumerate(BATCH_HEADERS))
            + "</tr>"
        )
        for cells in batches:
            p.append(
                "<tr>" + "".join(f"<td{' class=l' if i < 3 else ''}>{e(c)}</td>" for i, c in enumerate(cells)) + "</tr>"
            )
        p.append(f"</table><p class=note>{e(BATCH_LEGEND)}</p>")
    if result["machines"]:
        p.append(
            "<h2>Machines</h2><table><tr><th class=l>machine</th><th class=l>CPU</th><th>cores</th>"
            "<th class=l>ISA</th><th class=l>onnxruntime</th><th class=l>emulated</th></tr>"
        )
        for name, m in result["machines"].items():
            p.append(
                f"<tr><td class=l>{e(name)}</td><td class=l>{e(str(m.get('cpu_model') or DASH))}</td>"
                f"<td>{e(str(m.get('cores_usable') or DASH))}</td>"
                f"<td class=l>{e(' '.join(m.get('isa') or []) or DASH)}</td>"
                f"<td class=l>{e(str(m.get('onnxruntime') or DASH))}</td>"
                f"<td class=l>{'yes' if m.get('emulated') else 'no'}</td></tr>"
            )
        p.append("</table>")
    if result["notes"]:
        p.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in result["notes"]) + "</ul>")
    p.append("<h2>Figures</h2>")
    for key, (file, title) in FIGURES.items():
        if result["figures"].get(key):
            data = base64.b64encode((out_dir / file).read_bytes()).decode()
            p.append(f"<h3>{e(title)}</h3><img alt='{e(title)}' src='data:image/png;base64,{data}'>")
        else:
            p.append(f"<p class=note>{e(title)}: {DASH} ({e(result['figure_notes'].get(key, 'not drawn'))})</p>")
    p.append("</body></html>\n")
    return "\n".join(p)
