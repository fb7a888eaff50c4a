"""Spectral and time-domain losses with the numerics of the auraloss 0.4.0 code vendored (and
modified) by upstream stable-audio-tools 0.0.19 (``training/losses/auraloss.py``), written from scratch.

Upstream's modifications, kept here: spectral convergence is computed per signal and then averaged
(pip auraloss 0.4.0 takes one Frobenius norm over the whole batch: same value for a batch of one),
the phase term is the normalised complex distance (pip auraloss: MSE of the phase angles), and
``retain_batch_dim`` returns one loss value per signal.

Efficiency notes (numerically neutral up to float rounding): the A-weighting FIR is applied as an
FFT convolution, once per multi-resolution call (shared by all resolutions); the sum and difference
signals go through the same STFT calls; input and target are transformed in separate calls so that
backward passes only cover the signal that needs a gradient.

State-dict compatibility with upstream: ``STFTLoss`` holds the mel/chroma filterbank as the buffer
``fb`` and the A-weighting filter as ``prefilter.fir.weight`` (a frozen ``Conv1d`` weight); the
analysis window is not saved (upstream keeps it as a plain attribute).

Deviations from upstream: see docs/compatibility.md#stable_audio_toolstraininglossesauraloss.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import scipy.fft
import torch
import torch.nn.functional as F
from torch import nn

from ...config import check_choice
from .filters import a_weighting_fir_taps, chroma_filterbank, get_window, mel_filterbank

__all__ = [
    "apply_reduction",
    "normalized_complex_distance_loss",
    "SumAndDifference",
    "FIRFilter",
    "STFTLoss",
    "MultiResolutionSTFTLoss",
    "SumAndDifferenceSTFTLoss",
    "MelSTFTLoss",
    "SISDRLoss",
    "SDSDRLoss",
    "SpectralConvergenceLoss",
    "STFTMagnitudeLoss",
]

_REDUCTIONS = ("mean", "sum", "none")


def apply_reduction(losses: torch.Tensor, reduction: str = "none", retain_batch_dim: bool = False) -> torch.Tensor:
    """Reduce a loss tensor: ``"mean"``, ``"sum"`` or ``"none"``; with ``retain_batch_dim`` a 3-D
    tensor is reduced over its last two dims only (one value per item)."""
    dim = (-1, -2) if retain_batch_dim and losses.dim() == 3 else None
    if reduction == "mean":
        return losses.mean() if dim is None else losses.mean(dim=dim)
    if reduction == "sum":
        return losses.sum() if dim is None else losses.sum(dim=dim)
    return losses


def normalized_complex_distance_loss(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise ``|x - y| / (0.5 (|x| + |y|) + eps)`` between two complex spectrograms."""
    return (x - y).abs() / (0.5 * (x.abs() + y.abs()) + eps)


class SumAndDifference(nn.Module):
    """Split a stereo signal ``[B, 2, T]`` into its sum ``L + R`` and difference ``L - R`` (``[B, 1, T]`` each)."""

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.size(1) != 2:
            raise ValueError(f"sum/difference needs stereo input [batch, 2, samples], got {x.size(1)} channel(s)")
        return (x[:, 0] + x[:, 1]).unsqueeze(1), (x[:, 0] - x[:, 1]).unsqueeze(1)


class FIRFilter(nn.Module):
    """Fixed FIR pre-emphasis filter (Wright & Välimäki 2019) applied to input and target alike.

    ``filter_type``: ``"hp"`` first-order high-pass ``[1, -coef, 0]``, ``"fd"`` folded
    differentiator ``[1, 0, -coef]``, ``"aw"`` A-weighting (``ntaps``-tap least-squares FIR fit at
    sample rate ``fs``). The taps live in ``fir.weight`` (frozen), as upstream. The output always
    has the input's length (upstream padded the 3-tap filters by ``ntaps // 2`` and lengthened them).
    """

    def __init__(self, filter_type: str = "hp", coef: float = 0.85, fs: float = 44100, ntaps: int = 101) -> None:
        super().__init__()
        check_choice(filter_type, ("hp", "fd", "aw"), "filter_type")
        if ntaps % 2 == 0:
            raise ValueError(f"ntaps must be odd (got {ntaps})")
        self.filter_type = filter_type
        self.coef = coef
        self.fs = fs
        if filter_type == "aw":
            taps = torch.from_numpy(a_weighting_fir_taps(fs, ntaps))
        elif filter_type == "hp":
            taps = torch.tensor([1.0, -coef, 0.0])
        else:
            taps = torch.tensor([1.0, 0.0, -coef])
        self.ntaps = taps.numel()
        self.fir = nn.Conv1d(1, 1, kernel_size=self.ntaps, bias=False, padding=self.ntaps // 2)
        self.fir.weight.requires_grad_(False)
        with torch.no_grad():
            self.fir.weight.copy_(taps.view(1, 1, -1))

    def filter(self, x: torch.Tensor) -> torch.Tensor:
        """Filter every channel of ``x`` (``[..., T]``) independently: the same values as upstream's
        ``conv1d(x, taps, padding=ntaps // 2)`` (zero padding, same length), computed as an FFT
        convolution, which is an order of magnitude faster than a one-channel ``conv1d`` on CPU."""
        length = x.shape[-1]
        taps = self.fir.weight.detach().to(device=x.device, dtype=x.dtype).reshape(-1)
        n_fft = scipy.fft.next_fast_len(length + self.ntaps - 1, real=True)
        # conv1d is a correlation: convolve with the reversed taps and keep the centred part.
        spectrum = torch.fft.rfft(x, n=n_fft) * torch.fft.rfft(taps.flip(0), n=n_fft)
        start = self.ntaps // 2
        return torch.fft.irfft(spectrum, n=n_fft)[..., start:start + length]

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.filter(input), self.filter(target)


class SpectralConvergenceLoss(nn.Module):
    """Spectral convergence (Arik et al. 2018) of magnitude spectrograms ``[N, F, T]``, per signal:
    ``‖y − x‖_F / ‖y‖_F`` as an ``[N, 1, 1]`` tensor."""

    def forward(self, x_mag: torch.Tensor, y_mag: torch.Tensor) -> torch.Tensor:
        return (torch.linalg.vector_norm(y_mag - x_mag, dim=(-2, -1))
                / torch.linalg.vector_norm(y_mag, dim=(-2, -1)))[..., None, None]


class STFTMagnitudeLoss(nn.Module):
    """Distance between (log-)magnitude spectrograms: ``D(log(log_fac·x + log_eps), log(log_fac·y + log_eps))``, or
    ``D(x, y)`` without ``log``.

    Args:
        log (bool): compare log magnitudes. Default True.
        log_eps (float): added before the logarithm. Default 0.0.
        log_fac (float): magnitude factor before the logarithm. Default 1.0.
        distance (str): ``"L1"`` or ``"L2"``. Default ``"L1"``.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"``. Default ``"mean"``.
    """

    def __init__(self, log: bool = True, log_eps: float = 0.0, log_fac: float = 1.0, distance: str = "L1",
                 reduction: str = "mean") -> None:
        super().__init__()
        check_choice(distance, ("L1", "L2"), "distance")
        check_choice(reduction, _REDUCTIONS, "reduction")
        self.log = log
        self.log_eps = log_eps
        self.log_fac = log_fac
        self.distance = F.l1_loss if distance == "L1" else F.mse_loss
        self.reduction = reduction

    def forward(self, x_mag: torch.Tensor, y_mag: torch.Tensor) -> torch.Tensor:
        if self.log:
            x_mag = torch.log(self.log_fac * x_mag + self.log_eps)
            y_mag = torch.log(self.log_fac * y_mag + self.log_eps)
        return self.distance(x_mag, y_mag, reduction=self.reduction)


class STFTLoss(nn.Module):
    """Single-resolution STFT loss (Yamamoto et al. 2019), upstream's vendored auraloss semantics.

    ``loss = w_sc·SC + w_log_mag·D(log(log_fac·|X| + log_eps), log(log_fac·|Y| + log_eps))
    + w_lin_mag·D(|X|, |Y|) + w_phs·NCD(X, Y)``, with X = STFT(input), Y = STFT(target),
    ``|X| = sqrt(clamp(re² + im², eps))``, SC = ``‖|Y| − |X|‖_F / ‖|Y|‖_F`` per signal, D the L1 or
    L2 distance (``mag_distance``) and NCD the normalised complex distance. Optional: A-weighting of
    both signals (``perceptual_weighting``, needs ``sample_rate``), mel or chroma projection of the
    magnitudes (``scale``, ``n_bins``), optimal rescaling of the target magnitude
    (``scale_invariance``). The STFT is ``torch.stft`` with ``center=True`` and reflect padding.

    ``forward(input, target)`` takes ``[batch, channels, samples]``; ``output="full"`` also returns
    the individual terms ``(loss, sc, log_mag, lin_mag, phs)``.
    """

    def __init__(self, fft_size: int = 1024, hop_size: int = 256, win_length: int = 1024,
                 window: str = "hann_window", w_sc: float = 1.0, w_log_mag: float = 1.0, w_lin_mag: float = 0.0,
                 w_phs: float = 0.0, sample_rate: Optional[float] = None, scale: Optional[str] = None,
                 n_bins: Optional[int] = None, perceptual_weighting: bool = False, scale_invariance: bool = False,
                 eps: float = 1e-8, output: str = "loss", reduction: str = "mean", mag_distance: str = "L1",
                 device: Any = None, retain_batch_dim: bool = False, log_eps: float = 0.0,
                 log_fac: float = 1.0) -> None:
        super().__init__()
        check_choice(scale, (None, "mel", "chroma"), "scale")
        check_choice(output, ("loss", "full"), "output")
        check_choice(reduction, _REDUCTIONS, "reduction")
        check_choice(mag_distance, ("L1", "L2"), "mag_distance")
        if not any((w_sc, w_log_mag, w_lin_mag, w_phs)):
            raise ValueError("all STFT loss term weights (w_sc, w_log_mag, w_lin_mag, w_phs) are zero; "
                             "set at least one of them")
        if win_length > fft_size:
            raise ValueError(f"win_length ({win_length}) must not exceed fft_size ({fft_size})")
        self.fft_size = fft_size
        self.hop_size = hop_size
        self.win_length = win_length
        self.w_sc = w_sc
        self.w_log_mag = w_log_mag
        self.w_lin_mag = w_lin_mag
        self.w_phs = w_phs
        self.sample_rate = sample_rate
        self.scale = scale
        self.n_bins = n_bins
        self.perceptual_weighting = perceptual_weighting
        self.scale_invariance = scale_invariance
        self.eps = eps
        self.output = output
        self.reduction = reduction
        self.mag_distance = mag_distance
        self.retain_batch_dim = retain_batch_dim
        self.log_eps = log_eps
        self.log_fac = log_fac
        self.phs_used = bool(w_phs)
        self.register_buffer("window", get_window(window, win_length), persistent=False)

        if scale is not None:
            if sample_rate is None:
                raise ValueError(f"scale={scale!r} needs sample_rate")
            if n_bins is None or n_bins > fft_size:
                raise ValueError(f"scale={scale!r} needs n_bins <= fft_size (got n_bins={n_bins}, "
                                 f"fft_size={fft_size})")
            if scale == "mel":
                fb = torch.from_numpy(mel_filterbank(sample_rate, fft_size, n_mels=n_bins)).unsqueeze(0)
            else:
                fb = torch.from_numpy(chroma_filterbank(sample_rate, fft_size, n_chroma=n_bins))
            self.register_buffer("fb", fb if device is None else fb.to(device))

        if perceptual_weighting:
            if sample_rate is None:
                raise ValueError("perceptual_weighting=True needs sample_rate (A-weighting depends on it)")
            self.prefilter = FIRFilter(filter_type="aw", fs=sample_rate)

    def prefilter_signals(self, input: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Apply the A-weighting pre-filter (if enabled) to both signals."""
        if not self.perceptual_weighting:
            return input, target
        return self.prefilter(input, target)

    def spectra(self, signals: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """STFT of ``signals`` (``[N, T]``): clamped magnitudes (scaled to mel/chroma if configured) and,
        when the phase term is used, the complex spectrogram."""
        window = self.window.to(device=signals.device, dtype=signals.dtype)
        stft = torch.stft(signals, self.fft_size, self.hop_size, self.win_length, window, return_complex=True)
        mag = torch.sqrt(torch.clamp(stft.real.square() + stft.imag.square(), min=self.eps))
        if self.scale is not None:
            mag = torch.matmul(self.fb.to(device=mag.device, dtype=mag.dtype), mag)
        return mag, (stft if self.phs_used else None)

    def terms(self, x_mag: torch.Tensor, y_mag: torch.Tensor, x_c: Optional[torch.Tensor],
              y_c: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Any, Any, Any, Any]:
        """Loss (after reduction) and its terms from precomputed spectra of input (x) and target (y)."""
        if self.scale_invariance:
            alpha = (x_mag * y_mag).sum([-2, -1]) / (y_mag ** 2).sum([-2, -1])
            y_mag = y_mag * alpha[:, None, None]
        term_reduction = "none" if self.retain_batch_dim else self.reduction
        distance = F.l1_loss if self.mag_distance == "L1" else F.mse_loss
        sc = 0.0
        if self.w_sc:
            sc = (torch.linalg.vector_norm(y_mag - x_mag, dim=(-2, -1))
                  / torch.linalg.vector_norm(y_mag, dim=(-2, -1)))[:, None, None]
        log_mag = 0.0
        if self.w_log_mag:
            log_mag = distance(torch.log(self.log_fac * x_mag + self.log_eps),
                               torch.log(self.log_fac * y_mag + self.log_eps), reduction=term_reduction)
        lin_mag = distance(x_mag, y_mag, reduction=term_reduction) if self.w_lin_mag else 0.0
        phs = normalized_complex_distance_loss(x_c, y_c) if self.phs_used else 0.0
        loss = self.w_sc * sc + self.w_log_mag * log_mag + self.w_lin_mag * lin_mag + self.w_phs * phs
        loss = apply_reduction(loss, reduction=self.reduction, retain_batch_dim=self.retain_batch_dim)
        return loss, sc, log_mag, lin_mag, phs

    def pair_terms(self, input: torch.Tensor, target: torch.Tensor, groups: int = 1) -> List[tuple]:
        """Terms for already pre-filtered ``input``/``target`` (``[G·B, C, T]``), split into ``groups``
        equal batch groups evaluated separately (one STFT call per signal for all groups). Input and
        target are transformed separately so that the backward pass only covers the signal that
        needs a gradient."""
        x_mag, x_spec = self.spectra(input.reshape(-1, input.shape[-1]))
        y_mag, y_spec = self.spectra(target.reshape(-1, target.shape[-1]))
        if groups == 1:
            return [self.terms(x_mag, y_mag, x_spec, y_spec)]

        def split(t: Optional[torch.Tensor]) -> Sequence[Optional[torch.Tensor]]:
            return [None] * groups if t is None else t.chunk(groups, dim=0)

        return [self.terms(*parts) for parts in zip(split(x_mag), split(y_mag), split(x_spec), split(y_spec))]

    def _format(self, result: tuple):
        return result[0] if self.output == "loss" else result

    def forward(self, input: torch.Tensor, target: torch.Tensor):
        if input.dim() != 3 or input.shape != target.shape:
            raise ValueError(f"STFT loss needs input and target of equal shape [batch, channels, samples]; "
                             f"got {tuple(input.shape)} and {tuple(target.shape)}")
        input, target = self.prefilter_signals(input, target)
        return self._format(self.pair_terms(input, target)[0])


def _per_resolution(value: Union[None, int, Sequence[int]], index: int, count: int, name: str):
    if value is None or isinstance(value, int):
        return value
    if len(value) != count:
        raise ValueError(f"{name} has {len(value)} entries but there are {count} resolutions")
    return value[index]


class MultiResolutionSTFTLoss(nn.Module):
    """Mean of :class:`STFTLoss` over several (fft_size, hop_size, win_length) resolutions.

    Every other keyword goes to each :class:`STFTLoss`; ``n_bins`` may be one int or one value per
    resolution. With ``output="full"`` returns ``(loss, [sc...], [log_mag...], [lin_mag...], [phs...])``.
    """

    def __init__(self, fft_sizes: Sequence[int] = (1024, 2048, 512), hop_sizes: Sequence[int] = (120, 240, 50),
                 win_lengths: Sequence[int] = (600, 1200, 240), window: str = "hann_window", w_sc: float = 1.0,
                 w_log_mag: float = 1.0, w_lin_mag: float = 0.0, w_phs: float = 0.0,
                 sample_rate: Optional[float] = None, scale: Optional[str] = None,
                 n_bins: Union[None, int, Sequence[int]] = None, perceptual_weighting: bool = False,
                 scale_invariance: bool = False, **kwargs: Any) -> None:
        super().__init__()
        if not (len(fft_sizes) == len(hop_sizes) == len(win_lengths)) or len(fft_sizes) == 0:
            raise ValueError(f"fft_sizes, hop_sizes and win_lengths must be non-empty and of equal length "
                             f"(got {len(fft_sizes)}, {len(hop_sizes)}, {len(win_lengths)})")
        self.fft_sizes = list(fft_sizes)
        self.hop_sizes = list(hop_sizes)
        self.win_lengths = list(win_lengths)
        self.perceptual_weighting = perceptual_weighting
        count = len(self.fft_sizes)
        self.stft_losses = nn.ModuleList([
            STFTLoss(fs, ss, wl, window, w_sc, w_log_mag, w_lin_mag, w_phs, sample_rate, scale,
                     _per_resolution(n_bins, i, count, "n_bins"), perceptual_weighting, scale_invariance, **kwargs)
            for i, (fs, ss, wl) in enumerate(zip(self.fft_sizes, self.hop_sizes, self.win_lengths))
        ])
        self.output = self.stft_losses[0].output

    def prefilter_signals(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """A-weight both signals once for all resolutions (they share sample rate and filter)."""
        return self.stft_losses[0].prefilter_signals(x, y)

    def grouped(self, x: torch.Tensor, y: torch.Tensor, groups: int = 1) -> List[tuple]:
        """Per batch group: ``(mean loss over resolutions, [sc], [log_mag], [lin_mag], [phs])`` for
        already pre-filtered signals."""
        per_res = [f.pair_terms(x, y, groups) for f in self.stft_losses]
        out = []
        for g in range(groups):
            results = [r[g] for r in per_res]
            total = results[0][0]
            for r in results[1:]:
                total = total + r[0]
            out.append((total / len(results),) + tuple([r[k] for r in results] for k in range(1, 5)))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        if x.dim() != 3 or x.shape != y.shape:
            raise ValueError(f"STFT loss needs input and target of equal shape [batch, channels, samples]; "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")
        x, y = self.prefilter_signals(x, y)
        result = self.grouped(x, y)[0]
        return result[0] if self.output == "loss" else result


class SumAndDifferenceSTFTLoss(nn.Module):
    """Stereo loss (Steinmetz et al. 2020): ``(w_sum·MRSTFT(sum) + w_diff·MRSTFT(diff)) / 2`` on the
    mid (L+R) and side (L−R) signals of ``[batch, 2, samples]`` inputs. Other keywords go to the
    inner :class:`MultiResolutionSTFTLoss` (child ``mrstft``). ``output="full"`` returns
    ``(loss, sum_loss, diff_loss)``."""

    def __init__(self, fft_sizes: Sequence[int], hop_sizes: Sequence[int], win_lengths: Sequence[int],
                 window: str = "hann_window", w_sum: float = 1.0, w_diff: float = 1.0, output: str = "loss",
                 **kwargs: Any) -> None:
        super().__init__()
        check_choice(output, ("loss", "full"), "output")
        if kwargs.get("output", "loss") != "loss":
            raise ValueError("the inner multi-resolution loss of SumAndDifferenceSTFTLoss must use output='loss'")
        self.sd = SumAndDifference()
        self.w_sum = w_sum
        self.w_diff = w_diff
        self.output = output
        self.mrstft = MultiResolutionSTFTLoss(fft_sizes, hop_sizes, win_lengths, window, **kwargs)

    def forward(self, input: torch.Tensor, target: torch.Tensor):
        if input.shape != target.shape:
            raise ValueError(f"input and target shapes differ: {tuple(input.shape)} vs {tuple(target.shape)}")
        x = torch.cat(self.sd(input), dim=0)
        y = torch.cat(self.sd(target), dim=0)
        x, y = self.mrstft.prefilter_signals(x, y)
        sum_result, diff_result = self.mrstft.grouped(x, y, groups=2)
        sum_loss, diff_loss = sum_result[0], diff_result[0]
        loss = (self.w_sum * sum_loss + self.w_diff * diff_loss) / 2
        return loss if self.output == "loss" else (loss, sum_loss, diff_loss)


class MelSTFTLoss(STFTLoss):
    """:class:`STFTLoss` on an ``n_mels``-band mel spectrogram (Slaney mel scale and normalisation)."""

    def __init__(self, sample_rate: float, fft_size: int = 1024, hop_size: int = 256, win_length: int = 1024,
                 window: str = "hann_window", w_sc: float = 1.0, w_log_mag: float = 1.0, w_lin_mag: float = 0.0,
                 w_phs: float = 0.0, n_mels: int = 128, **kwargs: Any) -> None:
        super().__init__(fft_size, hop_size, win_length, window, w_sc, w_log_mag, w_lin_mag, w_phs, sample_rate,
                         "mel", n_mels, **kwargs)


def _signal_to_distortion(input: torch.Tensor, target: torch.Tensor, zero_mean: bool, eps: float,
                          scale_invariant: bool) -> torch.Tensor:
    """SI-SDR (``scale_invariant``) or SD-SDR in dB over the last axis (Le Roux et al. 2018)."""
    if zero_mean:
        input = input - input.mean(dim=-1, keepdim=True)
        target = target - target.mean(dim=-1, keepdim=True)
    alpha = (input * target).sum(-1) / (target.square().sum(-1) + eps)
    scaled = target * alpha.unsqueeze(-1)
    residual = input - (scaled if scale_invariant else target)
    return 10 * torch.log10(scaled.square().sum(-1) / (residual.square().sum(-1) + eps) + eps)


class SISDRLoss(nn.Module):
    """Negative scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2018), over the last
    axis of ``[batch, channels, samples]`` inputs; lower is better. ``eps`` guards the divisions.

    Args:
        zero_mean (bool): remove the DC offset of both signals first. Default True.
        eps (float): stabiliser of the divisions and the logarithm. Default 1e-8.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"``. Default ``"mean"``.
    """

    scale_invariant = True

    def __init__(self, zero_mean: bool = True, eps: float = 1e-8, reduction: str = "mean") -> None:
        super().__init__()
        check_choice(reduction, _REDUCTIONS, "reduction")
        self.zero_mean = zero_mean
        self.eps = eps
        self.reduction = reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses = _signal_to_distortion(input, target, self.zero_mean, self.eps, self.scale_invariant)
        return -apply_reduction(losses, self.reduction)


class SDSDRLoss(SISDRLoss):
    """Negative scale-dependent signal-to-distortion ratio in dB (Le Roux et al. 2018): as :class:`SISDRLoss`, but
    the distortion is measured against the unscaled target, so a wrongly scaled estimate is penalised.

    Args:
        zero_mean (bool): remove the DC offset of both signals first. Default True.
        eps (float): stabiliser of the divisions and the logarithm. Default 1e-8.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"``. Default ``"mean"``.
    """

    scale_invariant = False
