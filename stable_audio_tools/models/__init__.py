"""Model definitions and factories.

``create_model_from_config`` and ``create_model_from_config_path`` are importable from here, as from upstream's
``stable_audio_tools.models`` (they live in :mod:`.factory`).
"""
from .factory import create_model_from_config, create_model_from_config_path

__all__ = ["create_model_from_config", "create_model_from_config_path"]
