"""Audio helpers shared by every layer: decoding files, resampling, start-aligned pad/crop, channel conversion
and :func:`prepare_audio`.

This module is part of the foundation layer (see ``docs/architecture.md``): it imports nothing from the package,
so data, models, inference, training and the interface all use it. ``stable_audio_tools.data.utils`` re-exports
every name, as upstream's ``data.utils`` holds them.

The failure reasons :func:`load_audio` attaches to :class:`AudioDecodeError` are the dataset skip reasons of the
same name (``stable_audio_tools.data.skips`` re-exports them).
"""
from __future__ import annotations

import os
import random
import threading
from typing import BinaryIO, Dict, Optional, Tuple, Union

import julius
import numpy as np
import soundfile
import torch
from torch import nn

__all__ = [
    "AUDIO_EXTENSIONS",
    "PERMISSION_DENIED",
    "NOT_FOUND",
    "READ_ERROR",
    "UNDECODABLE",
    "TOO_SHORT",
    "os_error_reason",
    "AudioDecodeError",
    "load_audio",
    "load_audio_window",
    "exact_pcm_frames",
    "get_resampler",
    "resample",
    "PadCrop",
    "set_audio_channels",
    "prepare_audio",
]

PERMISSION_DENIED = "permission denied"
NOT_FOUND = "not found"
READ_ERROR = "read error"
UNDECODABLE = "undecodable"
TOO_SHORT = "too short"


def os_error_reason(err: OSError) -> str:
    """The skip reason of an ``OSError`` raised while opening or reading a file."""
    if isinstance(err, PermissionError):
        return PERMISSION_DENIED
    if isinstance(err, FileNotFoundError):
        return NOT_FOUND
    return READ_ERROR


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


#: containers whose header gives the exact frame count and whose seeks are sample-exact (libsndfile)
_EXACT_SEEK_FORMATS = ("WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64")


def exact_pcm_frames(path: Union[str, os.PathLike]) -> Optional[Tuple[int, int, int]]:
    """``(frames, sample_rate, channels)`` read from the header of an integer-PCM WAV / FLAC / AIFF file, whose
    windows :func:`load_audio_window` reads sample-exactly; ``None`` for anything else (compressed or float
    formats, unreadable files): read those whole with :func:`load_audio`. Integer PCM cannot hold NaN / inf."""
    try:
        with open(path, "rb") as f:
            info = soundfile.info(f)
    except Exception:  # unreadable here: the full decode reports why
        return None
    if info.format not in _EXACT_SEEK_FORMATS or not info.subtype.startswith("PCM_") or info.frames <= 0:
        return None
    return int(info.frames), int(info.samplerate), int(info.channels)


def load_audio_window(path: Union[str, os.PathLike], start: int, frames: int) -> torch.Tensor:
    """Decode ``frames`` samples of ``path`` from sample ``start`` (``[C, frames]`` float32, fewer at the end of
    the file), scaled as :func:`load_audio`; errors as :func:`load_audio`. For files :func:`exact_pcm_frames`
    accepts, the samples equal the same slice of the whole decoded file."""
    try:
        with open(path, "rb") as f:
            data, _ = soundfile.read(f, start=start, frames=frames, dtype="float32", always_2d=True)
    except OSError as err:
        raise AudioDecodeError(f"could not read audio file '{path}': {err}", os_error_reason(err)) from err
    except (soundfile.SoundFileError, RuntimeError, ValueError) as err:
        raise AudioDecodeError(f"could not decode audio file '{path}': {err}") from err
    return torch.from_numpy(np.ascontiguousarray(data.T))


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
