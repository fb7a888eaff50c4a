"""Discriminator heads for ARC post-training (SPEC 5.7), with upstream's parameter names.

The heads score hidden states ``[B, D, T]`` of a DiT discriminator backbone.

* ``ConvNeXtDiscriminator`` -> child ``encoder`` = ``ConvNeXtEncoder``: ``proj_in`` (WN conv k7), ``layers`` =
  ``ConvNextEncoderBlock`` s (``layers.{j}`` ConvNeXt blocks: ``dw_conv`` depthwise WN conv, ``proj_up`` WN 1x1,
  ``proj_down`` WN 1x1; then ``downsample`` WN conv with kernel 2·stride) and a final WN conv k3 to ``latent_dim``.
* ``ConvDiscriminator``: ``layers`` = 4 x [Conv1d(k4, s2, p1), GroupNorm(32), SiLU] + Conv1d(k4) to one channel.

Upstream zero-initialises ``proj_down.weight`` after applying the legacy weight-norm hook, which has no effect
(the hook recomputes the weight from ``weight_g``/``weight_v``); only its bias zero-init is effective, and that
is what happens here.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..models.wn import WNConv1d

__all__ = ["ConvNeXtBlock", "ConvNextEncoderBlock", "ConvNeXtEncoder", "ConvNeXtDiscriminator", "ConvDiscriminator",
           "relativistic_losses"]


def relativistic_losses(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``loss_dis = softplus(-(real - fake)).mean()``, ``loss_adv = softplus(real - fake).mean()``."""
    diff = real_scores - fake_scores
    return {"loss_dis": F.softplus(-diff).mean(), "loss_adv": F.softplus(diff).mean()}


def _gan_losses(loss_type: str, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> Dict[str, torch.Tensor]:
    if loss_type == "lsgan":
        return {"loss_dis": fake_scores.pow(2).mean() + (1 - real_scores).pow(2).mean(),
                "loss_adv": (1 - fake_scores).pow(2).mean()}
    if loss_type == "relativistic":
        return relativistic_losses(real_scores, fake_scores)
    raise ValueError(f"unknown loss_type {loss_type!r}; use 'lsgan' or 'relativistic'")


class ConvNeXtBlock(nn.Module):
    """Residual ConvNeXt block: depthwise conv -> 1x1 up (GELU, or SiLU-gated with ``glu``) -> 1x1 down."""

    def __init__(self, dim: int, kernel_size: int = 7, mult: int = 4, glu: bool = False) -> None:
        super().__init__()
        self.dw_conv = WNConv1d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        self.glu = glu
        self.proj_up = WNConv1d(dim, dim * mult * (2 if glu else 1), kernel_size=1)
        self.act = nn.SiLU() if glu else nn.GELU()
        self.proj_down = WNConv1d(dim * mult, dim, kernel_size=1)
        nn.init.zeros_(self.proj_down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj_up(self.dw_conv(x))
        if self.glu:
            h, gate = h.chunk(2, dim=1)
            h = h * torch.sigmoid(gate)
        return self.proj_down(self.act(h)) + x


class ConvNextEncoderBlock(nn.Module):
    """``num_blocks`` ConvNeXt blocks (gradient-checkpointed while training) then a strided WN downsample."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, num_blocks: int = 3,
                 conv_args: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList([ConvNeXtBlock(dim=in_channels, **dict(conv_args or {}))
                                     for _ in range(num_blocks)])
        self.downsample = WNConv1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                                   padding=math.ceil(stride / 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = checkpoint(layer, x, use_reentrant=False) if torch.is_grad_enabled() else layer(x)
        return self.downsample(x)


class ConvNeXtEncoder(nn.Module):
    """``[B, in_channels, T]`` -> ``[B, latent_dim, T / prod(strides)]`` (upstream ``models/convnext.py``)."""

    def __init__(self, in_channels: int = 2, channels: int = 128, latent_dim: int = 32,
                 c_mults: Sequence[int] = (1, 2, 4, 8), strides: Sequence[int] = (2, 4, 8, 8),
                 num_blocks: Optional[Sequence[int]] = None, conv_args: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        c_mults = [1] + list(c_mults)
        if len(strides) < len(c_mults) - 1:
            raise ValueError(f"strides needs {len(c_mults) - 1} entries (one per c_mults entry), got {list(strides)}")
        num_blocks = [3] * (len(c_mults) - 1) if num_blocks is None else list(num_blocks)
        self.depth = len(c_mults)
        self.proj_in = WNConv1d(in_channels, c_mults[0] * channels, kernel_size=7, padding=3)
        layers: list = [ConvNextEncoderBlock(c_mults[i] * channels, c_mults[i + 1] * channels, stride=strides[i],
                                             num_blocks=num_blocks[i], conv_args=conv_args)
                        for i in range(self.depth - 1)]
        layers.append(WNConv1d(c_mults[-1] * channels, latent_dim, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.proj_in(x))


class ConvNeXtDiscriminator(nn.Module):
    """ConvNeXt encoder producing per-frame scores (``latent_dim`` channels, 1 for ARC)."""

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
    bounds the scores with ``s·tanh(x/s)``. ``channels`` must be a multiple of 32 (GroupNorm groups)."""

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
