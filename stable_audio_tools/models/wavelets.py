"""Multi-level 1-D discrete wavelet packet transform with fixed biorthogonal filters (see
docs/model_config.md#pretransforms-modelpretransform, ``wavelet``).

:class:`WaveletEncode1d` maps ``[B, C, T]`` to ``[B, C * 2**levels, T / 2**levels]`` and
:class:`WaveletDecode1d` inverts it. Each holds one fixed buffer ``kernel`` of shape
``[2 * channels, channels, taps]`` built from the PyWavelets filter bank of ``wavelet``: output channel
``band * channels + c`` filters input channel ``c`` with the analysis low-pass (band 0) or high-pass
(band 1) filter -- time-reversed, since ``conv1d`` is a correlation -- and the decoder uses the two
synthesis filters the same way with a transposed convolution.

Per level the encoder splits only the first ``channels`` channels (the current low band) into a
low/high pair by a stride-2 convolution over the reflect-padded signal, and re-packs every other,
already decomposed channel so that its length halves and its channel count doubles (even/odd samples
become separate channels). ``T`` must be a multiple of ``2**levels``.
"""
from __future__ import annotations

from typing import Tuple

import pywt
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["WAVELETS", "get_filter_bank", "WaveletEncode1d", "WaveletDecode1d"]

#: Wavelets accepted by the transforms (odd-length biorthogonal filter banks).
WAVELETS: Tuple[str, ...] = ("bior2.2", "bior2.4", "bior2.6", "bior2.8", "bior4.4", "bior6.8")


def get_filter_bank(wavelet: str) -> torch.Tensor:
    """The ``[4, taps]`` PyWavelets filter bank (dec_lo, dec_hi, rec_lo, rec_hi) as float32.

    Biorthogonal banks whose first column is all zeros have it removed, which makes ``taps`` odd.
    """
    if wavelet not in WAVELETS:
        raise ValueError(f"unsupported wavelet {wavelet!r}; use one of {', '.join(WAVELETS)}")
    bank = torch.tensor(pywt.Wavelet(wavelet).filter_bank)
    if wavelet.startswith("bior") and bool((bank[:, 0] == 0).all()):
        bank = bank[:, 1:]
    return bank


def _per_channel_kernel(pair: torch.Tensor, channels: int) -> torch.Tensor:
    """``[2, taps]`` filters -> dense ``[2 * channels, channels, taps]`` weight applying each per channel."""
    kernel = torch.zeros(2 * channels, channels, pair.shape[-1], dtype=pair.dtype)
    for band in range(2):
        for c in range(channels):
            kernel[band * channels + c, c] = pair[band]
    return kernel


def _check_levels(channels: int, levels: int) -> None:
    if channels < 1 or levels < 1:
        raise ValueError(f"channels and levels must be positive, got channels={channels}, levels={levels}")


class WaveletEncode1d(nn.Module):
    """Analysis: ``[B, C, T] -> [B, C * 2**levels, T / 2**levels]`` (buffer ``kernel``)."""

    def __init__(self, channels: int, levels: int, wavelet: str = "bior4.4") -> None:
        super().__init__()
        _check_levels(channels, levels)
        self.wavelet = wavelet
        self.channels = channels
        self.levels = levels
        bank = get_filter_bank(wavelet)
        self.register_buffer("kernel", _per_channel_kernel(bank[:2].flip(-1), channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % (2 ** self.levels):
            raise ValueError(f"wavelet encoding needs a length that is a multiple of 2**levels = "
                             f"{2 ** self.levels}, got {x.shape[-1]}; pad the audio first")
        pad = self.kernel.shape[-1] // 2
        for _ in range(self.levels):
            low, rest = x[:, :self.channels], x[:, self.channels:]
            low = F.conv1d(F.pad(low, (pad, pad), "reflect"), self.kernel, stride=2)
            rest = rearrange(rest, "n (c c2) (l l2) -> n (c l2 c2) l", l2=2, c2=self.channels)
            x = torch.cat([low, rest], dim=1)
        return x


class WaveletDecode1d(nn.Module):
    """Synthesis: ``[B, C * 2**levels, L] -> [B, C, L * 2**levels]`` (buffer ``kernel``)."""

    def __init__(self, channels: int, levels: int, wavelet: str = "bior4.4") -> None:
        super().__init__()
        _check_levels(channels, levels)
        self.wavelet = wavelet
        self.channels = channels
        self.levels = levels
        bank = get_filter_bank(wavelet)
        self.register_buffer("kernel", _per_channel_kernel(bank[2:], channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps_half = self.kernel.shape[-1] // 2
        pad = taps_half + 2
        for _ in range(self.levels):
            low, rest = x[:, :2 * self.channels], x[:, 2 * self.channels:]
            # Reflect-pad the interleaved (low, high) pair in the time domain, then de-interleave again.
            low = rearrange(low, "n (l2 c) l -> n c (l l2)", l2=2)
            low = F.pad(low, (pad, pad), "reflect")
            low = rearrange(low, "n c (l l2) -> n (l2 c) l", l2=2)
            low = F.conv_transpose1d(low, self.kernel, stride=2, padding=taps_half)
            low = low[..., pad - 1:-pad]
            rest = rearrange(rest, "n (c l2 c2) l -> n (c c2) (l l2)", l2=2, c2=self.channels)
            x = torch.cat([low, rest], dim=1)
        return x
