"""Building blocks of the ADP U-Net (modified audio-diffusion-pytorch v0.0.94, see
docs/diffusion.md#adp-u-nets-adp_cfg_1d-adp_1d-adp_uncond_1d).

Child names follow upstream exactly so released checkpoints load strictly:

* :class:`Conv1d` / :class:`ConvTranspose1d` - plain convs with EnCodec-style automatic padding.
* :class:`ConvBlock1d` (``groupnorm``, ``activation``, ``project``), :class:`MappingToScaleShift`
  (``to_scale_shift``), :class:`ResnetBlock1d` (``block1``, ``to_scale_shift``, ``block2``, ``to_out``),
  :class:`Patcher` / :class:`Unpatcher` (``block``).
* :class:`Attention` (``norm``, ``norm_context``, ``to_q``, ``to_kv``, ``attention.to_out``),
  :class:`TransformerBlock` (``attention``, ``cross_attention``, ``feed_forward``),
  :class:`Transformer1d` (``to_in``, ``blocks``, ``to_out``).
* :class:`LearnedPositionalEmbedding` (``weights``) and :func:`TimePositionalEmbedding`.
* :class:`STFT` (buffer ``window``) for the ``use_stft`` option.
* :class:`NumberEmbedder` (``embedding``), used by the number conditioners, and the smaller helpers upstream's
  ``models/adp.py`` also defines (:class:`SinusoidalEmbedding`, :class:`ConditionedSequential`, masks, kwargs
  grouping).
"""
from __future__ import annotations

import math
from inspect import isfunction
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import torch
import torch.nn.functional as F
from einops.layers.torch import Rearrange
from torch import nn

__all__ = [
    "Conv1d",
    "ConvTranspose1d",
    "Downsample1d",
    "Upsample1d",
    "ConvBlock1d",
    "MappingToScaleShift",
    "ResnetBlock1d",
    "Patcher",
    "Unpatcher",
    "FeedForward",
    "AttentionBase",
    "Attention",
    "TransformerBlock",
    "Transformer1d",
    "LearnedPositionalEmbedding",
    "TimePositionalEmbedding",
    "STFT",
    "NumberEmbedder",
    "SinusoidalEmbedding",
    "ConditionedSequential",
    "closest_power_2",
    "add_mask",
    "causal_mask",
    "exists",
    "default",
    "group_dict_by_prefix",
    "groupby",
]

T = TypeVar("T")


def exists(val: Optional[Any]) -> bool:
    """``val is not None``."""
    return val is not None


def default(val: Optional[T], d: Union[Callable[..., T], T]) -> T:
    """``val`` unless it is None, else ``d`` (called first when it is a function)."""
    if exists(val):
        return val
    return d() if isfunction(d) else d


def group_dict_by_prefix(prefix: str, d: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split ``d`` into (items whose key starts with ``prefix``, the other items)."""
    with_prefix = {k: v for k, v in d.items() if k.startswith(prefix)}
    return with_prefix, {k: v for k, v in d.items() if not k.startswith(prefix)}


def groupby(prefix: str, d: Dict[str, Any], keep_prefix: bool = False) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """As :func:`group_dict_by_prefix`, with the prefix stripped from the first dict's keys unless ``keep_prefix``."""
    with_prefix, rest = group_dict_by_prefix(prefix, d)
    if not keep_prefix:
        with_prefix = {k[len(prefix):]: v for k, v in with_prefix.items()}
    return with_prefix, rest


def add_mask(sim: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill attention scores ``sim [B, H, N, M]`` with the most negative value where the boolean ``mask``
    (``[N, M]`` or ``[B, N, M]``) is False."""
    if mask.ndim == 2:
        mask = mask[None, None].expand(sim.shape[0], 1, *mask.shape)
    elif mask.ndim == 3:
        mask = mask[:, None]
    return sim.masked_fill(~mask, -torch.finfo(sim.dtype).max)


def causal_mask(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B, N, M]`` mask letting query ``i`` of ``q [B, ..., N, D]`` see keys ``j <= i + M - N`` of ``k``."""
    i, j = q.shape[-2], k.shape[-2]
    mask = ~torch.ones((i, j), dtype=torch.bool, device=q.device).triu(j - i + 1)
    return mask[None].expand(q.shape[0], i, j)


def _split_padding(padding_total: int) -> Tuple[int, int]:
    """Non-causal (left, right) split of a total padding: the extra sample goes left."""
    right = padding_total // 2
    return padding_total - right, right


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` that pads its input itself (EnCodec style) so that ``T_out = ceil(T / stride)``.

    Total padding is ``K_eff - stride`` (``K_eff`` = dilated kernel size), split right = total // 2,
    left = the rest (``causal``: all on the left), plus extra right padding so the last window is full.
    """

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        kernel_size = (self.kernel_size[0] - 1) * self.dilation[0] + 1
        stride = self.stride[0]
        padding_total = kernel_size - stride
        length = x.shape[-1]
        n_frames = (length - kernel_size + padding_total) / stride + 1
        extra = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total) - length
        left, right = (padding_total, 0) if causal else _split_padding(padding_total)
        return super().forward(F.pad(x, (left, right + extra)))


class ConvTranspose1d(nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` that trims ``kernel - stride`` samples (right = total // 2, left = rest)."""

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        padding_total = self.kernel_size[0] - self.stride[0]
        y = super().forward(x)
        left, right = (0, padding_total) if causal else _split_padding(padding_total)
        return y[..., left:y.shape[-1] - right]


def Downsample1d(in_channels: int, out_channels: int, factor: int, kernel_multiplier: int = 2) -> nn.Module:  # noqa: N802
    """Strided :class:`Conv1d` with kernel ``factor * kernel_multiplier + 1``."""
    if kernel_multiplier % 2 != 0:
        raise ValueError(f"kernel_multiplier_downsample must be even, got {kernel_multiplier}")
    return Conv1d(in_channels, out_channels, kernel_size=factor * kernel_multiplier + 1, stride=factor)


def Upsample1d(in_channels: int, out_channels: int, factor: int, use_nearest: bool = False) -> nn.Module:  # noqa: N802
    """3-tap conv (factor 1), nearest upsampling + 3-tap conv, or ``ConvTranspose1d(2 * factor, factor)``."""
    if factor == 1:
        return Conv1d(in_channels, out_channels, kernel_size=3)
    if use_nearest:
        return nn.Sequential(
            nn.Upsample(scale_factor=factor, mode="nearest"),
            Conv1d(in_channels, out_channels, kernel_size=3),
        )
    return ConvTranspose1d(in_channels, out_channels, kernel_size=factor * 2, stride=factor)


class ConvBlock1d(nn.Module):
    """GroupNorm (or Identity) -> optional ``x * (scale + 1) + shift`` -> SiLU -> :class:`Conv1d`."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, num_groups: int = 8, use_norm: bool = True) -> None:
        super().__init__()
        self.groupnorm = nn.GroupNorm(num_groups=num_groups, num_channels=in_channels) if use_norm else nn.Identity()
        self.activation = nn.SiLU()
        self.project = Conv1d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, dilation=dilation)

    def forward(self, x: torch.Tensor, scale_shift: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                causal: bool = False) -> torch.Tensor:
        x = self.groupnorm(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.project(self.activation(x), causal=causal)


class MappingToScaleShift(nn.Module):
    """``[B, features]`` mapping -> (scale, shift), each ``[B, channels, 1]``."""

    def __init__(self, features: int, channels: int) -> None:
        super().__init__()
        self.to_scale_shift = nn.Sequential(nn.SiLU(), nn.Linear(features, channels * 2))

    def forward(self, mapping: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self.to_scale_shift(mapping)[:, :, None].chunk(2, dim=1)
        return scale, shift


class ResnetBlock1d(nn.Module):
    """Two :class:`ConvBlock1d` (the second modulated by the mapping when ``context_mapping_features``)
    plus a residual (1x1 :class:`Conv1d` when the channel count changes)."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, use_norm: bool = True, num_groups: int = 8,
                 context_mapping_features: Optional[int] = None) -> None:
        super().__init__()
        self.use_mapping = context_mapping_features is not None
        self.block1 = ConvBlock1d(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                  dilation=dilation, use_norm=use_norm, num_groups=num_groups)
        if self.use_mapping:
            self.to_scale_shift = MappingToScaleShift(context_mapping_features, out_channels)
        self.block2 = ConvBlock1d(out_channels, out_channels, use_norm=use_norm, num_groups=num_groups)
        self.to_out = Conv1d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, mapping: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        if self.use_mapping != (mapping is not None):
            raise ValueError("ResnetBlock1d: a context mapping must be given exactly when context_mapping_features is set")
        h = self.block1(x, causal=causal)
        scale_shift = self.to_scale_shift(mapping) if self.use_mapping else None
        h = self.block2(h, scale_shift=scale_shift, causal=causal)
        return h + self.to_out(x)


class Patcher(nn.Module):
    """:class:`ResnetBlock1d` (GroupNorm with one group) to ``out / patch`` channels, then ``(l p) -> (c p)``."""

    def __init__(self, in_channels: int, out_channels: int, patch_size: int,
                 context_mapping_features: Optional[int] = None) -> None:
        super().__init__()
        if out_channels % patch_size != 0:
            raise ValueError(f"channels * multipliers[0] ({out_channels}) must be divisible by patch_size ({patch_size})")
        self.patch_size = patch_size
        self.block = ResnetBlock1d(in_channels, out_channels // patch_size, num_groups=1,
                                   context_mapping_features=context_mapping_features)

    def forward(self, x: torch.Tensor, mapping: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        x = self.block(x, mapping, causal=causal)
        b, c, length = x.shape
        p = self.patch_size
        return x.view(b, c, length // p, p).permute(0, 1, 3, 2).reshape(b, c * p, length // p)


class Unpatcher(nn.Module):
    """``(c p) -> (l p)`` then :class:`ResnetBlock1d` (one group) from ``in / patch`` channels."""

    def __init__(self, in_channels: int, out_channels: int, patch_size: int,
                 context_mapping_features: Optional[int] = None) -> None:
        super().__init__()
        if in_channels % patch_size != 0:
            raise ValueError(f"channels * multipliers[0] ({in_channels}) must be divisible by patch_size ({patch_size})")
        self.patch_size = patch_size
        self.block = ResnetBlock1d(in_channels // patch_size, out_channels, num_groups=1,
                                   context_mapping_features=context_mapping_features)

    def forward(self, x: torch.Tensor, mapping: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        b, cp, length = x.shape
        p = self.patch_size
        x = x.view(b, cp // p, p, length).permute(0, 1, 3, 2).reshape(b, cp // p, length * p)
        return self.block(x, mapping, causal=causal)


def FeedForward(features: int, multiplier: int) -> nn.Module:  # noqa: N802
    """``Sequential[Linear(f, f * m), GELU, Linear(f * m, f)]``."""
    mid_features = features * multiplier
    return nn.Sequential(nn.Linear(features, mid_features), nn.GELU(), nn.Linear(mid_features, features))


class AttentionBase(nn.Module):
    """Multi-head attention core plus the output projection ``to_out``.

    CPU: explicit ``softmax(q k^T * d^-1/2)`` in float32 (upstream's non-CUDA path, causal masking by
    ``-finfo.max`` fill); CUDA: ``scaled_dot_product_attention``.
    """

    def __init__(self, features: int, *, head_features: int, num_heads: int,
                 out_features: Optional[int] = None) -> None:
        super().__init__()
        self.scale = head_features ** -0.5
        self.num_heads = num_heads
        self.to_out = nn.Linear(head_features * num_heads, out_features if out_features is not None else features)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, -1).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        if q.is_cuda:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        else:
            sim = torch.matmul(q, k.transpose(-1, -2)) * self.scale
            if is_causal:
                i, j = q.shape[-2], k.shape[-2]
                future = torch.ones((i, j), dtype=torch.bool, device=q.device).triu(j - i + 1)
                sim = sim.masked_fill(future, -torch.finfo(sim.dtype).max)
            attn = sim.softmax(dim=-1, dtype=torch.float32)
            out = torch.matmul(attn.to(v.dtype), v)
        b, h, n, d = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * d))


class Attention(nn.Module):
    """Pre-norm (self- or cross-) attention: ``norm`` on x, ``norm_context`` on the context (x itself
    for self-attention), bias-free ``to_q`` / ``to_kv``; masked context positions get K = V = 0."""

    def __init__(self, features: int, *, head_features: int, num_heads: int, out_features: Optional[int] = None,
                 context_features: Optional[int] = None, causal: bool = False) -> None:
        super().__init__()
        self.context_features = context_features
        self.causal = causal
        mid_features = head_features * num_heads
        context_features = context_features if context_features is not None else features
        self.norm = nn.LayerNorm(features)
        self.norm_context = nn.LayerNorm(context_features)
        self.to_q = nn.Linear(features, mid_features, bias=False)
        self.to_kv = nn.Linear(context_features, mid_features * 2, bias=False)
        self.attention = AttentionBase(features, num_heads=num_heads, head_features=head_features,
                                       out_features=out_features)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                context_mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        if self.context_features and context is None:
            raise ValueError("cross-attention needs a context embedding (pass `embedding`)")
        context = x if context is None else context
        x, context = self.norm(x), self.norm_context(context)
        q = self.to_q(x)
        k, v = torch.chunk(self.to_kv(context), chunks=2, dim=-1)
        if context_mask is not None:
            mask = context_mask[:, :, None].to(k.dtype)
            k, v = k * mask, v * mask
        return self.attention(q, k, v, is_causal=self.causal or causal)


class TransformerBlock(nn.Module):
    """Self-attention, optional cross-attention (``context_features > 0``) and feed-forward, each residual."""

    def __init__(self, features: int, num_heads: int, head_features: int, multiplier: int,
                 context_features: Optional[int] = None) -> None:
        super().__init__()
        self.use_cross_attention = context_features is not None and context_features > 0
        self.attention = Attention(features, num_heads=num_heads, head_features=head_features)
        if self.use_cross_attention:
            self.cross_attention = Attention(features, num_heads=num_heads, head_features=head_features,
                                             context_features=context_features)
        self.feed_forward = FeedForward(features, multiplier)

    def forward(self, x: torch.Tensor, *, context: Optional[torch.Tensor] = None,
                context_mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        x = self.attention(x, causal=causal) + x
        if self.use_cross_attention:
            x = self.cross_attention(x, context=context, context_mask=context_mask) + x
        return self.feed_forward(x) + x


class Transformer1d(nn.Module):
    """GroupNorm(32, eps 1e-6) + 1x1 conv, ``num_layers`` :class:`TransformerBlock` over time, 1x1 conv."""

    def __init__(self, num_layers: int, channels: int, num_heads: int, head_features: int, multiplier: int,
                 context_features: Optional[int] = None) -> None:
        super().__init__()
        self.to_in = nn.Sequential(
            nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True),
            Conv1d(channels, channels, kernel_size=1),
            Rearrange("b c t -> b t c"),
        )
        self.blocks = nn.ModuleList([
            TransformerBlock(channels, num_heads=num_heads, head_features=head_features, multiplier=multiplier,
                             context_features=context_features)
            for _ in range(num_layers)
        ])
        self.to_out = nn.Sequential(Rearrange("b t c -> b c t"), Conv1d(channels, channels, kernel_size=1))

    def forward(self, x: torch.Tensor, *, context: Optional[torch.Tensor] = None,
                context_mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        x = self.to_in(x)
        for block in self.blocks:
            x = block(x, context=context, context_mask=context_mask, causal=causal)
        return self.to_out(x)


class LearnedPositionalEmbedding(nn.Module):
    """Continuous-time embedding: ``t -> cat(t, sin(2 pi t w), cos(2 pi t w))`` (``dim + 1`` features)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"LearnedPositionalEmbedding: dim must be even, got {dim}")
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]
        freqs = x * self.weights[None, :] * 2 * math.pi
        return torch.cat((x, freqs.sin(), freqs.cos()), dim=-1)


def TimePositionalEmbedding(dim: int, out_features: int) -> nn.Module:  # noqa: N802
    """``Sequential[LearnedPositionalEmbedding(dim), Linear(dim + 1, out_features)]``."""
    return nn.Sequential(LearnedPositionalEmbedding(dim), nn.Linear(dim + 1, out_features))


class STFT(nn.Module):
    """Normalised STFT helper (magnitude/phase or real/imag planes) used by ``UNet1d(use_stft=True)``."""

    def __init__(self, num_fft: int = 1023, hop_length: int = 256, window_length: Optional[int] = None,
                 length: Optional[int] = None, use_complex: bool = False) -> None:
        super().__init__()
        self.num_fft = num_fft
        self.hop_length = hop_length if hop_length is not None else num_fft // 4
        self.window_length = window_length if window_length is not None else num_fft
        self.length = length
        self.use_complex = use_complex
        self.register_buffer("window", torch.hann_window(self.window_length))

    def encode(self, wave: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[B, C, T]`` -> two ``[B, C, F, L]`` planes (magnitude, phase) or (real, imag)."""
        b, c, t = wave.shape
        stft = torch.stft(wave.reshape(b * c, t), n_fft=self.num_fft, hop_length=self.hop_length,
                          win_length=self.window_length, window=self.window, return_complex=True, normalized=True)
        planes = (stft.real, stft.imag) if self.use_complex else (stft.abs(), stft.angle())
        return tuple(p.reshape(b, c, *p.shape[1:]) for p in planes)

    def decode(self, stft_a: torch.Tensor, stft_b: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`; output length ``length`` or the power of two closest to ``L * hop``."""
        b, c, f, frames = stft_a.shape
        stft_a, stft_b = stft_a.reshape(b * c, f, frames), stft_b.reshape(b * c, f, frames)
        if self.use_complex:
            spec = torch.complex(stft_a, stft_b)
        else:
            spec = torch.polar(stft_a, stft_b)
        length = self.length if self.length is not None else closest_power_2(frames * self.hop_length)
        wave = torch.istft(spec, n_fft=self.num_fft, hop_length=self.hop_length, win_length=self.window_length,
                           window=self.window, length=length, normalized=True)
        return wave.reshape(b, c, -1)

    def encode1d(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, 2 * C * F, L]`` (first plane's channels, then the second's)."""
        stft_a, stft_b = self.encode(wave)
        return torch.cat([stft_a.flatten(1, 2), stft_b.flatten(1, 2)], dim=1)

    def decode1d(self, stft_pair: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode1d`."""
        f = self.num_fft // 2 + 1
        planes: List[torch.Tensor] = [p.reshape(p.shape[0], -1, f, p.shape[-1]) for p in stft_pair.chunk(2, dim=1)]
        return self.decode(planes[0], planes[1])


def closest_power_2(x: float) -> int:
    """The power of two nearest to ``x`` (> 0)."""
    exponent = math.log2(x)
    lo, hi = math.floor(exponent), math.ceil(exponent)
    return 2 ** int(min((lo, hi), key=lambda z: abs(x - 2 ** z)))


class NumberEmbedder(nn.Module):
    """Embed scalars of any shape ``[...]`` to ``[..., features]`` through ``embedding`` = TimePositionalEmbedding.

    Args:
        features (int): output features.
        dim (int): learned Fourier features of the positional embedding. Default 256.
    """

    def __init__(self, features: int, dim: int = 256) -> None:
        super().__init__()
        self.features = features
        self.embedding = TimePositionalEmbedding(dim, features)

    def forward(self, x: Union[Sequence[float], torch.Tensor]) -> torch.Tensor:
        if not torch.is_tensor(x):
            x = torch.tensor(x, device=self.embedding[1].weight.device)
        shape = x.shape
        return self.embedding(x.reshape(-1)).view(*shape, self.features)


class SinusoidalEmbedding(nn.Module):
    """Fixed sinusoidal embedding of positions/times ``x [N]`` -> ``[N, dim]`` (``sin`` half, then ``cos`` half,
    frequencies ``10000^(-k / (dim/2 - 1))``).

    Args:
        dim (int): embedding size (even, at least 4).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half_dim = self.dim // 2
        freqs = torch.exp(torch.arange(half_dim, device=x.device) * -(math.log(10000) / (half_dim - 1)))
        angles = x[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class ConditionedSequential(nn.Module):
    """Apply ``modules`` in order, passing the same ``mapping`` to each: ``x = module(x, mapping)``.

    Args:
        modules (iterable of nn.Module): the modules, as one iterable (stored as ``module_list``).
    """

    def __init__(self, *modules: Any) -> None:
        super().__init__()
        self.module_list = nn.ModuleList(*modules)

    def forward(self, x: torch.Tensor, mapping: Optional[torch.Tensor] = None) -> torch.Tensor:
        for module in self.module_list:
            x = module(x, mapping)
        return x
