"""Model registry: build a model from an architecture description {"name": ..., "config": {...}}."""

from edgeprune.models import bilstm, cnn, resnet  # noqa: F401  (importing registers the models)
from edgeprune.models.fit import check_model_fits, layer_widths, load_resized
from edgeprune.models.registry import MODELS, build_model, default_config, register_model

__all__ = [
    "MODELS",
    "build_model",
    "check_model_fits",
    "default_config",
    "layer_widths",
    "load_resized",
    "register_model",
]
