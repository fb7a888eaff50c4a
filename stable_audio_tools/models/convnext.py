"""ConvNeXt 1-D encoder and decoder (upstream ``models/convnext.py``), with upstream's parameter names.

* :class:`ConvNeXtBlock`: residual block, ``dw_conv`` (depthwise WN conv) -> ``proj_up`` (WN 1x1; GELU, or SiLU-gated
  with ``glu``) -> ``proj_down`` (WN 1x1).
* :class:`ConvNextEncoderBlock`: ``layers`` (ConvNeXt blocks) then ``downsample`` (WN conv, kernel ``2 * stride``).
* :class:`ConvNextDecoderBlock`: ``upsample`` (WN transposed conv, kernel ``2 * stride``) then ``layers``.
* :class:`ConvNeXtEncoder` / :class:`ConvNeXtDecoder`: ``[B, C, T] <-> [B, latent_dim, T / prod(strides)]``.

The ConvNeXt blocks are gradient-checkpointed while gradients are enabled. Upstream zero-initialises
``proj_down.weight`` after applying the legacy weight-norm hook, which has no effect (the hook recomputes the weight
from ``weight_g``/``weight_v``); only its bias zero-init is effective, and that is what happens here.
"""
from __future__ import annotations

import math
from typing import Any, List, Mapping, Optional, Sequence

import torch
from torch import nn

from .common import checkpoint
from .wn import WNConv1d, WNConvTranspose1d

__all__ = ["ConvNeXtBlock", "ConvNextEncoderBlock", "ConvNextDecoderBlock", "ConvNeXtEncoder", "ConvNeXtDecoder",
           "WNConv1d", "WNConvTranspose1d", "checkpoint"]


class ConvNeXtBlock(nn.Module):
    """Residual ConvNeXt block on ``[B, dim, T]``.

    Args:
        dim (int): channels.
        kernel_size (int): depthwise kernel width. Default 7.
        mult (int): channel expansion of the 1x1 projection. Default 4.
        glu (bool): SiLU-gated linear unit instead of GELU. Default False.
    """

    def __init__(self, dim: int, kernel_size: int = 7, mult: int = 4, glu: bool = False) -> None:
        super().__init__()
        self.dw_conv = WNConv1d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        self.glu = glu
        self.proj_up = WNConv1d(dim, dim * mult * (2 if glu else 1), kernel_size=1)
        self.act = nn.SiLU() if glu else nn.GELU()
        self.proj_down = WNConv1d(dim * mult, dim, kernel_size=1)
        nn.init.zeros_(self.proj_down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj_up(self.dw_conv(x))
        if self.glu:
            h, gate = h.chunk(2, dim=1)
            h = h * torch.sigmoid(gate)
        return self.proj_down(self.act(h)) + x


def _run_blocks(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = checkpoint(layer, x) if torch.is_grad_enabled() else layer(x)
    return x


class ConvNextEncoderBlock(nn.Module):
    """``num_blocks`` ConvNeXt blocks on ``in_channels`` then a strided WN downsample to ``out_channels``.

    Args:
        in_channels (int): input channels (and the blocks' width).
        out_channels (int): output channels.
        stride (int): downsampling factor.
        num_blocks (int): ConvNeXt blocks. Default 3.
        conv_args (dict, optional): keyword arguments of every :class:`ConvNeXtBlock`. Default None.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, num_blocks: int = 3,
                 conv_args: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList([ConvNeXtBlock(dim=in_channels, **dict(conv_args or {}))
                                     for _ in range(num_blocks)])
        self.downsample = WNConv1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                                   padding=math.ceil(stride / 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(_run_blocks(self.layers, x))


class ConvNextDecoderBlock(nn.Module):
    """A strided WN transposed-conv upsample from ``in_channels`` to ``out_channels``, then ``num_blocks``
    ConvNeXt blocks on ``out_channels``.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels (and the blocks' width).
        stride (int): upsampling factor.
        num_blocks (int): ConvNeXt blocks. Default 3.
        conv_args (dict, optional): keyword arguments of every :class:`ConvNeXtBlock`. Default None.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, num_blocks: int = 3,
                 conv_args: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        self.upsample = WNConvTranspose1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                                          padding=math.ceil(stride / 2))
        self.layers = nn.ModuleList([ConvNeXtBlock(dim=out_channels, **dict(conv_args or {}))
                                     for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_blocks(self.layers, self.upsample(x))


def _levels(c_mults: Sequence[int], strides: Sequence[int]) -> List[int]:
    c_mults = [1] + list(c_mults)
    if len(strides) < len(c_mults) - 1:
        raise ValueError(f"strides needs {len(c_mults) - 1} entries (one per c_mults entry), got {list(strides)}")
    return c_mults


class ConvNeXtEncoder(nn.Module):
    """``[B, in_channels, T]`` -> ``[B, latent_dim, T / prod(strides)]``: ``proj_in`` (WN conv k7), one
    :class:`ConvNextEncoderBlock` per ``c_mults`` entry (in ``layers``) and a final WN conv k3.

    Args:
        in_channels (int): input channels. Default 2.
        channels (int): base width; level ``i`` has ``channels * c_mults[i]``. Default 128.
        latent_dim (int): output channels. Default 32.
        c_mults (list of int): width multipliers per level. Default ``[1, 2, 4, 8]``.
        strides (list of int): downsampling per level. Default ``[2, 4, 8, 8]``.
        num_blocks (list of int, optional): ConvNeXt blocks per level. Default 3 each.
        conv_args (dict, optional): keyword arguments of every :class:`ConvNeXtBlock`. Default None.
    """

    def __init__(self, in_channels: int = 2, channels: int = 128, latent_dim: int = 32,
                 c_mults: Sequence[int] = (1, 2, 4, 8), strides: Sequence[int] = (2, 4, 8, 8),
                 num_blocks: Optional[Sequence[int]] = None, conv_args: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        c_mults = _levels(c_mults, strides)
        num_blocks = [3] * (len(c_mults) - 1) if num_blocks is None else list(num_blocks)
        self.depth = len(c_mults)
        self.proj_in = WNConv1d(in_channels, c_mults[0] * channels, kernel_size=7, padding=3)
        layers: list = [ConvNextEncoderBlock(c_mults[i] * channels, c_mults[i + 1] * channels, stride=strides[i],
                                             num_blocks=num_blocks[i], conv_args=conv_args)
                        for i in range(self.depth - 1)]
        layers.append(WNConv1d(c_mults[-1] * channels, latent_dim, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.proj_in(x))


class ConvNeXtDecoder(nn.Module):
    """``[B, latent_dim, L]`` -> ``[B, out_channels, L * prod(strides)]``: a WN conv k7, one
    :class:`ConvNextDecoderBlock` per level from the widest down, and a bias-free WN conv k7 (all in ``layers``).

    Args:
        out_channels (int): output channels. Default 2.
        channels (int): base width; level ``i`` has ``channels * c_mults[i]``. Default 128.
        latent_dim (int): input channels. Default 32.
        c_mults (list of int): width multipliers per level. Default ``[1, 2, 4, 8]``.
        strides (list of int): upsampling per level (in encoder order). Default ``[2, 4, 8, 8]``.
        conv_args (dict, optional): keyword arguments of every :class:`ConvNeXtBlock`. Default None.
        num_blocks (list of int, optional): ConvNeXt blocks per level (in encoder order). Default 3 each.
    """

    def __init__(self, out_channels: int = 2, channels: int = 128, latent_dim: int = 32,
                 c_mults: Sequence[int] = (1, 2, 4, 8), strides: Sequence[int] = (2, 4, 8, 8),
                 conv_args: Optional[Mapping[str, Any]] = None, num_blocks: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        c_mults = _levels(c_mults, strides)
        num_blocks = [3] * (len(c_mults) - 1) if num_blocks is None else list(num_blocks)
        self.depth = len(c_mults)
        layers: list = [WNConv1d(latent_dim, c_mults[-1] * channels, kernel_size=7, padding=3)]
        layers += [ConvNextDecoderBlock(c_mults[i] * channels, c_mults[i - 1] * channels, stride=strides[i - 1],
                                        num_blocks=num_blocks[i - 1], conv_args=conv_args)
                   for i in range(self.depth - 1, 0, -1)]
        layers.append(WNConv1d(c_mults[0] * channels, out_channels, kernel_size=7, padding=3, bias=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
