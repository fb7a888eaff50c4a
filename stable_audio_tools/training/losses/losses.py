"""Weighted loss modules combined by :class:`MultiLoss`, as upstream's ``training/losses/losses.py`` (including its
:class:`TargetValueLoss`, :class:`StereoImageLoss` and :class:`TimeDomainMMDLoss`), plus the DAC-style multi-scale
mel loss used by the ``mrmel`` autoencoder loss config.

Every loss module reads its inputs from an ``info`` dict (``reals``, ``decoded``, ``kl``, ...) and
returns its weighted value. The weight is a registered buffer ``weight`` (saved in checkpoints, as
upstream); ``decay != 1`` multiplies it by ``decay`` on every call, ``decay == 1`` keeps it at the
value given at construction.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .filters import get_window, mel_filterbank
from .utils import mmd

__all__ = [
    "LossModule",
    "ValueLoss",
    "TargetValueLoss",
    "L1Loss",
    "MSELoss",
    "LossWithTarget",
    "AuralossLoss",
    "MultiLoss",
    "StereoImageLoss",
    "TimeDomainMMDLoss",
    "MultiScaleMelSpectrogramLoss",
    "MelSpectrogramLoss",
]


class LossModule(nn.Module):
    """Base class: a named loss with a weight buffer and an optional per-call multiplicative decay.

    Subclasses list the ``info`` keys they need in ``input_keys``; :class:`MultiLoss` skips a module
    whose keys are missing from ``info`` (upstream skipped modules that raised ``KeyError``).
    """

    input_keys: Tuple[str, ...] = ()

    def __init__(self, name: str, weight: float = 1.0, decay: float = 1.0) -> None:
        super().__init__()
        self.name = name
        self.decay = float(decay)
        self.master_weight = float(weight)
        self.register_buffer("weight", torch.tensor(float(weight)))

    def decay_weight(self) -> None:
        """Apply one step of weight decay (or restore the master weight when ``decay == 1``).

        The weight buffer is replaced, never modified in place (a weight already used in an autograd
        graph stays valid for its backward pass), and never read back to the host (no device sync).
        """
        if self.decay != 1.0:
            self.weight = self.weight * self.decay
        else:
            self.weight = torch.full_like(self.weight, self.master_weight)

    def forward(self, info: Mapping[str, Any]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(info)")


class ValueLoss(LossModule):
    """``weight * info[key]``: passes through a loss computed elsewhere (adversarial, KL, ...)."""

    def __init__(self, key: str, name: str, weight: float = 1.0, decay: float = 1.0) -> None:
        super().__init__(name=name, weight=weight, decay=decay)
        self.key = key
        self.input_keys = (key,)

    def forward(self, info: Mapping[str, Any]) -> torch.Tensor:
        self.decay_weight()
        return self.weight * info[self.key]


class TargetValueLoss(LossModule):
    """``weight * |info[key] - target|``: pulls a scalar computed elsewhere towards a target value.

    Args:
        key (str): ``info`` key of the value.
        target (float): the target value.
        name (str): name of the loss in the logs.
        weight (float): weight. Default 1.0.
        decay (float): per-call weight decay factor (1 = none). Default 1.0.
    """

    def __init__(self, key: str, target: float, name: str, weight: float = 1.0, decay: float = 1.0) -> None:
        super().__init__(name=name, weight=weight, decay=decay)
        self.key = key
        self.target = target
        self.input_keys = (key,)

    def forward(self, info: Mapping[str, Any]) -> torch.Tensor:
        self.decay_weight()
        return self.weight * (info[self.key] - self.target).abs()


def _masked_mean(loss: torch.Tensor, info: Mapping[str, Any], mask_key: Optional[str]) -> torch.Tensor:
    mask = info.get(mask_key) if mask_key is not None else None
    if mask is None:
        return loss.mean()
    if mask.dim() == 2 and loss.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.shape[1] != loss.shape[1]:
        mask = mask.repeat(1, loss.shape[1], 1)
    return loss[mask.bool()].mean()


class _ElementwiseLoss(LossModule):
    """Weighted mean of an element-wise distance between ``info[key_a]`` and ``info[key_b]``, optionally over
    the elements where the boolean ``info[mask_key]`` is true (a ``[B, T]`` mask is broadcast over channels)."""

    distance = staticmethod(F.l1_loss)

    def __init__(self, key_a: str, key_b: str, weight: float = 1.0, mask_key: Optional[str] = None,
                 name: str = "loss", decay: float = 1.0) -> None:
        super().__init__(name=name, weight=weight, decay=decay)
        self.key_a = key_a
        self.key_b = key_b
        self.mask_key = mask_key
        self.input_keys = (key_a, key_b)

    def forward(self, info: Mapping[str, Any]) -> torch.Tensor:
        loss = _masked_mean(self.distance(info[self.key_a], info[self.key_b], reduction="none"), info, self.mask_key)
        self.decay_weight()
        return self.weight * loss


class L1Loss(_ElementwiseLoss):
    """Weighted (optionally masked) mean absolute error."""

    def __init__(self, key_a: str, key_b: str, weight: float = 1.0, mask_key: Optional[str] = None,
                 name: str = "l1_loss", decay: float = 1.0) -> None:
        super().__init__(key_a, key_b, weight, mask_key, name, decay)


class MSELoss(_ElementwiseLoss):
    """Weighted (optionally masked) mean squared error."""

    distance = staticmethod(F.mse_loss)

    def __init__(self, key_a: str, key_b: str, weight: float = 1.0, mask_key: Optional[str] = None,
                 name: str = "mse_loss", decay: float = 1.0) -> None:
        super().__init__(key_a, key_b, weight, mask_key, name, decay)


class LossWithTarget(LossModule):
    """``weight * loss_module(info[input_key], info[target_key])``."""

    def __init__(self, loss_module: nn.Module, input_key: str, target_key: str, name: str, weight: float = 1.0,
                 decay: float = 1.0) -> None:
        super().__init__(name=name, weight=weight, decay=decay)
        self.loss_module = loss_module
        self.input_key = input_key
        self.target_key = target_key
        self.input_keys = (input_key, target_key)

    def forward(self, info: Mapping[str, Any]) -> torch.Tensor:
        loss = self.loss_module(info[self.input_key], info[self.target_key])
        self.decay_weight()
        return self.weight * loss


class AuralossLoss(LossWithTarget):
    """Spectral loss wrapper that calls ``loss_module(info[target_key], info[input_key])``.

    The swapped argument order is upstream's (see docs/compatibility.md#upstream-quirks): built as
    ``AuralossLoss(stft, input_key='decoded', target_key='reals', ...)`` it evaluates
    ``stft(reals, decoded)``, so spectral convergence is normalised by the decoded magnitude.
    """

    def forward(self, info: Mapping[str, Any]) -> torch.Tensor:
        loss = self.loss_module(info[self.target_key], info[self.input_key])
        self.decay_weight()
        return self.weight * loss


def _stereo_image_distance(a: torch.Tensor, b: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """``0.5 * (1 - cos(a, b))`` across the channels (dim 1) at every time step: ``[B, C, T]`` -> ``[B, T]``."""
    return 0.5 * (1 - F.cosine_similarity(a, b, dim=1))


class StereoImageLoss(_ElementwiseLoss):
    """Stereo-image loss: ``weight * mean(0.5 * (1 - cos(a, b)))`` with the cosine similarity taken across the
    channels (dim 1) of ``info[key_a]`` and ``info[key_b]`` ``[B, C, T]`` at every time step, optionally only where
    the boolean ``info[mask_key]`` ``[B, T]`` is true.

    Args:
        key_a (str): ``info`` key of the first signal.
        key_b (str): ``info`` key of the second signal.
        weight (float): weight. Default 1.0.
        mask_key (str, optional): ``info`` key of a mask. Default None.
        name (str): name of the loss in the logs. Default ``"stereo_image_loss"``.
        decay (float): per-call weight decay factor (1 = none). Default 1.0.
    """

    distance = staticmethod(_stereo_image_distance)

    def __init__(self, key_a: str, key_b: str, weight: float = 1.0, mask_key: Optional[str] = None,
                 name: str = "stereo_image_loss", decay: float = 1.0) -> None:
        super().__init__(key_a, key_b, weight, mask_key, name, decay)


class TimeDomainMMDLoss(LossModule):
    """``weight * mmd(info[key_a], info[key_b])`` over the last axis (every position of ``[B, C, T]`` signals along
    the other axes is a sample of ``T`` features), bandwidths 1e-4 ... 1 (see :func:`.utils.mmd`).

    Args:
        key_a (str): ``info`` key of the first signal.
        key_b (str): ``info`` key of the second signal.
        weight (float): weight. Default 1.0.
        name (str): name of the loss in the logs. Default ``"time_domain_mmd_loss"``.
        decay (float): per-call weight decay factor (1 = none). Default 1.0.
    """

    bandwidths = (0.0001, 0.001, 0.01, 0.1, 1)

    def __init__(self, key_a: str, key_b: str, weight: float = 1.0, name: str = "time_domain_mmd_loss",
                 decay: float = 1.0) -> None:
        super().__init__(name=name, weight=weight, decay=decay)
        self.key_a = key_a
        self.key_b = key_b
        self.input_keys = (key_a, key_b)

    def forward(self, info: Mapping[str, Any]) -> torch.Tensor:
        loss = mmd(info[self.key_a], info[self.key_b], bandwidths=self.bandwidths, dim=-1)
        self.decay_weight()
        return self.weight * loss


class MultiLoss(nn.Module):
    """Sum of loss modules; ``forward(info) -> (total, {name: weighted value})``. Modules whose
    ``input_keys`` are not all present in ``info`` are skipped."""

    def __init__(self, losses: Sequence[LossModule]) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, info: Mapping[str, Any]) -> Tuple[Any, Dict[str, torch.Tensor]]:
        total: Any = 0
        values: Dict[str, torch.Tensor] = {}
        for module in self.losses:
            if any(key not in info for key in getattr(module, "input_keys", ())):
                continue
            value = module(info)
            total = total + value
            values[module.name] = value
        return total, values


class MultiScaleMelSpectrogramLoss(nn.Module):
    """DAC-style multi-scale mel loss (descript-audio-codec ``MelSpectrogramLoss`` on tensors).

    For each (``n_mels``, ``window_length``) pair: mel magnitudes ``M = fb @ |STFT|`` with a periodic
    Hann window (or ``window_type``, a scipy window name), hop ``window_length // 4``, ``center=True``
    reflect padding and a Slaney mel filterbank over [``mel_fmin``, ``mel_fmax``]; the loss adds
    ``log_weight · loss_fn(log10(clamp(M_x, clamp_eps)^pow), log10(clamp(M_y, clamp_eps)^pow))
    + mag_weight · loss_fn(M_x, M_y)``, summed over scales. ``loss_fn`` defaults to mean L1.
    ``weight`` is stored for callers (DAC's convention) and not applied here.
    """

    def __init__(self, sample_rate: int, n_mels: Sequence[int] = (150, 80),
                 window_lengths: Sequence[int] = (2048, 512), loss_fn: Optional[Callable] = None,
                 clamp_eps: float = 1e-5, mag_weight: float = 1.0, log_weight: float = 1.0, pow: float = 2.0,
                 weight: float = 1.0, mel_fmin: Optional[Sequence[float]] = None,
                 mel_fmax: Optional[Sequence[Optional[float]]] = None, window_type: Optional[str] = None) -> None:
        super().__init__()
        count = len(window_lengths)
        mel_fmin = [0.0] * count if mel_fmin is None else list(mel_fmin)
        mel_fmax = [None] * count if mel_fmax is None else list(mel_fmax)
        if not (len(n_mels) == count == len(mel_fmin) == len(mel_fmax)) or count == 0:
            raise ValueError(f"n_mels ({len(n_mels)}), window_lengths ({count}), mel_fmin ({len(mel_fmin)}) and "
                             f"mel_fmax ({len(mel_fmax)}) must be non-empty lists of equal length")
        self.sample_rate = sample_rate
        self.n_mels = list(n_mels)
        self.window_lengths = list(window_lengths)
        self.hop_lengths = [w // 4 for w in self.window_lengths]
        self.loss_fn = loss_fn if loss_fn is not None else F.l1_loss
        self.clamp_eps = clamp_eps
        self.mag_weight = mag_weight
        self.log_weight = log_weight
        self.pow = pow
        self.weight = weight
        self.mel_fmin = mel_fmin
        self.mel_fmax = mel_fmax
        window_name = "hann" if window_type is None else window_type
        for i, (n, w, fmin, fmax) in enumerate(zip(self.n_mels, self.window_lengths, mel_fmin, mel_fmax)):
            window = get_window(window_name, w)
            self.register_buffer(f"window_{i}", window, persistent=False)
            fb = torch.from_numpy(mel_filterbank(sample_rate, w, n_mels=n, fmin=fmin, fmax=fmax))
            self.register_buffer(f"mel_basis_{i}", fb, persistent=False)

    def mel_spectrogram(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Mel magnitudes ``[..., n_mels, frames]`` of ``x`` (``[..., T]``) at scale ``index``."""
        window = getattr(self, f"window_{index}").to(x)
        fb = getattr(self, f"mel_basis_{index}").to(x)
        w = self.window_lengths[index]
        stft = torch.stft(x.reshape(-1, x.shape[-1]), n_fft=w, hop_length=self.hop_lengths[index], window=window,
                          center=True, return_complex=True)
        mel = torch.matmul(fb, stft.abs())
        return mel.reshape(*x.shape[:-1], *mel.shape[-2:])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"mel loss needs inputs of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        loss: Any = 0.0
        for i in range(len(self.window_lengths)):
            x_mels, y_mels = self.mel_spectrogram(x, i), self.mel_spectrogram(y, i)
            loss = loss + self.log_weight * self.loss_fn(x_mels.clamp(self.clamp_eps).pow(self.pow).log10(),
                                                         y_mels.clamp(self.clamp_eps).pow(self.pow).log10())
            loss = loss + self.mag_weight * self.loss_fn(x_mels, y_mels)
        return loss


MelSpectrogramLoss = MultiScaleMelSpectrogramLoss
"""Upstream's name for :class:`MultiScaleMelSpectrogramLoss` (``training.losses.MelSpectrogramLoss``)."""
