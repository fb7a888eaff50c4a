"""Backbones of the audio language model (see docs/training.md#audio-language-models-model_type-lm).

A backbone maps the summed codebook embeddings ``[B, S, embed_dim]`` (plus conditioning) to hidden
states ``[B, S, embed_dim]``; patterns, embeddings and output heads live in
:class:`~stable_audio_tools.models.lm.AudioLanguageModel`.

* :class:`ContinuousTransformerAudioLMBackbone` (``lm.type = "continuous_transformer"``): a causal
  :class:`~stable_audio_tools.models.transformer.ContinuousTransformer` (child ``model``, so keys
  ``lm.backbone.model.*``), ``to_prepend_embed`` (Linear-SiLU-Linear, bias-free) when
  ``prepend_cond_dim > 0`` and ``to_cross_attn_embed`` (same shape) when ``project_cross_attn_cond``.
  Supports incremental decoding with a :class:`KVCache`.
* :class:`XTransformersAudioLMBackbone` (``lm.type = "x_transformers"``): an x-transformers
  ``Decoder`` (flash attention, rotary, SwiGLU); needs ``pip install x-transformers``.

Fixes over upstream: see docs/compatibility.md#stable_audio_toolsmodelslm_backbone.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .transformer import ContinuousTransformer, warn_if_cross_attention_ignores_context

__all__ = ["KVCache", "AudioLMBackbone", "ContinuousTransformerAudioLMBackbone", "XTransformersAudioLMBackbone"]


def _projection(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim_out, bias=False), nn.SiLU(), nn.Linear(dim_out, dim_out, bias=False))


class KVCache:
    """Self-attention keys/values of every layer for the positions processed so far."""

    def __init__(self, num_layers: int) -> None:
        self.layers: List[Dict[str, Any]] = [{} for _ in range(num_layers)]

    @property
    def length(self) -> int:
        """Cached positions (prepend and memory tokens included)."""
        return self.layers[0].get("length", 0) if self.layers else 0

    def reset(self) -> None:
        for layer in self.layers:
            layer.clear()


class AudioLMBackbone(nn.Module):
    """Interface: ``forward(x, cross_attn_cond, prepend_cond, prepend_cond_mask, global_cond, mask, kv_cache)``.

    ``supports_kv_cache`` says whether :meth:`init_kv_cache` returns a cache for incremental decoding.
    """

    supports_kv_cache = False

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim

    def init_kv_cache(self) -> Optional[KVCache]:
        """A fresh cache for incremental decoding, or ``None`` when the backbone has no cache support."""
        return None

    def forward(self, x: torch.Tensor, cross_attn_cond: Optional[torch.Tensor] = None,
                prepend_cond: Optional[torch.Tensor] = None, prepend_cond_mask: Optional[torch.Tensor] = None,
                global_cond: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                kv_cache: Optional[KVCache] = None) -> torch.Tensor:
        raise NotImplementedError


class ContinuousTransformerAudioLMBackbone(AudioLMBackbone):
    """Causal :class:`ContinuousTransformer` backbone (``dim = dim_in = dim_out = embed_dim``).

    ``cross_attn_cond_dim > 0`` enables cross-attention, on tokens projected to ``embed_dim`` if
    ``project_cross_attn_cond`` else on the raw ``cross_attn_cond_dim``-wide tokens;
    ``prepend_cond_dim > 0`` projects prepend tokens to ``embed_dim``; ``kwargs`` go to the
    ContinuousTransformer (``depth``, ``dim_heads``, ``global_cond_dim``, ``attn_kwargs``...).
    """

    supports_kv_cache = True

    #: ``**kwargs`` go to ContinuousTransformer, minus what the backbone sets itself (read by config validation)
    config_kwargs_to = ((ContinuousTransformer, ("dim", "dim_in", "dim_out", "cross_attend", "cond_token_dim",
                                                 "causal")),)

    def __init__(self, embed_dim: int, cross_attn_cond_dim: int = 0, prepend_cond_dim: int = 0,
                 project_cross_attn_cond: bool = False, **kwargs: Any) -> None:
        super().__init__(embed_dim)
        for reserved in ("dim", "dim_in", "dim_out", "cross_attend", "cond_token_dim", "causal"):
            if reserved in kwargs:
                raise ValueError(f"'{reserved}' is set by the LM backbone itself; remove it from the lm config "
                                 "(use embed_dim / cross_attn_cond_dim)")
        self.model = ContinuousTransformer(
            dim=embed_dim, dim_in=embed_dim, dim_out=embed_dim, cross_attend=cross_attn_cond_dim > 0,
            cond_token_dim=embed_dim if project_cross_attn_cond else cross_attn_cond_dim, causal=True, **kwargs)
        key, dim_heads = "model.lm.config", kwargs.get("dim_heads", 64)
        warn_if_cross_attention_ignores_context(
            self.model, "the LM backbone", f"{key}.embed_dim {embed_dim} / {key}.dim_heads {dim_heads}",
            f"{key}.cross_attn_cond_dim {cross_attn_cond_dim}, the conditioners' output width "
            f"model.conditioning.cond_dim, with {key}.project_cross_attn_cond false",
            f"set {key}.project_cross_attn_cond to true, or a dim_heads that splits cross_attn_cond_dim into a "
            f"divisor of embed_dim / dim_heads heads")
        self.prepend_cond_dim = prepend_cond_dim
        self.cross_attn_cond_dim = cross_attn_cond_dim
        self.to_prepend_embed = _projection(prepend_cond_dim, embed_dim) if prepend_cond_dim > 0 else None
        if cross_attn_cond_dim > 0 and project_cross_attn_cond:
            self.to_cross_attn_embed = _projection(cross_attn_cond_dim, embed_dim)
        else:
            self.to_cross_attn_embed = nn.Identity()

    def init_kv_cache(self) -> KVCache:
        return KVCache(len(self.model.layers))

    def forward(self, x: torch.Tensor, cross_attn_cond: Optional[torch.Tensor] = None,
                prepend_cond: Optional[torch.Tensor] = None, prepend_cond_mask: Optional[torch.Tensor] = None,
                global_cond: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                kv_cache: Optional[KVCache] = None) -> torch.Tensor:
        """``x`` ``[B, S, embed_dim]`` -> ``[B, S, embed_dim]`` (prepend positions dropped).

        With ``kv_cache``, ``x`` continues the cached positions; prepend tokens are only used on
        the first call (when the cache is empty), as they sit before the audio tokens.
        """
        first_call = kv_cache is None or kv_cache.length == 0
        prepend_length = 0
        if prepend_cond is not None and first_call:
            if self.to_prepend_embed is None:
                raise ValueError("prepend conditioning was given but the LM backbone was built with "
                                 "prepend_cond_dim=0; set model.lm.config.prepend_cond_dim")
            prepend_cond = self.to_prepend_embed(prepend_cond.to(x.dtype))
            prepend_length = prepend_cond.shape[1]
        else:
            prepend_cond = None
        if cross_attn_cond is not None:
            cross_attn_cond = self.to_cross_attn_embed(cross_attn_cond.to(x.dtype))
        out = self.model(x, prepend_embeds=prepend_cond, global_cond=global_cond, context=cross_attn_cond,
                         cross_attn_causal=False, kv_cache=None if kv_cache is None else kv_cache.layers)
        return out[:, prepend_length:, :]


class XTransformersAudioLMBackbone(AudioLMBackbone):
    """x-transformers ``ContinuousTransformerWrapper`` around a ``Decoder(dim=embed_dim, attn_flash,
    rotary_pos_emb, ff_swish, ff_glu, zero_init_branch_output, cross_attend=cross_attn_cond_dim > 0,
    **kwargs)`` (child ``model``); ``to_prepend_embed`` / ``to_cross_attn_embed`` project conditioning
    to ``embed_dim`` when the respective dims are > 0. No KV cache (generation recomputes the prefix).
    """

    def __init__(self, embed_dim: int, cross_attn_cond_dim: int = 0, prepend_cond_dim: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(embed_dim)
        try:
            from x_transformers import ContinuousTransformerWrapper, Decoder
        except ImportError as err:
            raise ImportError("the 'x_transformers' LM backbone needs the x-transformers package: "
                              "pip install x-transformers (or use lm.type 'continuous_transformer')") from err
        self.model = ContinuousTransformerWrapper(
            dim_in=embed_dim, dim_out=embed_dim, max_seq_len=0, use_abs_pos_emb=False,
            attn_layers=Decoder(dim=embed_dim, attn_flash=True, cross_attend=cross_attn_cond_dim > 0,
                                zero_init_branch_output=True, rotary_pos_emb=True, ff_swish=True, ff_glu=True,
                                **kwargs))
        self.to_prepend_embed = _projection(prepend_cond_dim, embed_dim) if prepend_cond_dim > 0 else None
        self.to_cross_attn_embed = _projection(cross_attn_cond_dim, embed_dim) if cross_attn_cond_dim > 0 else None

    def forward(self, x: torch.Tensor, cross_attn_cond: Optional[torch.Tensor] = None,
                prepend_cond: Optional[torch.Tensor] = None, prepend_cond_mask: Optional[torch.Tensor] = None,
                global_cond: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                kv_cache: Optional[KVCache] = None) -> torch.Tensor:
        """As upstream: padding and prepend masks go to x-transformers; ``global_cond`` is unused."""
        if kv_cache is not None:
            raise ValueError("the x_transformers LM backbone has no KV cache; generate with use_cache=False")
        prepend_length = 0
        if prepend_cond is not None:
            if self.to_prepend_embed is None:
                raise ValueError("prepend conditioning was given but the LM backbone was built with "
                                 "prepend_cond_dim=0; set model.lm.config.prepend_cond_dim")
            prepend_cond = self.to_prepend_embed(prepend_cond)
            prepend_length = prepend_cond.shape[1]
            if prepend_cond_mask is not None:
                prepend_cond_mask = prepend_cond_mask.bool()
        else:
            prepend_cond_mask = None
        if cross_attn_cond is not None and self.to_cross_attn_embed is not None:
            cross_attn_cond = self.to_cross_attn_embed(cross_attn_cond)
        if mask is not None:
            mask = mask.bool()
        out = self.model(x, mask=mask, context=cross_attn_cond, prepend_embeds=prepend_cond,
                         prepend_mask=prepend_cond_mask)
        return out[:, prepend_length:, :]
