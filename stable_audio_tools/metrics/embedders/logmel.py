"""A weight-free embedder: log-mel statistics per analysis window. It runs offline, in CI and for quick
checks of a pipeline; its numbers are NOT comparable to any published FD (it measures spectral-envelope
statistics, not learned audio semantics)."""
from __future__ import annotations

from typing import Any, Dict

import torch

from ...data.filters import mel_filterbank
from .base import AudioEmbedder, register_embedder

__all__ = ["LogMelStatsEmbedder"]


@register_embedder("logmel")
class LogMelStatsEmbedder(AudioEmbedder):
    """Mean and standard deviation of log10 mel magnitudes over each window: ``2 * n_mels`` values per window.

    Input: ``sample_rate`` mono; under ``sam`` peak-normalised to -1 dBFS. STFT with a Hann window of
    ``n_fft`` samples every ``hop_length``; Slaney mel filterbank (librosa's); windows of ``window_seconds``
    every ``hop_seconds`` (a clip shorter than one window gives one embedding over all of it).

    Args:
        convention: str, default ``"sam"`` (see :class:`AudioEmbedder`).
        device: str or torch.device, default ``"cpu"``.
        sample_rate: int, default 16000.
        n_fft: int, default 1024.
        hop_length: int, default 160 (10 ms at 16 kHz).
        n_mels: int, default 64.
        window_seconds: float, default 1.0.
        hop_seconds: float, default 0.5.
    """

    channels = "mono"
    capabilities = ("fd",)
    comparable_to = "nothing published: a weight-free smoke-test embedder"

    def __init__(self, convention: str = "sam", device: Any = "cpu", sample_rate: int = 16000, n_fft: int = 1024,
                 hop_length: int = 160, n_mels: int = 64, window_seconds: float = 1.0,
                 hop_seconds: float = 0.5) -> None:
        super().__init__(convention, device)
        for key, value in (("sample_rate", sample_rate), ("n_fft", n_fft), ("hop_length", hop_length),
                           ("n_mels", n_mels), ("window_seconds", window_seconds), ("hop_seconds", hop_seconds)):
            if value <= 0:
                raise ValueError(f"logmel option {key} must be positive, got {value}")
        self.sample_rate = int(sample_rate)
        self.n_fft, self.hop_length, self.n_mels = int(n_fft), int(hop_length), int(n_mels)
        self.frame_window = max(1, round(window_seconds * self.sample_rate / self.hop_length))
        self.frame_hop = max(1, round(hop_seconds * self.sample_rate / self.hop_length))
        self.window_seconds_option, self.hop_seconds = float(window_seconds), float(hop_seconds)
        self.filterbank = torch.from_numpy(mel_filterbank(self.sample_rate, self.n_fft, self.n_mels)).to(self.device)
        self.window = torch.hann_window(self.n_fft, device=self.device)

    def settings(self) -> Dict[str, Any]:
        return {**super().settings(), "n_fft": self.n_fft, "hop_length": self.hop_length, "n_mels": self.n_mels,
                "window_seconds": self.window_seconds_option, "hop_seconds": self.hop_seconds}

    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        mono = audio[0].to(self.device)
        if mono.shape[-1] < self.n_fft:
            mono = torch.nn.functional.pad(mono, (0, self.n_fft - mono.shape[-1]))
        spec = torch.stft(mono, self.n_fft, self.hop_length, window=self.window, return_complex=True).abs()
        logmel = torch.log10(self.filterbank @ spec + 1e-5)  # [n_mels, frames]
        count = logmel.shape[-1]
        if count <= self.frame_window:
            chunks = logmel.unsqueeze(0)
        else:
            chunks = logmel.unfold(-1, self.frame_window, self.frame_hop).permute(1, 0, 2)  # [windows, mels, frames]
        return torch.cat([chunks.mean(dim=-1), chunks.std(dim=-1, unbiased=False)], dim=-1)
