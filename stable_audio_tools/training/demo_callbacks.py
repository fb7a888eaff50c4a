"""Demo callbacks: periodically run the model being trained and log audio, spectrograms and latent plots.

:func:`create_demo_callback_from_config` picks the callback for a model config through the model-family registry
(the ``demo`` builder of :mod:`stable_audio_tools.families`). The base class lives in :mod:`.demo_base`, the
family demos in :mod:`.autoencoder_demos`, :mod:`.diffusion_demos` and :mod:`.lm_demos`; the base and the
autoencoder demo are importable from here as from upstream's ``training/demo_callbacks.py``.
"""
from __future__ import annotations

from typing import Any, Mapping, Tuple

import pytorch_lightning as pl

from ..families import BuilderTable, get_model_family, resolve_builder
from ..config import require, require_mapping
from .autoencoder_demos import AutoencoderDemoCallback, demo_autoencoder
from .demo_base import DemoCallbackBase, eval_mode

__all__ = [
    "eval_mode",
    "DemoCallbackBase",
    "AutoencoderDemoCallback",
    "demo_autoencoder",
    "SUPPORTED_DEMO_MODEL_TYPES",
    "create_demo_callback_from_config",
]

# The model types with a demo builder when the package was imported (the registry is the live list).
SUPPORTED_DEMO_MODEL_TYPES: Tuple[str, ...] = tuple(BuilderTable("demo"))


def create_demo_callback_from_config(model_config: Mapping[str, Any], **kwargs: Any) -> pl.Callback:
    """The demo callback for ``model_config["model_type"]``, built by the family's ``demo`` builder
    (``autoencoder``: :func:`.autoencoder_demos.create_autoencoder_demo_callback`; diffusion types:
    :func:`.diffusion_demos.create_diffusion_demo_callback`; ``lm``: :func:`.lm_demos.create_lm_demo_callback`).
    Keyword arguments (e.g. ``demo_dl``, ``max_demos``) are passed to the builder. An unknown model type or one
    without demos raises ConfigError at ``model_type``."""
    require_mapping(model_config, "<root>")
    model_type = require(model_config, "model_type", "", "a model type such as 'autoencoder'", (str,))
    training = require_mapping(model_config.get("training", {}), "training")
    require_mapping(training.get("demo", {}), "training.demo")
    family = get_model_family(model_type, "demo")
    return resolve_builder(family.demo)(model_config, **kwargs)
