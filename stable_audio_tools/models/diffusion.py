"""Diffusion model wrappers and the ``diffusion_uncond`` / ``diffusion_cond(_inpaint)`` factories (see
docs/diffusion.md for the configs and backbones, docs/inference.md for the root objects).

``ConditionedDiffusionModelWrapper`` is what ``create_model_from_config`` returns for conditional models: it owns
the backbone (``model``), the ``conditioner`` and the ``pretransform`` (checkpoint prefixes ``model.model.*``,
``conditioner.conditioners.<id>.*``, ``pretransform.model.*``) and turns conditioner outputs into the backbone's
keyword arguments.

As upstream's ``models/diffusion.py``, this module also exposes the DiT wrappers (:mod:`.dit`), the Dance Diffusion
U-Net (:mod:`.dau1d`) and ``Profiler`` (:mod:`.common`); the backbone base classes live in :mod:`.diffusion_base`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..samplers import DistributionShift
from .adp import UNet1d, UNetCFG1d
from .common import Profiler
from .config import ConfigError, build_from_config, check_choice, require, require_mapping, warn_unknown_keys
from .dau1d import DiffusionAttnUnet1D
from .diffusion_base import DIFFUSION_OBJECTIVES, ConditionedDiffusionModel, DiffusionModel
from .dit import DiTUncondWrapper, DiTWrapper

__all__ = [
    "DiffusionModel", "ConditionedDiffusionModel", "DiffusionModelWrapper", "ConditionedDiffusionModelWrapper",
    "UNetCFG1DWrapper", "UNet1DCondWrapper", "UNet1DUncondWrapper", "DAU1DCondWrapper",
    "create_diffusion_uncond_from_config", "create_diffusion_cond_from_config", "DIFFUSION_OBJECTIVES",
    # defined elsewhere, importable from here as from upstream's models/diffusion.py
    "DiTWrapper", "DiTUncondWrapper", "DiffusionAttnUnet1D", "Profiler",
]


# Generation functions live above models (stable_audio_tools.inference.generation, which registers them here on
# import; the package's __init__ imports it), so the wrappers' ``generate`` methods reach them without importing
# upward.
_GENERATORS: Dict[str, Callable[..., torch.Tensor]] = {}


def register_generator(kind: str, fn: Callable[..., torch.Tensor]) -> None:
    """Make ``fn(model, *args, **kwargs)`` what ``generate`` runs for ``kind`` ("diffusion_uncond" for
    :class:`DiffusionModelWrapper`, "diffusion_cond" for :class:`ConditionedDiffusionModelWrapper`)."""
    _GENERATORS[kind] = fn


def _generator(kind: str) -> Callable[..., torch.Tensor]:
    fn = _GENERATORS.get(kind)
    if fn is None:
        raise RuntimeError(f"no {kind} generation function is registered; import stable_audio_tools.inference "
                           f"(importing stable_audio_tools does this)")
    return fn


def _halve_parameters(module: nn.Module) -> None:
    """Upstream scales these wrappers' initial weights by 0.5 (an init-only effect)."""
    with torch.no_grad():
        for param in module.parameters():
            param.mul_(0.5)


class UNetCFG1DWrapper(ConditionedDiffusionModel):
    """``adp_cfg_1d``: ADP UNetCFG1d with cross-attention embeddings, global features and classifier-free guidance."""

    config_kwargs_to = ((UNetCFG1d, ()),)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(supports_cross_attention=True, supports_global_cond=True, supports_input_concat=True)
        self.model = UNetCFG1d(*args, **kwargs)
        _halve_parameters(self.model)

    def forward(self, x, t, cross_attn_cond=None, cross_attn_mask=None, input_concat_cond=None, global_cond=None,
                cfg_scale=1.0, cfg_dropout_prob=0.0, batch_cfg=False, rescale_cfg=False,
                negative_cross_attn_cond=None, negative_cross_attn_mask=None, negative_global_cond=None,
                negative_input_concat_cond=None, prepend_cond=None, prepend_cond_mask=None, **kwargs):
        kwargs.pop("cfg_interval", None)  # CFG intervals are a DiT feature; the U-Net applies CFG at every step
        channels_list = [input_concat_cond] if input_concat_cond is not None else None
        return self.model(x, t, embedding=cross_attn_cond, embedding_mask=cross_attn_mask, features=global_cond,
                          channels_list=channels_list, embedding_scale=cfg_scale,
                          embedding_mask_proba=cfg_dropout_prob, batch_cfg=batch_cfg, rescale_cfg=rescale_cfg,
                          negative_embedding=negative_cross_attn_cond,
                          negative_embedding_mask=negative_cross_attn_mask, **kwargs)


def _resize_input_concat(cond: Optional[torch.Tensor], length: int) -> Optional[List[torch.Tensor]]:
    if cond is None:
        return None
    if cond.shape[2] != length:
        cond = F.interpolate(cond, (length,), mode="nearest")
    return [cond]


class UNet1DCondWrapper(ConditionedDiffusionModel):
    """``adp_1d``: ADP UNet1d conditioned on global features and input-concatenated channels (no CFG)."""

    config_kwargs_to = ((UNet1d, ()),)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(supports_global_cond=True, supports_input_concat=True)
        self.model = UNet1d(*args, **kwargs)
        _halve_parameters(self.model)

    def forward(self, x, t, input_concat_cond=None, global_cond=None, cross_attn_cond=None, cross_attn_mask=None,
                prepend_cond=None, prepend_cond_mask=None, cfg_scale=1.0, cfg_dropout_prob=0.0, batch_cfg=False,
                rescale_cfg=False, negative_cross_attn_cond=None, negative_cross_attn_mask=None,
                negative_global_cond=None, negative_input_concat_cond=None, **kwargs):
        for unused in ("cfg_interval", "scale_phi"):  # no CFG in this backbone
            kwargs.pop(unused, None)
        return self.model(x, t, features=global_cond,
                          channels_list=_resize_input_concat(input_concat_cond, x.shape[2]), **kwargs)


class UNet1DUncondWrapper(DiffusionModel):
    """``adp_uncond_1d``: unconditional ADP UNet1d."""

    config_kwargs_to = ((UNet1d, ()),)

    def __init__(self, in_channels: int, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.model = UNet1d(*args, in_channels=in_channels, **kwargs)
        self.io_channels = in_channels
        _halve_parameters(self.model)

    def forward(self, x, t, **kwargs):
        return self.model(x, t, **kwargs)


class DAU1DCondWrapper(ConditionedDiffusionModel):
    """``DAU1d`` conditioned on input-concatenated channels (diffusion autoencoders)."""

    config_kwargs_to = ((DiffusionAttnUnet1D, ()),)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(supports_input_concat=True)
        self.model = DiffusionAttnUnet1D(*args, **kwargs)
        _halve_parameters(self.model)

    def forward(self, x, t, input_concat_cond=None, global_cond=None, cross_attn_cond=None, cross_attn_mask=None,
                prepend_cond=None, prepend_cond_mask=None, cfg_scale=1.0, cfg_dropout_prob=0.0, batch_cfg=False,
                rescale_cfg=False, negative_cross_attn_cond=None, negative_cross_attn_mask=None,
                negative_global_cond=None, negative_input_concat_cond=None, **kwargs):
        return self.model(x, t, cond=input_concat_cond)


class DiffusionModelWrapper(nn.Module):
    """Root of a ``diffusion_uncond`` model: children ``model`` (backbone) and ``pretransform``."""

    diffusion_objective = "v"

    def __init__(self, model: nn.Module, io_channels: int, sample_size: int, sample_rate: int,
                 min_input_length: int, pretransform: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.io_channels = io_channels
        self.sample_size = sample_size
        self.sample_rate = sample_rate
        self.min_input_length = min_input_length
        self.model = model
        self.pretransform = pretransform

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.model(x, t, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``generate_diffusion_uncond(self, *args, **kwargs)`` (see :func:`register_generator`)."""
        return _generator("diffusion_uncond")(self, *args, **kwargs)


def _with_sequence_axis(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(1) if t.dim() == 2 else t


class ConditionedDiffusionModelWrapper(nn.Module):
    """Root of ``diffusion_cond`` / ``diffusion_cond_inpaint`` models (see
    docs/inference.md#loading-a-model-get_pretrained_model)."""

    def __init__(self, model: nn.Module, conditioner: Optional[nn.Module], io_channels: int, sample_rate: int,
                 min_input_length: int, diffusion_objective: str = "v", pretransform: Optional[nn.Module] = None,
                 cross_attn_cond_ids: Sequence[str] = (), global_cond_ids: Sequence[str] = (),
                 input_concat_ids: Sequence[str] = (), prepend_cond_ids: Sequence[str] = (),
                 dist_shift: Optional[Any] = None) -> None:
        super().__init__()
        self.model = model
        self.conditioner = conditioner
        self.io_channels = io_channels
        self.sample_rate = sample_rate
        self.diffusion_objective = diffusion_objective
        self.pretransform = pretransform
        self.cross_attn_cond_ids = list(cross_attn_cond_ids)
        self.global_cond_ids = list(global_cond_ids)
        self.input_concat_ids = list(input_concat_ids)
        self.prepend_cond_ids = list(prepend_cond_ids)
        self.min_input_length = min_input_length
        self.dist_shift = dist_shift

    def get_conditioning_inputs(self, conditioning_tensors: Mapping[str, Any],
                                negative: bool = False) -> Dict[str, Optional[torch.Tensor]]:
        """Assemble conditioner outputs into backbone inputs (cross-attention tokens concatenated along the
        sequence, global vectors along features, input-concat along channels, prepend tokens along the sequence)."""
        cross_attn = cross_mask = global_cond = input_concat = prepend = prepend_mask = None
        if self.cross_attn_cond_ids:
            tensors, masks = [], []
            for key in self.cross_attn_cond_ids:
                tensor, mask = conditioning_tensors[key]
                tensors.append(_with_sequence_axis(tensor))
                masks.append(_with_sequence_axis(mask) if mask is not None and tensor.dim() == 2 else mask)
            cross_attn = torch.cat(tensors, dim=1)
            cross_mask = torch.cat(masks, dim=1) if all(m is not None for m in masks) else None
        if self.global_cond_ids:
            global_cond = torch.cat([conditioning_tensors[key][0] for key in self.global_cond_ids], dim=-1)
            if global_cond.dim() == 3:
                global_cond = global_cond.squeeze(1)
        if self.input_concat_ids:
            input_concat = torch.cat([conditioning_tensors[key][0] for key in self.input_concat_ids], dim=1)
        if self.prepend_cond_ids:
            prepend = torch.cat([conditioning_tensors[key][0] for key in self.prepend_cond_ids], dim=1)
            prepend_mask = torch.cat([conditioning_tensors[key][1] for key in self.prepend_cond_ids], dim=1)
        if negative:
            return {"negative_cross_attn_cond": cross_attn, "negative_cross_attn_mask": cross_mask,
                    "negative_global_cond": global_cond, "negative_input_concat_cond": input_concat}
        return {"cross_attn_cond": cross_attn, "cross_attn_mask": cross_mask, "global_cond": global_cond,
                "input_concat_cond": input_concat, "prepend_cond": prepend, "prepend_cond_mask": prepend_mask}

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, Any], **kwargs: Any):
        return self.model(x, t, **self.get_conditioning_inputs(cond), **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``generate_diffusion_cond(self, *args, **kwargs)`` (see :func:`register_generator`)."""
        return _generator("diffusion_cond")(self, *args, **kwargs)


# ---------------------------------------------------------------------- factories
COND_BACKBONES = ("dit", "adp_cfg_1d", "adp_1d")
# conditioning entries added at run time by inpainting (training wrapper / generate_diffusion_cond_inpaint)
INPAINT_IDS = ("inpaint_mask", "inpaint_masked_input")
UNCOND_BACKBONES = ("DAU1d", "adp_uncond_1d", "dit")


def _pretransform(model_config: Mapping, sample_rate: int, path: str):
    from .factory import create_pretransform_from_config

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
    from .conditioners import create_multi_conditioner_from_conditioning_config

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
