"""Model registry: build a model from an architecture description {"name": ..., "config": {...}}."""

from edgeprune.models.registry import MODELS, build_model, default_config, register_model  # noqa: F401
from edgeprune.models import cnn as _cnn, bilstm as _bilstm  # noqa: F401,E402  (register)
