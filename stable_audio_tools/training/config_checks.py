"""Checks of the ``training`` block shared by every training-wrapper builder.

:func:`check_training_block` runs before any wrapper is built: no number in the block (loss weights,
learning rates, probabilities...) may be NaN or infinite. The ``learning_rate`` vs ``optimizer_configs``
rule is :func:`stable_audio_tools.config.resolve_learning_rate`; per-key checks use the validators of
:mod:`stable_audio_tools.config` (see docs/training.md).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

from ..config import check_choice, check_finite_tree, check_int, get_bool, get_number, resolve_learning_rate

__all__ = ["check_training_block", "autoencoder_training_options"]

WARMUP_MODES = ("adv", "full")


def check_training_block(training: Mapping, path: str = "training") -> None:
    """Raise one ConfigError listing every NaN / inf number of the training block."""
    check_finite_tree(training, path)


def autoencoder_training_options(training: Mapping) -> Dict[str, Any]:
    """The checked scalar options of an autoencoder ``training`` block, as AutoencoderTrainingWrapper arguments.

    ``learning_rate`` (> 0) is required unless ``optimizer_configs`` (group ``autoencoder``) is given;
    ``warmup_steps`` an integer >= 0; ``warmup_mode`` ``adv`` | ``full``; ``latent_mask_ratio`` in [0, 1];
    ``encoder_freeze_on_warmup``, ``use_ema``, ``force_input_mono`` true / false.
    """
    lr, optimizer_configs = resolve_learning_rate(training, ("autoencoder",))
    return dict(
        lr=lr if lr is not None else 1e-4,
        optimizer_configs=optimizer_configs,
        warmup_steps=check_int(training.get("warmup_steps", 0), "training.warmup_steps", low=0),
        warmup_mode=check_choice(training.get("warmup_mode", "adv"), WARMUP_MODES, "training.warmup_mode"),
        encoder_freeze_on_warmup=get_bool(training, "encoder_freeze_on_warmup", False, "training"),
        use_ema=get_bool(training, "use_ema", False, "training"),
        force_input_mono=get_bool(training, "force_input_mono", False, "training"),
        latent_mask_ratio=get_number(training, "latent_mask_ratio", 0.0, "training", low=0.0, high=1.0),
    )
