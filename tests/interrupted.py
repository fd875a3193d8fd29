"""A training run stopped by a KeyboardInterrupt after a given epoch, for the exact-resume tests."""

import pytest

from edgeprune.train import train_run


def train_interrupted(monkeypatch, c, after_epochs: int) -> None:
    """`train_run(c)` stopped by a KeyboardInterrupt right after its `after_epochs`-th epoch was written."""
    import edgeprune.train as t

    real, calls = t._print_epoch, {"n": 0}

    def interrupt(record, c, quiet):
        real(record, c, quiet)
        calls["n"] += 1
        if calls["n"] == after_epochs:
            raise KeyboardInterrupt

    monkeypatch.setattr(t, "_print_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_run(c, quiet=True)
    monkeypatch.setattr(t, "_print_epoch", real)
