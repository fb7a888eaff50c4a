"""Fixed filters shared by the spectral losses and the metrics: analysis windows, mel / chroma filterbanks and the
A-weighting FIR pre-emphasis.

The filterbanks reproduce ``librosa.filters.mel`` (Slaney mel scale and Slaney area normalisation
by default) and ``librosa.filters.chroma`` numerically (same float64 maths, same float32 output),
without depending on librosa. The A-weighting taps are the least-squares 101-tap FIR fit of the
analog IEC A-weighting curve that auraloss 0.4.0 uses as its perceptual pre-filter.
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import scipy.signal
import torch

__all__ = [
    "get_window",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "chroma_filterbank",
    "a_weighting_fir_taps",
]

# Corner frequencies (Hz) of the analog A-weighting filter (IEC/CD 1672) and its gain at 1 kHz (dB).
_A_WEIGHTING_F1 = 20.598997
_A_WEIGHTING_F2 = 107.65265
_A_WEIGHTING_F3 = 737.86223
_A_WEIGHTING_F4 = 12194.217
_A_WEIGHTING_A1000 = 1.9997


def get_window(win_type: str, win_length: int) -> torch.Tensor:
    """Return a float32 analysis window.

    ``win_type`` is the name of a torch window function (``"hann_window"``, ``"hamming_window"``,
    ...; periodic, as torch's default) or of any window known to ``scipy.signal.windows.get_window``
    (``"hann"``, ``"blackmanharris"``, ...).
    """
    factory = getattr(torch, win_type, None)
    if callable(factory) and win_type.endswith("_window"):
        return factory(win_length).float()
    try:
        window = scipy.signal.windows.get_window(win_type, win_length)
    except ValueError as err:
        raise ValueError(f"unknown window type {win_type!r}: use a torch window function name such as "
                         f"'hann_window' or a scipy window name such as 'hann' ({err})") from err
    return torch.from_numpy(np.asarray(window)).float()


def hz_to_mel(frequencies, htk: bool = False) -> np.ndarray:
    """Hz to mels: the Slaney auditory-toolbox scale (linear below 1 kHz, log above) or HTK's."""
    frequencies = np.asanyarray(frequencies, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + frequencies / 700.0)
    f_sp = 200.0 / 3
    mels = frequencies / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_region = frequencies >= min_log_hz
    return np.where(log_region, min_log_mel + np.log(np.maximum(frequencies, min_log_hz) / min_log_hz) / logstep,
                    mels)


def mel_to_hz(mels, htk: bool = False) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mels = np.asanyarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_region = mels >= min_log_mel
    return np.where(log_region, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


@functools.lru_cache(maxsize=None)
def _mel_filterbank_cached(sample_rate: float, n_fft: int, n_mels: int, fmin: float, fmax: Optional[float],
                           htk: bool, norm: Optional[str]) -> np.ndarray:
    if fmax is None:
        fmax = float(sample_rate) / 2
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_points = np.linspace(hz_to_mel(fmin, htk=htk), hz_to_mel(fmax, htk=htk), n_mels + 2)
    mel_f = mel_to_hz(mel_points, htk=htk)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:n_mels] / fdiff[:n_mels, None]
    upper = ramps[2:n_mels + 2] / fdiff[1:n_mels + 1, None]
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    if norm == "slaney":
        # Area normalisation: each triangle integrates to (roughly) the same energy.
        enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
        weights = (weights * enorm[:, None]).astype(np.float32)
    weights.setflags(write=False)
    return weights


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int = 128, fmin: float = 0.0,
                   fmax: Optional[float] = None, htk: bool = False, norm: Optional[str] = "slaney") -> np.ndarray:
    """Triangular mel filterbank ``[n_mels, 1 + n_fft // 2]`` (float32), as ``librosa.filters.mel``.

    ``norm="slaney"`` divides each triangle by its bandwidth (area normalisation); ``norm=None``
    leaves peak-1 triangles.
    """
    if norm not in (None, "slaney"):
        raise ValueError(f"unsupported mel filterbank norm {norm!r}; use 'slaney' or None")
    if n_mels <= 0 or n_fft <= 0:
        raise ValueError(f"n_mels and n_fft must be positive (got n_mels={n_mels}, n_fft={n_fft})")
    fmax = None if fmax is None else float(fmax)
    return _mel_filterbank_cached(float(sample_rate), int(n_fft), int(n_mels), float(fmin), fmax, bool(htk),
                                  norm).copy()


def chroma_filterbank(sample_rate: float, n_fft: int, n_chroma: int = 12, tuning: float = 0.0,
                      ctroct: float = 5.0, octwidth: Optional[float] = 2.0, base_c: bool = True) -> np.ndarray:
    """Chroma filterbank ``[n_chroma, 1 + n_fft // 2]`` (float32), as ``librosa.filters.chroma``.

    Each FFT bin contributes a Gaussian bump around its pitch class; columns are L2-normalised and
    weighted by a Gaussian over octaves centred on octave ``ctroct`` with width ``octwidth``.
    """
    if n_chroma <= 0:
        raise ValueError(f"n_chroma must be positive (got {n_chroma})")
    frequencies = np.linspace(0, sample_rate, n_fft, endpoint=False)[1:]
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    frqbins = n_chroma * np.log2(frequencies / (a440 / 16))
    # The 0 Hz bin gets a made-up value 1.5 octaves below bin 1.
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidthbins = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    distance = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    half = np.round(float(n_chroma) / 2)
    distance = np.remainder(distance + half + 10 * n_chroma, n_chroma) - half
    weights = np.exp(-0.5 * (2 * distance / np.tile(binwidthbins, (n_chroma, 1))) ** 2)
    norms = np.sqrt(np.sum(np.abs(weights) ** 2, axis=0, keepdims=True))
    norms[norms < np.finfo(weights.dtype).tiny] = 1.0
    weights = weights / norms
    if octwidth is not None:
        weights *= np.tile(np.exp(-0.5 * (((frqbins / n_chroma - ctroct) / octwidth) ** 2)), (n_chroma, 1))
    if base_c:
        weights = np.roll(weights, -3 * (n_chroma // 12), axis=0)
    return np.ascontiguousarray(weights[:, : int(1 + n_fft / 2)], dtype=np.float32)


@functools.lru_cache(maxsize=None)
def _a_weighting_cached(sample_rate: float, ntaps: int) -> np.ndarray:
    two_pi = 2 * np.pi
    numerator = [(two_pi * _A_WEIGHTING_F4) ** 2 * (10 ** (_A_WEIGHTING_A1000 / 20)), 0, 0, 0, 0]
    denominator = np.polymul([1, 4 * np.pi * _A_WEIGHTING_F4, (two_pi * _A_WEIGHTING_F4) ** 2],
                             [1, 4 * np.pi * _A_WEIGHTING_F1, (two_pi * _A_WEIGHTING_F1) ** 2])
    denominator = np.polymul(np.polymul(denominator, [1, two_pi * _A_WEIGHTING_F3]), [1, two_pi * _A_WEIGHTING_F2])
    b, a = scipy.signal.bilinear(numerator, denominator, fs=sample_rate)
    freqs, response = scipy.signal.freqz(b, a, worN=512, fs=sample_rate)
    taps = scipy.signal.firls(ntaps, freqs, np.abs(response), fs=sample_rate).astype(np.float32)
    taps.setflags(write=False)
    return taps


def a_weighting_fir_taps(sample_rate: float, ntaps: int = 101) -> np.ndarray:
    """Taps (float32) of the linear-phase FIR least-squares fit of the analog A-weighting curve.

    The analog IEC A-weighting filter is discretised with the bilinear transform, its response is
    sampled at 512 frequencies and ``scipy.signal.firls`` fits an ``ntaps``-tap FIR to the magnitude.
    """
    if ntaps % 2 == 0 or ntaps <= 0:
        raise ValueError(f"ntaps must be a positive odd number (got {ntaps})")
    return _a_weighting_cached(float(sample_rate), int(ntaps)).copy()
