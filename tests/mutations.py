"""A mutation check of the test suite: hand-made bugs, applied one at a time, each of which the
suite must catch. Not part of the default test run (pytest collects test_*.py only).

    python tests/mutations.py                 # all mutations; writes tests/mutations_result.json
    python tests/mutations.py --only adam-exp-avg-sq-not-sliced

Each mutation is applied to a fresh copy of the checkout's tracked files (the working tree is never
touched), then the test files that guard that code run there with `pytest -x`; a mutation is
*killed* when a test fails, and the first failing test is recorded. A mutation whose text is not
found in the code is an error (the code moved on: update the mutation), never a pass.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = Path(__file__).with_name("mutations_result.json")


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repo root
    old: str  # must occur exactly once
    new: str
    tests: tuple[str, ...]  # test files (or node ids) that guard this code
    why: str


MUTATIONS = [
    Mutation(
        "keep-best-any-epoch",
        "edgeprune/train.py",
        "        if self.pruner is not None and epoch < self.schedule.last_prune_epoch:",
        "        if False:",
        ("tests/test_keep_best.py",),
        "--keep-best may keep a wider epoch from before the last pruning step",
    ),
    Mutation(
        "keep-best-last-of-equals",
        "edgeprune/train.py",
        '        if self.best is None or key > (self.best["val_accuracy"], -self.best["val_loss"]):',
        '        if self.best is None or val_accuracy >= self.best["val_accuracy"]:',
        ("tests/test_keep_best.py",),
        "--keep-best settles equal validation accuracies by the later epoch, not the lower validation loss",
    ),
    Mutation(
        "resume-forgets-the-generator",
        "edgeprune/train.py",
        '            torch.set_rng_state(ckpt["rng"])',
        "            pass",
        ("tests/test_crash.py::test_a_resumed_run_draws_the_same_dropout_as_an_uninterrupted_one",),
        "a resumed run reseeds torch's generator, so its dropout draws differ from an uninterrupted run's",
    ),
    Mutation(
        "word-dropout-hits-pads",
        "edgeprune/models/bilstm.py",
        "            dropped = (torch.rand(tokens.shape, device=tokens.device) < self.word_dropout) & (tokens > UNK)",
        "            dropped = torch.rand(tokens.shape, device=tokens.device) < self.word_dropout",
        ("tests/test_text.py",),
        "word dropout turns pads into <unk>, which lengthens every row",
    ),
    Mutation(
        "embeddings-in-file-order",
        "edgeprune/models/embeddings.py",
        "        table.weight[rows] = torch.tensor([found[int(i)] for i in rows], dtype=table.weight.dtype)",
        "        table.weight[rows] = torch.tensor(list(found.values()), dtype=table.weight.dtype)",
        ("tests/test_embeddings.py",),
        "word vectors written in the file's order, not onto their own tokens' rows",
    ),
    Mutation(
        "embeddings-write-the-pad-row",
        "edgeprune/models/embeddings.py",
        "    found.pop(pad, None)\n",
        "",
        ("tests/test_embeddings.py",),
        "a <pad> line of the file overwrites the padding row, which must stay zero",
    ),
    Mutation(
        "macs-budget-ranked-by-score-alone",
        "edgeprune/prune/pruner.py",
        "per_cost = self.budget.per_cost",
        'per_cost = self.budget.unit == "latency"',
        ("tests/test_latency_budget.py",),
        "a MACs budget ranks notches by mean score, not score per MAC saved (the ResNet-20 run that lost 0.37 points)",
    ),
    Mutation(
        "macs-budget-ranked-by-normalized-scores",
        "edgeprune/prune/pruner.py",
        "rank = float(raw[g.name][leaving].sum()) / saved",
        "rank = float(norm[g.name][leaving].sum()) / saved",
        ("tests/test_latency_budget.py",),
        "a MACs budget weighs units by per-layer normalized scores: a head counts like one FFN neuron (MiniLM lost "
        "every head in one step)",
    ),
    Mutation(
        "a-step-empties-any-number-of-sublayers",
        "edgeprune/prune/pruner.py",
        "EMPTIED_PER_STEP = 1\n",
        "EMPTIED_PER_STEP = 1000\n",
        ("tests/test_hf.py",),
        "one pruning step may empty every attention at once (the whole-split MiniLM run's first tries collapsed)",
    ),
    Mutation(
        "bn-recalibration-exponential",
        "edgeprune/prune/bn.py",
        "        m.momentum = None  # cumulative moving average: every batch counts the same",
        "        pass",
        ("tests/test_bn.py",),
        "BatchNorm recalibration keeps momentum 0.1: the statistics lean on the reset values (0 and 1)",
    ),
    Mutation(
        "atomic-write-private-mode",
        "edgeprune/run.py",
        "        os.fchmod(fd, 0o666 & ~umask)",
        "        pass",
        ("tests/test_deploy.py::test_files_edgeprune_writes_are_readable_by_the_images_user",),
        "atomic writes leave mkstemp's 0600: the runtime image's user cannot read a mounted bundle",
    ),
    Mutation(
        "adam-exp-avg-sq-not-sliced",
        "edgeprune/prune/surgery.py",
        "            v = v.index_select(dim, idx.to(v.device))\n        state[key] = v",
        "            v = v.index_select(dim, (idx if key != 'exp_avg_sq' else torch.arange(len(idx))).to(v.device))"
        "\n        state[key] = v",
        ("tests/test_prune.py", "tests/test_trace.py"),
        "Adam's second moment keeps the first entries instead of the survivors' (same shape, wrong values)",
    ),
    Mutation(
        "resized-in-place-not-replaced",
        "edgeprune/prune/surgery.py",
        "        if name in params:\n            new = nn.Parameter(data, requires_grad=t.requires_grad)",
        "        if False:\n            new = nn.Parameter(data, requires_grad=t.requires_grad)",
        ("tests/test_api.py",),
        "parameters are resized through .data: the next backward meets autograd's cached old shape",
    ),
    Mutation(
        "macs-ignore-uses",
        "edgeprune/prune/cost.py",
        "return int(round(sum(math.prod(shapes[k]) * f for k, f in self.macs_factors.items() if k in shapes)))",
        "return int(round(sum(math.prod(shapes[k]) for k, f in self.macs_factors.items() if k in shapes)))",
        ("tests/test_api.py",),
        "MACs count each weight once, not once per output position, token or step",
    ),
    Mutation(
        "latency-budget-ranks-by-score-alone",
        "edgeprune/prune/pruner.py",
        "rank = float(norm[g.name][leaving].sum()) / saved if saved > 0 else math.inf",
        "rank = float(norm[g.name][leaving].mean())",
        ("tests/test_latency_budget.py",),
        "a latency budget removes the lowest-scored units, not the least loss per millisecond saved",
    ),
    Mutation(
        "concat-offset-ignored",
        "edgeprune/prune/groups.py",
        "return (s.offset + units.view(-1, 1) * s.block + torch.arange(s.block).view(1, -1)).reshape(-1)",
        "return (units.view(-1, 1) * s.block + torch.arange(s.block).view(1, -1)).reshape(-1)",
        ("tests/test_trace.py",),
        "a consumer of a concatenation reads every piece at offset 0",
    ),
    Mutation(
        "lstm-gate-offset-off-by-one",
        "edgeprune/prune/groups.py",
        "return (torch.arange(4).view(4, 1) * width + units.view(1, -1)).reshape(-1)",
        "return (torch.arange(4).view(4, 1) * max(width - 1, 1) + units.view(1, -1)).reshape(-1)",
        ("tests/test_prune.py",),
        "the four LSTM gate blocks are taken one row too early (gate g starts at g*(width-1))",
    ),
    Mutation(
        "onnx-tolerance-x100",
        "edgeprune/export/parity.py",
        "ONNX_TOLERANCE = 1e-4",
        "ONNX_TOLERANCE = 1e-2",
        ("tests/test_export.py",),
        "export accepts an ONNX model 100x further from torch than documented",
    ),
    Mutation(
        "int8-accuracy-delta-not-computed",
        "edgeprune/export/pipeline.py",
        'row["acc_drop_points"] = round((simp_row["accuracy"] - row["accuracy"]) * 100, 4)',
        'row["acc_drop_points"] = 0.0',
        ("tests/test_export.py",),
        "the INT8 model's accuracy change against float is reported as 0",
    ),
    Mutation(
        "taylor-score-ignores-gradient",
        "edgeprune/prune/importance.py",
        "return None if p.grad is None else p.detach() * p.grad",
        "return None if p.grad is None else p.detach().abs()",
        ("tests/test_prune.py", "tests/test_pruning_accuracy.py"),
        "scores become weight magnitudes: the loss contribution is ignored",
    ),
    Mutation(
        "connection-mask-not-on-gradients",
        "edgeprune/prune/masks.py",
        "self._handles.append(p.register_hook(lambda g, m=m: g * m))",
        "pass",
        ("tests/test_connections.py", "tests/test_prune.py"),
        "masked weights get their gradients back and grow again",
    ),
    Mutation(
        "bilstm-padding-reaches-prediction",
        "edgeprune/models/bilstm.py",
        'return self.classifier(x.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1))',
        "return self.classifier(x.amax(dim=1))",
        ("tests/test_text.py",),
        "max over time reads the pad positions again",
    ),
    Mutation(
        "bilstm-backward-reads-pads-first",
        "edgeprune/models/bilstm.py",
        "return torch.where(valid, lengths - 1 - pos, pos), valid",
        "return tokens.size(1) - 1 - pos, valid",
        ("tests/test_text.py",),
        "the backward LSTM reverses the whole padded row again, so it reads the pads before the tokens",
    ),
    Mutation(
        "removed-token-keeps-a-stale-row",
        "edgeprune/prune/groups.py",
        "return torch.where(out < 0, new_pos[g.fallback], out).to(index_map.device)",
        "return torch.where(out < 0, new_pos[g.fallback] + 1, out).to(index_map.device)",
        ("tests/test_text.py",),
        "a removed vocabulary row's tokens are sent to the row after <unk> instead of <unk>",
    ),
    Mutation(
        "trim-padding-cuts-a-token",
        "edgeprune/data/loader.py",
        "return x[:, : int(used.max()) + 1 if len(used) else 1]",
        "return x[:, : int(used.max()) if len(used) else 1]",
        ("tests/test_text.py",),
        "batch trimming drops the last real token of the longest row",
    ),
    Mutation(
        "resume-ignores-checkpoint-history",
        "edgeprune/rundir.py",
        'saved = ckpt.get("history")',
        "saved = None",
        ("tests/test_crash.py",),
        "resume trusts history.jsonl instead of the checkpoint's copy (a kill between the writes loses a line)",
    ),
    Mutation(
        "normalize-by-max-not-mean",
        "edgeprune/prune/importance.py",
        "mean = ref.mean() if ref.numel() else scores.new_tensor(0.0)",
        "mean = ref.max() if ref.numel() else scores.new_tensor(0.0)",
        ("tests/test_prune.py", "tests/test_connections.py"),
        "the threshold is read against the layer's best unit instead of its average",
    ),
]


def copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def apply(m: Mutation, root: Path) -> None:
    path = root / m.path
    text = path.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"mutation {m.name}: {m.old!r} occurs {text.count(m.old)} times in {m.path}; update it")
    path.write_text(text.replace(m.old, m.new))


def first_failure(output: str) -> str | None:
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return found.group(1) if found else None


def run_one(m: Mutation, python: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgeprune-mut-") as tmp:
        root = Path(tmp)
        copy_checkout(root)
        apply(m, root)
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE", *m.tests],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - t0
    killed = proc.returncode == 1
    return {
        "name": m.name,
        "path": m.path,
        "why": m.why,
        "tests": list(m.tests),
        "killed": killed,
        "killed_by": first_failure(proc.stdout) if killed else None,
        "pytest_exit": proc.returncode,
        "seconds": round(seconds, 1),
        "tail": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", help="mutation names")
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    results = []
    for m in chosen:
        r = run_one(m, sys.executable)
        state = f"killed by {r['killed_by']}" if r["killed"] else f"SURVIVED (pytest exit {r['pytest_exit']})"
        print(f"{m.name:<40} {state}  [{r['seconds']} s]", flush=True)
        r["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        results.append(r)
    if args.only and RESULT.exists():  # refresh these rows of the full run's record
        done = {r["name"]: r for r in json.loads(RESULT.read_text())["mutations"]}
        done.update({r["name"]: r for r in results})
        results = [done[m.name] for m in MUTATIONS if m.name in done]
    if not args.only or RESULT.exists():
        RESULT.write_text(
            json.dumps(
                {
                    "command": "python tests/mutations.py",
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "commit": subprocess.run(
                        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
                    ).stdout.strip(),
                    "killed": sum(r["killed"] for r in results),
                    "total": len(results),
                    "mutations": results,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {RESULT}")
    return 0 if all(r["killed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
