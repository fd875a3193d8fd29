"""Model registry: build a model from an architecture description {"name": ..., "config": {...}}.

The name is a registered model (cnn, bilstm, resnet20, resnet56), torchvision:NAME or
path/to/file.py:factory; see registry.py and external.py.
"""

from edgeprune.models import bilstm, cnn, resnet  # noqa: F401  (importing registers the models)
from edgeprune.models.external import canonical_name, parse_model_kwargs
from edgeprune.models.fit import check_model_fits, layer_widths, load_resized
from edgeprune.models.registry import MODELS, build_model, check_fits, default_config, register_model

__all__ = [
    "MODELS",
    "build_model",
    "canonical_name",
    "check_fits",
    "check_model_fits",
    "default_config",
    "layer_widths",
    "load_resized",
    "parse_model_kwargs",
    "register_model",
]
