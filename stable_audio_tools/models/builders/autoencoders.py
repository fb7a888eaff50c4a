"""Autoencoder builders: encoders and decoders (docs/model_config.md#encoders-and-decoders-type), the
``autoencoder`` model (docs/model_config.md#autoencoder--model), pretransforms
(docs/model_config.md#pretransforms-modelpretransform) and the ``diffusion_autoencoder`` model.

The pretransform builder lives here because the two recurse: an autoencoder may hold a pretransform, and an
``autoencoder`` pretransform holds an autoencoder. Configs are never mutated; errors are
:class:`~stable_audio_tools.config.ConfigError` naming the JSON path of the bad key.
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Mapping, Optional, Tuple

from torch import nn

from ...config import get_bool, get_number, raise_errors
from .. import pretransforms as P
from ..autoencoders import DIFFAE_BACKBONES, AudioAutoencoder, DiffusionAutoencoder
from ..bottleneck import create_bottleneck_from_config
from ..coder_types import DECODER_TYPES, ENCODER_TYPES
from ..config import ConfigError, build_from_config, check_choice, require, require_mapping, warn_unknown_keys
from ..config_geometry import autoencoder_errors
from ..diffusion import DAU1DCondWrapper, UNet1DCondWrapper
from ..dit import DiTWrapper

__all__ = ["PRETRANSFORM_TYPES", "create_encoder_from_config", "create_decoder_from_config",
           "create_autoencoder_from_config", "create_pretransform_from_config", "create_diffAE_from_config"]

PRETRANSFORM_TYPES = ("autoencoder", "wavelet", "pqmf", "dac_pretrained", "audiocraft_pretrained", "patched")


def _import(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _build_coder(spec: Mapping, registry: Mapping[str, str], path: str, extra_keys: Tuple[str, ...]) -> nn.Module:
    spec = require_mapping(spec, path)
    kind = check_choice(require(spec, "type", path, f"one of {', '.join(registry)}"), registry, f"{path}.type")
    warn_unknown_keys(spec, ("type", "config", "requires_grad") + extra_keys, path)
    module = build_from_config(_import(registry[kind]), spec.get("config", {}), f"{path}.config")
    if not get_bool(spec, "requires_grad", True, path):
        module.requires_grad_(False)
    return module


def create_encoder_from_config(encoder_config: Mapping, path: str = "model.encoder") -> nn.Module:
    """Build an encoder from ``{"type", "config", "requires_grad"?}`` (types: ``ENCODER_TYPES``)."""
    return _build_coder(encoder_config, ENCODER_TYPES, path, ())


def create_decoder_from_config(decoder_config: Mapping, path: str = "model.decoder") -> nn.Module:
    """Build a decoder from ``{"type", "config", "requires_grad"?, "soft_clip"?}`` (types: ``DECODER_TYPES``)."""
    return _build_coder(decoder_config, DECODER_TYPES, path, ("soft_clip",))


_AE_MODEL_KEYS = ("encoder", "decoder", "bottleneck", "pretransform", "latent_dim", "downsampling_ratio",
                  "io_channels", "in_channels", "out_channels")


def create_autoencoder_from_config(config: Mapping, path: str = "") -> AudioAutoencoder:
    """Build an ``AudioAutoencoder`` from a full model config (``{"model": {...}, "sample_rate": ...}``).

    ``path`` is the JSON path of the ``model`` block in error messages (default ``model``; an autoencoder
    pretransform passes ``model.pretransform.config``).
    """

    config = require_mapping(config, "<root>")
    mpath = path or "model"
    ae = require_mapping(require(config, "model", ""), mpath)
    sample_rate = require(config, "sample_rate", "", "audio sample rate in Hz", (int,))
    latent_dim = require(ae, "latent_dim", mpath, "number of latent channels", (int,))
    ratio = require(ae, "downsampling_ratio", mpath, "audio samples per latent frame", (int,))
    io_channels = require(ae, "io_channels", mpath, "audio channels", (int,))
    if ratio <= 0:
        raise ConfigError(f"{mpath}.downsampling_ratio", f"must be a positive integer, got {ratio}")
    warn_unknown_keys(ae, _AE_MODEL_KEYS, mpath)
    bottleneck_cfg = ae.get("bottleneck")
    encoder_cfg = require_mapping(require(ae, "encoder", mpath), f"{mpath}.encoder")
    decoder_cfg = require_mapping(require(ae, "decoder", mpath), f"{mpath}.decoder")
    raise_errors(autoencoder_errors(ae, mpath))
    encoder = create_encoder_from_config(encoder_cfg, f"{mpath}.encoder")
    decoder = create_decoder_from_config(decoder_cfg, f"{mpath}.decoder")
    bottleneck = None
    if bottleneck_cfg is not None:
        bottleneck = create_bottleneck_from_config(bottleneck_cfg, f"{mpath}.bottleneck")
    pretransform = None
    if ae.get("pretransform") is not None:
        pretransform = create_pretransform_from_config(ae["pretransform"], sample_rate, f"{mpath}.pretransform")
    return AudioAutoencoder(encoder, decoder, latent_dim=latent_dim, downsampling_ratio=ratio,
                            sample_rate=sample_rate, io_channels=io_channels, bottleneck=bottleneck,
                            pretransform=pretransform, in_channels=ae.get("in_channels"),
                            out_channels=ae.get("out_channels"),
                            soft_clip=get_bool(decoder_cfg, "soft_clip", False, f"{mpath}.decoder"))



def create_diffAE_from_config(config: Mapping) -> DiffusionAutoencoder:
    """Build a ``diffusion_autoencoder`` model from its full config (``{"model": {...}, "sample_rate": ...}``)."""

    model = require_mapping(require(config, "model", ""), "model")
    warn_unknown_keys(model, ("encoder", "decoder", "diffusion", "bottleneck", "pretransform", "latent_dim",
                              "downsampling_ratio", "io_channels"), "model")
    diffusion = require_mapping(require(model, "diffusion", "model", "the diffusion decoder"), "model.diffusion")
    kind = check_choice(require(diffusion, "type", "model.diffusion", f"one of {', '.join(DIFFAE_BACKBONES)}"),
                        DIFFAE_BACKBONES, "model.diffusion.type")
    backbone_config = dict(require(diffusion, "config", "model.diffusion", "the backbone options"))
    if kind == "dit":
        # upstream required diffusion_objective inside config; the diffusion decoder is always v-objective
        backbone_config.setdefault("diffusion_objective", "v")
    classes = {"DAU1d": DAU1DCondWrapper, "adp_1d": UNet1DCondWrapper, "dit": DiTWrapper}
    backbone = build_from_config(classes[kind], backbone_config, "model.diffusion.config")
    if kind == "DAU1d":
        factor = int(math.prod(backbone_config.get("strides", [2] * (backbone_config.get("depth", 14) - 1))))
    elif kind == "adp_1d":
        factor = int(math.prod(backbone_config.get("factors", [1])))
    else:
        factor = 1
    sample_rate = require(config, "sample_rate", "", "audio sample rate in Hz", (int,))
    encoder = create_encoder_from_config(model["encoder"], "model.encoder") if "encoder" in model else None
    decoder = create_decoder_from_config(model["decoder"], "model.decoder") if "decoder" in model else None
    bottleneck = create_bottleneck_from_config(model["bottleneck"], "model.bottleneck") \
        if model.get("bottleneck") is not None else None
    pretransform: Optional[nn.Module] = create_pretransform_from_config(model["pretransform"], sample_rate,
                                                                        "model.pretransform") \
        if model.get("pretransform") is not None else None
    return DiffusionAutoencoder(
        backbone, factor, encoder=encoder, decoder=decoder,
        latent_dim=require(model, "latent_dim", "model", "latent channels", (int,)),
        downsampling_ratio=require(model, "downsampling_ratio", "model", "audio samples per latent frame", (int,)),
        sample_rate=sample_rate, io_channels=require(model, "io_channels", "model", "audio channels", (int,)),
        bottleneck=bottleneck, pretransform=pretransform)


def create_pretransform_from_config(pretransform_config: Mapping, sample_rate: int,
                                    path: str = "model.pretransform") -> nn.Module:
    """Build a pretransform from ``{"type", "config", "enable_grad"?, ...}`` (see
    docs/model_config.md#pretransforms-modelpretransform).

    The result is in eval mode with ``requires_grad`` = ``enable_grad`` (default False).
    """
    spec = require_mapping(pretransform_config, path)
    kind = check_choice(require(spec, "type", path, f"one of {', '.join(PRETRANSFORM_TYPES)}"),
                        PRETRANSFORM_TYPES, f"{path}.type")
    config = spec.get("config", {})
    if kind == "autoencoder":
        warn_unknown_keys(spec, ("type", "config", "enable_grad", "scale", "model_half", "iterate_batch", "chunked"),
                          path)
        inner = create_autoencoder_from_config({"model": require(spec, "config", path), "sample_rate": sample_rate},
                                               path=f"{path}.config")
        pretransform = P.AutoencoderPretransform(inner,
                                                 scale=get_number(spec, "scale", 1.0, path, low=0, low_open=True),
                                                 model_half=get_bool(spec, "model_half", False, path),
                                                 iterate_batch=get_bool(spec, "iterate_batch", False, path),
                                                 chunked=get_bool(spec, "chunked", False, path))
    else:
        warn_unknown_keys(spec, ("type", "config", "enable_grad"), path)
        classes = {
            "wavelet": P.WaveletPretransform,
            "pqmf": P.PQMFPretransform,
            "dac_pretrained": P.PretrainedDACPretransform,
            "audiocraft_pretrained": P.AudiocraftCompressionPretransform,
            "patched": P.PatchedPretransform,
        }
        pretransform = build_from_config(classes[kind], config, f"{path}.config")
    enable_grad = get_bool(spec, "enable_grad", False, path)
    pretransform.enable_grad = enable_grad
    pretransform.eval().requires_grad_(enable_grad)
    return pretransform
