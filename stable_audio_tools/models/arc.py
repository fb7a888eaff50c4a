"""Discriminator heads for ARC post-training (upstream ``models/arc.py``), with upstream's parameter names.

The heads score hidden states ``[B, D, T]`` of a DiT discriminator backbone.

* ``ConvNeXtDiscriminator`` -> child ``encoder`` = :class:`~.convnext.ConvNeXtEncoder`.
* ``ConvDiscriminator``: ``layers`` = 4 x [Conv1d(k4, s2, p1), GroupNorm(32), SiLU] + Conv1d(k4) to one channel.

Both offer ``loss(reals, fakes)`` -> ``{"loss_dis", "loss_adv"}`` with ``loss_type`` ``"lsgan"`` or
``"relativistic"`` (:func:`~.discriminators.get_relativistic_losses`).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from .convnext import ConvNeXtEncoder
from .discriminators import get_relativistic_losses

__all__ = ["ConvNeXtDiscriminator", "ConvDiscriminator", "get_relativistic_losses"]


def _gan_losses(loss_type: str, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> Dict[str, torch.Tensor]:
    if loss_type == "lsgan":
        return {"loss_dis": fake_scores.pow(2).mean() + (1 - real_scores).pow(2).mean(),
                "loss_adv": (1 - fake_scores).pow(2).mean()}
    if loss_type == "relativistic":
        loss_dis, loss_adv = get_relativistic_losses(real_scores, fake_scores)
        return {"loss_dis": loss_dis, "loss_adv": loss_adv}
    raise ValueError(f"unknown loss_type {loss_type!r}; use 'lsgan' or 'relativistic'")


class ConvNeXtDiscriminator(nn.Module):
    """ConvNeXt encoder producing per-frame scores (``latent_dim`` channels, 1 for ARC).

    Args:
        loss_type (str): ``"lsgan"`` or ``"relativistic"``. Default ``"lsgan"``.
        **encoder_kwargs: arguments of :class:`~.convnext.ConvNeXtEncoder` (``in_channels``, ``channels``,
            ``latent_dim``, ``c_mults``, ``strides``, ``num_blocks``, ``conv_args``).
    """

    def __init__(self, loss_type: str = "lsgan", **encoder_kwargs: Any) -> None:
        super().__init__()
        self.encoder = ConvNeXtEncoder(**encoder_kwargs)
        self.loss_type = loss_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> Dict[str, torch.Tensor]:
        """GAN losses (``lsgan`` or ``relativistic``) of real and fake inputs."""
        return _gan_losses(self.loss_type, self(reals), self(fakes))


class ConvDiscriminator(nn.Module):
    """Four stride-2 conv/GroupNorm/SiLU stages and a k4 conv to one score channel; optional ``soft_clip_scale``
    bounds the scores with ``s·tanh(x/s)``.

    Args:
        channels (int): input channels, a multiple of 32 (GroupNorm groups).
        soft_clip_scale (float, optional): scale ``s`` of the soft clip. Default None (no clipping).
        loss_type (str): ``"lsgan"`` or ``"relativistic"``. Default ``"lsgan"``.
    """

    def __init__(self, channels: int, soft_clip_scale: Optional[float] = None, loss_type: str = "lsgan") -> None:
        super().__init__()
        if channels % 32:
            raise ValueError(f"ConvDiscriminator needs channels divisible by 32 (GroupNorm(32)), got {channels}")
        self.loss_type = loss_type
        layers: list = []
        for _ in range(4):
            layers += [nn.Conv1d(channels, channels, kernel_size=4, stride=2, padding=1),
                       nn.GroupNorm(num_groups=32, num_channels=channels), nn.SiLU()]
        layers.append(nn.Conv1d(channels, 1, kernel_size=4, stride=1, padding=0))
        self.layers = nn.Sequential(*layers)
        self.soft_clip_scale = soft_clip_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        if self.soft_clip_scale is not None:
            out = self.soft_clip_scale * torch.tanh(out / self.soft_clip_scale)
        return out

    def loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> Dict[str, torch.Tensor]:
        """GAN losses (``lsgan`` or ``relativistic``) of real and fake inputs."""
        return _gan_losses(self.loss_type, self(reals), self(fakes))
