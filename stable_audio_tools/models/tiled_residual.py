"""Residual units ``x + layers(x)`` evaluated over time tiles at inference on the CPU.

The Oobleck and DAC autoencoders are stacks of residual units ``[act, conv(k, dilation, "same" padding), act,
conv(k=1)]``. Run on a whole long signal, every layer makes a full-length activation of hundreds of MiB, which
glibc maps afresh (blocks above its 32 MiB mmap threshold never come from the heap) and the kernel page-faults and
zeroes: about half of an 11.9 s decode's time. :func:`tiled_residual` runs the same unit over tiles of
:data:`RESIDUAL_TILE_ELEMENTS` values (batch x channels x samples), each reading its convolution's halo from its
neighbours, and writes into one output tensor or over the input. Every output sample is computed by the same
element-wise ops and dot products as untiled (bit-identical on the CPU we measured; tests allow float32 rounding).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .activations import Snake1d, SnakeBeta
from .wn import WNConv1d

__all__ = ["RESIDUAL_TILE_ELEMENTS", "residual_tile_length", "tiled_residual"]

#: Values (batch x channels x samples) in one tile: 2**20 float32 values are 4 MiB, below glibc's largest mmap
#: threshold, so the tiles' buffers come from the heap and are reused.
RESIDUAL_TILE_ELEMENTS = 1 << 20

# Activations that act on each sample on its own, so a tile's values do not depend on its neighbours.
_ELEMENTWISE = (SnakeBeta, Snake1d, nn.ELU, nn.Identity)


def _elementwise(act: nn.Module) -> bool:
    # an in-place activation (nn.ELU(inplace=True)) would overwrite the input tile that the residual adds back
    return isinstance(act, _ELEMENTWISE) and not getattr(act, "inplace", False)


def _plain_conv(conv: nn.Module) -> bool:
    return (type(conv) in (WNConv1d, nn.Conv1d) and conv.padding_mode == "zeros" and conv.stride == (1,)
            and isinstance(conv.padding, tuple))


def residual_tile_length(layers: nn.Sequential, x: torch.Tensor) -> int:
    """Samples per tile for ``x + layers(x)``, or 0 where tiling does not apply: gradients recorded, other devices
    than the CPU, ``torch.compile`` tracing, inputs shorter than two tiles, layers with forward hooks (they would
    see tiles) or other than [element-wise activation, stride-1 "same" conv, element-wise activation, 1x1 conv]
    with out-of-place activations."""
    if (torch.is_grad_enabled() or x.device.type != "cpu" or x.dim() != 3 or len(layers) != 4
            or torch.compiler.is_compiling()):
        return 0
    act1, conv, act2, pointwise = layers
    if not (_elementwise(act1) and _elementwise(act2) and _plain_conv(conv) and _plain_conv(pointwise)):
        return 0
    if any(m._forward_hooks or m._forward_pre_hooks for m in layers):
        return 0
    if pointwise.kernel_size != (1,) or pointwise.padding != (0,) or 2 * conv.padding[0] != (
            conv.dilation[0] * (conv.kernel_size[0] - 1)):
        return 0
    tile = max(RESIDUAL_TILE_ELEMENTS // max(1, x.shape[0] * x.shape[1]), 8 * conv.padding[0] + 8)
    return tile if x.shape[-1] > 2 * tile else 0


def _weight(conv: nn.Conv1d) -> torch.Tensor:
    return conv.effective_weight() if isinstance(conv, WNConv1d) else conv.weight


def tiled_residual(layers: nn.Sequential, x: torch.Tensor, tile: int, out: Optional[torch.Tensor] = None
                   ) -> torch.Tensor:
    """``x + layers(x)`` tile by tile (``tile`` from :func:`residual_tile_length`), written into ``out`` (a new
    tensor when None; ``x`` itself to overwrite the input)."""
    act1, conv, act2, pointwise = layers
    weight, pointwise_weight = _weight(conv), _weight(pointwise)
    pad, length = conv.padding[0], x.shape[-1]
    inplace = out is x
    if out is None:
        out = torch.empty_like(x)
    left = None  # overwriting x: its samples just left of the next tile, saved before they were overwritten
    for start in range(0, length, tile):
        end = min(length, start + tile)
        hi = min(length, end + pad)
        if left is None:
            lo = max(0, start - pad)
            seg = x[..., lo:hi]
        else:
            lo = start - left.shape[-1]
            seg = torch.cat([left, x[..., start:hi]], dim=-1)
        if inplace and end < length:
            left = x[..., end - pad:end].clone()
        h = act1(seg)
        if pad:
            h = F.pad(h, (pad - (start - lo), pad - (hi - end)))
        h = F.conv1d(h, weight, conv.bias, 1, 0, conv.dilation, conv.groups)
        h = F.conv1d(act2(h), pointwise_weight, pointwise.bias, 1, 0, pointwise.dilation, pointwise.groups)
        torch.add(h, x[..., start:end], out=out[..., start:end])
    return out
