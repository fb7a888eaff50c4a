"""stable-audio-tools: train and run generative audio models from JSON configs."""
from .models.factory import create_model_from_config, create_model_from_config_path
from .models.pretrained import get_pretrained_model
from . import inference  # noqa: F401  (registers the generation functions behind the model wrappers' generate())

__version__ = "0.1.0"
__all__ = ["create_model_from_config", "create_model_from_config_path", "get_pretrained_model", "__version__"]
