"""Small shared building blocks (see docs/compatibility.md).

Besides the RMS norms used by the transformers (:func:`rms_norm`, :class:`RMSNorm`, :class:`AdaRMSNorm`), the
GEGLU projection (:class:`LinearGEGLU`), the forced weight-normalised convolution (:class:`ForcedWNConv1d`) and,
re-exported from :mod:`.activations` as upstream's ``models/blocks.py`` has them, :class:`SnakeBeta` and
:func:`snake_beta`, this holds the Dance Diffusion U-Net pieces
(:class:`ResConvBlock`, :class:`SelfAttention1d`, :class:`SkipBlock`, :class:`FourierFeatures`,
the fixed-kernel :class:`Downsample1d` / :class:`Upsample1d` and the learned
:func:`Downsample1d_2` / :func:`Upsample1d_2`), with upstream's child and buffer names.
"""
from __future__ import annotations

import math
from functools import reduce
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .activations import Snake1d, SnakeBeta, snake_beta

__all__ = [
    "rms_norm",
    "RMSNorm",
    "AdaRMSNorm",
    "normalize",
    "ForcedWNConv1d",
    "linear_geglu",
    "LinearGEGLU",
    "snake_beta",
    "SnakeBeta",
    "zero_init",
    "ResidualBlock",
    "ResConvBlock",
    "SelfAttention1d",
    "SkipBlock",
    "FourierFeatures",
    "expand_to_planes",
    "RESAMPLE_KERNELS",
    "Downsample1d",
    "Upsample1d",
    "Downsample1d_2",
    "Upsample1d_2",
]


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """``x * scale / sqrt(mean(x^2) + eps)`` over the last dim, computed in at least float32."""
    dtype = reduce(torch.promote_types, (x.dtype, scale.dtype, torch.float32))
    mean_sq = torch.mean(x.to(dtype) ** 2, dim=-1, keepdim=True)
    return x * (scale.to(dtype) * torch.rsqrt(mean_sq + eps)).to(x.dtype)


class RMSNorm(nn.Module):
    """RMS norm over the last dim with a per-feature scale.

    Args:
        shape (int or tuple): shape of the scale (the normalised feature size).
        fix_scale (bool): keep the scale at 1 as a buffer instead of a trainable parameter. Default False.
        eps (float): added to the mean square. Default 1e-6.
    """

    def __init__(self, shape: Union[int, Sequence[int]], fix_scale: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        if fix_scale:
            self.register_buffer("scale", torch.ones(shape))
        else:
            self.scale = nn.Parameter(torch.ones(shape))

    def extra_repr(self) -> str:
        return f"shape={tuple(self.scale.shape)}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.scale, self.eps)


class AdaRMSNorm(nn.Module):
    """RMS norm whose per-feature scale is ``1 + linear(cond)`` (the linear layer starts at zero)."""

    def __init__(self, features: int, cond_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.linear = nn.Linear(cond_features, features, bias=False)
        nn.init.zeros_(self.linear.weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.linear(cond)[:, None, :] + 1, self.eps)


def normalize(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Scale every slice ``x[i]`` to unit RMS: ``x / (eps + ||x[i]|| / sqrt(x[i].numel()))``."""
    norm = torch.linalg.vector_norm(x, dim=list(range(1, x.ndim)), keepdim=True)
    return x / torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))


class ForcedWNConv1d(nn.Module):
    """Bias-free 1-D convolution (``padding="same"``) with a forced weight normalisation: the effective weight
    is :func:`normalize` (weight) ``/ sqrt(fan_in)``, and in training mode the stored weight itself is
    renormalised before every forward pass (EDM2-style magnitude preservation).

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        kernel_size (int): kernel width. Default 1.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.weight.copy_(normalize(self.weight))
        weight = normalize(self.weight) / math.sqrt(self.weight[0].numel())
        return F.conv1d(x, weight, padding="same")


def linear_geglu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """GEGLU of a linear projection: ``h, gate = (x @ weight.T + bias).chunk(2, -1)``; returns ``h * gelu(gate)``."""
    x = x @ weight.mT
    if bias is not None:
        x = x + bias
    x, gate = x.chunk(2, dim=-1)
    return x * F.gelu(gate)


class LinearGEGLU(nn.Linear):
    """``nn.Linear`` to ``2 * out_features`` followed by GEGLU gating (:func:`linear_geglu`).

    Args:
        in_features (int): input features.
        out_features (int): output features (the layer's weight has twice as many rows).
        bias (bool): learn a bias. Default True.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features * 2, bias=bias)
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_geglu(x, self.weight, self.bias)


def zero_init(layer: nn.Module) -> nn.Module:
    """Zero a layer's ``weight`` (and ``bias`` if any) in place and return the layer."""
    nn.init.zeros_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


class ResidualBlock(nn.Module):
    """``main(x) + skip(x)`` with ``main`` an ``nn.Sequential`` of the given layers."""

    def __init__(self, main: Sequence[nn.Module], skip: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.main = nn.Sequential(*main)
        self.skip = skip if skip is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.skip(x)


class ResConvBlock(ResidualBlock):
    """Dance Diffusion residual block.

    ``main`` = [Conv1d(k), GroupNorm(1), act, Conv1d(k), GroupNorm(1) | Identity, act | Identity]
    (the last two are Identity when ``is_last``); ``skip`` = bias-free 1x1 conv when
    ``c_in != c_out``. ``act`` is GELU, or DAC's :class:`Snake1d` when ``use_snake``.
    """

    def __init__(self, c_in: int, c_mid: int, c_out: int, is_last: bool = False, kernel_size: int = 5,
                 conv_bias: bool = True, use_snake: bool = False) -> None:
        skip = None if c_in == c_out else nn.Conv1d(c_in, c_out, 1, bias=False)

        def act(channels: int) -> nn.Module:
            return Snake1d(channels) if use_snake else nn.GELU()

        super().__init__([
            nn.Conv1d(c_in, c_mid, kernel_size, padding=kernel_size // 2, bias=conv_bias),
            nn.GroupNorm(1, c_mid),
            act(c_mid),
            nn.Conv1d(c_mid, c_out, kernel_size, padding=kernel_size // 2, bias=conv_bias),
            nn.GroupNorm(1, c_out) if not is_last else nn.Identity(),
            act(c_out) if not is_last else nn.Identity(),
        ], skip)


class SelfAttention1d(nn.Module):
    """Residual multi-head self-attention over time for ``[B, C, T]`` inputs (1x1-conv projections).

    On CPU the attention is computed explicitly (softmax of ``(q d^-1/4)(k d^-1/4)^T``) exactly
    like upstream; on CUDA it uses ``scaled_dot_product_attention`` (with the heads transposed back
    correctly - upstream's CUDA path reshapes without that transpose, see docs/compatibility.md#upstream-quirks).
    """

    def __init__(self, c_in: int, n_head: int = 1, dropout_rate: float = 0.0) -> None:
        super().__init__()
        if n_head < 1 or c_in % n_head != 0:
            raise ValueError(f"SelfAttention1d: channels ({c_in}) must be a positive multiple of n_head ({n_head})")
        self.norm = nn.GroupNorm(1, c_in)
        self.n_head = n_head
        self.qkv_proj = nn.Conv1d(c_in, c_in * 3, 1)
        self.out_proj = nn.Conv1d(c_in, c_in, 1)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, s = x.shape
        qkv = self.qkv_proj(self.norm(x))
        qkv = qkv.view([n, self.n_head * 3, c // self.n_head, s]).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=1)
        if x.is_cuda:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            scale = k.shape[3] ** -0.25
            y = ((q * scale) @ (k.transpose(2, 3) * scale)).softmax(3) @ v
        y = y.transpose(2, 3).contiguous().view([n, c, s])
        return x + self.dropout(self.out_proj(y))


class SkipBlock(nn.Module):
    """``cat([main(x), x], dim=1)`` with ``main`` an ``nn.Sequential`` of the given layers."""

    def __init__(self, *main: nn.Module) -> None:
        super().__init__()
        self.main = nn.Sequential(*main)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.main(x), x], dim=1)


class FourierFeatures(nn.Module):
    """Random Fourier features: ``cat(cos(2 pi x W^T), sin(2 pi x W^T))`` with ``weight`` ``[out/2, in]``."""

    def __init__(self, in_features: int, out_features: int, std: float = 1.0) -> None:
        super().__init__()
        if out_features % 2 != 0:
            raise ValueError(f"FourierFeatures: out_features must be even, got {out_features}")
        self.weight = nn.Parameter(torch.randn([out_features // 2, in_features]) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # timestep math stays in float32 under autocast (bf16 phases of 2 pi t w are off by up to ~0.1 rad)
        out_dtype = torch.promote_types(x.dtype, self.weight.dtype)
        dtype = torch.promote_types(out_dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            f = 2 * math.pi * x.to(dtype) @ self.weight.to(dtype).T
            out = torch.cat([f.cos(), f.sin()], dim=-1)
        return out.to(out_dtype)


def expand_to_planes(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Repeat ``[B, C]`` features over a new last axis of length ``shape[2]`` -> ``[B, C, shape[2]]``."""
    return x[..., None].repeat([1, 1, shape[2]])


RESAMPLE_KERNELS = {
    "linear": [1 / 8, 3 / 8, 3 / 8, 1 / 8],
    "cubic": [-0.01171875, -0.03515625, 0.11328125, 0.43359375,
              0.43359375, 0.11328125, -0.03515625, -0.01171875],
    "lanczos3": [0.003689131001010537, 0.015056144446134567, -0.03399861603975296,
                 -0.066637322306633, 0.13550527393817902, 0.44638532400131226,
                 0.44638532400131226, 0.13550527393817902, -0.066637322306633,
                 -0.03399861603975296, 0.015056144446134567, 0.003689131001010537],
}


def _resample_kernel(kernel: str) -> List[float]:
    if kernel not in RESAMPLE_KERNELS:
        raise ValueError(f"unknown resampling kernel {kernel!r}; choose one of {sorted(RESAMPLE_KERNELS)}")
    return RESAMPLE_KERNELS[kernel]


def _depthwise(kernel: torch.Tensor, channels: int, like: torch.Tensor) -> torch.Tensor:
    return kernel.to(like).view(1, 1, -1).expand(channels, 1, -1)


class Downsample1d(nn.Module):
    """Fixed-kernel 2x downsampling (same filter on every channel, ``pad_mode`` padding); buffer ``kernel``."""

    def __init__(self, kernel: str = "linear", pad_mode: str = "reflect", channels_last: bool = False) -> None:
        super().__init__()
        self.pad_mode = pad_mode
        kernel_1d = torch.tensor(_resample_kernel(kernel))
        self.pad = kernel_1d.shape[0] // 2 - 1
        self.register_buffer("kernel", kernel_1d)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 2, 1)
        x = F.pad(x, (self.pad,) * 2, self.pad_mode)
        channels = x.shape[1]
        x = F.conv1d(x, _depthwise(self.kernel, channels, x), stride=2, groups=channels)
        if self.channels_last:
            x = x.permute(0, 2, 1)
        return x


class Upsample1d(nn.Module):
    """Fixed-kernel 2x upsampling (transposed conv with ``2 * kernel``); buffer ``kernel``."""

    def __init__(self, kernel: str = "linear", pad_mode: str = "reflect", channels_last: bool = False) -> None:
        super().__init__()
        self.pad_mode = pad_mode
        kernel_1d = torch.tensor(_resample_kernel(kernel)) * 2
        self.pad = kernel_1d.shape[0] // 2 - 1
        self.register_buffer("kernel", kernel_1d)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 2, 1)
        x = F.pad(x, ((self.pad + 1) // 2,) * 2, self.pad_mode)
        channels = x.shape[1]
        x = F.conv_transpose1d(x, _depthwise(self.kernel, channels, x), stride=2, padding=self.pad * 2 + 1,
                               groups=channels)
        if self.channels_last:
            x = x.permute(0, 2, 1)
        return x


def Downsample1d_2(in_channels: int, out_channels: int, factor: int, kernel_multiplier: int = 2) -> nn.Module:  # noqa: N802
    """Learned downsampling: ``Conv1d(k = factor * kernel_multiplier + 1, stride = factor)``, 'same'-style padding."""
    if kernel_multiplier % 2 != 0:
        raise ValueError(f"Downsample1d_2: kernel_multiplier must be even, got {kernel_multiplier}")
    return nn.Conv1d(in_channels, out_channels, kernel_size=factor * kernel_multiplier + 1, stride=factor,
                     padding=factor * (kernel_multiplier // 2))


def Upsample1d_2(in_channels: int, out_channels: int, factor: int, use_nearest: bool = False) -> nn.Module:  # noqa: N802
    """Learned upsampling: 3-tap conv for factor 1, nearest + conv, or ``ConvTranspose1d(k = 2 * factor)``."""
    if factor == 1:
        return nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1)
    if use_nearest:
        return nn.Sequential(
            nn.Upsample(scale_factor=factor, mode="nearest"),
            nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1),
        )
    return nn.ConvTranspose1d(in_channels, out_channels, kernel_size=factor * 2, stride=factor,
                              padding=factor // 2 + factor % 2, output_padding=factor % 2)
