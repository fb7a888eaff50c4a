"""GAN discriminators for autoencoder training (``loss_configs.discriminator``): EnCodec's multi-scale
STFT discriminator, the Oobleck multi-scale + multi-period discriminator and DAC's discriminator
(:mod:`.dac_discriminator`), with :func:`create_discriminator_from_config`.

Every discriminator exposes ``loss(reals, fakes) -> (dis_loss, adv_loss, feature_matching_distance)``
with upstream's values, plus two cheaper entry points for wrappers that need one side per step
(same values): ``discriminator_loss(reals, fakes)`` (fakes detached: gradients reach the
discriminator only) and ``generator_loss(reals, fakes) -> (adv_loss, feature_matching_distance)``
(gradients reach ``fakes`` only: no real-pass graph, no discriminator weight gradients).
In ``loss`` the real features/logits enter the generator-side losses detached: the values and the
gradients reaching ``fakes`` equal upstream's; upstream also accumulated (and then discarded)
discriminator gradients from those terms.

Upstream fixes: ``loss_type="rpgan"`` works (relativistic pairing loss, see
:func:`get_relativistic_losses`); the EnCodec ``window`` option is honoured (upstream always used a
Hann window). Convolutions are not gradient-checkpointed (numerically irrelevant, faster on CPU).
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, build_from_config, check_choice, require, require_mapping
from .dac_discriminator import BANDS, MPD, MRD, MSD, DACDiscriminator, DACGANLoss, frozen_parameters
from .wn import WNConv1d, WNConv2d

__all__ = [
    "get_hinge_losses",
    "get_relativistic_losses",
    "get_2d_padding",
    "NormConv2d",
    "EncodecDiscriminator",
    "MultiScaleSTFTDiscriminator",
    "DiscriminatorSTFT",
    "SharedDiscriminatorConvNet",
    "MultiScaleDiscriminator",
    "MultiPeriodDiscriminator",
    "MultiDiscriminator",
    "OobleckDiscriminator",
    "DACGANLoss",
    "BANDS",
    "MultiScaleSubbandCQTDiscriminator",
    "BigVGANDiscriminator",
    "create_discriminator_from_config",
    # defined in .dac_discriminator, importable from here as from upstream's models/discriminators.py
    "MPD",
    "MSD",
    "MRD",
    "DACDiscriminator",
]

_BIGVGAN_UNAVAILABLE = ("upstream's BigVGAN discriminator cannot be built: its MultiScaleSubbandCQTDiscriminator "
                        "instantiates a DiscriminatorCQT class that upstream 0.0.19 never defines (BigVGAN v2's "
                        "version needs nnAudio's CQT transform)")

LossTriple = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def get_hinge_losses(score_real: torch.Tensor, score_fake: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Hinge GAN losses: ``(mean relu(1 − real) + mean relu(1 + fake), −mean fake)``."""
    dis_loss = torch.relu(1 - score_real).mean() + torch.relu(1 + score_fake).mean()
    return dis_loss, -score_fake.mean()


def get_relativistic_losses(score_real: torch.Tensor, score_fake: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Relativistic pairing GAN (RpGAN) losses on paired scores, ``d = real − fake``:
    ``(mean softplus(−d), mean softplus(d))`` for the discriminator and the generator."""
    diff = score_real - score_fake
    return F.softplus(-diff).mean(), F.softplus(diff).mean()


def _cat_pair(reals: torch.Tensor, fakes: torch.Tensor) -> torch.Tensor:
    """``[reals; fakes.detach()]`` along the batch, for one discriminator pass without autograd into fakes."""
    if reals.shape != fakes.shape:
        raise ValueError(f"reals and fakes shapes differ: {tuple(reals.shape)} vs {tuple(fakes.shape)}")
    return torch.cat([reals, fakes.detach()], dim=0)


# --------------------------------------------------------------------------------------------------
# EnCodec multi-scale STFT discriminator

def _window_fn(window: str) -> Callable[[int], torch.Tensor]:
    if window == "hann":
        return torch.hann_window
    if window == "nuttall":
        return torch.signal.windows.nuttall
    if window == "flattop":
        return lambda n: torch.tensor(scipy.signal.windows.flattop(n, sym=False), dtype=torch.float32)
    raise ValueError(f"unknown STFT discriminator window {window!r}; use 'hann', 'nuttall' or 'flattop'")


class Spectrogram(nn.Module):
    """Complex spectrogram (``center=False``), optionally divided by the window's L2 norm; the window
    is the persistent buffer ``window`` (as torchaudio's ``Spectrogram(power=None)``)."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int, window_fn: Callable[[int], torch.Tensor],
                 normalized: bool = True) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.normalized = normalized
        self.register_buffer("window", window_fn(win_length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        spec = torch.stft(x.reshape(-1, shape[-1]), self.n_fft, self.hop_length, self.win_length, self.window,
                          center=False, normalized=False, onesided=True, return_complex=True)
        spec = spec.reshape(*shape[:-1], *spec.shape[-2:])
        if self.normalized:
            spec = spec / self.window.pow(2.0).sum().sqrt()
        return spec


class NormConv2d(nn.Module):
    """Weight-normed ``Conv2d`` under the child name ``conv`` (EnCodec's key layout)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.conv = WNConv2d(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def get_2d_padding(kernel_size: Sequence[int], dilation: Sequence[int] = (1, 1)) -> Tuple[int, int]:
    """"Same" padding ``((k - 1) * d // 2)`` per axis of a 2-D convolution with ``kernel_size`` and ``dilation``."""
    return ((kernel_size[0] - 1) * dilation[0]) // 2, ((kernel_size[1] - 1) * dilation[1]) // 2


class DiscriminatorSTFT(nn.Module):
    """One EnCodec STFT sub-discriminator: complex spectrogram (real and imaginary parts stacked on
    channels, axes ``[time, freq]``) through 2-D convs with growing time dilation."""

    def __init__(self, filters: int, in_channels: int = 1, out_channels: int = 1, n_fft: int = 1024,
                 hop_length: int = 256, win_length: int = 1024, max_filters: int = 1024, filters_scale: int = 1,
                 kernel_size: Sequence[int] = (3, 9), dilations: Sequence[int] = (1, 2, 4),
                 stride: Sequence[int] = (1, 2), normalized: bool = True, activation: str = "LeakyReLU",
                 activation_params: Optional[Mapping[str, Any]] = None, spec_scale_pow: float = 0.0,
                 window: str = "hann") -> None:
        super().__init__()
        if len(kernel_size) != 2 or len(stride) != 2:
            raise ValueError(f"kernel_size and stride must have two entries (got {kernel_size}, {stride})")
        activation_cls = getattr(nn, activation, None)
        if not isinstance(activation_cls, type) or not issubclass(activation_cls, nn.Module):
            raise ValueError(f"unknown activation {activation!r}: use a torch.nn module name such as 'LeakyReLU'")
        if activation_params is None:
            activation_params = {"negative_slope": 0.2} if activation == "LeakyReLU" else {}
        kernel_size = tuple(kernel_size)
        self.filters = filters
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.spec_scale_pow = spec_scale_pow
        self.activation = activation_cls(**activation_params)
        self.spec_transform = Spectrogram(n_fft, hop_length, win_length, _window_fn(window), normalized)
        square = (kernel_size[0], kernel_size[0])
        self.convs = nn.ModuleList([NormConv2d(2 * in_channels, filters, kernel_size=kernel_size,
                                               padding=get_2d_padding(kernel_size))])
        in_chs = min(filters_scale * filters, max_filters)
        for i, dilation in enumerate(dilations):
            out_chs = min((filters_scale ** (i + 1)) * filters, max_filters)
            self.convs.append(NormConv2d(in_chs, out_chs, kernel_size=kernel_size, stride=tuple(stride),
                                         dilation=(dilation, 1), padding=get_2d_padding(kernel_size, (dilation, 1))))
            in_chs = out_chs
        out_chs = min((filters_scale ** (len(dilations) + 1)) * filters, max_filters)
        self.convs.append(NormConv2d(in_chs, out_chs, kernel_size=square, padding=get_2d_padding(square)))
        self.conv_post = NormConv2d(out_chs, out_channels, kernel_size=square, padding=get_2d_padding(square))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        z = self.spec_transform(x)
        if self.spec_scale_pow != 0.0:
            z = z * torch.pow(z.abs() + 1e-6, self.spec_scale_pow)
        # channels_last: oneDNN / cuDNN convolutions run markedly faster on NHWC (same values).
        z = torch.cat([z.real, z.imag], dim=1).transpose(-1, -2).contiguous(memory_format=torch.channels_last)
        fmap = []
        for layer in self.convs:
            z = self.activation(layer(z))
            fmap.append(z)
        return self.conv_post(z), fmap


class MultiScaleSTFTDiscriminator(nn.Module):
    """One :class:`DiscriminatorSTFT` per (n_fft, hop_length, win_length); child ``discriminators``."""

    def __init__(self, filters: int, in_channels: int = 1, out_channels: int = 1,
                 n_ffts: Sequence[int] = (1024, 2048, 512), hop_lengths: Sequence[int] = (256, 512, 128),
                 win_lengths: Sequence[int] = (1024, 2048, 512), **kwargs: Any) -> None:
        super().__init__()
        if not (len(n_ffts) == len(hop_lengths) == len(win_lengths)) or len(n_ffts) == 0:
            raise ValueError(f"n_ffts, hop_lengths and win_lengths must be non-empty and of equal length "
                             f"(got {len(n_ffts)}, {len(hop_lengths)}, {len(win_lengths)})")
        self.discriminators = nn.ModuleList([
            DiscriminatorSTFT(filters, in_channels=in_channels, out_channels=out_channels, n_fft=n, win_length=w,
                              hop_length=h, **kwargs)
            for n, h, w in zip(n_ffts, hop_lengths, win_lengths)
        ])
        self.num_discriminators = len(self.discriminators)

    def forward(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], List[List[torch.Tensor]]]:
        logits, fmaps = [], []
        for disc in self.discriminators:
            logit, fmap = disc(x)
            logits.append(logit)
            fmaps.append(fmap)
        return logits, fmaps


class EncodecDiscriminator(nn.Module):
    """EnCodec MS-STFT discriminator with hinge (default) or relativistic ``"rpgan"`` losses.

    Per scale: feature matching = mean over layers of ``mean|f_real − f_fake|`` (divided by
    ``mean|f_real| + 1e-3`` when ``normalize_losses``); all three losses are averaged over scales.
    """

    def __init__(self, filters: int = 32, in_channels: int = 1, out_channels: int = 1,
                 n_ffts: Sequence[int] = (1024, 2048, 512), hop_lengths: Sequence[int] = (256, 512, 128),
                 win_lengths: Sequence[int] = (1024, 2048, 512), normalize_losses: bool = False,
                 loss_type: str = "hinge", max_filters: int = 1024, filters_scale: int = 1,
                 kernel_size: Sequence[int] = (3, 9), dilations: Sequence[int] = (1, 2, 4),
                 stride: Sequence[int] = (1, 2), normalized: bool = True, activation: str = "LeakyReLU",
                 activation_params: Optional[Mapping[str, Any]] = None, spec_scale_pow: float = 0.0,
                 window: str = "hann") -> None:
        super().__init__()
        if loss_type not in ("hinge", "rpgan"):
            raise ValueError(f"loss_type must be 'hinge' or 'rpgan' (got {loss_type!r})")
        self.discriminators = MultiScaleSTFTDiscriminator(
            filters, in_channels=in_channels, out_channels=out_channels, n_ffts=n_ffts, hop_lengths=hop_lengths,
            win_lengths=win_lengths, max_filters=max_filters, filters_scale=filters_scale, kernel_size=kernel_size,
            dilations=dilations, stride=stride, normalized=normalized, activation=activation,
            activation_params=activation_params, spec_scale_pow=spec_scale_pow, window=window)
        self.normalize_losses = normalize_losses
        self.loss_type = loss_type

    def forward(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], List[List[torch.Tensor]]]:
        return self.discriminators(x)

    def _fm(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        distance = (real - fake).abs().mean()
        return distance / (real.abs().mean() + 1e-3) if self.normalize_losses else distance

    def _pair_losses(self, real: torch.Tensor, fake: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return get_hinge_losses(real, fake) if self.loss_type == "hinge" else get_relativistic_losses(real, fake)

    def _generator_terms(self, logits_real: list, logits_fake: list, fmap_real: list,
                         fmap_fake: list) -> Tuple[torch.Tensor, torch.Tensor]:
        adv, fm = 0, 0
        for lr, lf, fr, ff in zip(logits_real, logits_fake, fmap_real, fmap_fake):
            fm = fm + sum(self._fm(r.detach(), f) for r, f in zip(fr, ff)) / len(fr)
            adv = adv + self._pair_losses(lr.detach(), lf)[1]
        return adv / len(logits_fake), fm / len(logits_fake)

    def _discriminator_term(self, logits_real: list, logits_fake: list) -> torch.Tensor:
        return sum(self._pair_losses(lr, lf)[0] for lr, lf in zip(logits_real, logits_fake)) / len(logits_real)

    def discriminator_loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> torch.Tensor:
        """Discriminator loss only: one batched pass over ``[reals; fakes.detach()]``."""
        logits, _ = self.forward(_cat_pair(reals, fakes))
        halves = [logit.chunk(2, dim=0) for logit in logits]
        return self._discriminator_term([h[0] for h in halves], [h[1] for h in halves])

    def generator_loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(adv_loss, feature_matching_distance)``, differentiable with respect to ``fakes`` only (the
        real pass runs without autograd, the discriminator's parameters get no gradient)."""
        with torch.no_grad():
            logits_real, fmap_real = self.forward(reals)
        with frozen_parameters(self):
            logits_fake, fmap_fake = self.forward(fakes)
        return self._generator_terms(logits_real, logits_fake, fmap_real, fmap_fake)

    def loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> LossTriple:
        """``(dis_loss, adv_loss, feature_matching_distance)`` from one pass over each input."""
        logits_real, fmap_real = self.forward(reals)
        logits_fake, fmap_fake = self.forward(fakes)
        adv, fm = self._generator_terms(logits_real, logits_fake, fmap_real, fmap_fake)
        return self._discriminator_term(logits_real, logits_fake), adv, fm


# --------------------------------------------------------------------------------------------------
# Oobleck multi-scale + multi-period discriminator

class SharedDiscriminatorConvNet(nn.Module):
    """``n_layers`` weight-normed strided convs with SiLU, then a plain 1x1 conv to ``out_size``.

    ``forward`` returns the score (mean of the output map per item) and every conv output (the
    pre-activation features, the final map included). ``convolution`` is ``"1d"`` or ``"2d"``; an
    int kernel is square for 2-D convs, as upstream.
    """

    def __init__(self, in_size: int, convolution: str, out_size: int = 1, capacity: int = 32, n_layers: int = 4,
                 kernel_size: int = 15, stride: int = 4) -> None:
        super().__init__()
        wn_conv, plain_conv = (WNConv1d, nn.Conv1d) if convolution == "1d" else (WNConv2d, nn.Conv2d)
        channels = [in_size] + [capacity * 2 ** i for i in range(n_layers)]
        net: List[nn.Module] = []
        for i in range(n_layers):
            net.append(wn_conv(channels[i], channels[i + 1], kernel_size, stride=stride, padding=kernel_size // 2))
            net.append(nn.SiLU())
        net.append(plain_conv(channels[-1], out_size, 1))
        self.net = nn.ModuleList(net)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        features = []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.modules.conv._ConvNd):
                features.append(x)
        return x.reshape(x.shape[0], -1).mean(-1), features


class MultiScaleDiscriminator(nn.Module):
    """``n_scales`` 1-D conv nets on the signal average-pooled by 2 between scales (scores summed)."""

    def __init__(self, in_channels: int, n_scales: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([SharedDiscriminatorConvNet(in_channels, "1d") for _ in range(n_scales)])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        score, features = 0, []
        for layer in self.layers:
            s, f = layer(x)
            score = score + s
            features.extend(f)
            x = F.avg_pool1d(x, 2)
        return score, features


class MultiPeriodDiscriminator(nn.Module):
    """2-D conv nets on the signal zero-padded and folded into ``[T / period, period]`` (scores summed)."""

    def __init__(self, in_channels: int, periods: Sequence[int]) -> None:
        super().__init__()
        self.periods = list(periods)
        self.layers = nn.ModuleList([SharedDiscriminatorConvNet(in_channels, "2d") for _ in self.periods])

    @staticmethod
    def fold(x: torch.Tensor, n: int) -> torch.Tensor:
        x = F.pad(x, (0, (n - x.shape[-1] % n) % n))
        return x.reshape(*x.shape[:2], -1, n)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        score, features = 0, []
        for layer, n in zip(self.layers, self.periods):
            s, f = layer(self.fold(x, n))
            score = score + s
            features.extend(f)
        return score, features


class MultiDiscriminator(nn.Module):
    """Runs each discriminator of ``discriminators``; sums their scores and concatenates features."""

    def __init__(self, discriminator_list: Sequence[nn.Module]) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(discriminator_list)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        score, features = 0, []
        for disc in self.discriminators:
            s, f = disc(x)
            score = score + s
            features.extend(f)
        return score, features


class OobleckDiscriminator(nn.Module):
    """Multi-scale (3 scales) plus multi-period (2, 3, 5, 7, 11) discriminator with hinge losses on
    the summed scores; feature matching = sum over all feature maps of ``mean|f_real − f_fake|``."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.multi_discriminator = MultiDiscriminator([
            MultiScaleDiscriminator(in_channels=in_channels, n_scales=3),
            MultiPeriodDiscriminator(in_channels=in_channels, periods=[2, 3, 5, 7, 11]),
        ])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        return self.multi_discriminator(x)

    @staticmethod
    def _generator_terms(score_fake: torch.Tensor, features_real: list,
                         features_fake: list) -> Tuple[torch.Tensor, torch.Tensor]:
        fm = sum((r.detach() - f).abs().mean() for r, f in zip(features_real, features_fake))
        return -score_fake.mean(), fm

    def discriminator_loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> torch.Tensor:
        """Discriminator hinge loss only: one batched pass over ``[reals; fakes.detach()]``."""
        score_real, score_fake = self.forward(_cat_pair(reals, fakes))[0].chunk(2, dim=0)
        return get_hinge_losses(score_real, score_fake)[0]

    def generator_loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(adv_loss, feature_matching_distance)``, differentiable with respect to ``fakes`` only."""
        with torch.no_grad():
            _, features_real = self.forward(reals)
        with frozen_parameters(self):
            score_fake, features_fake = self.forward(fakes)
        return self._generator_terms(score_fake, features_real, features_fake)

    def loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> LossTriple:
        """``(dis_loss, adv_loss, feature_matching_distance)`` from one pass over each input."""
        score_real, features_real = self.forward(reals)
        score_fake, features_fake = self.forward(fakes)
        adv, fm = self._generator_terms(score_fake, features_real, features_fake)
        return get_hinge_losses(score_real, score_fake)[0], adv, fm


class MultiScaleSubbandCQTDiscriminator(nn.Module):
    """Upstream's multi-scale sub-band CQT discriminator (from BigVGAN v2). Importable for compatibility, but
    constructing it raises ``NotImplementedError``: upstream 0.0.19 builds it from an undefined
    ``DiscriminatorCQT`` class, so no working configuration uses it.

    Args:
        cfg (dict): upstream's ``cqtd_*`` options.
    """

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        raise NotImplementedError(_BIGVGAN_UNAVAILABLE + "; use the 'encodec', 'oobleck' or 'dac' discriminator")


class BigVGANDiscriminator(nn.Module):
    """Upstream's BigVGAN discriminator (DAC multi-period discriminator + sub-band CQT discriminator). Importable
    for compatibility, but constructing it raises ``NotImplementedError`` (see
    :class:`MultiScaleSubbandCQTDiscriminator`); the ``big_vgan`` discriminator type is refused likewise.

    Args:
        sample_rate (int): audio sample rate.
        channels (int): audio channels. Default 1.
        use_hinge (bool): hinge instead of least-squares losses. Default False.
        periods (list of int): periods of the multi-period discriminator. Default ``[2, 3, 5, 7, 11]``.
        **cqt_kwargs: options of the CQT discriminator.
    """

    def __init__(self, sample_rate: int, channels: int = 1, use_hinge: bool = False,
                 periods: Sequence[int] = (2, 3, 5, 7, 11), **cqt_kwargs: Any) -> None:
        raise NotImplementedError(_BIGVGAN_UNAVAILABLE + "; use the 'encodec', 'oobleck' or 'dac' discriminator")


# --------------------------------------------------------------------------------------------------
# Factory

_DISCRIMINATOR_TYPES = ("encodec", "oobleck", "dac", "big_vgan")


def create_discriminator_from_config(disc_config: Mapping[str, Any], in_channels: int, sample_rate: int,
                                     path: str = "training.loss_configs.discriminator") -> nn.Module:
    """Build the discriminator described by ``{"type": ..., "config": {...}}`` (never mutated).

    ``encodec`` gets ``in_channels`` (the autoencoder's output channels) unless the config sets it;
    ``dac`` gets ``channels=in_channels`` and ``sample_rate`` likewise; ``oobleck`` gets ``in_channels``
    too (upstream passed none, so its default of 1 crashed on stereo autoencoders).
    """
    require_mapping(disc_config, path)
    disc_type = check_choice(require(disc_config, "type", path, types=(str,)), _DISCRIMINATOR_TYPES, f"{path}.type")
    config: Dict[str, Any] = copy.deepcopy(dict(require_mapping(disc_config.get("config") or {}, f"{path}.config")))
    config_path = f"{path}.config"
    if disc_type == "big_vgan":
        raise ConfigError(f"{path}.type", "the 'big_vgan' discriminator is not available",
                          _BIGVGAN_UNAVAILABLE + "; use 'encodec', 'oobleck' or 'dac'")
    if disc_type == "encodec":
        config.setdefault("in_channels", in_channels)
        return build_from_config(EncodecDiscriminator, config, config_path)
    if disc_type == "oobleck":
        config.setdefault("in_channels", in_channels)
        return build_from_config(OobleckDiscriminator, config, config_path)
    config.setdefault("channels", in_channels)
    config.setdefault("sample_rate", sample_rate)
    return build_from_config(DACGANLoss, config, config_path)
