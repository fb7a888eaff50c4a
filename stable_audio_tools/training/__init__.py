"""Training wrappers, losses, callbacks and optimizer factories."""
from .factory import create_training_wrapper_from_config


def create_demo_callback_from_config(model_config, **kwargs):
    """Build the demo callback for ``model_config["model_type"]`` (see ``training.demo_callbacks``)."""
    from .demo_callbacks import create_demo_callback_from_config as _create

    return _create(model_config, **kwargs)


__all__ = ["create_training_wrapper_from_config", "create_demo_callback_from_config"]
