"""Audio augmentation, loudness and silence helpers for datasets, plus re-exports of the audio helpers.

File decoding, resampling, :class:`PadCrop`, channel conversion and ``prepare_audio`` live in
:mod:`stable_audio_tools.audio` (the foundation layer, so models and inference need not import data); they are
importable from here as from upstream's ``data.utils``.

Everything here works on float32 tensors shaped ``[channels, samples]`` unless stated otherwise.
Random choices take an optional ``rng`` (a :class:`random.Random`); without one they use the
global generators exactly like upstream (``random`` for crops/phase flips, ``torch`` for
:class:`PadCrop` and :class:`VolumeNorm`), so per-item generators can make crops reproducible.
"""
from __future__ import annotations

import math
import random
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import signal as scipy_signal
from torch import nn

from ..audio import (AUDIO_EXTENSIONS, AudioDecodeError, PadCrop, get_resampler, load_audio, prepare_audio, resample,
                     set_audio_channels)

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioDecodeError",
    "load_audio",
    "get_resampler",
    "resample",
    "PadCrop",
    "PadCrop_Normalized_T",
    "PhaseFlipper",
    "Mono",
    "Stereo",
    "k_weighting_coefficients",
    "integrated_loudness",
    "VolumeNorm",
    "get_dbmax",
    "is_silence",
    "is_silence_audio",
    "remove_long_silence",
    "set_audio_channels",
    "prepare_audio",
]


class PadCrop_Normalized_T(nn.Module):
    """Crop/pad ``[C, T]`` to ``n_samples`` and report where the chunk came from.

    Returns ``(chunk, t_start, t_end, seconds_start, seconds_total, padding_mask)``: the offset is
    uniform in ``[0, T - n_samples]`` when ``randomize`` and the audio is longer, else 0;
    ``t_start = offset / (upper + n)``, ``t_end = (offset + n) / (upper + n)`` with
    ``upper = max(0, T - n)``; ``seconds_start = floor(offset / sr)``; ``seconds_total =
    ceil(T / sr)`` (the whole file); ``padding_mask`` is a float ``[n_samples]`` tensor with 1
    where real audio was copied. (One upstream revision could draw ``offset = upper + 1``,
    leaving an unmasked zero sample; here the offset never exceeds ``upper``.)
    """

    def __init__(self, n_samples: int, sample_rate: int, randomize: bool = True) -> None:
        super().__init__()
        self.n_samples = n_samples
        self.sample_rate = sample_rate
        self.randomize = randomize

    def draw_offset(self, length: int, rng: Optional[random.Random] = None) -> int:
        """The crop offset for audio of ``length`` samples (draws from ``rng`` exactly as :meth:`forward`)."""
        if self.randomize and length > self.n_samples:
            return (rng or random).randint(0, length - self.n_samples)
        return 0

    def forward(self, source: torch.Tensor, rng: Optional[random.Random] = None
                ) -> Tuple[torch.Tensor, float, float, int, int, torch.Tensor]:
        offset = self.draw_offset(source.shape[-1], rng)
        return self.place(source[:, offset:offset + self.n_samples], source.shape[-1], offset)

    def place(self, window: torch.Tensor, length: int, offset: int
              ) -> Tuple[torch.Tensor, float, float, int, int, torch.Tensor]:
        """:meth:`forward`'s result from the cropped ``window`` (``source[:, offset:offset + n_samples]``) of a
        source of ``length`` samples: lets a loader decode only the window."""
        n_channels = window.shape[0]
        upper = max(0, length - self.n_samples)
        t_start = offset / (upper + self.n_samples)
        t_end = (offset + self.n_samples) / (upper + self.n_samples)
        chunk = window.new_zeros([n_channels, self.n_samples])
        real = min(length, self.n_samples)
        chunk[:, :real] = window[:, :self.n_samples]
        seconds_start = math.floor(offset / self.sample_rate)
        seconds_total = math.ceil(length / self.sample_rate)
        padding_mask = torch.zeros([self.n_samples])
        padding_mask[:real] = 1
        return chunk, t_start, t_end, seconds_start, seconds_total, padding_mask


class PhaseFlipper(nn.Module):
    """Invert the sign of the signal with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, signal: torch.Tensor, rng: Optional[random.Random] = None) -> torch.Tensor:
        return -signal if (rng or random).random() < self.p else signal


class Mono(nn.Module):
    """Average the channels of ``[C, T]`` into ``[1, T]`` (1-D input is returned unchanged)."""

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return signal.mean(dim=0, keepdim=True) if signal.dim() > 1 else signal


class Stereo(nn.Module):
    """Make ``[C, T]`` (or ``[T]``) two-channel: mono is duplicated, extra channels are dropped."""

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        if signal.dim() == 1:
            return signal.unsqueeze(0).repeat(2, 1)
        if signal.dim() == 2:
            if signal.shape[0] == 1:
                return signal.repeat(2, 1)
            if signal.shape[0] > 2:
                return signal[:2]
        return signal


# ITU-R BS.1770-4 K-weighting: analog prototype parameters whose bilinear transform reproduces
# the standard's 48 kHz coefficient table, so any sample rate gets the matching filter.
_SHELF_F0 = 1681.974450955533
_SHELF_GAIN_DB = 3.999843853973347
_SHELF_Q = 0.7071752369554196
_SHELF_VB_EXP = 0.4996667741545416
_HIGHPASS_F0 = 38.13547087602444
_HIGHPASS_Q = 0.5003270373238773
_CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)  # L, R, C, Ls, Rs (LFE excluded by the standard)


def k_weighting_coefficients(sample_rate: int) -> np.ndarray:
    """Second-order sections ``[2, 6]`` (b0 b1 b2 a0 a1 a2) of the K-weighting filter at ``sample_rate``.

    Stage 1 is the high-shelf "head" filter (+4 dB above ~1.7 kHz), stage 2 the RLB high-pass.
    """
    k = math.tan(math.pi * _SHELF_F0 / sample_rate)
    vh = 10.0 ** (_SHELF_GAIN_DB / 20.0)
    vb = vh ** _SHELF_VB_EXP
    a0 = 1.0 + k / _SHELF_Q + k * k
    shelf = [(vh + vb * k / _SHELF_Q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / _SHELF_Q + k * k) / a0,
             1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / _SHELF_Q + k * k) / a0]
    k = math.tan(math.pi * _HIGHPASS_F0 / sample_rate)
    a0 = 1.0 + k / _HIGHPASS_Q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / _HIGHPASS_Q + k * k) / a0]
    return np.array([shelf, highpass], dtype=np.float64)


def integrated_loudness(audio: torch.Tensor, sample_rate: int) -> float:
    """Gated integrated loudness (LUFS) of ``[C, T]`` audio per ITU-R BS.1770-4.

    K-weighting, mean square over 400 ms blocks with 75 % overlap, channel weights
    (1, 1, 1, 1.41, 1.41), an absolute gate at -70 LUFS and a relative gate 10 LU below the
    absolutely-gated loudness. Audio shorter than one block is measured as a single block (instead
    of yielding NaN). Returns ``-inf`` when every block is gated away (silence).
    """
    if audio.dim() == 1:
        audio = audio.unsqueeze(0)
    n_channels, length = audio.shape
    if n_channels > len(_CHANNEL_WEIGHTS):
        raise ValueError(f"integrated_loudness supports at most {len(_CHANNEL_WEIGHTS)} channels, got {n_channels}")
    if length == 0:
        return float("-inf")
    x = audio.detach().to("cpu", torch.float64).numpy()
    weighted = scipy_signal.sosfilt(k_weighting_coefficients(sample_rate), x, axis=-1)
    block = int(round(0.4 * sample_rate))
    step = int(round(0.1 * sample_rate))
    if length < block:
        power = np.mean(weighted ** 2, axis=-1, keepdims=True)
    else:
        n_blocks = (length - block) // step + 1
        cumsum = np.concatenate([np.zeros((n_channels, 1)), np.cumsum(weighted ** 2, axis=-1)], axis=-1)
        starts = np.arange(n_blocks) * step
        power = (cumsum[:, starts + block] - cumsum[:, starts]) / block  # [C, n_blocks]
    weights = np.array(_CHANNEL_WEIGHTS[:n_channels])[:, None]
    with np.errstate(divide="ignore"):
        block_loudness = -0.691 + 10.0 * np.log10(np.sum(weights * power, axis=0))
        gated = block_loudness > -70.0
        if not gated.any():
            return float("-inf")
        relative_gate = -0.691 + 10.0 * np.log10(np.sum(weights * power[:, gated].mean(axis=1, keepdims=True))) - 10.0
        gated &= block_loudness > relative_gate
        return float(-0.691 + 10.0 * np.log10(np.sum(weights * power[:, gated].mean(axis=1, keepdims=True))))


class VolumeNorm(nn.Module):
    """Normalise loudness to ``params[0] ± U(params[1])`` LUFS (augmentation + normalisation).

    Signals whose mean energy is below ``energy_threshold`` (or that are gated as silent) are
    returned unchanged; when the gain would clip (peak >= 1) the result is rescaled to a 0.95 peak.
    """

    def __init__(self, params: Sequence[float] = (-16, 2), sample_rate: int = 16000,
                 energy_threshold: float = 1e-6) -> None:
        super().__init__()
        self.value = float(params[0])
        self.gain_range = float(params[1])
        self.sample_rate = sample_rate
        self.energy_threshold = energy_threshold

    def forward(self, signal: torch.Tensor, rng: Optional[random.Random] = None) -> torch.Tensor:
        if torch.mean(signal.float() ** 2).item() < self.energy_threshold:
            return signal
        input_loudness = integrated_loudness(signal, self.sample_rate)
        if not math.isfinite(input_loudness):
            return signal
        u = rng.random() if rng is not None else torch.rand(1).item()
        target = self.value + (u * 2.0 - 1.0) * self.gain_range
        output = signal * (10.0 ** ((target - input_loudness) / 20.0))
        peak = output.abs().max()
        if peak >= 1.0:
            output = output / peak * 0.95
        return output


def get_dbmax(audio: torch.Tensor) -> float:
    """Peak level of ``audio`` in dBFS (``-inf`` for digital silence or empty audio)."""
    if audio.numel() == 0:
        return float("-inf")
    peak = audio.detach().abs().max().item()
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def is_silence(audio: torch.Tensor, thresh: float = -60.0) -> bool:
    """True when the peak of ``audio`` is below ``thresh`` dBFS."""
    return get_dbmax(audio) < thresh


def is_silence_audio(audio: torch.Tensor, silence_threshold: float = 0.01, max_silence_ratio: float = 0.3) -> bool:
    """True when, in any channel of ``audio [C, T]``, more than ``max_silence_ratio`` of the samples have an
    amplitude below ``silence_threshold`` (upstream's rejection test; unlike upstream it writes no file)."""
    if audio.dim() != 2 or audio.shape[1] == 0:
        raise ValueError(f"is_silence_audio needs non-empty [channels, samples] audio, got {tuple(audio.shape)}")
    silent_ratio = (audio.abs() < silence_threshold).sum(dim=1) / audio.shape[1]
    return bool((silent_ratio > max_silence_ratio).any())


def remove_long_silence(audio: torch.Tensor, sample_rate: int, silence_threshold: Sequence[float] = (0.01, 0.5),
                        max_silence_duration: float = 0.25, rng: Optional[random.Random] = None) -> torch.Tensor:
    """Collapse silent runs of mono audio; returns ``[1, T']``.

    A run of samples with ``|x| < silence_threshold[0]`` longer than ``max_silence_duration``
    seconds is replaced by a random contiguous slice of itself lasting ``silence_threshold[1]``
    seconds (the whole run if it is not longer than that); shorter runs are kept as they are.
    """
    amplitude_threshold, kept_seconds = silence_threshold
    max_run = int(max_silence_duration * sample_rate)
    kept = int(kept_seconds * sample_rate)
    flat = audio.reshape(-1)
    if flat.numel() == 0:
        return flat.unsqueeze(0)
    silent = (flat.abs() < amplitude_threshold).to(torch.int8).cpu().numpy()
    edges = np.diff(np.concatenate([[0], silent, [0]]))
    run_starts = np.flatnonzero(edges == 1)
    run_ends = np.flatnonzero(edges == -1)
    pieces = []
    previous_end = 0
    for start, end in zip(run_starts.tolist(), run_ends.tolist()):
        if end - start <= max_run:
            continue
        pieces.append(flat[previous_end:start])
        offset = start
        if end - start > kept:
            offset += (rng or random).randint(0, end - start - kept)
        pieces.append(flat[offset:offset + min(kept, end - start)])
        previous_end = end
    pieces.append(flat[previous_end:])
    return torch.cat(pieces).unsqueeze(0)
