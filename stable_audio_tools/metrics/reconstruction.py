"""Reconstruction metrics for autoencoders: an estimate (decoded audio) against its reference.

All functions take ``[batch, channels, samples]`` tensors of equal shape and return one value per item
``[batch]`` (float32 maths, float64 reductions); channels are treated as separate signals and averaged.

- :func:`si_sdr`: scale-invariant signal-to-distortion ratio in dB (higher is better; Le Roux et al. 2019):
  with zero-mean signals, ``alpha = <est, ref> / ||ref||^2`` and ``10 log10(||alpha ref||^2 / ||est - alpha
  ref||^2)``.
- :func:`multi_resolution_stft_distance`: the sum of spectral convergence ``||S_ref| - |S_est||_F / ||S_ref||_F``
  and the mean absolute difference of log magnitudes, averaged over STFT resolutions (auraloss'
  ``MultiResolutionSTFTLoss`` defaults: FFT sizes 1024 / 2048 / 512, hops 120 / 240 / 50, windows 600 / 1200 /
  240, Hann; lower is better).
- :func:`log_mel_distance`: mean absolute difference of ``log10`` mel magnitudes (Slaney mel filterbank of
  :mod:`stable_audio_tools.data.filters`, the librosa one), averaged over resolutions (lower is better).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..data.filters import mel_filterbank

__all__ = ["si_sdr", "multi_resolution_stft_distance", "log_mel_distance"]

STFT_FFT_SIZES = (1024, 2048, 512)
STFT_HOP_SIZES = (120, 240, 50)
STFT_WIN_LENGTHS = (600, 1200, 240)
MEL_FFT_SIZES = (512, 1024, 2048)
MEL_BANDS = (40, 80, 160)


def _check_pair(estimate: torch.Tensor, reference: torch.Tensor) -> None:
    if estimate.dim() != 3 or estimate.shape != reference.shape:
        raise ValueError(f"estimate and reference must both be [batch, channels, samples] of one shape, got "
                         f"{tuple(estimate.shape)} and {tuple(reference.shape)}")


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per item ``[batch]`` (mean over channels).

    Args:
        estimate: ``[batch, channels, samples]``.
        reference: same shape.
        eps: float, default 1e-8; keeps silent signals finite.
    """
    _check_pair(estimate, reference)
    est = estimate.double() - estimate.double().mean(dim=-1, keepdim=True)
    ref = reference.double() - reference.double().mean(dim=-1, keepdim=True)
    alpha = (est * ref).sum(dim=-1, keepdim=True) / ((ref * ref).sum(dim=-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    ratio = ((target * target).sum(dim=-1) + eps) / ((noise * noise).sum(dim=-1) + eps)
    return (10.0 * torch.log10(ratio)).mean(dim=-1)


def _magnitude(x: torch.Tensor, n_fft: int, hop: int, win_length: int) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1]).float()
    window = torch.hann_window(win_length, device=x.device)
    spec = torch.stft(flat, n_fft, hop_length=hop, win_length=win_length, window=window, return_complex=True)
    return spec.abs().reshape(x.shape[0], x.shape[1], *spec.shape[-2:])


def _check_resolutions(*lists: Sequence[int]) -> None:
    if len({len(values) for values in lists}) != 1 or not lists[0]:
        raise ValueError(f"resolution lists must be non-empty and of one length, got {[list(v) for v in lists]}")


def multi_resolution_stft_distance(estimate: torch.Tensor, reference: torch.Tensor,
                                   fft_sizes: Sequence[int] = STFT_FFT_SIZES,
                                   hop_sizes: Sequence[int] = STFT_HOP_SIZES,
                                   win_lengths: Sequence[int] = STFT_WIN_LENGTHS,
                                   eps: float = 1e-8) -> torch.Tensor:
    """Spectral convergence plus log-magnitude L1, averaged over resolutions, per item ``[batch]``.

    Args:
        estimate: ``[batch, channels, samples]``.
        reference: same shape.
        fft_sizes: default (1024, 2048, 512).
        hop_sizes: default (120, 240, 50).
        win_lengths: default (600, 1200, 240).
        eps: float, default 1e-8; floor of the magnitudes before the logarithm.
    """
    _check_pair(estimate, reference)
    _check_resolutions(fft_sizes, hop_sizes, win_lengths)
    total = torch.zeros(estimate.shape[0], dtype=torch.float64, device=estimate.device)
    for n_fft, hop, win in zip(fft_sizes, hop_sizes, win_lengths):
        est, ref = _magnitude(estimate, n_fft, hop, win), _magnitude(reference, n_fft, hop, win)
        convergence = (torch.linalg.vector_norm(ref - est, dim=(-2, -1))
                       / (torch.linalg.vector_norm(ref, dim=(-2, -1)) + eps))
        log_mag = (torch.log(ref.clamp_min(eps)) - torch.log(est.clamp_min(eps))).abs().mean(dim=(-2, -1))
        total += (convergence + log_mag).double().mean(dim=-1)
    return total / len(fft_sizes)


def log_mel_distance(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int,
                     fft_sizes: Sequence[int] = MEL_FFT_SIZES, n_mels: Sequence[int] = MEL_BANDS,
                     eps: float = 1e-5) -> torch.Tensor:
    """Mean absolute difference of log10 mel magnitudes, averaged over resolutions, per item ``[batch]``.

    Args:
        estimate: ``[batch, channels, samples]``.
        reference: same shape.
        sample_rate: int, the audio's rate (for the mel filterbank).
        fft_sizes: default (512, 1024, 2048); hop = FFT size // 4, Hann window of the FFT size.
        n_mels: default (40, 80, 160); mel bands per resolution.
        eps: float, default 1e-5; floor of the mel magnitudes before the logarithm.
    """
    _check_pair(estimate, reference)
    _check_resolutions(fft_sizes, n_mels)
    total = torch.zeros(estimate.shape[0], dtype=torch.float64, device=estimate.device)
    for n_fft, bands in zip(fft_sizes, n_mels):
        fb = torch.from_numpy(mel_filterbank(sample_rate, n_fft, bands)).to(estimate.device)
        est = torch.matmul(fb, _magnitude(estimate, n_fft, n_fft // 4, n_fft))
        ref = torch.matmul(fb, _magnitude(reference, n_fft, n_fft // 4, n_fft))
        diff = (torch.log10(est.clamp_min(eps)) - torch.log10(ref.clamp_min(eps))).abs()
        total += diff.mean(dim=(-2, -1)).double().mean(dim=-1)
    return total / len(fft_sizes)
