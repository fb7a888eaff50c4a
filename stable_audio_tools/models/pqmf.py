"""Pseudo-QMF (cosine-modulated) filter bank with polyphase analysis/synthesis (see
docs/model_config.md#pretransforms-modelpretransform, ``pqmf``).

The prototype is a Kaiser-window low-pass whose cutoff is chosen with ``scipy.optimize.fmin`` to
minimise the near-perfect-reconstruction criterion of Lin & Vaidyanathan (IEEE 1998): the largest
magnitude among the samples ``h * h[::-1]`` taken every ``2 * num_bands`` taps from the centre, excluding
the centre itself. The filter length follows from ``kaiserord`` at every candidate cutoff (made odd).

Band ``k`` filter: ``2 * h[n] * cos((2k + 1) * pi / (2N) * n + (-1)**k * pi / 4)`` for centred ``n``;
the bank is zero-padded (both sides) to the next power-of-two length. :class:`PQMF` stores it as buffer
``filter_bank`` ``[N, taps]`` and the prototype as buffer ``prototype``.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from scipy.optimize import fmin
from scipy.signal import firwin, kaiserord
from torch import nn

__all__ = [
    "PQMF",
    "prepare_signal_dimensions",
    "pad_signal",
    "ensure_odd_length",
    "evaluate_filter_objective",
    "design_kaiser_lowpass",
    "design_prototype_filter",
    "generate_modulated_filter_bank",
    "pad_to_nearest_power_of_two",
    "apply_alias_cancellation",
    "polyphase_analysis",
    "polyphase_synthesis",
]


def design_kaiser_lowpass(angular_cutoff: float, attenuation: float,
                          filter_length: Optional[int] = None) -> np.ndarray:
    """Kaiser-window FIR low-pass with cutoff ``angular_cutoff`` (rad/sample, Nyquist = pi), unscaled.

    Without ``filter_length`` the length estimated by ``kaiserord(attenuation, cutoff / pi)`` is used,
    rounded up to an odd number.
    """
    estimated_length, beta = kaiserord(attenuation, angular_cutoff / np.pi)
    if filter_length is None:
        filter_length = 2 * (estimated_length // 2) + 1
    return firwin(filter_length, angular_cutoff, window=("kaiser", beta), scale=False, fs=2 * np.pi)


def evaluate_filter_objective(angular_cutoff: float, attenuation: float, num_bands: int,
                              filter_length: Optional[int]) -> float:
    """Near-perfect-reconstruction error of the Kaiser prototype with this cutoff (the value minimised by
    :func:`design_prototype_filter`)."""
    taps = design_kaiser_lowpass(angular_cutoff, attenuation, filter_length)
    autocorr = np.convolve(taps, taps[::-1], "full")
    return float(np.max(np.abs(autocorr[autocorr.shape[-1] // 2::2 * num_bands][1:])))


def design_prototype_filter(attenuation: float, num_bands: int, filter_length: Optional[int] = None) -> torch.Tensor:
    """Prototype low-pass (float32) whose cutoff minimises the reconstruction error; fmin starts at 1/N."""
    cutoff = fmin(lambda c: evaluate_filter_objective(c[0], attenuation, num_bands, filter_length),
                  1 / num_bands, disp=0)[0]
    return torch.tensor(design_kaiser_lowpass(cutoff, attenuation, filter_length), dtype=torch.float32)


def generate_modulated_filter_bank(prototype: torch.Tensor, num_bands: int) -> torch.Tensor:
    """Cosine-modulate the (odd-length) ``prototype`` into ``num_bands`` band-pass filters ``[N, taps]``."""
    half = prototype.shape[-1] // 2
    band = torch.arange(num_bands).reshape(-1, 1)
    time = torch.arange(-half, half + 1)
    phase = (-1) ** band * np.pi / 4
    modulation = torch.cos((2 * band + 1) * np.pi / (2 * num_bands) * time + phase)
    return 2 * prototype * modulation


def pad_to_nearest_power_of_two(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad the last dim on both sides (extra sample on the right) to the next power of two."""
    length = x.shape[-1]
    total = 2 ** math.ceil(math.log2(length)) - length
    return F.pad(x, (total // 2, total - total // 2))


def apply_alias_cancellation(x: torch.Tensor) -> torch.Tensor:
    """Negate the even time steps of every odd band of a ``[..., bands, T]`` tensor."""
    sign = torch.ones_like(x)
    sign[..., 1::2, ::2] = -1
    return x * sign


def polyphase_analysis(signal: torch.Tensor, filter_bank: torch.Tensor) -> torch.Tensor:
    """``[B, C, T]`` (T a multiple of N) -> ``[B, C, N, T / N]`` via an N-phase polyphase convolution."""
    num_bands = filter_bank.shape[0]
    channels = signal.shape[1]
    phases = rearrange(signal, "b c (t n) -> (b c) n t", n=num_bands)
    weight = rearrange(filter_bank, "k (t n) -> k n t", n=num_bands)
    bands = F.conv1d(phases, weight, padding=weight.shape[-1] // 2)[..., :-1]
    return rearrange(bands, "(b c) k t -> b c k t", c=channels)


def polyphase_synthesis(bands: torch.Tensor, filter_bank: torch.Tensor) -> torch.Tensor:
    """``[B, C, N, L]`` -> ``[B, C, L * N]``, the polyphase inverse of :func:`polyphase_analysis`."""
    num_bands = filter_bank.shape[0]
    channels = bands.shape[1]
    weight = rearrange(filter_bank.flip(-1), "k (t n) -> n k t", n=num_bands)
    x = rearrange(bands, "b c k t -> (b c) k t")
    x = F.conv1d(x, weight, padding=weight.shape[-1] // 2 + 1)[..., :-1] * num_bands
    x = rearrange(x.flip(1), "(b c) n t -> b c (t n)", c=channels, n=num_bands)
    return x[..., 2 * weight.shape[1]:]


def ensure_odd_length(tensor: torch.Tensor) -> torch.Tensor:
    """Zero-pad the last dim by one sample when its size is even."""
    return F.pad(tensor, (0, 1)) if tensor.shape[-1] % 2 == 0 else tensor


def pad_signal(signal: torch.Tensor, num_bands: int) -> torch.Tensor:
    """Zero-pad the last dim on the right to a multiple of ``num_bands`` (unchanged when it already is one)."""
    remainder = signal.shape[-1] % num_bands
    return F.pad(signal, (0, num_bands - remainder)) if remainder else signal


def prepare_signal_dimensions(signal: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    """A ``[T]``, ``[C, T]`` (or ``[T, C]``: the longer axis is taken as time) or ``[B, C, T]`` tensor or numpy
    array as a ``[B, C, T]`` tensor."""
    if isinstance(signal, np.ndarray):
        signal = torch.from_numpy(signal)
    if not isinstance(signal, torch.Tensor):
        raise ValueError(f"PQMF input must be a torch.Tensor or numpy array, got {type(signal).__name__}")
    if signal.dim() == 1:
        return signal[None, None]
    if signal.dim() == 2:
        if signal.shape[0] > signal.shape[1]:
            signal = signal.T
        return signal[None]
    return signal


class PQMF(nn.Module):
    """Pseudo-QMF bank: ``forward`` ``[B, C, T] -> [B, C, N, ceil(T / N)]``, ``inverse`` back to ``[B, C, T']``.

    Args:
        attenuation: stop-band attenuation of the prototype in dB (typically 80-120).
        num_bands: number of bands N; must be a power of two.
    """

    def __init__(self, attenuation: float = 100, num_bands: int = 16) -> None:
        super().__init__()
        if num_bands < 1 or num_bands & (num_bands - 1):
            raise ValueError(f"num_bands must be a power of two, got {num_bands}")
        prototype = design_prototype_filter(attenuation, num_bands)
        filter_bank = pad_to_nearest_power_of_two(generate_modulated_filter_bank(prototype, num_bands))
        self.register_buffer("filter_bank", filter_bank)
        self.register_buffer("prototype", prototype)
        self.num_bands = num_bands

    def forward(self, signal: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """Split into bands; the length is zero-padded on the right to a multiple of ``num_bands`` first."""
        signal = pad_signal(prepare_signal_dimensions(signal), self.num_bands)
        return apply_alias_cancellation(polyphase_analysis(signal, self.filter_bank))

    def inverse(self, bands: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``[B, C, N * L]`` from ``[B, C, N, L]`` bands."""
        return polyphase_synthesis(apply_alias_cancellation(bands), self.filter_bank)
