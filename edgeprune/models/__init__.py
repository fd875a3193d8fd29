"""Model registry: build a model from an architecture description {"name": ..., "config": {...}}.

The name is a registered model (cnn, bilstm, resnet20, resnet56), torchvision:NAME, timm:NAME or
path/to/file.py:factory; see registry.py and external.py. weights.py loads pretrained weights (--weights).
"""

from edgeprune.models import bilstm, cnn, resnet  # noqa: F401  (importing registers the models)
from edgeprune.models.external import canonical_name, parse_model_kwargs
from edgeprune.models.fit import check_model_fits, layer_widths
from edgeprune.models.registry import MODELS, build_model, check_fits, default_config, register_model
from edgeprune.models.weights import load_weights

__all__ = [
    "MODELS",
    "build_model",
    "canonical_name",
    "check_fits",
    "check_model_fits",
    "default_config",
    "layer_widths",
    "load_weights",
    "parse_model_kwargs",
    "register_model",
]
