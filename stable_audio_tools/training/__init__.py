"""Training wrappers, losses, callbacks and optimizer factories.

``create_training_wrapper_from_config`` and ``create_demo_callback_from_config`` are importable from here, as from
upstream's ``stable_audio_tools.training`` (they live in :mod:`.factory` and :mod:`.demo_callbacks`).
"""
from .factory import create_demo_callback_from_config, create_training_wrapper_from_config

__all__ = ["create_training_wrapper_from_config", "create_demo_callback_from_config"]
