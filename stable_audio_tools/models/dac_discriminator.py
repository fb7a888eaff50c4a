"""Descript Audio Codec's GAN discriminator (multi-period, multi-scale and multi-band multi-resolution
sub-discriminators) and its LSGAN / hinge losses, as used by upstream's ``dac`` discriminator type.

State-dict layout equals upstream's: ``discriminator.discriminators.{k}.convs.{i}.0.weight_g`` (conv
layers followed by LeakyReLU(0.1) are ``nn.Sequential(conv, act)``), ``...conv_post.weight_g`` and,
for the multi-resolution discriminator, ``...band_convs.{b}.{i}.0.weight_g``.

Differences from upstream: see docs/compatibility.md#stable_audio_toolsmodelsdac_discriminator.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, List, Sequence, Tuple

import julius
import torch
import torch.nn.functional as F
from torch import nn

from .wn import WNConv1d, WNConv2d

__all__ = ["BANDS", "frozen_parameters", "MPD", "MSD", "MRD", "DACDiscriminator", "DACGANLoss"]

BANDS: List[Tuple[float, float]] = [(0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
"""DAC's default frequency bands (fractions of the onesided spectrum) for the MRD."""


@contextlib.contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on every parameter of ``module``: graphs built inside
    carry gradients to their inputs only (no weight gradients are computed)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _wn_conv(conv_cls, *args, act: bool = True, **kwargs) -> nn.Module:
    """A weight-normed conv, followed by LeakyReLU(0.1) inside an ``nn.Sequential`` when ``act``."""
    conv = conv_cls(*args, **kwargs)
    return nn.Sequential(conv, nn.LeakyReLU(0.1)) if act else conv


class MPD(nn.Module):
    """Multi-period sub-discriminator: the signal folded into ``[frames, period]`` through 2-D convs."""

    def __init__(self, period: int, channels: int = 1) -> None:
        super().__init__()
        self.period = period
        self.convs = nn.ModuleList([
            _wn_conv(WNConv2d, channels, 32, (5, 1), (3, 1), padding=(2, 0)),
            _wn_conv(WNConv2d, 32, 128, (5, 1), (3, 1), padding=(2, 0)),
            _wn_conv(WNConv2d, 128, 512, (5, 1), (3, 1), padding=(2, 0)),
            _wn_conv(WNConv2d, 512, 1024, (5, 1), (3, 1), padding=(2, 0)),
            _wn_conv(WNConv2d, 1024, 1024, (5, 1), 1, padding=(2, 0)),
        ])
        self.conv_post = _wn_conv(WNConv2d, 1024, 1, kernel_size=(3, 1), padding=(1, 0), act=False)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        # Reflect-pad by ``period - T % period`` (a whole extra period when T is a multiple, as DAC).
        x = F.pad(x, (0, self.period - x.shape[-1] % self.period), mode="reflect")
        x = x.reshape(*x.shape[:2], -1, self.period)
        fmap = []
        for layer in self.convs:
            x = layer(x)
            fmap.append(x)
        fmap.append(self.conv_post(x))
        return fmap


class MSD(nn.Module):
    """Multi-scale sub-discriminator: grouped 1-D convs on the signal resampled to ``sample_rate // rate``."""

    def __init__(self, rate: int = 1, sample_rate: int = 44100, channels: int = 1) -> None:
        super().__init__()
        self.convs = nn.ModuleList([
            _wn_conv(WNConv1d, channels, 16, 15, 1, padding=7),
            _wn_conv(WNConv1d, 16, 64, 41, 4, groups=4, padding=20),
            _wn_conv(WNConv1d, 64, 256, 41, 4, groups=16, padding=20),
            _wn_conv(WNConv1d, 256, 1024, 41, 4, groups=64, padding=20),
            _wn_conv(WNConv1d, 1024, 1024, 41, 4, groups=256, padding=20),
            _wn_conv(WNConv1d, 1024, 1024, 5, 1, padding=2),
        ])
        self.conv_post = _wn_conv(WNConv1d, 1024, 1, 3, 1, padding=1, act=False)
        self.sample_rate = sample_rate
        self.rate = rate

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        target_rate = self.sample_rate // self.rate
        if target_rate != self.sample_rate:
            x = julius.resample_frac(x, self.sample_rate, target_rate)
        fmap = []
        for layer in self.convs:
            x = layer(x)
            fmap.append(x)
        fmap.append(self.conv_post(x))
        return fmap


class MRD(nn.Module):
    """Complex multi-band spectrogram sub-discriminator (one conv stack per frequency band).

    The STFT reproduces audiotools' ``match_stride`` STFT: reflect padding so that
    ``frames * hop == ceil(T / hop) * hop``, periodic Hann window, ``center=True``, two frames
    dropped at each end. Channels are folded into the batch.
    """

    def __init__(self, window_length: int, hop_factor: float = 0.25, sample_rate: int = 44100,
                 bands: Sequence[Sequence[float]] = tuple(BANDS), channels: int = 1) -> None:
        super().__init__()
        hop_length = int(window_length * hop_factor)
        if hop_length != window_length // 4:
            raise ValueError(f"MRD needs hop = window_length // 4 (hop_factor 0.25); got hop_factor={hop_factor}")
        self.window_length = window_length
        self.hop_factor = hop_factor
        self.hop_length = hop_length
        self.sample_rate = sample_rate
        self.channels = channels
        n_freqs = window_length // 2 + 1
        self.bands = [(int(lo * n_freqs), int(hi * n_freqs)) for lo, hi in bands]
        window = torch.hann_window(window_length, dtype=torch.float64).float()
        self.register_buffer("window", window, persistent=False)

        ch = 32

        def band_stack() -> nn.ModuleList:
            return nn.ModuleList([
                _wn_conv(WNConv2d, 2, ch, (3, 9), (1, 1), padding=(1, 4)),
                _wn_conv(WNConv2d, ch, ch, (3, 9), (1, 2), padding=(1, 4)),
                _wn_conv(WNConv2d, ch, ch, (3, 9), (1, 2), padding=(1, 4)),
                _wn_conv(WNConv2d, ch, ch, (3, 9), (1, 2), padding=(1, 4)),
                _wn_conv(WNConv2d, ch, ch, (3, 3), (1, 1), padding=(1, 1)),
            ])

        self.band_convs = nn.ModuleList([band_stack() for _ in self.bands])
        self.conv_post = _wn_conv(WNConv2d, ch, 1, (3, 3), (1, 1), padding=(1, 1), act=False)

    def spectrogram(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Band slices ``[(B·C), 2, frames, band_bins]`` of the real/imaginary spectrogram of ``x``."""
        length = x.shape[-1]
        hop = self.hop_length
        right_pad = math.ceil(length / hop) * hop - length
        pad = (self.window_length - hop) // 2
        x = F.pad(x, (pad, pad + right_pad), mode="reflect")
        stft = torch.stft(x.reshape(-1, x.shape[-1]), n_fft=self.window_length, hop_length=hop,
                          window=self.window.to(x), center=True, return_complex=True)[..., 2:-2]
        spec = torch.view_as_real(stft).permute(0, 3, 2, 1)  # (b ch) f t c -> (b ch) c t f
        # channels_last: the band convolutions run faster on NHWC (same values).
        return [spec[..., lo:hi].contiguous(memory_format=torch.channels_last) for lo, hi in self.bands]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        fmap = []
        outputs = []
        for band, stack in zip(self.spectrogram(x), self.band_convs):
            for layer in stack:
                band = layer(band)
                fmap.append(band)
            outputs.append(band)
        fmap.append(self.conv_post(torch.cat(outputs, dim=-1)))
        return fmap


class DACDiscriminator(nn.Module):
    """MPD per period, MSD per rate and MRD per FFT size, on DC-removed, peak-normalised (0.8) audio."""

    def __init__(self, channels: int = 1, rates: Sequence[int] = (), periods: Sequence[int] = (2, 3, 5, 7, 11),
                 fft_sizes: Sequence[int] = (2048, 1024, 512), sample_rate: int = 44100,
                 bands: Sequence[Sequence[float]] = tuple(BANDS)) -> None:
        super().__init__()
        discs: List[nn.Module] = [MPD(p, channels=channels) for p in periods]
        discs += [MSD(r, sample_rate=sample_rate, channels=channels) for r in rates]
        discs += [MRD(f, sample_rate=sample_rate, bands=bands, channels=channels) for f in fft_sizes]
        if not discs:
            raise ValueError("the DAC discriminator needs at least one of periods, rates or fft_sizes")
        self.discriminators = nn.ModuleList(discs)

    @staticmethod
    def preprocess(y: torch.Tensor) -> torch.Tensor:
        """Remove the DC offset and peak-normalise each channel to 0.8."""
        y = y - y.mean(dim=-1, keepdim=True)
        return 0.8 * y / (y.abs().max(dim=-1, keepdim=True)[0] + 1e-9)

    def forward(self, x: torch.Tensor) -> List[List[torch.Tensor]]:
        x = self.preprocess(x)
        return [d(x) for d in self.discriminators]


class DACGANLoss(nn.Module):
    """DAC's adversarial losses around a :class:`DACDiscriminator` (child ``discriminator``).

    LSGAN by default (``use_hinge=True``: upstream's hinge variant ``relu(D(fake)) + relu(1 − D(real))``
    for the discriminator and ``relu(1 − D(fake))`` for the generator); feature matching is the L1
    distance to the detached real feature maps, averaged over layers, then over sub-discriminators.

    ``loss(reals, fakes) -> (dis_loss, adv_loss, feature_matching)`` keeps upstream's gradient
    semantics (the discriminator loss sees detached fakes) with one batched pass over
    ``[reals; fakes.detach()]`` plus, when ``fakes`` needs a gradient, one pass over ``fakes``
    (upstream: four passes). :meth:`discriminator_loss` and :meth:`generator_loss` compute only
    their part.
    """

    def __init__(self, channels: int = 1, sample_rate: int = 44100, use_hinge: bool = False,
                 rates: Sequence[int] = (), periods: Sequence[int] = (2, 3, 5, 7, 11),
                 fft_sizes: Sequence[int] = (2048, 1024, 512),
                 bands: Sequence[Sequence[float]] = tuple(BANDS)) -> None:
        super().__init__()
        self.use_hinge = use_hinge
        self.discriminator = DACDiscriminator(channels=channels, rates=rates, periods=periods, fft_sizes=fft_sizes,
                                              sample_rate=sample_rate, bands=bands)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> Tuple[list, list]:
        return self.discriminator(fake), self.discriminator(real)

    def _dis(self, d_real: list, d_fake: list) -> torch.Tensor:
        total = 0
        for x_fake, x_real in zip(d_fake, d_real):
            if self.use_hinge:
                total = total + F.relu(x_fake[-1]).mean() + F.relu(1 - x_real[-1]).mean()
            else:
                total = total + x_fake[-1].square().mean() + (1 - x_real[-1]).square().mean()
        return total / len(d_fake)

    def _gen(self, d_real: list, d_fake: list) -> Tuple[torch.Tensor, torch.Tensor]:
        adv = 0
        for x_fake in d_fake:
            adv = adv + (F.relu(1 - x_fake[-1]).mean() if self.use_hinge else (1 - x_fake[-1]).square().mean())
        feature = 0
        for real_maps, fake_maps in zip(d_real, d_fake):
            n_layers = len(fake_maps) - 1
            layer_sum = 0
            for j in range(n_layers):
                layer_sum = layer_sum + F.l1_loss(fake_maps[j], real_maps[j].detach())
            feature = feature + layer_sum / n_layers
        return adv / len(d_fake), feature / len(d_fake)

    def _paired_maps(self, reals: torch.Tensor, fakes: torch.Tensor) -> Tuple[list, list]:
        """Feature maps of reals and of detached fakes from one batched pass."""
        if reals.shape != fakes.shape:
            raise ValueError(f"reals and fakes shapes differ: {tuple(reals.shape)} vs {tuple(fakes.shape)}")
        maps = self.discriminator(torch.cat([reals, fakes.detach()], dim=0))
        # Each map's leading dim is the doubled batch (times channels for the MRD): reals come first.
        halves = [[m.chunk(2, dim=0) for m in d] for d in maps]
        return [[h[0] for h in d] for d in halves], [[h[1] for h in d] for d in halves]

    def discriminator_loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> torch.Tensor:
        """Discriminator loss only (``fakes`` detached, one batched pass)."""
        return self._dis(*self._paired_maps(reals, fakes))

    def generator_loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(adv_loss, feature_matching)``, differentiable with respect to ``fakes`` only (no real-pass
        graph, no discriminator weight gradients)."""
        with torch.no_grad():
            d_real = self.discriminator(reals)
        with frozen_parameters(self):
            d_fake = self.discriminator(fakes)
        return self._gen(d_real, d_fake)

    def loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(dis_loss, adv_loss, feature_matching)``; see the class docstring for the passes."""
        d_real, d_fake_detached = self._paired_maps(reals, fakes)
        needs_fake_graph = fakes.requires_grad and torch.is_grad_enabled()
        d_fake = self.discriminator(fakes) if needs_fake_graph else d_fake_detached
        adv, feature = self._gen(d_real, d_fake)
        return self._dis(d_real, d_fake_detached), adv, feature
