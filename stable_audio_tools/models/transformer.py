"""ContinuousTransformer and TransformerBlock (see docs/diffusion.md#dit-the-diffusiontransformer), the backbone of
the DiT and TAAE.

State-dict names equal upstream's, including the persistent buffers (``rotary_pos_emb.inv_freq``,
``rope.inv_freq``, the bias-free LayerNorm's ``beta``), so released checkpoints load strictly.
Attention kernels, rotary embeddings and :class:`DynamicTanh` live in
:mod:`stable_audio_tools.models.attention` and are re-exported here.

Differences from upstream: see docs/compatibility.md#stable_audio_toolsmodelstransformer.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from einops.layers.torch import Rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import (
    Attention,
    DynamicTanh,
    RotaryEmbedding,
    apply_rotary_pos_emb,
    attend,
    maybe_compile,
    rotate_half,
    sliding_window_attention,
    sliding_window_mask,
)
from .common import gradients_recorded
from .config import ConfigWarning
from .transformer_utils import RunningInstanceNorm, create_causal_mask, or_reduce

__all__ = [
    "warn_if_cross_attention_ignores_context",
    "AbsolutePositionalEmbedding",
    "ScaledSinusoidalEmbedding",
    "RotaryEmbedding",
    "apply_rotary_pos_emb",
    "rotate_half",
    "LayerNorm",
    "DynamicTanh",
    "LayerScale",
    "GLU",
    "FeedForward",
    "Attention",
    "attend",
    "sliding_window_attention",
    "sliding_window_mask",
    "ConformerModule",
    "TransformerBlock",
    "ContinuousTransformer",
    "create_causal_mask",
    "or_reduce",
    "RunningInstanceNorm",
]


# --------------------------------------------------------------------------------------------
# absolute positional embeddings


class AbsolutePositionalEmbedding(nn.Module):
    """Learned positions: ``emb`` = Embedding(max_seq_len, dim), output scaled by ``dim ** -0.5``."""

    def __init__(self, dim: int, max_seq_len: int) -> None:
        super().__init__()
        self.scale = dim ** -0.5
        self.max_seq_len = max_seq_len
        self.emb = nn.Embedding(max_seq_len, dim)

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None,
                seq_start_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        seq_len = x.shape[1]
        if seq_len > self.max_seq_len:
            raise ValueError(f"sequence length {seq_len} exceeds the absolute positional embedding's maximum "
                             f"{self.max_seq_len}; raise abs_pos_emb_max_length")
        if pos is None:
            pos = torch.arange(seq_len, device=x.device)
        if seq_start_pos is not None:
            pos = (pos - seq_start_pos[..., None]).clamp(min=0)
        return self.emb(pos) * self.scale


class ScaledSinusoidalEmbedding(nn.Module):
    """Sinusoidal positions ``cat(sin, cos)`` times a learned ``scale`` (init ``dim ** -0.5``)."""

    def __init__(self, dim: int, theta: float = 10000) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"ScaledSinusoidalEmbedding needs an even dimension, got {dim}")
        self.scale = nn.Parameter(torch.ones(1) * dim ** -0.5)
        half_dim = dim // 2
        inv_freq = theta ** -(torch.arange(half_dim).float() / half_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None,
                seq_start_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        if pos is None:
            pos = torch.arange(x.shape[1], device=x.device)
        if seq_start_pos is not None:
            pos = pos - seq_start_pos[..., None]
        emb = pos.to(self.inv_freq.dtype)[..., None] * self.inv_freq
        return torch.cat((emb.sin(), emb.cos()), dim=-1) * self.scale


# --------------------------------------------------------------------------------------------
# norms, scales, feed-forward


class LayerNorm(nn.Module):
    """LayerNorm with param ``gamma`` and a persistent zero buffer ``beta`` (a param if ``bias``).

    ``fix_scale`` makes ``gamma`` a buffer; ``force_fp32`` normalises in float32 (always done under autocast).
    """

    def __init__(self, dim: int, bias: bool = False, fix_scale: bool = False, force_fp32: bool = False,
                 eps: float = 1e-5) -> None:
        super().__init__()
        if fix_scale:
            self.register_buffer("gamma", torch.ones(dim))
        else:
            self.gamma = nn.Parameter(torch.ones(dim))
        if bias:
            self.beta = nn.Parameter(torch.zeros(dim))
        else:
            self.register_buffer("beta", torch.zeros(dim))
        self.eps = eps
        self.force_fp32 = force_fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast = torch.is_autocast_enabled(x.device.type)
        if not (self.force_fp32 or autocast):
            return F.layer_norm(x, x.shape[-1:], weight=self.gamma, bias=self.beta, eps=self.eps)
        # float32 statistics, also under autocast (bf16 inference / bf16-mixed training)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = F.layer_norm(x.float(), x.shape[-1:], weight=self.gamma.float(), bias=self.beta.float(),
                               eps=self.eps)
        return out.to(x.dtype)


class LayerScale(nn.Module):
    """Per-channel learned residual-branch scale (param ``scale`` ``[dim]`` = init_val)."""

    def __init__(self, dim: int, init_val: float = 1e-5) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full([dim], init_val))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class GLU(nn.Module):
    """Gated linear unit: ``proj`` (Linear or Conv1d) to ``2·dim_out``; value ``*`` activation(gate)."""

    def __init__(self, dim_in: int, dim_out: int, activation: nn.Module, use_conv: bool = False,
                 conv_kernel_size: int = 3) -> None:
        super().__init__()
        self.act = activation
        self.use_conv = use_conv
        if use_conv:
            self.proj = nn.Conv1d(dim_in, dim_out * 2, conv_kernel_size, padding=conv_kernel_size // 2)
        else:
            self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_conv:
            x = self.proj(x.transpose(1, 2)).transpose(1, 2)
        else:
            x = self.proj(x)
        x, gate = x.chunk(2, dim=-1)
        return x * self.act(gate)


class FeedForward(nn.Module):
    """SwiGLU (default) or SiLU MLP; ``ff`` = Seq[linear_in, Identity|Rearrange, linear_out, Identity|Rearrange]."""

    def __init__(self, dim: int, dim_out: Optional[int] = None, mult: float = 4, no_bias: bool = False,
                 glu: bool = True, use_conv: bool = False, conv_kernel_size: int = 3,
                 zero_init_output: bool = True) -> None:
        super().__init__()
        inner_dim = int(dim * mult)
        dim_out = dim if dim_out is None else dim_out
        activation = nn.SiLU()
        pad = conv_kernel_size // 2
        if glu:
            linear_in = GLU(dim, inner_dim, activation)
        else:
            linear_in = nn.Sequential(
                Rearrange("b n d -> b d n") if use_conv else nn.Identity(),
                nn.Conv1d(dim, inner_dim, conv_kernel_size, padding=pad, bias=not no_bias) if use_conv
                else nn.Linear(dim, inner_dim, bias=not no_bias),
                Rearrange("b n d -> b d n") if use_conv else nn.Identity(),
                activation,
            )
        if use_conv:
            linear_out = nn.Conv1d(inner_dim, dim_out, conv_kernel_size, padding=pad, bias=not no_bias)
        else:
            linear_out = nn.Linear(inner_dim, dim_out, bias=not no_bias)
        if zero_init_output:
            nn.init.zeros_(linear_out.weight)
            if not no_bias:
                nn.init.zeros_(linear_out.bias)
        self.ff = nn.Sequential(
            linear_in,
            Rearrange("b d n -> b n d") if use_conv else nn.Identity(),
            linear_out,
            Rearrange("b n d -> b d n") if use_conv else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class ConformerModule(nn.Module):
    """Conformer convolution module on ``[b, n, dim]`` (LayerNorm instead of the usual BatchNorm)."""

    def __init__(self, dim: int, norm_kwargs: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        norm_kwargs = dict(norm_kwargs or {})
        self.dim = dim
        self.in_norm = LayerNorm(dim, **norm_kwargs)
        self.pointwise_conv = nn.Conv1d(dim, dim, kernel_size=1, bias=False)
        self.glu = GLU(dim, dim, nn.SiLU())
        self.depthwise_conv = nn.Conv1d(dim, dim, kernel_size=17, groups=dim, padding=8, bias=False)
        self.mid_norm = LayerNorm(dim, **norm_kwargs)
        self.swish = nn.SiLU()
        self.pointwise_conv_2 = nn.Conv1d(dim, dim, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_norm(x)
        x = self.pointwise_conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.glu(x)
        x = self.depthwise_conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.swish(self.mid_norm(x))
        return self.pointwise_conv_2(x.transpose(1, 2)).transpose(1, 2)


# --------------------------------------------------------------------------------------------
# blocks


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention / conformer, feed-forward.

    With ``global_cond_dim`` set and a ``global_cond`` ``[b, 6·dim]`` given, the self-attention and
    feed-forward branches are adaLN-modulated: ``(to_scale_shift_gate + global_cond).chunk(6)``
    gives scale/shift/gate for each; the branch output is multiplied by ``sigmoid(1 - gate)``.
    """

    #: keyword dicts passed on to the attention, feed-forward and norm layers (read by config validation)
    config_dict_kwargs = {"attn_kwargs": Attention, "ff_kwargs": FeedForward, "norm_kwargs": LayerNorm}

    def __init__(self, dim: int, dim_heads: int = 64, cross_attend: bool = False,
                 dim_context: Optional[int] = None, global_cond_dim: Optional[int] = None,
                 causal: bool = False, zero_init_branch_outputs: bool = True, conformer: bool = False,
                 layer_ix: int = -1, remove_norms: bool = False, add_rope: bool = False,
                 layer_scale: bool = False, attn_kwargs: Optional[Mapping[str, Any]] = None,
                 ff_kwargs: Optional[Mapping[str, Any]] = None,
                 norm_kwargs: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        attn_kwargs, ff_kwargs = dict(attn_kwargs or {}), dict(ff_kwargs or {})
        norm_kwargs = dict(norm_kwargs or {})
        self.dim = dim
        self.dim_heads = min(dim_heads, dim)
        self.cross_attend = cross_attend
        self.dim_context = dim_context
        self.causal = causal
        self.layer_ix = layer_ix
        self.add_rope = add_rope
        if layer_scale and zero_init_branch_outputs:
            zero_init_branch_outputs = False

        def norm() -> nn.Module:
            return DynamicTanh(dim) if remove_norms else LayerNorm(dim, **norm_kwargs)

        def scale() -> nn.Module:
            return LayerScale(dim) if layer_scale else nn.Identity()

        self.pre_norm = norm()
        self.self_attn = Attention(dim, dim_heads=self.dim_heads, causal=causal,
                                   zero_init_output=zero_init_branch_outputs, **attn_kwargs)
        self.self_attn_scale = scale()
        if cross_attend:
            self.cross_attend_norm = norm()
            self.cross_attn = Attention(dim, dim_heads=self.dim_heads, dim_context=dim_context, causal=causal,
                                        zero_init_output=zero_init_branch_outputs, **attn_kwargs)
            self.cross_attn_scale = scale()
        self.ff_norm = norm()
        self.ff = FeedForward(dim, zero_init_output=zero_init_branch_outputs, **ff_kwargs)
        self.ff_scale = scale()
        self.conformer = None
        if conformer:
            self.conformer = ConformerModule(dim, norm_kwargs=norm_kwargs)
            self.conformer_scale = scale()
        self.global_cond_dim = global_cond_dim
        if global_cond_dim is not None:
            self.to_scale_shift_gate = nn.Parameter(torch.randn(6 * dim) / dim ** 0.5)
        self.rope = RotaryEmbedding(self.dim_heads // 2) if add_rope else None

    def _cross_and_conformer(self, x: torch.Tensor, context: Optional[torch.Tensor], block_mask: Any,
                             score_mod: Any, sliding_window: Any, causal: Optional[bool]) -> torch.Tensor:
        if context is not None and self.cross_attend:
            x = x + self.cross_attn_scale(self.cross_attn(
                self.cross_attend_norm(x), context=context, causal=causal, flex_attention_block_mask=block_mask,
                flex_attention_score_mod=score_mod, flash_attn_sliding_window=sliding_window))
        if self.conformer is not None:
            x = x + self.conformer_scale(self.conformer(x))
        return x

    @maybe_compile
    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                global_cond: Optional[torch.Tensor] = None,
                rotary_pos_emb: Optional[Tuple[torch.Tensor, Any]] = None,
                self_attention_block_mask: Any = None, self_attention_score_mod: Any = None,
                cross_attention_block_mask: Any = None, cross_attention_score_mod: Any = None,
                self_attention_flash_sliding_window: Any = None,
                cross_attention_flash_sliding_window: Any = None,
                kv_cache: Optional[Dict[str, Any]] = None,
                cross_attn_causal: Optional[bool] = None) -> torch.Tensor:
        """``x`` ``[b, n, dim]`` → ``[b, n, dim]``; ``context`` ``[b, m, dim_context]`` for cross-attention.

        ``kv_cache``: optional dict of this block's cached self-attention keys/values (updated in place).
        ``cross_attn_causal``: overrides the block's ``causal`` flag for cross-attention only (``None``:
        as built, upstream's behaviour, where a causal block also masks the context causally).
        """
        if rotary_pos_emb is None and self.add_rope:
            past = kv_cache.get("length", 0) if kv_cache is not None else 0
            rotary_pos_emb = self.rope.forward_from_seq_len(past + x.shape[-2])
        self_kwargs = dict(rotary_pos_emb=rotary_pos_emb, flex_attention_block_mask=self_attention_block_mask,
                           flex_attention_score_mod=self_attention_score_mod,
                           flash_attn_sliding_window=self_attention_flash_sliding_window)
        if kv_cache is not None:
            self_kwargs["kv_cache"] = kv_cache
        cross_args = (cross_attention_block_mask, cross_attention_score_mod, cross_attention_flash_sliding_window,
                      cross_attn_causal)

        if self.global_cond_dim is not None and self.global_cond_dim > 0 and global_cond is not None:
            scale_self, shift_self, gate_self, scale_ff, shift_ff, gate_ff = (
                self.to_scale_shift_gate + global_cond).unsqueeze(1).chunk(6, dim=-1)
            residual = x
            x = self.pre_norm(x) * (1 + scale_self) + shift_self
            x = self.self_attn(x, **self_kwargs) * torch.sigmoid(1 - gate_self)
            x = self.self_attn_scale(x) + residual
            x = self._cross_and_conformer(x, context, *cross_args)
            residual = x
            x = self.ff_norm(x) * (1 + scale_ff) + shift_ff
            x = self.ff(x) * torch.sigmoid(1 - gate_ff)
            return self.ff_scale(x) + residual

        x = x + self.self_attn_scale(self.self_attn(self.pre_norm(x), **self_kwargs))
        x = self._cross_and_conformer(x, context, *cross_args)
        return x + self.ff_scale(self.ff(self.ff_norm(x)))


def warn_if_cross_attention_ignores_context(transformer: "ContinuousTransformer", model: str, heads: str,
                                            tokens: str, fix: str) -> None:
    """Emit one ConfigWarning when ``transformer``'s cross-attention outputs zeros whatever its context.

    ``model`` names the model ("the DiT"), ``heads`` the config keys that set the query heads,
    ``tokens`` those that set the token width, ``fix`` how to make the tokens count.
    """
    attention = transformer.cross_attention_ignoring_context()
    if attention is None:
        return
    width = attention.dim // attention.num_heads
    warnings.warn(
        f"{model}'s cross-attention ignores its conditioning tokens, so the prompt has no effect through "
        f"cross-attention: {heads} gives {attention.num_heads} heads of {width} features, and the "
        f"{attention.kv_heads * width}-wide tokens ({tokens}) make {attention.kv_heads} key/value heads, none of "
        f"which is shared with a query head (upstream builds the same model). Fix: {fix}; this changes weight "
        f"shapes, so a checkpoint trained with this layout must keep it", ConfigWarning, stacklevel=3)


class ContinuousTransformer(nn.Module):
    """Stack of :class:`TransformerBlock` on continuous ``[b, n, dim_in]`` sequences (see
    docs/diffusion.md#dit-the-diffusiontransformer).

    Children (registration order as upstream): ``layers``, ``project_in``/``project_out``
    (bias-free Linear or Identity), ``rotary_pos_emb`` (RotaryEmbedding(max(dim_heads // 2, 32))),
    ``memory_tokens``, ``pos_emb``, ``global_cond_embedder``. ``block_kwargs`` go to every block
    (``attn_kwargs``, ``ff_kwargs``, ``norm_kwargs``, ``layer_scale``, ``remove_norms``, ``add_rope``).
    """

    #: ``**block_kwargs`` go to every TransformerBlock (read by config validation)
    config_kwargs_to = ((TransformerBlock, ("dim", "dim_heads", "cross_attend", "dim_context", "global_cond_dim",
                                            "causal", "zero_init_branch_outputs", "conformer", "layer_ix")),)

    def __init__(self, dim: int, depth: int, *, dim_in: Optional[int] = None, dim_out: Optional[int] = None,
                 dim_heads: int = 64, cross_attend: bool = False, cond_token_dim: Optional[int] = None,
                 final_cross_attn_ix: int = -1, global_cond_dim: Optional[int] = None, causal: bool = False,
                 rotary_pos_emb: bool = True, zero_init_branch_outputs: bool = True, conformer: bool = False,
                 use_sinusoidal_emb: bool = False, use_abs_pos_emb: bool = False,
                 abs_pos_emb_max_length: int = 10000, num_memory_tokens: int = 0,
                 sliding_window: Optional[Tuple[int, int]] = None, **block_kwargs: Any) -> None:
        super().__init__()
        self.dim = dim
        self.depth = depth
        self.causal = causal
        self.layers = nn.ModuleList([])
        self.project_in = nn.Linear(dim_in, dim, bias=False) if dim_in is not None else nn.Identity()
        self.project_out = nn.Linear(dim, dim_out, bias=False) if dim_out is not None else nn.Identity()
        if rotary_pos_emb:
            rot_dim = max(dim_heads // 2, 32)
            head_dim = dim // max(dim // min(dim_heads, dim), 1)
            rotated = rot_dim + rot_dim % 2
            if rotated > head_dim:
                raise ValueError(f"rotary embeddings rotate {rotated} features but the attention heads have only "
                                 f"{head_dim}; use dim_heads >= 32 or rotary_pos_emb=False")
            self.rotary_pos_emb = RotaryEmbedding(rot_dim)
        else:
            self.rotary_pos_emb = None
        self.num_memory_tokens = num_memory_tokens
        if num_memory_tokens > 0:
            self.memory_tokens = nn.Parameter(torch.randn(num_memory_tokens, dim))
        self.use_sinusoidal_emb = use_sinusoidal_emb
        if use_sinusoidal_emb:
            self.pos_emb = ScaledSinusoidalEmbedding(dim)
        self.use_abs_pos_emb = use_abs_pos_emb
        if use_abs_pos_emb:
            self.pos_emb = AbsolutePositionalEmbedding(dim, abs_pos_emb_max_length + num_memory_tokens)
        self.global_cond_embedder = None
        if global_cond_dim is not None:
            self.global_cond_embedder = nn.Sequential(
                nn.Linear(global_cond_dim, dim), nn.SiLU(), nn.Linear(dim, dim * 6))
        self.final_cross_attn_ix = final_cross_attn_ix
        self.sliding_window = sliding_window
        for i in range(depth):
            should_cross_attend = cross_attend and (final_cross_attn_ix == -1 or i <= final_cross_attn_ix)
            self.layers.append(TransformerBlock(
                dim, dim_heads=dim_heads, cross_attend=should_cross_attend, dim_context=cond_token_dim,
                global_cond_dim=global_cond_dim, causal=causal, zero_init_branch_outputs=zero_init_branch_outputs,
                conformer=conformer, layer_ix=i, **block_kwargs))

    def cross_attention_ignoring_context(self) -> Optional[Attention]:
        """The first cross-attention layer with more key/value heads than query heads, else ``None``.

        Such a layer outputs zeros whatever its context, as upstream (see :class:`Attention`); the
        layers all share one layout, so the first one speaks for every cross-attending block.
        """
        return next((layer.cross_attn for layer in self.layers
                     if layer.cross_attend and layer.cross_attn.ignores_context), None)

    def forward(self, x: torch.Tensor, prepend_embeds: Optional[torch.Tensor] = None,
                global_cond: Optional[torch.Tensor] = None, return_info: bool = False,
                use_checkpointing: bool = True, exit_layer_ix: Optional[int] = None,
                kv_cache: Optional[List[Dict[str, Any]]] = None, **kwargs: Any):
        """``x`` ``[b, n, dim_in]`` → ``[b, n + prepend, dim_out]`` (``(x, info)`` if ``return_info``).

        ``kwargs`` (e.g. ``context``) go to every block. ``exit_layer_ix`` returns the hidden states
        after that layer (memory tokens removed, no ``project_out``). ``kv_cache``: one dict per layer
        (empty ones to start) for incremental decoding of causal models: ``x`` continues the cached
        sequence, its positions start after the cached ones and only its outputs are returned.
        """
        batch = x.shape[0]
        past = 0
        if kv_cache is not None:
            if len(kv_cache) != len(self.layers):
                raise ValueError(f"kv_cache has {len(kv_cache)} entries but the transformer has "
                                 f"{len(self.layers)} layers; pass one dict per layer")
            past = kv_cache[0].get("length", 0)
        x = x.to(next(self.parameters()).dtype)
        info: Dict[str, Any] = {"hidden_states": []}
        x = self.project_in(x)
        if prepend_embeds is not None:
            if prepend_embeds.shape[-1] != x.shape[-1]:
                raise ValueError(f"prepend_embeds have dimension {prepend_embeds.shape[-1]} but the transformer "
                                 f"sequence has {x.shape[-1]}")
            x = torch.cat((prepend_embeds, x), dim=-2)
        num_memory = self.num_memory_tokens if past == 0 else 0
        if num_memory > 0:
            x = torch.cat((self.memory_tokens.expand(batch, -1, -1), x), dim=1)
        rotary_pos_emb = None
        if self.rotary_pos_emb is not None:
            rotary_pos_emb = self.rotary_pos_emb.forward_from_seq_len(past + x.shape[1])
        if self.use_sinusoidal_emb or self.use_abs_pos_emb:
            positions = torch.arange(past, past + x.shape[1], device=x.device) if past else None
            x = x + self.pos_emb(x, pos=positions)
        if global_cond is not None and self.global_cond_embedder is not None:
            global_cond = self.global_cond_embedder(global_cond)

        checkpointed = (use_checkpointing and kv_cache is None
                        and gradients_recorded(self.layers, x, global_cond, *kwargs.values()))
        for layer_ix, layer in enumerate(self.layers):
            layer_kwargs = dict(rotary_pos_emb=rotary_pos_emb, global_cond=global_cond,
                                self_attention_flash_sliding_window=self.sliding_window, **kwargs)
            if kv_cache is not None:
                layer_kwargs["kv_cache"] = kv_cache[layer_ix]
            if checkpointed:
                x = checkpoint(layer, x, use_reentrant=False, **layer_kwargs)
            else:
                x = layer(x, **layer_kwargs)
            if return_info:
                info["hidden_states"].append(x)
            if exit_layer_ix is not None and layer_ix == exit_layer_ix:
                x = x[:, num_memory:, :]
                return (x, info) if return_info else x

        x = self.project_out(x[:, num_memory:, :])
        return (x, info) if return_info else x
