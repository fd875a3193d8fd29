"""benchmarks/latency_front_pairs.py: the pairing of latency-at-X runs with their X (no timing here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import BENCHMARKS, benchmark_module


@pytest.fixture(scope="module")
def pairs_mod():
    with benchmark_module("latency_front_pairs") as mod:
        yield mod


def point(name, acc, p50, params):
    return {"name": name, "accuracy": acc, "p50_ms": p50, "params": params, "test_n": 100}


def test_pairs_twin_with_its_match_only(pairs_mod):
    front = {
        "points": [
            point("baseline", 0.92, 0.05, 1000),
            point("params-0.1", 0.900, 0.0200, 100),
            point("latency-at-params-0.1", 0.903, 0.0198, 110),  # more accurate and faster: dominates
            point("macs-0.4", 0.905, 0.0240, 90),
            point("latency-at-macs-0.4", 0.906, 0.0250, 95),  # more accurate, slower: does not
            point("latency-6x", 0.95, 0.001, 1),  # no match: not a pair, even though it dominates all
        ]
    }
    pairs = {p["match"]: p for p in pairs_mod.pairs_of(front)}
    assert set(pairs) == {"params-0.1", "macs-0.4"}
    assert pairs["params-0.1"]["accuracy_diff_points"] == pytest.approx(0.3, abs=1e-9)
    assert pairs["params-0.1"]["p50_ratio"] == pytest.approx(0.0198 / 0.0200, rel=1e-12)
    assert pairs["params-0.1"]["twin_dominates"] and not pairs["params-0.1"]["same_model_size"]
    assert pairs["macs-0.4"]["accuracy_diff_points"] == pytest.approx(0.1, abs=1e-9)
    assert not pairs["macs-0.4"]["twin_dominates"]


def test_a_front_without_twins_is_one_sentence(tmp_path):
    f = tmp_path / "front.json"
    f.write_text(json.dumps({"points": [point("params-0.1", 0.9, 0.02, 100)], "machine": {}, "targets": {}}))
    r = subprocess.run(
        [sys.executable, str(BENCHMARKS / "latency_front_pairs.py"), str(f), "--name", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert "has no latency-at-X runs; make it with latency_front.py --match-latency." in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out.json").exists()


def test_front_labels_of_overlapping_runs_are_stacked():
    """latency_front.py's figure: runs at the same accuracy and nearly the same p50 (ResNet-20's
    latency-0.65xdense and latency-at-macs-0.5) get labels on different lines; distant runs do not."""
    with benchmark_module("latency_front") as mod:
        offsets = mod.label_offsets
    pts = [point("a", 0.9118, 0.2770, 1), point("b", 0.9118, 0.2840, 1), point("c", 0.9118, 0.2845, 1)]
    pts += [point("far-right", 0.9118, 0.3713, 1), point("higher", 0.9159, 0.2800, 1)]
    dy = offsets(pts)
    assert len(set(dy[:3])) == 3  # three labels that would overlap: three lines
    # a run a whole p50 span to the right, or the whole accuracy span higher: its own line
    assert dy[3] == dy[0] and dy[4] == dy[0]
