"""Diffusion builders: the ``diffusion_uncond`` and ``diffusion_cond`` / ``diffusion_cond_inpaint`` model types
(see docs/diffusion.md)."""
from __future__ import annotations

import math
from typing import List, Mapping

from torch import nn

from ...samplers import DistributionShift
from ..config import ConfigError, build_from_config, check_choice, require, require_mapping, warn_unknown_keys
from ..dau1d import DiffusionAttnUnet1D
from ..diffusion import (COND_BACKBONES, INPAINT_IDS, UNCOND_BACKBONES, ConditionedDiffusionModelWrapper,
                         DiffusionModelWrapper, UNet1DCondWrapper, UNet1DUncondWrapper, UNetCFG1DWrapper)
from ..diffusion_base import DIFFUSION_OBJECTIVES
from ..dit import DiTUncondWrapper, DiTWrapper
from .autoencoders import create_pretransform_from_config
from .conditioners import create_multi_conditioner_from_conditioning_config

__all__ = ["create_diffusion_uncond_from_config", "create_diffusion_cond_from_config"]


def _pretransform(model_config: Mapping, sample_rate: int, path: str):
    spec = model_config.get("pretransform")
    if spec is None:
        return None, 1
    pretransform = create_pretransform_from_config(spec, sample_rate, path)
    return pretransform, int(getattr(pretransform, "downsampling_ratio", 1) or 1)


def _check_sample_size(config: Mapping, min_input_length: int) -> None:
    sample_size = config.get("sample_size")
    if sample_size is not None and sample_size % min_input_length != 0:
        lower, upper = (sample_size // min_input_length) * min_input_length, \
            (sample_size // min_input_length + 1) * min_input_length
        raise ConfigError("sample_size", f"{sample_size} is not a multiple of the model's minimum input length "
                                         f"{min_input_length} (pretransform downsampling x backbone downsampling)",
                          f"use e.g. {lower or upper} or {upper}")


def _backbone_factor(kind: str, backbone_config: Mapping, backbone: nn.Module) -> int:
    if kind in ("adp_cfg_1d", "adp_1d", "adp_uncond_1d"):
        return int(math.prod(backbone_config.get("factors", [1])))
    if kind == "dit":
        inner = getattr(backbone, "model", backbone)
        return int(getattr(inner, "patch_size", 1))
    return 1


def create_diffusion_uncond_from_config(config: Mapping) -> DiffusionModelWrapper:
    """``diffusion_uncond``: ``model.type`` in DAU1d | adp_uncond_1d | dit, ``model.config``, ``model.pretransform``."""
    model_config = require_mapping(require(config, "model", ""), "model")
    warn_unknown_keys(model_config, ("type", "config", "pretransform"), "model")
    kind = check_choice(require(model_config, "type", "model", f"one of {', '.join(UNCOND_BACKBONES)}"),
                        UNCOND_BACKBONES, "model.type")
    sample_rate = require(config, "sample_rate", "", "audio sample rate in Hz", (int,))
    sample_size = require(config, "sample_size", "", "generation/training length in samples", (int,))
    pretransform, ratio = _pretransform(model_config, sample_rate, "model.pretransform")
    classes = {"DAU1d": DiffusionAttnUnet1D, "adp_uncond_1d": UNet1DUncondWrapper, "dit": DiTUncondWrapper}
    backbone_config = model_config.get("config", {})
    backbone = build_from_config(classes[kind], backbone_config, "model.config")
    min_input_length = ratio * _backbone_factor(kind, backbone_config, backbone)
    _check_sample_size(config, min_input_length)
    return DiffusionModelWrapper(backbone, io_channels=backbone.io_channels, sample_size=sample_size,
                                 sample_rate=sample_rate, pretransform=pretransform,
                                 min_input_length=min_input_length)


_DIFFUSION_KEYS = ("type", "config", "diffusion_objective", "cross_attention_cond_ids", "global_cond_ids",
                   "input_concat_ids", "prepend_cond_ids", "distribution_shift_options")


def create_diffusion_cond_from_config(config: Mapping) -> ConditionedDiffusionModelWrapper:
    """``diffusion_cond`` / ``diffusion_cond_inpaint`` (see
    docs/diffusion.md#diffusion_cond-and-diffusion_cond_inpaint--model)."""
    model_config = require_mapping(require(config, "model", ""), "model")
    warn_unknown_keys(model_config, ("io_channels", "pretransform", "conditioning", "diffusion"), "model")
    diffusion = require_mapping(require(model_config, "diffusion", "model", "the backbone definition"),
                                "model.diffusion")
    warn_unknown_keys(diffusion, _DIFFUSION_KEYS, "model.diffusion")
    kind = check_choice(require(diffusion, "type", "model.diffusion", f"one of {', '.join(COND_BACKBONES)}"),
                        COND_BACKBONES, "model.diffusion.type")
    objective = check_choice(diffusion.get("diffusion_objective", "v"), DIFFUSION_OBJECTIVES,
                             "model.diffusion.diffusion_objective")
    io_channels = require(model_config, "io_channels", "model", "channels of the diffused signal", (int,))
    sample_rate = require(config, "sample_rate", "", "audio sample rate in Hz", (int,))
    backbone_config = require(diffusion, "config", "model.diffusion", "the backbone options")

    pretransform, ratio = _pretransform(model_config, sample_rate, "model.pretransform")
    conditioner = None
    cond_ids: List[str] = []
    if model_config.get("conditioning") is not None:
        conditioner = create_multi_conditioner_from_conditioning_config(model_config["conditioning"],
                                                                        pretransform=pretransform)
        cond_ids = [c.get("id") for c in model_config["conditioning"].get("configs", [])]
    routes = {}
    for key in ("cross_attention_cond_ids", "global_cond_ids", "input_concat_ids", "prepend_cond_ids"):
        ids = list(diffusion.get(key, []))
        for i, cid in enumerate(ids):
            if cid not in cond_ids and cid not in INPAINT_IDS:
                raise ConfigError(f"model.diffusion.{key}[{i}]", f"'{cid}' is not a conditioner id",
                                  f"defined ids: {', '.join(map(str, cond_ids)) or 'none (model.conditioning missing)'}")
        routes[key] = ids

    if kind == "dit":
        backbone = build_from_config(DiTWrapper, backbone_config, "model.diffusion.config",
                                     diffusion_objective=objective)
    else:
        backbone = build_from_config(UNetCFG1DWrapper if kind == "adp_cfg_1d" else UNet1DCondWrapper,
                                     backbone_config, "model.diffusion.config")
    min_input_length = ratio * _backbone_factor(kind, backbone_config, backbone)
    _check_sample_size(config, min_input_length)

    dist_shift = None
    if diffusion.get("distribution_shift_options") is not None:
        dist_shift = build_from_config(DistributionShift, diffusion["distribution_shift_options"],
                                       "model.diffusion.distribution_shift_options")
    return ConditionedDiffusionModelWrapper(
        backbone, conditioner, io_channels=io_channels, sample_rate=sample_rate, min_input_length=min_input_length,
        diffusion_objective=objective, pretransform=pretransform,
        cross_attn_cond_ids=routes["cross_attention_cond_ids"], global_cond_ids=routes["global_cond_ids"],
        input_concat_ids=routes["input_concat_ids"], prepend_cond_ids=routes["prepend_cond_ids"],
        dist_shift=dist_shift)
