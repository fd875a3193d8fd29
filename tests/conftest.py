import importlib
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import datafiles  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@contextmanager
def benchmark_module(name: str):
    """A benchmarks/ script imported as a module, its folder on sys.path while in use (as when it runs:
    the scripts import each other by name)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models: one intra-op thread is as fast and does not fight other processes for cores.
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    """Tests never wait on the network: the hub counts as unreachable unless a test says otherwise."""
    monkeypatch.setattr("edgeprune.data.sources.hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("EDGEPRUNE_DATA", raising=False)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    datafiles.write_mnist_like(root / "mnist", n_train=600, n_test=200)
    datafiles.write_sentiment(root / "sst2", splits=("train", "validation"), n_train=600, n_test=200)
    datafiles.write_sentiment(root / "imdb", n_train=400, n_test=100, fmt="parquet")
    datafiles.write_cifar_like(root / "cifar10", n_per_batch=40)
    return root
