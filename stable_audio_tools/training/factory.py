"""Training-wrapper factory: model config + model -> LightningModule (see docs/training.md).

As upstream's ``training/factory.py``, this module also exposes ``create_demo_callback_from_config``
(:mod:`.demo_callbacks`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import pytorch_lightning as pl
from torch import nn

from ..families import BuilderTable, get_model_family, resolve_builder
from ..config import ConfigError, require, require_mapping, warn_unknown_keys
from ..models.factory import create_model_from_config
from ..models.utils import load_ckpt_state_dict
from .autoencoders import AutoencoderTrainingWrapper
from .config_checks import autoencoder_training_options, check_training_block
from .demo_callbacks import create_demo_callback_from_config

__all__ = ["create_training_wrapper_from_config", "TRAINING_WRAPPERS", "create_autoencoder_training_wrapper",
           "create_demo_callback_from_config"]  # defined in .demo_callbacks (upstream has it here)

AUTOENCODER_TRAINING_KEYS = ("learning_rate", "warmup_steps", "warmup_mode", "encoder_freeze_on_warmup", "use_ema",
                             "loss_configs", "eval_loss_configs", "optimizer_configs", "force_input_mono",
                             "latent_mask_ratio", "teacher_model", "teacher_model_ckpt", "demo",
                             "validation_metrics")


def create_autoencoder_training_wrapper(model_config: Mapping, model: nn.Module, training: Mapping,
                                       **overrides: Any) -> pl.LightningModule:
    """The ``autoencoder`` training-wrapper builder: ``AutoencoderTrainingWrapper`` from ``training`` (with an
    optional frozen teacher loaded from ``teacher_model`` / ``teacher_model_ckpt``)."""
    warn_unknown_keys(training, AUTOENCODER_TRAINING_KEYS, "training")
    options = autoencoder_training_options(training)
    teacher = None
    if training.get("teacher_model") is not None:
        ckpt = training.get("teacher_model_ckpt")
        if not ckpt:
            raise ConfigError("training.teacher_model_ckpt", "is required when 'training.teacher_model' is set",
                              "point it to the teacher's unwrapped checkpoint")
        teacher = create_model_from_config(training["teacher_model"])
        teacher.load_state_dict(load_ckpt_state_dict(ckpt), strict=True)
    return AutoencoderTrainingWrapper(
        model,
        sample_rate=model_config["sample_rate"],
        loss_config=training.get("loss_configs"),
        eval_loss_config=training.get("eval_loss_configs"),
        teacher_model=teacher,
        **options,
        **overrides,
    )


# model_type -> training-wrapper builder(model_config, model, training_config, **overrides), a view of the
# model-family registry (stable_audio_tools.families).
TRAINING_WRAPPERS: Mapping[str, Callable[..., pl.LightningModule]] = BuilderTable("training_wrapper")


def create_training_wrapper_from_config(model_config: Mapping, model: nn.Module, **overrides: Any) -> pl.LightningModule:
    """Build the LightningModule that trains ``model`` as ``model_config["training"]`` describes.

    ``overrides`` are passed to the wrapper (e.g. ``clip_grad_norm`` from ``train.py --gradient-clip-val``).
    """
    model_type = require(model_config, "model_type", "")
    family = get_model_family(model_type, "training_wrapper")
    training = require_mapping(require(model_config, "training", "", "the training settings"), "training")
    check_training_block(training)
    return resolve_builder(family.training_wrapper)(model_config, model, training, **overrides)
