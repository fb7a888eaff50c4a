"""Diffusion autoencoders (``diffusion_autoencoder``, SPEC 2.5, 4.7): an optional encoder/decoder pair whose latents
condition a diffusion decoder through input concatenation."""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoders import AudioAutoencoder, create_decoder_from_config, create_encoder_from_config
from .config import build_from_config, check_choice, require, require_mapping, warn_unknown_keys

__all__ = ["DiffusionAutoencoder", "create_diffAE_from_config", "DIFFAE_BACKBONES"]

DIFFAE_BACKBONES = ("DAU1d", "adp_1d", "dit")


class DiffusionAutoencoder(AudioAutoencoder):
    """An ``AudioAutoencoder`` whose decoding ends with v-DDIM sampling of ``diffusion`` conditioned on the latents.

    Fixes upstream's recursion when a decoder exists (it called ``self.decode`` instead of ``self.decoder``).
    ``encoder`` / ``decoder`` may be ``None`` (identity).
    """

    def __init__(self, diffusion: nn.Module, diffusion_downsampling_ratio: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.diffusion = diffusion
        self.min_length = self.downsampling_ratio * diffusion_downsampling_ratio
        if self.encoder is not None:
            with torch.no_grad():
                for param in self.encoder.parameters():
                    param.mul_(0.5)

    def decode(self, latents: torch.Tensor, steps: int = 100, **kwargs: Any) -> torch.Tensor:
        from ..inference.sampling import sample

        upsampled_length = latents.shape[2] * self.downsampling_ratio
        if self.bottleneck is not None:
            latents = self.bottleneck.decode(latents)
        if self.decoder is not None:
            latents = self.decoder(latents)
        if latents.shape[2] != upsampled_length:
            latents = F.interpolate(latents, size=upsampled_length, mode="nearest")
        noise = torch.randn(latents.shape[0], self.io_channels, upsampled_length, device=latents.device,
                            dtype=latents.dtype)
        decoded = sample(self.diffusion, noise, steps, 0, input_concat_cond=latents)
        if self.pretransform is not None:
            decoded = self.pretransform.decode(decoded)
        return decoded


def create_diffAE_from_config(config: Mapping) -> DiffusionAutoencoder:
    """Build a ``diffusion_autoencoder`` model (SPEC 2.5)."""
    from .bottleneck import create_bottleneck_from_config
    from .diffusion import DAU1DCondWrapper, UNet1DCondWrapper
    from .dit import DiTWrapper
    from .factory import create_pretransform_from_config

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
