"""Audio preprocessing before an embedder, as the reference tools do it.

:class:`Preprocessing` turns ``audio [channels, samples]`` at any rate into what an embedder consumes: channel
handling (``"mono"``: the mean of the channels, as ``librosa.load(mono=True)``; ``"stereo"``: mono duplicated,
more than two channels refused; ``"keep"``), resampling with julius (``data.utils.resample``; the reference
tools use librosa / soxr, so values differ slightly), peak normalisation to ``peak_db`` dBFS (as
``pyloudnorm.normalize.peak``, over all channels) and, for LAION-CLAP's documented input path, a round trip
through 16-bit integers. The steps run in that order.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import torch

from ..audio import resample

__all__ = ["CHANNEL_MODES", "Preprocessing", "peak_normalize", "int16_round_trip", "to_channels"]

CHANNEL_MODES = ("mono", "stereo", "keep")


def peak_normalize(audio: torch.Tensor, peak_db: float = -1.0) -> torch.Tensor:
    """Scale ``audio`` so that its largest absolute sample is ``peak_db`` dBFS; silence is returned as is."""
    peak = audio.abs().max()
    if peak <= 0:
        return audio
    return audio * (10.0 ** (peak_db / 20.0) / peak)


def int16_round_trip(audio: torch.Tensor) -> torch.Tensor:
    """Clip to [-1, 1], quantise to int16 (scale 32767, truncation) and back, as LAION-CLAP's usage example."""
    quantised = (audio.clamp(-1.0, 1.0) * 32767.0).to(torch.int16)
    return quantised.to(torch.float32) / 32767.0


def to_channels(audio: torch.Tensor, mode: str) -> torch.Tensor:
    """Apply a channel mode (``"mono"``, ``"stereo"`` or ``"keep"``) to ``audio [channels, samples]``."""
    if audio.dim() != 2:
        raise ValueError(f"expected audio [channels, samples], got shape {tuple(audio.shape)}")
    if mode == "mono":
        return audio.mean(dim=0, keepdim=True)
    if mode == "stereo":
        if audio.shape[0] == 1:
            return audio.repeat(2, 1)
        if audio.shape[0] != 2:
            raise ValueError(f"stereo embedding needs 1 or 2 channels, got {audio.shape[0]}")
        return audio
    if mode == "keep":
        return audio
    raise ValueError(f"channel mode must be one of {', '.join(CHANNEL_MODES)}, got {mode!r}")


@dataclass(frozen=True)
class Preprocessing:
    """What an embedder needs its input to be.

    Args:
        sample_rate: int, the embedder's input rate in Hz.
        channels: str, default ``"mono"``; one of ``"mono"``, ``"stereo"``, ``"keep"``.
        peak_db: float or None, default None; peak-normalise to this many dBFS (None: leave the level).
        int16_round_trip: bool, default False; quantise through int16 after normalisation.
    """

    sample_rate: int
    channels: str = "mono"
    peak_db: Optional[float] = None
    int16_round_trip: bool = False

    def __post_init__(self) -> None:
        if int(self.sample_rate) != self.sample_rate or self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {self.sample_rate!r}")
        if self.channels not in CHANNEL_MODES:
            raise ValueError(f"channels must be one of {', '.join(CHANNEL_MODES)}, got {self.channels!r}")

    def __call__(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Return ``audio [channels, samples]`` at ``sample_rate`` prepared for the embedder (float32)."""
        out = to_channels(audio.float(), self.channels)
        out = resample(out, int(sample_rate), int(self.sample_rate))
        if self.peak_db is not None:
            out = peak_normalize(out, self.peak_db)
        if self.int16_round_trip:
            out = int16_round_trip(out)
        return out

    def describe(self) -> Dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)
