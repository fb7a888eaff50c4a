"""Validation metrics that need optional packages."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["PESQMetric"]


class PESQMetric(nn.Module):
    """PESQ (ITU-T P.862; wide band by default) of decoded audio against the reference, averaged over the batch.

    Both signals are mixed to mono and resampled to 16 kHz (8 kHz for ``mode="nb"``). Items where PESQ cannot be
    computed (e.g. no speech-like activity) are left out of the mean; a batch with none gives NaN.
    Needs the optional ``pesq`` package (``pip install pesq``).
    """

    def __init__(self, sample_rate: int, mode: str = "wb") -> None:
        super().__init__()
        try:
            from pesq import pesq
        except ImportError as e:
            raise ImportError("the 'pesq' validation metric needs the pesq package: pip install pesq "
                              "(or pip install 'stable-audio-tools[metrics]')") from e
        if mode not in ("wb", "nb"):
            raise ValueError(f"PESQ mode must be 'wb' or 'nb', got {mode!r}")
        self._pesq = pesq
        self.sample_rate = sample_rate
        self.mode = mode
        self.target_rate = 16000 if mode == "wb" else 8000

    def _prepare(self, audio: torch.Tensor):
        import julius

        audio = audio.detach().float().mean(dim=1)
        if self.sample_rate != self.target_rate:
            audio = julius.resample_frac(audio, self.sample_rate, self.target_rate)
        return audio.cpu().numpy()

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        degraded, reference = self._prepare(inputs), self._prepare(targets)
        scores = []
        for ref, deg in zip(reference, degraded):
            try:
                scores.append(self._pesq(self.target_rate, ref, deg, self.mode))
            except Exception:  # pesq raises on silent or too-short items
                continue
        return torch.tensor(sum(scores) / len(scores) if scores else float("nan"), device=inputs.device)
