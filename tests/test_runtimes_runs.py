"""benchmarks/runtimes_runs.py's file handling: the Fashion-MNIST test subset and the copied runs
(no training here; the runs themselves are made by the benchmark)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import benchmark_module
from PIL import Image


@pytest.fixture(scope="module")
def runs_mod():
    with benchmark_module("runtimes_runs") as mod:
        yield mod


def _png_folder(root: Path, per_class: int) -> Path:
    for split in ("train", "test"):
        for k, name in enumerate(("0-a", "1-b", "2-c")):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((4, 4), 10 * k + i, np.uint8), "L").save(root / split / name / f"{i:05d}.png")
    return root


def test_the_test_subset_links_k_images_per_class_and_the_whole_training_folder(runs_mod, tmp_path):
    from edgeprune.data import own
    from edgeprune.data.options import DataOptions

    src = _png_folder(tmp_path / "png", per_class=6)
    dst = runs_mod.subset_test_folder(src, per_class=2, seed=0)
    assert dst == tmp_path / "png-test2-seed0" and (dst / "train").resolve() == (src / "train").resolve()
    for cls in ("0-a", "1-b", "2-c"):
        links = sorted((dst / "test" / cls).iterdir())
        assert len(links) == 2 and all(p.resolve().parent == (src / "test" / cls).resolve() for p in links)
    before = (sorted(p.name for p in (dst / "test" / "0-a").iterdir()), (dst / "test").stat().st_mtime_ns)
    assert runs_mod.subset_test_folder(src, per_class=2, seed=0) == dst  # made once: not drawn again
    assert (sorted(p.name for p in (dst / "test" / "0-a").iterdir()), (dst / "test").stat().st_mtime_ns) == before
    index = own.resolve(str(dst), DataOptions())  # edgeprune reads it as any folder of images
    assert len(index.train.y) == 18 and len(index.test.y) == 6 and sorted(np.bincount(index.test.y)) == [2, 2, 2]
    with pytest.raises(SystemExit, match="holds 6 images, fewer than --test-per-class 7"):
        runs_mod.subset_test_folder(src, per_class=7, seed=0)


def test_a_run_is_copied_once_without_its_checkpoint_and_an_unfinished_one_is_refused(runs_mod, tmp_path):
    src = tmp_path / "demo" / "baseline"
    src.mkdir(parents=True)
    for name in ("config.json", "history.jsonl", "checkpoint.pt"):
        (src / name).write_text(name)
    with pytest.raises(SystemExit, match="is not a finished run"):
        runs_mod.copy_run(src, tmp_path / "runs" / "demo-dense")
    (src / "metrics.json").write_text("{}")
    (src / "model.pt").write_bytes(b"weights")
    got = runs_mod.copy_run(src, tmp_path / "runs" / "demo-dense")
    dst = tmp_path / "runs" / "demo-dense"
    assert got["skipped"] is None and sorted(p.name for p in dst.iterdir()) == [
        "config.json",
        "history.jsonl",
        "metrics.json",
        "model.pt",
    ]
    assert runs_mod.copy_run(src, dst)["skipped"] == "copied before"
    (src / "model.pt").write_bytes(b"other weights")
    with pytest.raises(SystemExit, match="holds another model"):
        runs_mod.copy_run(src, dst)


def test_the_pruned_lite0_run_is_the_dense_one_with_the_short_fine_tune_recipe(runs_mod, tmp_path):
    import argparse

    args = argparse.Namespace(
        bn_momentum=0.1, lite0_epochs=1, lite0_limit=1500, lr=1e-3, seed=0, threads=2, train_args="--batch-size 32",
        lite0_pruned_epochs=4, lite0_target_macs=0.4, lite0_prune_every=5,
    )  # fmt: skip
    paths = (tmp_path / "data", tmp_path / "w.pth", tmp_path / "lite0.py")
    dense = runs_mod.lite0_argv(args, *paths, 96)
    pruned = runs_mod.lite0_pruned_argv(args, *paths, 96, tmp_path / "lite0-96")
    assert "--no-prune" in dense and "--no-prune" not in pruned

    def flags(argv):  # every flag with its value (the argv holds no bare switch but --no-prune)
        return {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}

    d, p = flags([a for a in dense if a != "--no-prune"]), flags(pruned)
    assert {k: v for k, v in p.items() if k in d and v != d[k]} == {"--epochs": "4"}  # else the dense run's flags
    assert {k: v for k, v in p.items() if k not in d} == {
        "--target-macs": "0.4",
        "--warmup-epochs": "1",
        "--prune-every": "5",
        "--prune-until": "0.5",  # pruning stops after the second of four epochs
        "--max-accuracy-drop": "none",
        "--teacher": str((tmp_path / "lite0-96").resolve()),
    }
