"""Oobleck convolutional encoder / decoder (see docs/model_config.md#encoders-and-decoders-type), the autoencoder of
Stable Audio 2.x / Open.

Module trees and state-dict names follow upstream exactly, e.g. for the encoder ``layers.0`` (input
conv), ``layers.{1..n}`` (EncoderBlocks, each ``layers.{0,1,2}`` ResidualUnits + activation + strided
conv), then the final activation and the latent projection. All convolutions are weight-normed
(``weight_g`` / ``weight_v`` / ``bias``).

Inference on the CPU runs each ResidualUnit over time tiles (:mod:`.tiled_residual`), writing over its input
where the enclosing block made that tensor.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .activations import get_activation
from .tiled_residual import residual_tile_length, tiled_residual
from .wn import WNConv1d, WNConvTranspose1d

__all__ = ["ResidualUnit", "EncoderBlock", "DecoderBlock", "OobleckEncoder", "OobleckDecoder"]


def _act_name(use_snake: bool) -> str:
    return "snake" if use_snake else "elu"


def _channel_multipliers(c_mults: Sequence[int], strides: Sequence[int], owner: str) -> list:
    """``[1] + c_mults`` after checking that there is one stride per multiplier."""
    c_mults = list(c_mults)
    strides = list(strides)
    if not c_mults:
        raise ValueError(f"{owner}: c_mults must list at least one channel multiplier")
    if len(strides) < len(c_mults):
        raise ValueError(f"{owner}: got {len(c_mults)} c_mults but only {len(strides)} strides; "
                         "give one stride per channel multiplier")
    if len(strides) > len(c_mults):
        warnings.warn(f"{owner}: {len(strides)} strides for {len(c_mults)} c_mults; the extra strides "
                      f"{strides[len(c_mults):]} are ignored (as upstream does)", stacklevel=3)
    return [1] + c_mults


class ResidualUnit(nn.Module):
    """``x + layers(x)`` with ``layers`` = [act, WNConv1d(k=7, dilation), act, WNConv1d(k=1)].

    In training mode (and when ``gradient_checkpointing`` is on, the upstream behaviour) ``layers`` runs
    under non-reentrant activation checkpointing: less memory, one extra forward in backward, same values.
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int, use_snake: bool = False,
                 antialias_activation: bool = False, gradient_checkpointing: bool = True) -> None:
        super().__init__()
        self.dilation = dilation
        self.gradient_checkpointing = gradient_checkpointing
        padding = (dilation * (7 - 1)) // 2
        self.layers = nn.Sequential(
            get_activation(_act_name(use_snake), antialias=antialias_activation, channels=out_channels),
            WNConv1d(in_channels=in_channels, out_channels=out_channels, kernel_size=7, dilation=dilation,
                     padding=padding),
            get_activation(_act_name(use_snake), antialias=antialias_activation, channels=out_channels),
            WNConv1d(in_channels=out_channels, out_channels=out_channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """``x + layers(x)``. ``inplace`` (inference only: ignored while gradients are recorded) lets the tiled CPU
        path (:func:`~stable_audio_tools.models.tiled_residual.tiled_residual`) write the result over ``x``; callers
        pass it for tensors nobody else holds."""
        tile = residual_tile_length(self.layers, x)
        if tile:
            return tiled_residual(self.layers, x, tile, out=x if inplace else None)
        if self.training and self.gradient_checkpointing and torch.is_grad_enabled():
            y = checkpoint(self.layers, x, use_reentrant=False)
        else:
            y = self.layers(x)
        return y + x


def _run_block(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)``; at inference the ResidualUnits may write over activations made inside the block (never
    over ``x``, the caller's tensor)."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return layers(x)
    given = x.untyped_storage().data_ptr()
    for layer in layers:
        owned = x.untyped_storage().data_ptr() != given
        x = layer(x, inplace=owned) if isinstance(layer, ResidualUnit) else layer(x)
    return x


class EncoderBlock(nn.Module):
    """Three dilated ResidualUnits (1, 3, 9), an activation and a strided WNConv1d (k = 2*stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool = False,
                 antialias_activation: bool = False, gradient_checkpointing: bool = True) -> None:
        super().__init__()
        units = [ResidualUnit(in_channels=in_channels, out_channels=in_channels, dilation=d, use_snake=use_snake,
                              gradient_checkpointing=gradient_checkpointing) for d in (1, 3, 9)]
        self.layers = nn.Sequential(
            *units,
            get_activation(_act_name(use_snake), antialias=antialias_activation, channels=in_channels),
            WNConv1d(in_channels=in_channels, out_channels=out_channels, kernel_size=2 * stride, stride=stride,
                     padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_block(self.layers, x)


class DecoderBlock(nn.Module):
    """Activation, upsampling by ``stride`` and three dilated ResidualUnits (1, 3, 9).

    The upsampler is a WNConvTranspose1d (k = 2*stride) or, with ``use_nearest_upsample``,
    ``Sequential(nn.Upsample(nearest), WNConv1d(k=2*stride, padding="same", bias=False))``.
    ``antialias_activation`` applies to the leading activation only.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool = False,
                 antialias_activation: bool = False, use_nearest_upsample: bool = False,
                 gradient_checkpointing: bool = True) -> None:
        super().__init__()
        if use_nearest_upsample:
            upsample: nn.Module = nn.Sequential(
                nn.Upsample(scale_factor=stride, mode="nearest"),
                WNConv1d(in_channels=in_channels, out_channels=out_channels, kernel_size=2 * stride, stride=1,
                         bias=False, padding="same"),
            )
        else:
            upsample = WNConvTranspose1d(in_channels=in_channels, out_channels=out_channels,
                                         kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2))
        units = [ResidualUnit(in_channels=out_channels, out_channels=out_channels, dilation=d,
                              use_snake=use_snake, gradient_checkpointing=gradient_checkpointing)
                 for d in (1, 3, 9)]
        self.layers = nn.Sequential(
            get_activation(_act_name(use_snake), antialias=antialias_activation, channels=in_channels),
            upsample,
            *units,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_block(self.layers, x)


class OobleckEncoder(nn.Module):
    """Audio ``[B, in_channels, T]`` -> latents ``[B, latent_dim, T / prod(strides)]``.

    ``layers`` = [WNConv1d(in, ch, 7), EncoderBlock(m_i*ch -> m_{i+1}*ch, strides[i]) for each of
    ``c_mults``, activation (anti-aliased if ``antialias_activation``), WNConv1d(-> latent_dim, 3)].
    ``gradient_checkpointing`` (not an upstream option; default True = upstream behaviour) controls the
    activation checkpointing of every ResidualUnit in training mode; turn it off to trade memory for speed.
    """

    def __init__(self, in_channels: int = 2, channels: int = 128, latent_dim: int = 32,
                 c_mults: Sequence[int] = (1, 2, 4, 8), strides: Sequence[int] = (2, 4, 8, 8),
                 use_snake: bool = False, antialias_activation: bool = False,
                 gradient_checkpointing: bool = True) -> None:
        super().__init__()
        mults = _channel_multipliers(c_mults, strides, "OobleckEncoder")
        self.depth = len(mults)
        layers = [WNConv1d(in_channels=in_channels, out_channels=mults[0] * channels, kernel_size=7, padding=3)]
        for i in range(self.depth - 1):
            layers.append(EncoderBlock(in_channels=mults[i] * channels, out_channels=mults[i + 1] * channels,
                                       stride=strides[i], use_snake=use_snake,
                                       gradient_checkpointing=gradient_checkpointing))
        layers += [
            get_activation(_act_name(use_snake), antialias=antialias_activation, channels=mults[-1] * channels),
            WNConv1d(in_channels=mults[-1] * channels, out_channels=latent_dim, kernel_size=3, padding=1),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OobleckDecoder(nn.Module):
    """Latents ``[B, latent_dim, L]`` -> audio ``[B, out_channels, L * prod(strides)]``.

    ``layers`` = [WNConv1d(latent_dim -> m_last*ch, 7), DecoderBlock(m_i*ch -> m_{i-1}*ch, strides[i-1])
    for i = len(c_mults)..1, activation, WNConv1d(ch -> out_channels, 7, bias=False), Tanh or Identity].
    ``gradient_checkpointing``: see :class:`OobleckEncoder`.
    """

    def __init__(self, out_channels: int = 2, channels: int = 128, latent_dim: int = 32,
                 c_mults: Sequence[int] = (1, 2, 4, 8), strides: Sequence[int] = (2, 4, 8, 8),
                 use_snake: bool = False, antialias_activation: bool = False, use_nearest_upsample: bool = False,
                 final_tanh: bool = True, gradient_checkpointing: bool = True) -> None:
        super().__init__()
        mults = _channel_multipliers(c_mults, strides, "OobleckDecoder")
        self.depth = len(mults)
        layers = [WNConv1d(in_channels=latent_dim, out_channels=mults[-1] * channels, kernel_size=7, padding=3)]
        for i in range(self.depth - 1, 0, -1):
            layers.append(DecoderBlock(in_channels=mults[i] * channels, out_channels=mults[i - 1] * channels,
                                       stride=strides[i - 1], use_snake=use_snake,
                                       antialias_activation=antialias_activation,
                                       use_nearest_upsample=use_nearest_upsample,
                                       gradient_checkpointing=gradient_checkpointing))
        layers += [
            get_activation(_act_name(use_snake), antialias=antialias_activation, channels=mults[0] * channels),
            WNConv1d(in_channels=mults[0] * channels, out_channels=out_channels, kernel_size=7, padding=3,
                     bias=False),
            nn.Tanh() if final_tanh else nn.Identity(),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
