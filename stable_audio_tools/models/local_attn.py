"""Local-attention transformer encoder / decoder (``type: "local_attn"``, see
docs/model_config.md#encoders-and-decoders-type and docs/compatibility.md#upstream-quirks).

Upstream's ``TransformerEncoder1D`` / ``TransformerDecoder1D`` cannot run: their local transformer
passes ``natten_kernel_size`` to an ``Attention`` that no longer accepts it (TypeError), NATTEN
only supports odd kernels while the default window is 64, the rotary dimension
``max(dim_head // 2, 32)`` exceeds the 8-wide heads of the default config, and the layers pass a
``mask`` keyword that attention no longer takes. This module keeps the intended structure, class
names, constructor options and state-dict names, and makes it work:

* **Local attention** is the exact banded sliding-window attention of
  :mod:`stable_audio_tools.models.attention` (flash-attn window on CUDA when installed, else SDPA
  with a band): with window ``w = local_attn_window_size`` each query attends the ``w`` positions
  ``i - w//2 .. i + (w-1)//2`` (fewer at the sequence edges); causal: ``i - w + 1 .. i``.
* **Rotary dimension** is ``min(max(dim_head // 2, 32), dim_head)`` (upstream's value whenever
  heads are at least 32 wide).
* Attention masks are not supported (no attention kernel in this package takes them).
* ``TransformerEncoder1D`` / ``TransformerDecoder1D`` expose ``causal`` and ``ff_mult`` explicitly
  instead of forwarding ``**kwargs``: the per-block conditioning options (``cond_dim``,
  ``cross_attn_cond_dim``) are meaningless there because an autoencoder never receives
  conditioning (upstream would crash on them), so they exist only on
  :class:`ContinuousLocalTransformer`.
* Gradient checkpointing is per layer, in training mode with gradients enabled (upstream
  checkpointed every sub-module unconditionally; no numerical difference).

Key names: encoder ``layers.{i}.transformer.layers.{j}.{0: attn_norm, 1: attn, 2: xattn,
3: ff_norm, 4: ff}``, ``layers.{i}.transformer.{project_in, project_out, rotary_pos_emb}``,
``layers.{i}.{project_in, project_down}`` (decoder: ``project_up``), and top-level
``project_in`` / ``project_out``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Attention, RotaryEmbedding
from .blocks import AdaRMSNorm
from .transformer import FeedForward, LayerNorm

__all__ = [
    "local_window",
    "ContinuousLocalTransformer",
    "TransformerDownsampleBlock1D",
    "TransformerUpsampleBlock1D",
    "TransformerEncoder1D",
    "TransformerDecoder1D",
]


def local_window(window_size: int, causal: bool = False) -> Tuple[int, int]:
    """The ``(left, right)`` sliding window covering ``window_size`` positions around each query."""
    if window_size < 1:
        raise ValueError(f"local_attn_window_size must be >= 1, got {window_size}")
    if causal:
        return window_size - 1, 0
    return window_size // 2, (window_size - 1) // 2


class ContinuousLocalTransformer(nn.Module):
    """Pre-norm transformer whose self-attention only sees a local window.

    ``layers.{j}`` = ModuleList[attn_norm, attn, xattn, ff_norm, ff]: LayerNorm (AdaRMSNorm when
    ``cond_dim > 0``), windowed self-Attention, cross-Attention to ``cross_attn_cond_dim`` tokens
    (Identity when 0), LayerNorm/AdaRMSNorm, FeedForward(mult=ff_mult, no_bias=True).
    ``project_in``/``project_out`` are biased Linear layers (or Identity).
    """

    def __init__(self, *, dim: int, depth: int, dim_in: Optional[int] = None, dim_out: Optional[int] = None,
                 causal: bool = False, local_attn_window_size: int = 64, heads: int = 8, ff_mult: float = 2,
                 cond_dim: int = 0, cross_attn_cond_dim: int = 0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"local transformer width {dim} is not divisible by its {heads} heads")
        dim_head = dim // heads
        self.layers = nn.ModuleList([])
        self.project_in = nn.Linear(dim_in, dim) if dim_in is not None else nn.Identity()
        self.project_out = nn.Linear(dim, dim_out) if dim_out is not None else nn.Identity()
        self.local_attn_window_size = local_attn_window_size
        self.window = local_window(local_attn_window_size, causal)
        self.cond_dim = cond_dim
        self.cross_attn_cond_dim = cross_attn_cond_dim
        self.rotary_pos_emb = RotaryEmbedding(min(max(dim_head // 2, 32), dim_head - dim_head % 2))

        def norm() -> nn.Module:
            if cond_dim > 0:
                return AdaRMSNorm(dim, cond_dim, eps=1e-8)
            return LayerNorm(dim)

        for _ in range(depth):
            self.layers.append(nn.ModuleList([
                norm(),
                Attention(dim=dim, dim_heads=dim_head, causal=causal, zero_init_output=True),
                Attention(dim=dim, dim_heads=dim_head, dim_context=cross_attn_cond_dim, zero_init_output=True)
                if cross_attn_cond_dim > 0 else nn.Identity(),
                norm(),
                FeedForward(dim=dim, mult=ff_mult, no_bias=True),
            ]))

    def _layer(self, index: int, x: torch.Tensor, cond: Optional[torch.Tensor],
               cross_attn_cond: Optional[torch.Tensor], pos_emb) -> torch.Tensor:
        attn_norm, attn, xattn, ff_norm, ff = self.layers[index]
        h = attn_norm(x, cond) if self.cond_dim > 0 else attn_norm(x)
        x = attn(h, rotary_pos_emb=pos_emb, flash_attn_sliding_window=self.window) + x
        if cross_attn_cond is not None:
            x = xattn(x, context=cross_attn_cond) + x
        h = ff_norm(x, cond) if self.cond_dim > 0 else ff_norm(x)
        return ff(h) + x

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None,
                cross_attn_cond: Optional[torch.Tensor] = None,
                prepend_cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x`` ``[b, n, dim_in]`` → ``[b, n (+ prepend), dim_out]``."""
        if self.cond_dim > 0 and cond is None:
            raise ValueError(f"this local transformer was built with cond_dim={self.cond_dim} and needs `cond`")
        if cross_attn_cond is not None and self.cross_attn_cond_dim <= 0:
            raise ValueError("cross_attn_cond given but the local transformer has no cross-attention "
                             "(set cross_attn_cond_dim)")
        x = self.project_in(x)
        if prepend_cond is not None:
            x = torch.cat([prepend_cond, x], dim=1)
        pos_emb = self.rotary_pos_emb.forward_from_seq_len(x.shape[1])
        use_checkpoint = self.training and torch.is_grad_enabled()
        for index in range(len(self.layers)):
            if use_checkpoint:
                x = checkpoint(self._layer, index, x, cond, cross_attn_cond, pos_emb, use_reentrant=False)
            else:
                x = self._layer(index, x, cond, cross_attn_cond, pos_emb)
        return self.project_out(x)


class TransformerDownsampleBlock1D(nn.Module):
    """Local transformer at ``embed_dim``, then fold ``downsample_ratio`` steps into channels and project down."""

    def __init__(self, in_channels: int, embed_dim: int = 768, depth: int = 3, heads: int = 12,
                 downsample_ratio: int = 2, local_attn_window_size: int = 64, causal: bool = False,
                 ff_mult: float = 2) -> None:
        super().__init__()
        self.downsample_ratio = downsample_ratio
        self.transformer = ContinuousLocalTransformer(dim=embed_dim, depth=depth, heads=heads,
                                                      local_attn_window_size=local_attn_window_size,
                                                      causal=causal, ff_mult=ff_mult)
        self.project_in = nn.Linear(in_channels, embed_dim, bias=False) if in_channels != embed_dim else nn.Identity()
        self.project_down = nn.Linear(embed_dim * downsample_ratio, embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, n, in_channels]`` → ``[b, n / ratio, embed_dim]``."""
        x = self.transformer(self.project_in(x))
        b, n, c = x.shape
        r = self.downsample_ratio
        if n % r:
            raise ValueError(f"sequence length {n} is not divisible by the downsampling ratio {r}")
        x = x.reshape(b, n // r, r, c).transpose(2, 3).reshape(b, n // r, c * r)
        return self.project_down(x)


class TransformerUpsampleBlock1D(nn.Module):
    """Project up to ``embed_dim · upsample_ratio`` channels, unfold them into time, then a local transformer."""

    def __init__(self, in_channels: int, embed_dim: int, depth: int = 3, heads: int = 12,
                 upsample_ratio: int = 2, local_attn_window_size: int = 64, causal: bool = False,
                 ff_mult: float = 2) -> None:
        super().__init__()
        self.upsample_ratio = upsample_ratio
        self.transformer = ContinuousLocalTransformer(dim=embed_dim, depth=depth, heads=heads,
                                                      local_attn_window_size=local_attn_window_size,
                                                      causal=causal, ff_mult=ff_mult)
        self.project_in = nn.Linear(in_channels, embed_dim, bias=False) if in_channels != embed_dim else nn.Identity()
        self.project_up = nn.Linear(embed_dim, embed_dim * upsample_ratio, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, n, in_channels]`` → ``[b, n · ratio, embed_dim]``."""
        x = self.project_up(self.project_in(x))
        b, n, cr = x.shape
        r = self.upsample_ratio
        x = x.reshape(b, n, cr // r, r).transpose(2, 3).reshape(b, n * r, cr // r)
        return self.transformer(x)


def _check_levels(embed_dims: Sequence[int], heads: Sequence[int], depths: Sequence[int],
                  ratios: Sequence[int]) -> None:
    if not (len(embed_dims) == len(heads) == len(depths) == len(ratios)) or not depths:
        raise ValueError(f"embed_dims, heads, depths and ratios must be non-empty and of equal length, got "
                         f"{len(embed_dims)}, {len(heads)}, {len(depths)} and {len(ratios)} entries")


class TransformerEncoder1D(nn.Module):
    """``[b, in_channels, n]`` → ``[b, out_channels, n / prod(ratios)]`` with local-attention down blocks."""

    def __init__(self, in_channels: int, out_channels: int, embed_dims: Sequence[int] = (96, 192, 384, 768),
                 heads: Sequence[int] = (12, 12, 12, 12), depths: Sequence[int] = (3, 3, 3, 3),
                 ratios: Sequence[int] = (2, 2, 2, 2), local_attn_window_size: int = 64, causal: bool = False,
                 ff_mult: float = 2) -> None:
        super().__init__()
        _check_levels(embed_dims, heads, depths, ratios)
        self.downsampling_ratio = math.prod(ratios)
        self.layers = nn.Sequential(*[
            TransformerDownsampleBlock1D(
                in_channels=embed_dims[i - 1] if i > 0 else embed_dims[0], embed_dim=embed_dims[i],
                heads=heads[i], depth=depths[i], downsample_ratio=ratios[i],
                local_attn_window_size=local_attn_window_size, causal=causal, ff_mult=ff_mult)
            for i in range(len(depths))])
        self.project_in = nn.Linear(in_channels, embed_dims[0], bias=False)
        self.project_out = nn.Linear(embed_dims[-1], out_channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.downsampling_ratio:
            raise ValueError(f"input length {x.shape[-1]} must be a multiple of the encoder's downsampling "
                             f"ratio {self.downsampling_ratio} (product of `ratios`)")
        x = self.project_in(x.transpose(1, 2))
        x = self.project_out(self.layers(x))
        return x.transpose(1, 2)


class TransformerDecoder1D(nn.Module):
    """``[b, in_channels, m]`` → ``[b, out_channels, m · prod(ratios)]`` with local-attention up blocks."""

    def __init__(self, in_channels: int, out_channels: int, embed_dims: Sequence[int] = (768, 384, 192, 96),
                 heads: Sequence[int] = (12, 12, 12, 12), depths: Sequence[int] = (3, 3, 3, 3),
                 ratios: Sequence[int] = (2, 2, 2, 2), local_attn_window_size: int = 64, causal: bool = False,
                 ff_mult: float = 2) -> None:
        super().__init__()
        _check_levels(embed_dims, heads, depths, ratios)
        self.upsampling_ratio = math.prod(ratios)
        self.layers = nn.Sequential(*[
            TransformerUpsampleBlock1D(
                in_channels=embed_dims[i - 1] if i > 0 else embed_dims[0], embed_dim=embed_dims[i],
                heads=heads[i], depth=depths[i], upsample_ratio=ratios[i],
                local_attn_window_size=local_attn_window_size, causal=causal, ff_mult=ff_mult)
            for i in range(len(depths))])
        self.project_in = nn.Linear(in_channels, embed_dims[0], bias=False)
        self.project_out = nn.Linear(embed_dims[-1], out_channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project_in(x.transpose(1, 2))
        x = self.project_out(self.layers(x))
        return x.transpose(1, 2)
