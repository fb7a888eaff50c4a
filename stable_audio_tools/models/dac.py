"""descript-audio-codec 1.0.0 encoder / decoder, reimplemented, and stable-audio-tools' wrappers (see
docs/model_config.md#encoders-and-decoders-type).

Module trees and state-dict names equal DAC's (``block.*`` in the encoder, ``model.*`` in the decoder), so
DAC-based stable-audio-tools checkpoints (e.g. the Stable Audio 1.0 VAE) load strictly. All convolutions
are weight-normed except the wrappers' ``proj_out``. Like upstream, the wrappers use DAC's ``Encoder`` /
``Decoder`` classes directly, so parameters keep PyTorch's default initialisation (DAC's
``init_weights`` is only applied by DAC's own top-level ``DAC`` model, which is not used here).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from .activations import Snake1d
from .tiled_residual import residual_tile_length, tiled_residual
from .wn import WNConv1d, WNConvTranspose1d

__all__ = [
    "ResidualUnit",
    "EncoderBlock",
    "Encoder",
    "DecoderBlock",
    "Decoder",
    "DACEncoderWrapper",
    "DACDecoderWrapper",
]


class ResidualUnit(nn.Module):
    """``block`` = [Snake1d, WNConv1d(k=7, dilation), Snake1d, WNConv1d(k=1)]; output = x + block(x).

    When ``block`` shortens the signal, ``x`` is center-cropped to the output length first.
    """

    def __init__(self, dim: int = 16, dilation: int = 1) -> None:
        super().__init__()
        pad = ((7 - 1) * dilation) // 2
        self.block = nn.Sequential(
            Snake1d(dim),
            WNConv1d(dim, dim, kernel_size=7, dilation=dilation, padding=pad),
            Snake1d(dim),
            WNConv1d(dim, dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tile = residual_tile_length(self.block, x)  # CPU inference on long inputs: see tiled_residual
        if tile:
            return tiled_residual(self.block, x, tile)
        y = self.block(x)
        pad = (x.shape[-1] - y.shape[-1]) // 2
        if pad > 0:
            x = x[..., pad:-pad]
        return x + y


class EncoderBlock(nn.Module):
    """ResidualUnits (dilations 1, 3, 9) at ``dim // 2`` channels, Snake1d, strided conv to ``dim``."""

    def __init__(self, dim: int = 16, stride: int = 1) -> None:
        super().__init__()
        self.block = nn.Sequential(
            ResidualUnit(dim // 2, dilation=1),
            ResidualUnit(dim // 2, dilation=3),
            ResidualUnit(dim // 2, dilation=9),
            Snake1d(dim // 2),
            WNConv1d(dim // 2, dim, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    """Mono audio ``[B, 1, T]`` -> ``[B, d_latent, T / prod(strides)]``; channels double in every block.

    ``enc_dim`` is the channel count before the final projection (``d_model * 2**len(strides)``).
    """

    def __init__(self, d_model: int = 64, strides: Sequence[int] = (2, 4, 8, 8), d_latent: int = 64) -> None:
        super().__init__()
        block = [WNConv1d(1, d_model, kernel_size=7, padding=3)]
        for stride in strides:
            d_model *= 2
            block.append(EncoderBlock(d_model, stride=stride))
        block += [
            Snake1d(d_model),
            WNConv1d(d_model, d_latent, kernel_size=3, padding=1),
        ]
        self.block = nn.Sequential(*block)
        self.enc_dim = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """Snake1d, transposed conv upsampling by ``stride`` (k = 2*stride), ResidualUnits (1, 3, 9)."""

    def __init__(self, input_dim: int = 16, output_dim: int = 8, stride: int = 1) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(input_dim),
            WNConvTranspose1d(input_dim, output_dim, kernel_size=2 * stride, stride=stride,
                              padding=math.ceil(stride / 2)),
            ResidualUnit(output_dim, dilation=1),
            ResidualUnit(output_dim, dilation=3),
            ResidualUnit(output_dim, dilation=9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    """``[B, input_channel, L]`` -> ``[B, d_out, L * prod(rates)]``; channels halve in every block, Tanh output."""

    def __init__(self, input_channel: int, channels: int, rates: Sequence[int], d_out: int = 1) -> None:
        super().__init__()
        if not rates:
            raise ValueError("DAC Decoder needs at least one upsampling rate in `rates`")
        layers = [WNConv1d(input_channel, channels, kernel_size=7, padding=3)]
        for i, stride in enumerate(rates):
            input_dim = channels // 2 ** i
            output_dim = channels // 2 ** (i + 1)
            layers.append(DecoderBlock(input_dim, output_dim, stride))
        layers += [
            Snake1d(output_dim),
            WNConv1d(output_dim, d_out, kernel_size=7, padding=3),
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class DACEncoderWrapper(nn.Module):
    """DAC :class:`Encoder` (``encoder``) followed by a plain 1x1 ``nn.Conv1d`` ``proj_out`` to ``latent_dim``.

    The encoder's own latent projection keeps ``d_model * 2**len(strides)`` channels; ``proj_out`` is an
    ``nn.Identity`` when ``latent_dim`` is None. For ``in_channels != 1`` the first conv ``encoder.block.0``
    is replaced by a WNConv1d taking ``in_channels`` (same key names, built after ``proj_out`` like upstream).
    """

    def __init__(self, in_channels: int = 1, latent_dim: Optional[int] = None, d_model: int = 64,
                 strides: Sequence[int] = (2, 4, 8, 8)) -> None:
        super().__init__()
        encoder_out_dim = d_model * (2 ** len(strides))
        self.encoder = Encoder(d_model=d_model, strides=strides, d_latent=encoder_out_dim)
        self.latent_dim = latent_dim
        self.proj_out = (nn.Conv1d(self.encoder.enc_dim, latent_dim, kernel_size=1) if latent_dim is not None
                         else nn.Identity())
        if in_channels != 1:
            self.encoder.block[0] = WNConv1d(in_channels, d_model, kernel_size=7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.encoder(x))


class DACDecoderWrapper(nn.Module):
    """DAC :class:`Decoder` (``decoder``) from ``latent_dim`` channels to ``out_channels`` audio channels."""

    def __init__(self, latent_dim: int, out_channels: int = 1, channels: int = 1536,
                 rates: Sequence[int] = (8, 8, 4, 2)) -> None:
        super().__init__()
        self.decoder = Decoder(input_channel=latent_dim, channels=channels, rates=rates, d_out=out_channels)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(x)
