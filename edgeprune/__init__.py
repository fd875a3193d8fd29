"""edgeprune: prune while training, rebuild smaller, export to ONNX/INT8, measure on edge CPUs."""

from edgeprune.errors import BudgetWarning, GuardWarning
from edgeprune.version import __version__

__all__ = ["BudgetWarning", "GuardWarning", "Pruner", "__version__"]


def __getattr__(name: str):
    # lazily: `import edgeprune` stays free of torch (the device image's runtime has none)
    if name == "Pruner":
        from edgeprune.prune.pruner import Pruner

        return Pruner
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
