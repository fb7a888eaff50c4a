"""ADP 1-D U-Nets (modified audio-diffusion-pytorch v0.0.94, see
docs/diffusion.md#adp-u-nets-adp_cfg_1d-adp_1d-adp_uncond_1d).

:class:`UNet1d` is the time/feature/channel/embedding-conditioned U-Net behind the ``adp_1d`` and
``adp_uncond_1d`` backbones; :class:`UNetCFG1d` adds the learned "null" embedding used for
classifier-free guidance (``adp_cfg_1d``, Stable Audio 1.0). Module names equal upstream's, so
``UNetCFG1DWrapper.model`` / ``UNet1DCondWrapper.model`` / ``UNet1DUncondWrapper.model`` load released
state dicts strictly. :class:`UNetNCCA1d` (noise channel conditioning augmentation), :class:`UNetAll1d` (CFG and
NCCA together) and the :func:`XUNet1d` selector complete upstream's set of variants.

The smaller pieces live in :mod:`.adp_blocks` (and the EnCodec-style padding helpers in :mod:`.seanet`); they are
importable from here too, as from upstream's ``models/adp.py``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .adp_blocks import (
    STFT,
    Attention,
    AttentionBase,
    ConditionedSequential,
    Conv1d,
    ConvBlock1d,
    ConvTranspose1d,
    Downsample1d,
    FeedForward,
    LearnedPositionalEmbedding,
    MappingToScaleShift,
    NumberEmbedder,
    Patcher,
    ResnetBlock1d,
    SinusoidalEmbedding,
    TimePositionalEmbedding,
    Transformer1d,
    TransformerBlock,
    Unpatcher,
    Upsample1d,
    add_mask,
    causal_mask,
    closest_power_2,
    default,
    exists,
    group_dict_by_prefix,
    groupby,
)
from .seanet import get_extra_padding_for_conv1d, pad1d, pad_for_conv1d, unpad1d

__all__ = [
    "DownsampleBlock1d",
    "UpsampleBlock1d",
    "BottleneckBlock1d",
    "UNet1d",
    "FixedEmbedding",
    "rand_bool",
    "UNetCFG1d",
    "UNetNCCA1d",
    "UNetAll1d",
    "XUNet1d",
    # defined in .adp_blocks / .seanet, importable from here as from upstream's models/adp.py
    "Conv1d", "ConvTranspose1d", "ConvBlock1d", "MappingToScaleShift", "FeedForward", "AttentionBase", "Attention",
    "TransformerBlock", "LearnedPositionalEmbedding", "NumberEmbedder", "SinusoidalEmbedding",
    "ConditionedSequential", "closest_power_2", "add_mask", "causal_mask", "exists", "default",
    "group_dict_by_prefix", "groupby", "get_extra_padding_for_conv1d", "pad_for_conv1d", "pad1d", "unpad1d",
]


def _make_transformer(num_blocks: int, channels: int, heads: Optional[int], head_features: Optional[int],
                      multiplier: Optional[int], context_features: Optional[int]) -> Transformer1d:
    """Transformer1d with heads / head features derived from each other (``channels // x``)."""
    if (heads is None and head_features is None) or multiplier is None:
        raise ValueError("attentions > 0 needs attention_multiplier and one of attention_heads / attention_features")
    if head_features is None:
        head_features = channels // heads
    if heads is None:
        heads = channels // head_features
    return Transformer1d(num_blocks, channels, num_heads=heads, head_features=head_features, multiplier=multiplier,
                         context_features=context_features)


class DownsampleBlock1d(nn.Module):
    """Downsample (``downsample``), ResnetBlocks (``blocks``, the first also taking the injected context
    channels) and an optional ``transformer``; returns ``(x, skips)`` when ``use_skip``."""

    def __init__(self, in_channels: int, out_channels: int, *, factor: int, num_groups: int, num_layers: int,
                 kernel_multiplier: int = 2, use_pre_downsample: bool = True, use_skip: bool = False,
                 context_channels: int = 0, num_transformer_blocks: int = 0,
                 attention_heads: Optional[int] = None, attention_features: Optional[int] = None,
                 attention_multiplier: Optional[int] = None, context_mapping_features: Optional[int] = None,
                 context_embedding_features: Optional[int] = None) -> None:
        super().__init__()
        self.use_pre_downsample = use_pre_downsample
        self.use_skip = use_skip
        self.use_transformer = num_transformer_blocks > 0
        self.use_context = context_channels > 0
        channels = out_channels if use_pre_downsample else in_channels
        self.downsample = Downsample1d(in_channels, out_channels, factor=factor, kernel_multiplier=kernel_multiplier)
        self.blocks = nn.ModuleList([
            ResnetBlock1d(channels + context_channels if i == 0 else channels, channels, num_groups=num_groups,
                          context_mapping_features=context_mapping_features)
            for i in range(num_layers)
        ])
        if self.use_transformer:
            self.transformer = _make_transformer(num_transformer_blocks, channels, attention_heads,
                                                 attention_features, attention_multiplier, context_embedding_features)

    def forward(self, x: torch.Tensor, *, mapping: Optional[torch.Tensor] = None,
                channels: Optional[torch.Tensor] = None, embedding: Optional[torch.Tensor] = None,
                embedding_mask: Optional[torch.Tensor] = None, causal: bool = False):
        if self.use_pre_downsample:
            x = self.downsample(x)
        if self.use_context and channels is not None:
            x = torch.cat([x, channels], dim=1)
        skips: List[torch.Tensor] = []
        for block in self.blocks:
            x = block(x, mapping=mapping, causal=causal)
            skips.append(x)
        if self.use_transformer:
            x = self.transformer(x, context=embedding, context_mask=embedding_mask, causal=causal)
            skips.append(x)
        if not self.use_pre_downsample:
            x = self.downsample(x)
        return (x, skips) if self.use_skip else x


class UpsampleBlock1d(nn.Module):
    """ResnetBlocks (``blocks``) each fed one popped skip (scaled by 2^-1/2 if ``use_skip_scale``),
    an optional ``transformer``, then ``upsample`` (or before everything if ``use_pre_upsample``)."""

    def __init__(self, in_channels: int, out_channels: int, *, factor: int, num_layers: int, num_groups: int,
                 use_nearest: bool = False, use_pre_upsample: bool = False, use_skip: bool = False,
                 skip_channels: int = 0, use_skip_scale: bool = False, num_transformer_blocks: int = 0,
                 attention_heads: Optional[int] = None, attention_features: Optional[int] = None,
                 attention_multiplier: Optional[int] = None, context_mapping_features: Optional[int] = None,
                 context_embedding_features: Optional[int] = None) -> None:
        super().__init__()
        self.use_pre_upsample = use_pre_upsample
        self.use_transformer = num_transformer_blocks > 0
        self.use_skip = use_skip
        self.skip_scale = 2 ** -0.5 if use_skip_scale else 1.0
        channels = out_channels if use_pre_upsample else in_channels
        self.blocks = nn.ModuleList([
            ResnetBlock1d(channels + skip_channels, channels, num_groups=num_groups,
                          context_mapping_features=context_mapping_features)
            for _ in range(num_layers)
        ])
        if self.use_transformer:
            self.transformer = _make_transformer(num_transformer_blocks, channels, attention_heads,
                                                 attention_features, attention_multiplier, context_embedding_features)
        self.upsample = Upsample1d(in_channels, out_channels, factor=factor, use_nearest=use_nearest)

    def forward(self, x: torch.Tensor, *, skips: Optional[List[torch.Tensor]] = None,
                mapping: Optional[torch.Tensor] = None, embedding: Optional[torch.Tensor] = None,
                embedding_mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        if self.use_pre_upsample:
            x = self.upsample(x)
        for block in self.blocks:
            if skips is not None:
                x = torch.cat([x, skips.pop() * self.skip_scale], dim=1)
            x = block(x, mapping=mapping, causal=causal)
        if self.use_transformer:
            x = self.transformer(x, context=embedding, context_mask=embedding_mask, causal=causal)
        if not self.use_pre_upsample:
            x = self.upsample(x)
        return x


class BottleneckBlock1d(nn.Module):
    """``pre_block`` ResnetBlock, optional ``transformer``, ``post_block`` ResnetBlock."""

    def __init__(self, channels: int, *, num_groups: int, num_transformer_blocks: int = 0,
                 attention_heads: Optional[int] = None, attention_features: Optional[int] = None,
                 attention_multiplier: Optional[int] = None, context_mapping_features: Optional[int] = None,
                 context_embedding_features: Optional[int] = None) -> None:
        super().__init__()
        self.use_transformer = num_transformer_blocks > 0
        self.pre_block = ResnetBlock1d(channels, channels, num_groups=num_groups,
                                       context_mapping_features=context_mapping_features)
        if self.use_transformer:
            self.transformer = _make_transformer(num_transformer_blocks, channels, attention_heads,
                                                 attention_features, attention_multiplier, context_embedding_features)
        self.post_block = ResnetBlock1d(channels, channels, num_groups=num_groups,
                                        context_mapping_features=context_mapping_features)

    def forward(self, x: torch.Tensor, *, mapping: Optional[torch.Tensor] = None,
                embedding: Optional[torch.Tensor] = None, embedding_mask: Optional[torch.Tensor] = None,
                causal: bool = False) -> torch.Tensor:
        x = self.pre_block(x, mapping=mapping, causal=causal)
        if self.use_transformer:
            x = self.transformer(x, context=embedding, context_mask=embedding_mask, causal=causal)
        return self.post_block(x, mapping=mapping, causal=causal)


def _split_stft_kwargs(kwargs: Dict[str, Any], use_stft: bool) -> Dict[str, Any]:
    stft_kwargs = {k[len("stft_"):]: v for k, v in kwargs.items() if k.startswith("stft_")} if use_stft else {}
    unknown = [k for k in kwargs if not (use_stft and k.startswith("stft_"))]
    if unknown:
        raise ValueError(f"UNet1d: unknown arguments {', '.join(sorted(unknown))} (stft_* options need use_stft=True)")
    if use_stft and "num_fft" not in stft_kwargs:
        raise ValueError("UNet1d: stft_num_fft is required when use_stft=True")
    return stft_kwargs


class UNet1d(nn.Module):
    """ADP U-Net. ``num_layers = len(multipliers) - 1`` down/up levels with ``factors``/``num_blocks``
    each, ``attentions[i]`` transformer blocks per level (``attentions[-1]`` in the bottleneck).

    Conditioning: diffusion time (``use_context_time``) and global ``features`` (``context_features``)
    are summed into a ``channels * context_features_multiplier`` mapping that modulates every
    ResnetBlock; ``channels_list`` tensors are concatenated at the levels with ``context_channels > 0``;
    ``embedding`` (``[B, N, context_embedding_features]``) is cross-attended by every transformer.
    """

    def __init__(self, in_channels: int, channels: int, multipliers: Sequence[int], factors: Sequence[int],
                 num_blocks: Sequence[int], attentions: Sequence[int], patch_size: int = 1,
                 resnet_groups: int = 8, use_context_time: bool = True, kernel_multiplier_downsample: int = 2,
                 use_nearest_upsample: bool = False, use_skip_scale: bool = True, use_stft: bool = False,
                 use_stft_context: bool = False, out_channels: Optional[int] = None,
                 context_features: Optional[int] = None, context_features_multiplier: int = 4,
                 context_channels: Optional[Sequence[int]] = None,
                 context_embedding_features: Optional[int] = None, attention_heads: Optional[int] = None,
                 attention_features: Optional[int] = None, attention_multiplier: Optional[int] = None,
                 **kwargs: Any) -> None:
        super().__init__()
        out_channels = out_channels if out_channels is not None else in_channels
        context_channels = list(context_channels or [])
        num_layers = len(multipliers) - 1
        if not (len(factors) == num_layers and len(num_blocks) == num_layers and len(attentions) >= num_layers):
            raise ValueError(
                f"UNet1d: with len(multipliers) = {len(multipliers)}, factors and num_blocks need {num_layers} "
                f"entries and attentions at least {num_layers} (got {len(factors)}, {len(num_blocks)}, {len(attentions)})")
        if len(context_channels) > num_layers + 1:
            raise ValueError(f"UNet1d: context_channels has more than {num_layers + 1} entries")
        stft_kwargs = _split_stft_kwargs(kwargs, use_stft)

        self.num_layers = num_layers
        self.use_context_time = use_context_time
        self.use_context_features = context_features is not None
        self.use_context_channels = len(context_channels) > 0
        self.use_stft = use_stft
        self.use_stft_context = use_stft_context
        self.context_features = context_features
        context_channels = context_channels + [0] * (num_layers + 1 - len(context_channels))
        self.context_channels = context_channels
        self.context_embedding_features = context_embedding_features
        self.has_context = [c > 0 for c in context_channels]
        self.channels_ids = [sum(self.has_context[:i]) for i in range(len(self.has_context))]

        mapping_features = None
        if use_context_time or self.use_context_features:
            mapping_features = channels * context_features_multiplier
            self.to_mapping = nn.Sequential(
                nn.Linear(mapping_features, mapping_features), nn.GELU(),
                nn.Linear(mapping_features, mapping_features), nn.GELU(),
            )
        if use_context_time:
            self.to_time = nn.Sequential(TimePositionalEmbedding(channels, mapping_features), nn.GELU())
        if self.use_context_features:
            self.to_features = nn.Sequential(nn.Linear(context_features, mapping_features), nn.GELU())
        if use_stft:
            stft_channels = (stft_kwargs["num_fft"] // 2 + 1) * 2
            in_channels *= stft_channels
            out_channels *= stft_channels
            context_channels[0] *= stft_channels if use_stft_context else 1
            self.stft = STFT(**stft_kwargs)

        attention = dict(attention_heads=attention_heads, attention_features=attention_features,
                         attention_multiplier=attention_multiplier,
                         context_mapping_features=mapping_features,
                         context_embedding_features=context_embedding_features)
        self.to_in = Patcher(in_channels + context_channels[0], channels * multipliers[0], patch_size=patch_size,
                             context_mapping_features=mapping_features)
        self.downsamples = nn.ModuleList([
            DownsampleBlock1d(channels * multipliers[i], channels * multipliers[i + 1],
                              context_channels=context_channels[i + 1], num_layers=num_blocks[i], factor=factors[i],
                              kernel_multiplier=kernel_multiplier_downsample, num_groups=resnet_groups,
                              use_pre_downsample=True, use_skip=True, num_transformer_blocks=attentions[i],
                              **attention)
            for i in range(num_layers)
        ])
        self.bottleneck = BottleneckBlock1d(channels * multipliers[-1], num_groups=resnet_groups,
                                            num_transformer_blocks=attentions[-1], **attention)
        self.upsamples = nn.ModuleList([
            UpsampleBlock1d(channels * multipliers[i + 1], channels * multipliers[i],
                            num_layers=num_blocks[i] + (1 if attentions[i] else 0), factor=factors[i],
                            use_nearest=use_nearest_upsample, num_groups=resnet_groups,
                            use_skip_scale=use_skip_scale, use_pre_upsample=False, use_skip=True,
                            skip_channels=channels * multipliers[i + 1], num_transformer_blocks=attentions[i],
                            **attention)
            for i in reversed(range(num_layers))
        ])
        self.to_out = Unpatcher(channels * multipliers[0], out_channels, patch_size=patch_size,
                                context_mapping_features=mapping_features)

    def get_channels(self, channels_list: Optional[Sequence[torch.Tensor]] = None,
                     layer: int = 0) -> Optional[torch.Tensor]:
        """The context channels injected at ``layer`` (None if that level takes none); checks their count."""
        if not (self.use_context_channels and self.has_context[layer]):
            return None
        channels_id = self.channels_ids[layer]
        if channels_list is None or channels_id >= len(channels_list) or channels_list[channels_id] is None:
            raise ValueError(f"UNet1d: missing context channels for layer {layer} (channels_list[{channels_id}])")
        channels = channels_list[channels_id]
        if channels.shape[1] != self.context_channels[layer]:
            raise ValueError(f"UNet1d: expected {self.context_channels[layer]} context channels at "
                             f"channels_list[{channels_id}], got {channels.shape[1]}")
        return self.stft.encode1d(channels) if self.use_stft_context else channels

    def get_mapping(self, time: Optional[torch.Tensor] = None,
                    features: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """Sum of the time and feature embeddings through ``to_mapping`` (None without either)."""
        items = []
        if self.use_context_time:
            if time is None:
                raise ValueError("UNet1d: use_context_time=True but no time was given")
            items.append(self.to_time(time))
        if self.use_context_features:
            if features is None:
                raise ValueError("UNet1d: context_features is set but no `features` were given")
            items.append(self.to_features(features))
        if not items:
            return None
        return self.to_mapping(torch.stack(items).sum(dim=0))

    def forward(self, x: torch.Tensor, time: Optional[torch.Tensor] = None, *,
                features: Optional[torch.Tensor] = None, channels_list: Optional[Sequence[torch.Tensor]] = None,
                embedding: Optional[torch.Tensor] = None, embedding_mask: Optional[torch.Tensor] = None,
                causal: bool = False) -> torch.Tensor:
        """``x`` ``[B, in_channels, T]``, ``time`` ``[B]`` -> ``[B, out_channels, T]``."""
        channels = self.get_channels(channels_list, layer=0)
        if self.use_stft:
            x = self.stft.encode1d(x)
        if channels is not None:
            x = torch.cat([x, channels], dim=1)
        mapping = self.get_mapping(time, features)
        x = self.to_in(x, mapping, causal=causal)
        skips_list: List[Any] = [x]
        for i, downsample in enumerate(self.downsamples):
            channels = self.get_channels(channels_list, layer=i + 1)
            x, skips = downsample(x, mapping=mapping, channels=channels, embedding=embedding,
                                  embedding_mask=embedding_mask, causal=causal)
            skips_list.append(skips)
        x = self.bottleneck(x, mapping=mapping, embedding=embedding, embedding_mask=embedding_mask, causal=causal)
        for upsample in self.upsamples:
            x = upsample(x, skips=skips_list.pop(), mapping=mapping, embedding=embedding,
                         embedding_mask=embedding_mask, causal=causal)
        x = x + skips_list.pop()
        x = self.to_out(x, mapping, causal=causal)
        return self.stft.decode1d(x) if self.use_stft else x


class FixedEmbedding(nn.Module):
    """Learned per-position embedding (``embedding`` = ``nn.Embedding(max_length, features)``) repeated
    over the batch of the given ``[B, N, ...]`` tensor."""

    def __init__(self, max_length: int, features: int) -> None:
        super().__init__()
        self.max_length = max_length
        self.embedding = nn.Embedding(max_length, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_size, length = x.shape[0], x.shape[1]
        if length > self.max_length:
            raise ValueError(f"embedding length {length} exceeds context_embedding_max_length {self.max_length}")
        fixed = self.embedding(torch.arange(length, device=x.device))
        return fixed[None].expand(batch_size, -1, -1)


def rand_bool(shape: Tuple[int, ...], proba: float, device: Any = None) -> torch.Tensor:
    """Boolean tensor, True with probability ``proba`` (no RNG used for 0 or 1)."""
    if proba == 1:
        return torch.ones(shape, device=device, dtype=torch.bool)
    if proba == 0:
        return torch.zeros(shape, device=device, dtype=torch.bool)
    return torch.bernoulli(torch.full(shape, proba, device=device)).to(torch.bool)


class UNetCFG1d(UNet1d):
    """:class:`UNet1d` with classifier-free guidance on the cross-attention ``embedding``.

    ``fixed_embedding`` is the learned null embedding: ``embedding_mask_proba`` swaps whole items'
    embeddings for it (CFG dropout in training), and ``embedding_scale != 1`` mixes the conditional and
    unconditional outputs ``uncond + (cond - uncond) * scale`` (optionally std-rescaled with ``scale_phi``).
    ``use_xattn_time`` appends a learned time token (``to_time_embedding``) to the embedding.
    """

    config_kwargs_to = ((UNet1d, ("context_embedding_features",)),)

    def __init__(self, context_embedding_max_length: int, context_embedding_features: int,
                 use_xattn_time: bool = False, **kwargs: Any) -> None:
        super().__init__(context_embedding_features=context_embedding_features, **kwargs)
        self.use_xattn_time = use_xattn_time
        if use_xattn_time:
            self.to_time_embedding = nn.Sequential(
                TimePositionalEmbedding(kwargs["channels"], context_embedding_features), nn.GELU())
            context_embedding_max_length += 1
        self.fixed_embedding = FixedEmbedding(context_embedding_max_length, context_embedding_features)

    def _batch_cfg(self, x: torch.Tensor, time: torch.Tensor, embedding: torch.Tensor,
                   embedding_mask: Optional[torch.Tensor], fixed_embedding: torch.Tensor,
                   negative_embedding: Optional[torch.Tensor], negative_embedding_mask: Optional[torch.Tensor],
                   kwargs: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(conditional, unconditional) outputs from one doubled-batch pass."""
        uncond = fixed_embedding
        if negative_embedding is not None:
            uncond = negative_embedding
            if negative_embedding_mask is not None:
                keep = negative_embedding_mask.to(torch.bool)[:, :, None]
                uncond = torch.where(keep, negative_embedding, fixed_embedding)
        features = kwargs.pop("features", None)
        channels_list = kwargs.pop("channels_list", None)
        batch_features = torch.cat([features, features]) if self.use_context_features and features is not None else None
        batch_channels = None
        if self.use_context_channels and channels_list is not None:
            batch_channels = [None if c is None else torch.cat([c, c]) for c in channels_list]
        batch_mask = torch.cat([embedding_mask, embedding_mask]) if embedding_mask is not None else None
        out = super().forward(torch.cat([x, x]), torch.cat([time, time]), embedding=torch.cat([embedding, uncond]),
                              embedding_mask=batch_mask, features=batch_features, channels_list=batch_channels,
                              **kwargs)
        cond_out, uncond_out = out.chunk(2, dim=0)
        return cond_out, uncond_out

    def forward(self, x: torch.Tensor, time: torch.Tensor, *, embedding: torch.Tensor,
                embedding_mask: Optional[torch.Tensor] = None, embedding_scale: float = 1.0,
                embedding_mask_proba: float = 0.0, batch_cfg: bool = False, rescale_cfg: bool = False,
                scale_phi: float = 0.4, negative_embedding: Optional[torch.Tensor] = None,
                negative_embedding_mask: Optional[torch.Tensor] = None, **kwargs: Any) -> torch.Tensor:
        """``kwargs`` (``features``, ``channels_list``, ``causal``) go to :meth:`UNet1d.forward`.
        Without ``batch_cfg`` the unconditional pass always uses the fixed embedding."""
        b, device = embedding.shape[0], embedding.device
        if self.use_xattn_time:
            embedding = torch.cat([embedding, self.to_time_embedding(time).unsqueeze(1)], dim=1)
            if embedding_mask is not None:
                embedding_mask = torch.cat([embedding_mask, embedding_mask.new_ones((b, 1))], dim=1)
        fixed_embedding = self.fixed_embedding(embedding)

        if embedding_mask_proba > 0.0:
            drop = rand_bool((b, 1, 1), proba=embedding_mask_proba, device=device)
            embedding = torch.where(drop, fixed_embedding, embedding)

        if embedding_scale == 1.0:
            return super().forward(x, time, embedding=embedding, embedding_mask=embedding_mask, **kwargs)

        if batch_cfg:
            out, out_masked = self._batch_cfg(x, time, embedding, embedding_mask, fixed_embedding,
                                              negative_embedding, negative_embedding_mask, dict(kwargs))
        else:
            out = super().forward(x, time, embedding=embedding, embedding_mask=embedding_mask, **kwargs)
            out_masked = super().forward(x, time, embedding=fixed_embedding, embedding_mask=embedding_mask, **kwargs)
        out_cfg = out_masked + (out - out_masked) * embedding_scale
        if not rescale_cfg:
            return out_cfg
        out_std = out.std(dim=1, keepdim=True)
        out_cfg_std = out_cfg.std(dim=1, keepdim=True)
        return scale_phi * (out_cfg * (out_std / out_cfg_std)) + (1 - scale_phi) * out_cfg


class UNetNCCA1d(UNet1d):
    """:class:`UNet1d` with noise channel conditioning augmentation: each ``channels_list`` item ``i`` is mixed
    with Gaussian noise, ``noise * s + item * (1 - s)`` with ``s = channels_scale[:, i] * channels_augmentation[:,
    i]``, and the scales, embedded by ``embedder`` (:class:`NumberEmbedder`) and summed over the items, are the
    U-Net's global ``features``.

    Args:
        context_features (int): size of the scale embedding (the U-Net's ``context_features``).
        **kwargs: the other :class:`UNet1d` arguments.
    """

    config_kwargs_to = ((UNet1d, ("context_features",)),)

    def __init__(self, context_features: int, **kwargs: Any) -> None:
        super().__init__(context_features=context_features, **kwargs)
        self.embedder = NumberEmbedder(features=context_features)

    @staticmethod
    def expand(x: Any, shape: Tuple[int, ...]) -> torch.Tensor:
        """``x`` (a number, nested sequence or tensor) broadcast to ``shape``."""
        x = x if torch.is_tensor(x) else torch.tensor(x)
        return x.expand(shape)

    def forward(self, x: torch.Tensor, time: Optional[torch.Tensor] = None, *,
                channels_list: Sequence[torch.Tensor], channels_augmentation: Any = False, channels_scale: Any = 0,
                features: Optional[torch.Tensor] = None, **kwargs: Any) -> torch.Tensor:
        """``channels_augmentation`` (bools) and ``channels_scale`` (in [0, 1]) broadcast to ``[B, len(channels_list)]``;
        other ``kwargs`` go to :meth:`UNet1d.forward`."""
        if features is not None:
            raise ValueError("UNetNCCA1d computes the global features from channels_scale; do not pass `features`")
        b, n = x.shape[0], len(channels_list)
        augmentation = self.expand(channels_augmentation, shape=(b, n)).to(x)
        scales = self.expand(channels_scale, shape=(b, n)).to(x)
        augmented = []
        for i, item in enumerate(channels_list):
            scale = (scales[:, i] * augmentation[:, i])[:, None, None]
            augmented.append(torch.randn_like(item) * scale + item * (1 - scale))
        scale_features = self.embedder(scales).sum(dim=1)
        return super().forward(x, time, channels_list=augmented, features=scale_features, **kwargs)


class UNetAll1d(UNetCFG1d, UNetNCCA1d):
    """Classifier-free guidance (:class:`UNetCFG1d`) and noise channel augmentation (:class:`UNetNCCA1d`) together;
    takes the arguments of both (``context_embedding_max_length``, ``context_embedding_features``,
    ``context_features`` and the :class:`UNet1d` ones)."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return UNetCFG1d.forward(self, *args, **kwargs)


_XUNETS = {"base": UNet1d, "all": UNetAll1d, "cfg": UNetCFG1d, "ncca": UNetNCCA1d}


def XUNet1d(type: str = "base", **kwargs: Any) -> UNet1d:  # noqa: N802,A002 (upstream's names)
    """Build the U-Net variant ``type``: ``"base"`` (:class:`UNet1d`), ``"cfg"``, ``"ncca"`` or ``"all"``."""
    if type not in _XUNETS:
        raise ValueError(f"Unknown XUNet1d type {type!r}; use one of {', '.join(map(repr, _XUNETS))}")
    return _XUNETS[type](**kwargs)
