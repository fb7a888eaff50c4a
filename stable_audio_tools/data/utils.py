"""Audio I/O, resampling, crop/pad, channel conversion and augmentation helpers.

Everything here works on float32 tensors shaped ``[channels, samples]`` unless stated otherwise.
Random choices take an optional ``rng`` (a :class:`random.Random`); without one they use the
global generators exactly like upstream (``random`` for crops/phase flips, ``torch`` for
:class:`PadCrop` and :class:`VolumeNorm`), so per-item generators can make crops reproducible.
"""
from __future__ import annotations

import math
import os
import random
import threading
from typing import BinaryIO, Dict, Optional, Sequence, Tuple, Union

import julius
import numpy as np
import soundfile
import torch
from scipy import signal as scipy_signal
from torch import nn

from .skips import TOO_SHORT, UNDECODABLE, os_error_reason

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

AUDIO_EXTENSIONS: Tuple[str, ...] = (".wav", ".mp3", ".flac", ".ogg", ".aif", ".aiff", ".opus")
"""File extensions (lower case) that the local dataset picks up; matching is case-insensitive."""


class AudioDecodeError(RuntimeError):
    """An audio file could not be opened or decoded; ``reason`` is its skip reason (see ``data.skips``)."""

    def __init__(self, message: str, reason: str = UNDECODABLE) -> None:
        super().__init__(message)
        self.reason = reason


def load_audio(path: Union[str, os.PathLike, BinaryIO]) -> Tuple[torch.Tensor, int]:
    """Decode ``path`` (a file name or a binary file object) with soundfile; return ``(audio [C, T] float32,
    sample_rate)``.

    Integer PCM is scaled to [-1, 1) like ``torchaudio.load(normalize=True)``. Raises
    :class:`AudioDecodeError` naming the file when it cannot be opened (``reason`` "permission denied",
    "not found" or "read error"), is empty (0 bytes, "too short") or cannot be decoded ("undecodable").
    """
    if not isinstance(path, (str, os.PathLike)):
        return _decode(path, "<audio bytes>")
    try:
        f = open(path, "rb")
    except OSError as err:
        raise AudioDecodeError(f"could not open audio file '{path}': {err.strerror or err}",
                               os_error_reason(err)) from err
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            raise AudioDecodeError(f"audio file '{path}' is empty (0 bytes)", TOO_SHORT)
        return _decode(f, path)


def _decode(f: BinaryIO, name: Union[str, os.PathLike]) -> Tuple[torch.Tensor, int]:
    try:
        data, sample_rate = soundfile.read(f, dtype="float32", always_2d=True)
    except OSError as err:
        raise AudioDecodeError(f"could not read audio file '{name}': {err}", os_error_reason(err)) from err
    except (soundfile.SoundFileError, RuntimeError, ValueError) as err:
        raise AudioDecodeError(f"could not decode audio file '{name}': {err}") from err
    audio = torch.from_numpy(np.ascontiguousarray(data.T))
    return audio, int(sample_rate)


_RESAMPLERS: Dict[Tuple[int, int, str], julius.ResampleFrac] = {}
_RESAMPLERS_LOCK = threading.Lock()


def get_resampler(in_sr: int, out_sr: int, device: Union[str, torch.device] = "cpu") -> julius.ResampleFrac:
    """Return a cached ``julius.ResampleFrac(in_sr, out_sr)`` living on ``device``.

    Building the windowed-sinc kernels is the expensive part of resampling, so one resampler
    is kept per ``(in_sr, out_sr, device)`` for the lifetime of the process.
    """
    if int(in_sr) != in_sr or int(out_sr) != out_sr or in_sr <= 0 or out_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {in_sr} -> {out_sr}")
    key = (int(in_sr), int(out_sr), str(torch.device(device)))
    with _RESAMPLERS_LOCK:
        resampler = _RESAMPLERS.get(key)
        if resampler is None:
            resampler = julius.ResampleFrac(int(in_sr), int(out_sr)).to(device)
            _RESAMPLERS[key] = resampler
    return resampler


def resample(audio: torch.Tensor, in_sr: int, out_sr: int) -> torch.Tensor:
    """Resample ``audio [..., T]`` from ``in_sr`` to ``out_sr`` (identity when equal).

    The output has ``ceil(T * out_sr / in_sr)`` samples, the same length as torchaudio's
    ``Resample``; the filter is julius' windowed sinc (24 zero crossings, rolloff 0.945), so
    sample values differ slightly from torchaudio's.
    """
    if in_sr == out_sr:
        return audio
    return get_resampler(in_sr, out_sr, audio.device)(audio, full=True)


class PadCrop(nn.Module):
    """Crop ``[..., T]`` to ``n_samples`` (random offset if ``randomize``) or zero-pad at the end.

    Without ``rng`` the offset comes from ``torch.randint`` like upstream.
    """

    def __init__(self, n_samples: int, randomize: bool = True) -> None:
        super().__init__()
        self.n_samples = n_samples
        self.randomize = randomize

    def forward(self, signal: torch.Tensor, rng: Optional[random.Random] = None) -> torch.Tensor:
        length = signal.shape[-1]
        start = 0
        if self.randomize:
            upper = max(0, length - self.n_samples)
            start = rng.randint(0, upper) if rng is not None else int(torch.randint(0, upper + 1, []).item())
        output = signal.new_zeros([*signal.shape[:-1], self.n_samples])
        chunk = signal[..., start:start + self.n_samples]
        output[..., :chunk.shape[-1]] = chunk
        return output


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

    def forward(self, source: torch.Tensor, rng: Optional[random.Random] = None
                ) -> Tuple[torch.Tensor, float, float, int, int, torch.Tensor]:
        n_channels, length = source.shape
        upper = max(0, length - self.n_samples)
        offset = 0
        if self.randomize and length > self.n_samples:
            offset = (rng or random).randint(0, upper)
        t_start = offset / (upper + self.n_samples)
        t_end = (offset + self.n_samples) / (upper + self.n_samples)
        chunk = source.new_zeros([n_channels, self.n_samples])
        real = min(length, self.n_samples)
        chunk[:, :real] = source[:, offset:offset + self.n_samples]
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


def set_audio_channels(audio: torch.Tensor, target_channels: int) -> torch.Tensor:
    """Convert batched audio ``[B, C, T]`` to 1 channel (mean) or 2 channels (duplicate/truncate)."""
    if target_channels == 1:
        return audio.mean(1, keepdim=True)
    if target_channels == 2:
        if audio.shape[1] == 1:
            return audio.repeat(1, 2, 1)
        if audio.shape[1] > 2:
            return audio[:, :2, :]
        return audio
    if audio.shape[1] == target_channels:
        return audio
    raise ValueError(f"cannot convert {audio.shape[1]}-channel audio to {target_channels} channels; "
                     f"only 1 (mono) and 2 (stereo) are supported")


def prepare_audio(audio: torch.Tensor, in_sr: int, target_sr: int, target_length: int, target_channels: int,
                  device: Union[str, torch.device]) -> torch.Tensor:
    """Move to ``device``, resample, pad/crop the start to ``target_length``, return ``[B, C, T]``.

    Accepts ``[T]``, ``[C, T]`` or ``[B, C, T]`` input; the crop is never random.
    """
    audio = audio.to(device)
    audio = resample(audio, in_sr, target_sr)
    audio = PadCrop(target_length, randomize=False)(audio)
    if audio.dim() == 1:
        audio = audio.unsqueeze(0).unsqueeze(0)
    elif audio.dim() == 2:
        audio = audio.unsqueeze(0)
    return set_audio_channels(audio, target_channels)
