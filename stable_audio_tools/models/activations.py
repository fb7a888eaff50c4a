"""Activations used by the Oobleck and DAC autoencoders (see docs/model_config.md#encoders-and-decoders-type).

* :class:`SnakeBeta` - BigVGAN-style snake with separate (log-scale) frequency ``alpha`` and
  magnitude ``beta`` per channel: ``y = x + 1/(b + 1e-9) * sin(a*x)^2``.
* :class:`Snake1d` - DAC's snake with one ``alpha`` per channel (``[1, C, 1]``).
* :class:`Activation1d` - anti-aliased activation (2x upsample -> activation -> 2x downsample with
  Kaiser-windowed sinc filters), numerically identical to ``alias-free-torch`` 0.0.6 and with the same
  child / buffer names (``act``, ``upsample.filter``, ``downsample.lowpass.filter``).
* :func:`get_activation` - the ``"elu" | "snake" | "none"`` switch used by the Oobleck blocks.

The snake is the hottest elementwise op of autoencoder training on CPU. :func:`snake` evaluates the
reference expression with in-place ops on a single temporary (bit-identical to the reference formula),
and in autograd mode goes through a custom ``autograd.Function`` that saves only the input and recomputes
the trigonometric terms in backward, instead of autograd's four full-size intermediates.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "snake",
    "snake_beta",
    "SnakeBeta",
    "Snake1d",
    "kaiser_sinc_filter1d",
    "LowPassFilter1d",
    "UpSample1d",
    "DownSample1d",
    "Activation1d",
    "get_activation",
]

ACTIVATIONS = ("elu", "snake", "none")
_SNAKE_EPS = 1e-9


def _snake_forward(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    """``x + inv_beta * sin(alpha * x) ** 2`` using one temporary (bit-identical to the plain expression)."""
    out = torch.mul(x, alpha)
    out.sin_()
    out.mul_(out)
    out.mul_(inv_beta)
    out.add_(x)
    return out


def _snake_reference(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    return x + inv_beta * torch.sin(x * alpha) ** 2


class _SnakeFunction(torch.autograd.Function):
    """Snake with a hand-written backward that keeps only ``x`` (plus the per-channel factors).

    d/dx = 1 + alpha * inv_beta * sin(2 alpha x); d/dalpha = inv_beta * x * sin(2 alpha x);
    d/dinv_beta = sin(alpha x)^2. Double backward (``create_graph=True``) differentiates the reference
    expression instead.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, alpha, inv_beta)
        return _snake_forward(x, alpha, inv_beta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, alpha, inv_beta = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():
            inputs = [t for t, need in zip((x, alpha, inv_beta), needs) if need]
            with torch.enable_grad():
                grads = iter(torch.autograd.grad(_snake_reference(x, alpha, inv_beta), inputs, grad,
                                                 create_graph=True))
            return tuple(next(grads) if need else None for need in needs)

        grad_x = grad_alpha = grad_inv_beta = None
        if needs[2]:
            sq = torch.mul(x, alpha).sin_()
            sq.mul_(sq).mul_(grad)
            grad_inv_beta = sq.sum_to_size(inv_beta.shape)
            del sq
        if needs[0] or needs[1]:
            g_sin2 = torch.mul(x, 2 * alpha).sin_().mul_(grad)  # grad * sin(2 alpha x)
            if needs[1]:
                grad_alpha = torch.mul(g_sin2, x).sum_to_size(alpha.shape).mul_(inv_beta)
            if needs[0]:
                grad_x = g_sin2.mul_(alpha * inv_beta).add_(grad)
        return grad_x, grad_alpha, grad_inv_beta


def snake(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    """Snake activation ``x + inv_beta * sin(alpha * x)^2``.

    ``alpha`` and ``inv_beta`` broadcast against ``x`` (``[1, C, 1]`` for ``x`` of shape ``[B, C, T]``).
    Matches the reference expression within float rounding of the backward pass (the forward is
    bit-identical).
    """
    if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad or inv_beta.requires_grad):
        return _SnakeFunction.apply(x, alpha, inv_beta)
    return _snake_forward(x, alpha, inv_beta)


def snake_beta(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """BigVGAN snake ``x + 1/(beta + 1e-9) * sin(alpha * x)^2`` (``alpha``, ``beta`` broadcast against ``x``)."""
    return snake(x, alpha, 1.0 / (beta + _SNAKE_EPS))


class SnakeBeta(nn.Module):
    """BigVGAN snake with trainable frequency ``alpha`` and magnitude ``beta`` (both ``[C]``).

    With ``alpha_logscale`` (default) both are stored as logarithms initialised to 0 (``a = b = 1``);
    otherwise they are initialised to ``alpha``. ``y = x + 1/(b + 1e-9) * sin(a*x)^2`` on ``[B, C, T]``.
    """

    def __init__(self, in_features: int, alpha: float = 1.0, alpha_trainable: bool = True,
                 alpha_logscale: bool = True) -> None:
        super().__init__()
        if not isinstance(in_features, numbers.Integral) or in_features <= 0:
            raise ValueError(f"SnakeBeta needs a positive channel count, got in_features={in_features!r}")
        self.in_features = in_features
        self.alpha_logscale = alpha_logscale
        init = torch.zeros(in_features) if alpha_logscale else torch.ones(in_features)
        self.alpha = nn.Parameter(init * alpha, requires_grad=alpha_trainable)
        self.beta = nn.Parameter(init * alpha, requires_grad=alpha_trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.view(1, -1, 1)
        beta = self.beta.view(1, -1, 1)
        if self.alpha_logscale:
            alpha = torch.exp(alpha)
            beta = torch.exp(beta)
        return snake_beta(x, alpha, beta)

    def extra_repr(self) -> str:
        return f"{self.in_features}, alpha_logscale={self.alpha_logscale}"


class Snake1d(nn.Module):
    """DAC snake: ``y = x + 1/(alpha + 1e-9) * sin(alpha*x)^2`` with ``alpha`` ``[1, C, 1]`` initialised to 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = snake(x.reshape(shape[0], shape[1], -1), self.alpha, (self.alpha + _SNAKE_EPS).reciprocal())
        return out.reshape(shape)

    def extra_repr(self) -> str:
        return str(self.alpha.shape[1])


def kaiser_sinc_filter1d(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass filter ``[1, 1, kernel_size]`` normalised to unit sum.

    ``cutoff`` and ``half_width`` are fractions of the sample rate. The Kaiser ``beta`` follows the
    standard attenuation formula for a transition band of ``4 * half_width``.
    """
    if not 0.0 < cutoff <= 0.5:
        raise ValueError(f"cutoff must be in (0, 0.5] (fraction of the sample rate), got {cutoff}")
    even = kernel_size % 2 == 0
    half_size = kernel_size // 2
    delta_f = 4 * half_width
    attenuation = 2.285 * (half_size - 1) * math.pi * delta_f + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    if even:
        time = torch.arange(-half_size, half_size) + 0.5
    else:
        time = torch.arange(kernel_size) - half_size
    filt = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    filt /= filt.sum()
    return filt.view(1, 1, kernel_size)


class LowPassFilter1d(nn.Module):
    """Depthwise low-pass filter (buffer ``filter`` ``[1, 1, K]``) with optional padding and stride."""

    def __init__(self, cutoff: float = 0.5, half_width: float = 0.6, stride: int = 1, padding: bool = True,
                 padding_mode: str = "replicate", kernel_size: int = 12) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.even = kernel_size % 2 == 0
        self.pad_left = kernel_size // 2 - int(self.even)
        self.pad_right = kernel_size // 2
        self.stride = stride
        self.padding = padding
        self.padding_mode = padding_mode
        self.register_buffer("filter", kaiser_sinc_filter1d(cutoff, half_width, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if self.padding:
            x = F.pad(x, (self.pad_left, self.pad_right), mode=self.padding_mode)
        return F.conv1d(x, self.filter.expand(channels, -1, -1), stride=self.stride, groups=channels)


class UpSample1d(nn.Module):
    """Zero-stuffing upsampler by ``ratio`` followed by a Kaiser-sinc low-pass (buffer ``filter``)."""

    def __init__(self, ratio: int = 2, kernel_size: Optional[int] = None) -> None:
        super().__init__()
        self.ratio = ratio
        self.kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
        self.stride = ratio
        self.pad = self.kernel_size // ratio - 1
        self.pad_left = self.pad * self.stride + (self.kernel_size - self.stride) // 2
        self.pad_right = self.pad * self.stride + (self.kernel_size - self.stride + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter1d(cutoff=0.5 / ratio, half_width=0.6 / ratio,
                                                            kernel_size=self.kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(channels, -1, -1), stride=self.stride,
                                            groups=channels)
        return x[..., self.pad_left:-self.pad_right]


class DownSample1d(nn.Module):
    """Kaiser-sinc low-pass followed by decimation by ``ratio`` (child ``lowpass``)."""

    def __init__(self, ratio: int = 2, kernel_size: Optional[int] = None) -> None:
        super().__init__()
        self.ratio = ratio
        self.kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
        self.lowpass = LowPassFilter1d(cutoff=0.5 / ratio, half_width=0.6 / ratio, stride=ratio,
                                       kernel_size=self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class Activation1d(nn.Module):
    """Anti-aliased activation: upsample, apply ``activation``, low-pass and downsample (``[B, C, T]``)."""

    def __init__(self, activation: nn.Module, up_ratio: int = 2, down_ratio: int = 2, up_kernel_size: int = 12,
                 down_kernel_size: int = 12) -> None:
        super().__init__()
        self.up_ratio = up_ratio
        self.down_ratio = down_ratio
        self.act = activation
        self.upsample = UpSample1d(up_ratio, up_kernel_size)
        self.downsample = DownSample1d(down_ratio, down_kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


def get_activation(activation: str, antialias: bool = False, channels: Optional[int] = None) -> nn.Module:
    """``"elu"`` -> ``nn.ELU``, ``"snake"`` -> ``SnakeBeta(channels)``, ``"none"`` -> ``nn.Identity``.

    With ``antialias`` the activation is wrapped in :class:`Activation1d`.
    """
    if activation == "elu":
        act: nn.Module = nn.ELU()
    elif activation == "snake":
        if channels is None:
            raise ValueError("get_activation('snake') needs `channels` (the number of input channels)")
        act = SnakeBeta(channels)
    elif activation == "none":
        act = nn.Identity()
    else:
        raise ValueError(f"unknown activation {activation!r}; accepted values: {', '.join(ACTIVATIONS)}")
    if antialias:
        act = Activation1d(act)
    return act
