"""Dance Diffusion U-Net (``DiffusionAttnUnet1D``, see docs/diffusion.md#dau1d-dance-diffusion-u-net).

Upstream cannot construct this model (it passes ``use_snake`` to a ``ResConvBlock`` that does not
accept it, see docs/compatibility.md#upstream-quirks); here ``ResConvBlock`` takes ``use_snake`` (DAC snake
activations instead of GELU), so every ``dance_diffusion`` config builds, with the intended key names
(``timestep_embed.weight``, ``net.*``). Two further upstream defects are fixed: the CUDA attention
path transposes heads back (see :class:`.blocks.SelfAttention1d`), and a stride-1 level without
``learned_resample`` upsamples with a stride-1 learned conv (upstream pairs its stride-1 conv
downsampling with a fixed 2x upsampler, which cannot run).
"""
from __future__ import annotations

from functools import partial
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (
    Downsample1d,
    Downsample1d_2,
    FourierFeatures,
    ResConvBlock,
    SelfAttention1d,
    SkipBlock,
    Upsample1d,
    Upsample1d_2,
    expand_to_planes,
)

__all__ = ["DiffusionAttnUnet1D"]

_DEFAULT_CHANNELS = (128, 128, 256, 256) + (512,) * 10


class DiffusionAttnUnet1D(nn.Module):
    """Nested residual U-Net with self-attention at the ``n_attn_layers`` deepest levels.

    ``net`` is built inside-out: levels ``depth..2`` are :class:`SkipBlock` s whose ``main`` holds
    [down, 3 x (ResConvBlock, attn?), inner level, 3 x (ResConvBlock, attn?), up]; level 1 is a plain
    ``nn.Sequential`` of six ResConvBlocks around level 2. The input is ``x`` concatenated with
    16 Fourier features of ``t`` (plus 16 noise-level features with ``cond_noise_aug``) and the
    ``cond_dim``-channel conditioning signal (linearly resized to ``x``'s length).
    All ``net`` parameters are halved at construction (as upstream).
    """

    def __init__(self, io_channels: int = 2, depth: int = 14, n_attn_layers: int = 6,
                 channels: Sequence[int] = _DEFAULT_CHANNELS, cond_dim: int = 0, cond_noise_aug: bool = False,
                 kernel_size: int = 5, learned_resample: bool = False, strides: Sequence[int] = (2,) * 13,
                 conv_bias: bool = True, use_snake: bool = False) -> None:
        super().__init__()
        if depth < 1 or len(channels) < depth or len(strides) < depth - 1:
            raise ValueError(f"DiffusionAttnUnet1D: depth {depth} needs at least {depth} channels and "
                             f"{depth - 1} strides (got {len(channels)} and {len(strides)})")
        self.cond_noise_aug = cond_noise_aug
        self.io_channels = io_channels
        self.cond_dim = cond_dim
        if cond_noise_aug:
            self.rng = torch.quasirandom.SobolEngine(1, scramble=True)
        self.timestep_embed = FourierFeatures(1, 16)

        attn_layer = depth - n_attn_layers
        strides = [1] + list(strides)
        conv_block = partial(ResConvBlock, kernel_size=kernel_size, conv_bias=conv_bias, use_snake=use_snake)

        block: nn.Module = nn.Identity()
        for i in range(depth, 0, -1):
            c = channels[i - 1]
            stride = strides[i - 1]
            if stride > 2 and not learned_resample:
                raise ValueError(f"DiffusionAttnUnet1D: stride {stride} at level {i} needs learned_resample=True "
                                 "(the fixed resampling kernels only do 2x)")
            if i > 1:
                c_prev = channels[i - 2]
                add_attn = i >= attn_layer and n_attn_layers > 0

                def attn(ch: int, add: bool = add_attn) -> nn.Module:
                    return SelfAttention1d(ch, ch // 32) if add else nn.Identity()

                learned = learned_resample or stride == 1
                block = SkipBlock(
                    Downsample1d_2(c_prev, c_prev, stride) if learned else Downsample1d("cubic"),
                    conv_block(c_prev, c, c), attn(c),
                    conv_block(c, c, c), attn(c),
                    conv_block(c, c, c), attn(c),
                    block,
                    conv_block(c * 2 if i != depth else c, c, c), attn(c),
                    conv_block(c, c, c), attn(c),
                    conv_block(c, c, c_prev), attn(c_prev),
                    Upsample1d_2(c_prev, c_prev, stride) if learned else Upsample1d(kernel="cubic"),
                )
            else:
                cond_embed_dim = 32 if cond_noise_aug else 16
                block = nn.Sequential(
                    conv_block(io_channels + cond_dim + cond_embed_dim, c, c),
                    conv_block(c, c, c),
                    conv_block(c, c, c),
                    block,
                    conv_block(c * 2 if depth > 1 else c, c, c),
                    conv_block(c, c, c),
                    conv_block(c, c, io_channels, is_last=True),
                )
        self.net = block

        with torch.no_grad():
            for param in self.net.parameters():
                param *= 0.5

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None,
                cond_aug_scale: Optional[float] = None) -> torch.Tensor:
        """``x`` ``[B, io_channels, T]``, ``t`` ``[B]``, ``cond`` ``[B, cond_dim, T']`` -> ``[B, io_channels, T]``.

        With ``cond_noise_aug`` the conditioning gets Gaussian noise of level ``cond_aug_scale``
        (default: a scrambled Sobol draw per item), whose Fourier embedding is appended too.
        """
        if (self.cond_dim > 0 or self.cond_noise_aug) and cond is None:
            raise ValueError(f"DiffusionAttnUnet1D: cond_dim={self.cond_dim}, cond_noise_aug={self.cond_noise_aug} "
                             "needs a `cond` signal")
        timestep_embed = expand_to_planes(self.timestep_embed(t[:, None]), x.shape)
        inputs = [x, timestep_embed]
        if cond is not None:
            if cond.shape[2] != x.shape[2]:
                cond = F.interpolate(cond, (x.shape[2],), mode="linear", align_corners=False)
            if self.cond_noise_aug:
                if cond_aug_scale is None:
                    aug_level = self.rng.draw(cond.shape[0])[:, 0].to(cond)
                else:
                    aug_level = torch.tensor([cond_aug_scale]).repeat([cond.shape[0]]).to(cond)
                cond = cond + torch.randn_like(cond) * aug_level[:, None, None]
                inputs.append(expand_to_planes(self.timestep_embed(aug_level[:, None]), x.shape))
            inputs.append(cond)
        return self.net(torch.cat(inputs, dim=1))
