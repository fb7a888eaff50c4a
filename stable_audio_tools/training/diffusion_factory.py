"""Training-wrapper builders for the diffusion model types (registered in ``training.factory.TRAINING_WRAPPERS``).

Each builder validates ``model_config["training"]`` (unknown keys warn, bad values raise ``ConfigError``
naming the key) and returns the Lightning wrapper:

* ``diffusion_uncond`` -> :class:`~.diffusion.DiffusionUncondTrainingWrapper`;
* ``diffusion_cond`` / ``diffusion_cond_inpaint`` -> :class:`~.diffusion_cond.DiffusionCondTrainingWrapper`,
  or :class:`~.arc.ARCTrainingWrapper` when ``training.arc`` is present;
* ``diffusion_autoencoder`` -> :class:`~.diffusion.DiffusionAutoencoderTrainingWrapper`.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Mapping, Optional

import pytorch_lightning as pl
from torch import nn

from ..config import (ConfigError, ConfigWarning, check_choice, check_number, get_bool, get_number, require,
                      require_mapping, resolve_learning_rate, warn_unknown_keys)
from ..models.factory import create_model_from_config
from ..models.inpainting import INPAINT_IDS, check_inpainting_config
from ..models.utils import copy_state_dict, load_ckpt_state_dict
from .arc import ARC_HEADS, ARCTrainingWrapper
from .diffusion import DiffusionAutoencoderTrainingWrapper, DiffusionUncondTrainingWrapper
from .diffusion_cond import DiffusionCondTrainingWrapper
from .timesteps import ARC_NOISE_DISTS, TIMESTEP_SAMPLERS

__all__ = [
    "create_diffusion_uncond_wrapper",
    "create_diffusion_cond_wrapper",
    "create_arc_wrapper",
    "create_diffusion_autoencoder_wrapper",
    "UNCOND_TRAINING_KEYS",
    "COND_TRAINING_KEYS",
    "ARC_TRAINING_KEYS",
    "DIFFAE_TRAINING_KEYS",
]

log = logging.getLogger(__name__)

UNCOND_TRAINING_KEYS = ("learning_rate", "pre_encoded", "demo")
COND_TRAINING_KEYS = ("learning_rate", "optimizer_configs", "use_ema", "log_loss_info", "pre_encoded",
                      "cfg_dropout_prob", "timestep_sampler", "timestep_sampler_options", "p_one_shot",
                      "mask_padding", "mask_padding_dropout", "inpainting", "arc", "demo", "validation_metrics")
ARC_TRAINING_KEYS = ("arc", "optimizer_configs", "use_ema", "pre_encoded", "cfg_dropout_prob", "clip_grad_norm",
                     "trim_config", "inpainting", "demo", "learning_rate", "validation_metrics")
ARC_KEYS = ("teacher_model", "teacher_model_ckpt", "use_model_as_teacher", "discriminator_base_model",
            "discriminator_base_ckpt", "use_model_as_discriminator", "ode_warmup", "noise_dist", "discriminator")
DIFFAE_TRAINING_KEYS = ("learning_rate", "use_reconstruction_loss", "demo")


def _learning_rate(training: Mapping) -> float:
    """The required ``training.learning_rate`` of the wrappers without ``optimizer_configs``."""
    return check_number(require(training, "learning_rate", "training", "the Adam learning rate, e.g. 1e-4"),
                        "training.learning_rate", low=0, low_open=True)


def create_diffusion_uncond_wrapper(model_config: Mapping, model: nn.Module, training: Mapping,
                                    **overrides: Any) -> pl.LightningModule:
    """``DiffusionUncondTrainingWrapper(model, lr=learning_rate, pre_encoded)``; Adam, always with EMA."""
    warn_unknown_keys(training, UNCOND_TRAINING_KEYS, "training")
    return DiffusionUncondTrainingWrapper(model, lr=_learning_rate(training),
                                          pre_encoded=get_bool(training, "pre_encoded", False, "training"), **overrides)


def _check_inpainting(model_config: Mapping, model: nn.Module, training: Mapping) -> Optional[dict]:
    input_concat_ids = list(getattr(model, "input_concat_ids", None) or [])
    uses_inpaint_ids = any(i in input_concat_ids for i in INPAINT_IDS)
    if "inpainting" not in training or training["inpainting"] is None:
        if uses_inpaint_ids:
            raise ConfigError("training.inpainting", "is required: the model lists "
                              f"{[i for i in INPAINT_IDS if i in input_concat_ids]} in "
                              "model.diffusion.input_concat_ids, which only the inpainting masks provide",
                              "add \"inpainting\": {\"mask_kwargs\": {}} to the training block")
        if model_config.get("model_type") == "diffusion_cond_inpaint":
            warnings.warn("model_type is 'diffusion_cond_inpaint' but there is no training.inpainting block; the "
                          "model trains as plain diffusion_cond", ConfigWarning, stacklevel=3)
        return None
    kwargs = check_inpainting_config(training["inpainting"])
    if not uses_inpaint_ids:
        warnings.warn("training.inpainting is set but model.diffusion.input_concat_ids lists neither "
                      "'inpaint_mask' nor 'inpaint_masked_input', so the model never sees the inpainting inputs",
                      ConfigWarning, stacklevel=3)
    return {"mask_kwargs": kwargs}


def create_diffusion_cond_wrapper(model_config: Mapping, model: nn.Module, training: Mapping,
                                  **overrides: Any) -> pl.LightningModule:
    """The diffusion_cond / diffusion_cond_inpaint wrapper (ARC when ``training.arc`` is present)."""
    if "arc" in training:
        return create_arc_wrapper(model_config, model, training, **overrides)
    warn_unknown_keys(training, COND_TRAINING_KEYS, "training")
    lr, optimizer_configs = resolve_learning_rate(training, ("diffusion",))
    sampler = check_choice(training.get("timestep_sampler", "uniform"), TIMESTEP_SAMPLERS,
                           "training.timestep_sampler")
    if getattr(model, "conditioner", None) is None:
        warnings.warn("the model has no conditioning (model.conditioning); it trains unconditionally",
                      ConfigWarning, stacklevel=2)
    return DiffusionCondTrainingWrapper(
        model,
        lr=lr,
        mask_padding=get_bool(training, "mask_padding", False, "training"),
        mask_padding_dropout=get_number(training, "mask_padding_dropout", 0.0, "training", low=0.0, high=1.0),
        use_ema=get_bool(training, "use_ema", True, "training"),
        log_loss_info=get_bool(training, "log_loss_info", False, "training"),
        optimizer_configs=optimizer_configs,
        pre_encoded=get_bool(training, "pre_encoded", False, "training"),
        cfg_dropout_prob=get_number(training, "cfg_dropout_prob", 0.1, "training", low=0.0, high=1.0),
        timestep_sampler=sampler,
        timestep_sampler_options=training.get("timestep_sampler_options"),
        p_one_shot=get_number(training, "p_one_shot", 0.0, "training", low=0.0, high=1.0),
        inpainting_config=_check_inpainting(model_config, model, training),
        **overrides,
    )


def _require_dit(model: nn.Module, path: str) -> None:
    transformer = getattr(getattr(getattr(model, "model", None), "model", None), "transformer", None)
    if transformer is None or not hasattr(transformer, "dim"):
        raise ConfigError(path, "ARC needs a DiT-based diffusion_cond model (model.diffusion.type 'dit')")


def _build_arc_model(config: Mapping, ckpt: Optional[str], path: str) -> nn.Module:
    model = create_model_from_config(require_mapping(config, path))
    if ckpt:
        copy_state_dict(model, load_ckpt_state_dict(ckpt))
    return model


def create_arc_wrapper(model_config: Mapping, model: nn.Module, training: Mapping,
                       clip_grad_norm: Optional[float] = None) -> pl.LightningModule:
    """``ARCTrainingWrapper`` for a diffusion_cond config with a ``training.arc`` block (see
    docs/diffusion.md#arc-post-training-trainingarc).

    ``clip_grad_norm`` (from ``train.py --gradient-clip-val``) overrides ``training.clip_grad_norm`` when > 0.
    """
    warn_unknown_keys(training, ARC_TRAINING_KEYS, "training")
    arc = require_mapping(training["arc"], "training.arc")
    warn_unknown_keys(arc, ARC_KEYS, "training.arc")
    objective = getattr(model, "diffusion_objective", None)
    if objective not in ("rectified_flow", "rf_denoiser"):
        raise ConfigError("model.diffusion.diffusion_objective", f"ARC post-trains rectified-flow models, got "
                          f"{objective!r}", "use 'rectified_flow' or 'rf_denoiser'")
    _require_dit(model, "model.diffusion.type")
    # ARC has its own learning_rate warning below
    without_lr = {k: v for k, v in training.items() if k != "learning_rate"}
    optimizer_configs = resolve_learning_rate(without_lr, ("diffusion", "discriminator"), default_lr=0.0)[1]
    if optimizer_configs is None:
        raise ConfigError("training.optimizer_configs", "is required for ARC",
                          "give optimizer groups 'diffusion' and 'discriminator'")
    if "learning_rate" in training:
        warnings.warn("training.learning_rate is ignored by ARC (it uses training.optimizer_configs)",
                      ConfigWarning, stacklevel=2)

    disc = require_mapping(require(arc, "discriminator", "training.arc", "the discriminator head settings "
                                   "({'dit_hidden_layer': ..., 'type': 'convnext', ...})"),
                           "training.arc.discriminator")
    warn_unknown_keys(disc, ("dit_hidden_layer", "type", "config", "contrastive", "include_grad_penalties",
                             "weights"), "training.arc.discriminator")
    require(disc, "dit_hidden_layer", "training.arc.discriminator", "the DiT layer whose hidden states are scored",
            (int,))
    check_choice(disc.get("type", "convnext"), ARC_HEADS, "training.arc.discriminator.type")
    require_mapping(disc.get("config", {}), "training.arc.discriminator.config")
    noise_dist = require_mapping(arc.get("noise_dist", {}), "training.arc.noise_dist")
    warn_unknown_keys(noise_dist, ("generator", "discriminator"), "training.arc.noise_dist")
    for key in ("generator", "discriminator"):
        check_choice(noise_dist.get(key, "uniform"), ARC_NOISE_DISTS, f"training.arc.noise_dist.{key}")
    warmup = require_mapping(arc.get("ode_warmup", {}) or {}, "training.arc.ode_warmup")
    warn_unknown_keys(warmup, ("warmup_steps", "refresh_rate", "sampling_steps", "cfg"), "training.arc.ode_warmup")
    for key, default, low in (("warmup_steps", 0, 0), ("refresh_rate", 1, 1), ("sampling_steps", 20, 1)):
        value = warmup.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"training.arc.ode_warmup.{key}", f"expected an integer >= {low}, got {value!r:.60}")
    get_number(warmup, "cfg", 4.0, "training.arc.ode_warmup", low=0.0)

    teacher = None
    if arc.get("teacher_model") is not None or arc.get("use_model_as_teacher", False):
        ckpt = arc.get("teacher_model_ckpt")
        if not ckpt:
            raise ConfigError("training.arc.teacher_model_ckpt", "is required with a teacher model",
                              "point it to the teacher's unwrapped checkpoint")
        teacher = _build_arc_model(arc.get("teacher_model") or model_config, ckpt, "training.arc.teacher_model")
    if warmup.get("warmup_steps", 0) and teacher is None:
        raise ConfigError("training.arc.ode_warmup.warmup_steps", "an ODE warmup needs a teacher",
                          "set training.arc.use_model_as_teacher (or teacher_model) and teacher_model_ckpt")
    if arc.get("discriminator_base_model") is not None:
        disc_config = arc["discriminator_base_model"]
    elif arc.get("use_model_as_discriminator", False):
        disc_config = model_config
    else:
        raise ConfigError("training.arc.discriminator_base_model", "is required (the DiT backbone of the "
                          "discriminator)", "give a model config, or set training.arc.use_model_as_discriminator")
    if not arc.get("discriminator_base_ckpt"):
        log.warning("ARC: no training.arc.discriminator_base_ckpt; the discriminator backbone starts from random "
                    "weights")
    discriminator = _build_arc_model(disc_config, arc.get("discriminator_base_ckpt"),
                                     "training.arc.discriminator_base_model")
    _require_dit(discriminator, "training.arc.discriminator_base_model")

    clip = get_number(training, "clip_grad_norm", 0.0, "training", low=0.0)
    if clip_grad_norm:
        clip = float(clip_grad_norm)
    trim = require_mapping(training.get("trim_config") or {}, "training.trim_config")
    warn_unknown_keys(trim, ("trim_prob", "type"), "training.trim_config")
    get_number(trim, "trim_prob", 0.0, "training.trim_config", low=0.0, high=1.0)
    check_choice(trim.get("type", "random_item"), ("random_item",), "training.trim_config.type")
    return ARCTrainingWrapper(
        model, discriminator=discriminator, arc_config=arc, optimizer_configs=optimizer_configs,
        teacher_model=teacher, use_ema=get_bool(training, "use_ema", True, "training"),
        pre_encoded=get_bool(training, "pre_encoded", False, "training"),
        cfg_dropout_prob=get_number(training, "cfg_dropout_prob", 0.1, "training", low=0.0, high=1.0),
        clip_grad_norm=clip,
        trim_config=trim or None, inpainting_config=_check_inpainting(model_config, model, training))


def create_diffusion_autoencoder_wrapper(model_config: Mapping, model: nn.Module, training: Mapping,
                                         **overrides: Any) -> pl.LightningModule:
    """``DiffusionAutoencoderTrainingWrapper(model, lr=learning_rate, use_reconstruction_loss)``."""
    warn_unknown_keys(training, DIFFAE_TRAINING_KEYS, "training")
    return DiffusionAutoencoderTrainingWrapper(
        model, lr=_learning_rate(training),
        use_reconstruction_loss=get_bool(training, "use_reconstruction_loss", False, "training"), **overrides)
