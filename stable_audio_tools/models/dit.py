"""DiT diffusion backbone (see docs/diffusion.md#dit-the-diffusiontransformer,
docs/inference.md#classifier-free-guidance): :class:`DiffusionTransformer` and its wrappers.

:class:`DiTWrapper` is the ``model`` child of a ``diffusion_cond`` model (checkpoint prefix
``model.model.*``), :class:`DiTUncondWrapper` the backbone of a ``diffusion_uncond`` ``dit`` model.
State-dict names, shapes, registration order and default numerics equal upstream's.

Classifier-free guidance runs the conditioned and the unconditioned branch as one batch of ``2B``.
Work that is identical in both halves (timestep and global embeddings, input concatenation, the
1x1 pre-convolution and patchify) is done once on ``B`` rows and duplicated; the conditioning
projections are bias-free, so the null branch's projected tokens are exact zeros and are not
recomputed. Results equal upstream's (which recomputes everything on ``2B`` rows) to float rounding.

Differences from upstream: see docs/compatibility.md#stable_audio_toolsmodelsdit.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import check_choice
from .blocks import FourierFeatures
from .diffusion_base import DIFFUSION_OBJECTIVES, ConditionedDiffusionModel, DiffusionModel
from .transformer import ContinuousTransformer, warn_if_cross_attention_ignores_context

__all__ = ["FourierFeatures", "DiffusionTransformer", "DiTWrapper", "DiTUncondWrapper"]

TRANSFORMER_TYPES = ("continuous_transformer",)
GLOBAL_COND_TYPES = ("prepend", "adaLN")
TIMESTEP_COND_TYPES = ("global", "input_concat")

Output = Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, Any]]]


def _mlp(dim_in: int, dim_out: int, bias: bool) -> nn.Sequential:
    """``Linear(dim_in, dim_out) → SiLU → Linear(dim_out, dim_out)`` (keys ``0.*`` and ``2.*``)."""
    return nn.Sequential(nn.Linear(dim_in, dim_out, bias=bias), nn.SiLU(), nn.Linear(dim_out, dim_out, bias=bias))


def _cat(*tensors: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Concatenate along the batch axis; ``None`` when the first tensor is ``None``."""
    return None if tensors[0] is None else torch.cat(tensors, dim=0)


def _cross_attn_score_mod(mask: torch.Tensor):
    """FlexAttention ``score_mod`` that gives keys with ``mask[b, key] == False`` zero weight."""

    def score_mod(score, batch, head, q_idx, kv_idx):
        return torch.where(mask[batch, kv_idx], score, -float("inf"))

    return score_mod


class DiffusionTransformer(nn.Module):
    """DiT: a :class:`ContinuousTransformer` over (patched) latent frames, conditioned on the timestep,
    cross-attention tokens, a global vector, prepended tokens and input-concatenated channels.

    Children (``E`` = ``embed_dim``): ``timestep_features`` (FourierFeatures(1, 256)),
    ``to_timestep_embed``, ``to_cond_embed`` (if ``cond_token_dim``), ``to_global_embed`` (if
    ``global_cond_dim``), ``to_prepend_embed`` (if ``prepend_cond_dim``), ``transformer``,
    ``preprocess_conv`` and ``postprocess_conv`` (zero-initialised 1x1 convs, residual).
    ``global_cond_type`` "prepend" appends the global vector (plus the timestep embedding when
    ``timestep_cond_type`` is "global") as one token after the prepend tokens; "adaLN" feeds it to
    the blocks' adaptive norms. ``timestep_cond_type`` "input_concat" instead concatenates a
    ``timestep_embed_dim``-channel timestep embedding to the input. ``use_cross_attn_mask`` (default
    False, as upstream) makes cross-attention honour ``cross_attn_cond_mask`` (see the module notes).
    Remaining ``kwargs`` go to ContinuousTransformer (and its blocks).
    """

    #: ``**kwargs`` go to ContinuousTransformer, minus what the DiT sets itself (read by config validation)
    config_kwargs_to = ((ContinuousTransformer, ("dim", "depth", "dim_heads", "dim_in", "dim_out", "cross_attend",
                                                 "cond_token_dim", "global_cond_dim")),)

    def __init__(self, io_channels: int = 32, patch_size: int = 1, embed_dim: int = 768, cond_token_dim: int = 0,
                 project_cond_tokens: bool = True, global_cond_dim: int = 0, project_global_cond: bool = True,
                 input_concat_dim: int = 0, prepend_cond_dim: int = 0, depth: int = 12, num_heads: int = 8,
                 transformer_type: str = "continuous_transformer", global_cond_type: str = "prepend",
                 timestep_cond_type: str = "global", timestep_embed_dim: Optional[int] = None,
                 diffusion_objective: str = "v", use_cross_attn_mask: bool = False, **kwargs: Any) -> None:
        super().__init__()
        check_choice(transformer_type, TRANSFORMER_TYPES, "transformer_type")
        check_choice(global_cond_type, GLOBAL_COND_TYPES, "global_cond_type")
        check_choice(timestep_cond_type, TIMESTEP_COND_TYPES, "timestep_cond_type")
        check_choice(diffusion_objective, DIFFUSION_OBJECTIVES, "diffusion_objective")
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"DiffusionTransformer patch_size must be a positive integer, got {patch_size!r}")

        self.cond_token_dim = cond_token_dim
        self.timestep_cond_type = timestep_cond_type
        timestep_features_dim = 256
        self.timestep_features = FourierFeatures(1, timestep_features_dim)
        if timestep_cond_type == "global":
            timestep_embed_dim = embed_dim
        else:
            if not timestep_embed_dim:
                raise ValueError("DiffusionTransformer timestep_cond_type 'input_concat' needs timestep_embed_dim "
                                 "(the number of timestep channels concatenated to the input)")
            input_concat_dim += timestep_embed_dim
        self.to_timestep_embed = _mlp(timestep_features_dim, timestep_embed_dim, bias=True)

        cond_embed_dim = 0
        if cond_token_dim > 0:
            cond_embed_dim = embed_dim if project_cond_tokens else cond_token_dim
            self.to_cond_embed = _mlp(cond_token_dim, cond_embed_dim, bias=False)
        self.global_cond_dim = global_cond_dim
        if global_cond_dim > 0:
            global_embed_dim = embed_dim if project_global_cond else global_cond_dim
            self.to_global_embed = _mlp(global_cond_dim, global_embed_dim, bias=False)
        self.prepend_cond_dim = prepend_cond_dim
        if prepend_cond_dim > 0:
            self.to_prepend_embed = _mlp(prepend_cond_dim, embed_dim, bias=False)

        self.io_channels = io_channels
        self.input_concat_dim = input_concat_dim
        dim_in = io_channels + input_concat_dim
        self.patch_size = patch_size
        self.transformer_type = transformer_type
        self.global_cond_type = global_cond_type
        self.transformer = ContinuousTransformer(
            dim=embed_dim, depth=depth, dim_heads=embed_dim // num_heads, dim_in=dim_in * patch_size,
            dim_out=io_channels * patch_size, cross_attend=cond_token_dim > 0, cond_token_dim=cond_embed_dim,
            global_cond_dim=embed_dim if global_cond_type == "adaLN" else None, **kwargs)
        key = "model.diffusion.config"
        warn_if_cross_attention_ignores_context(
            self.transformer, "the DiT", f"{key}.embed_dim {embed_dim} / {key}.num_heads {num_heads}",
            f"{key}.cond_token_dim {cond_token_dim}, the conditioners' output width model.conditioning.cond_dim, "
            f"with {key}.project_cond_tokens {str(project_cond_tokens).lower()}",
            f"set {key}.project_cond_tokens to true, or pick embed_dim / num_heads so that the head width splits "
            f"cond_token_dim into a divisor of num_heads heads (see docs/diffusion.md)")
        self.preprocess_conv = nn.Conv1d(dim_in, dim_in, 1, bias=False)
        nn.init.zeros_(self.preprocess_conv.weight)
        self.postprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        nn.init.zeros_(self.postprocess_conv.weight)
        self.diffusion_objective = diffusion_objective
        self.use_cross_attn_mask = use_cross_attn_mask

    # ---------------------------------------------------------------- embeddings (per batch row)

    def _embed_cross(self, cross_attn_cond: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if cross_attn_cond is None:
            return None
        if self.cond_token_dim <= 0:
            raise ValueError("cross_attn_cond was given but this DiT has no cross-attention; set cond_token_dim "
                             "in the DiT config or remove cross_attention_cond_ids")
        return self.to_cond_embed(cross_attn_cond)

    def _embed_prepend(self, prepend_cond: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if prepend_cond is None:
            return None
        if self.prepend_cond_dim <= 0:
            raise ValueError("prepend_cond was given but this DiT has no prepend projection; set prepend_cond_dim "
                             "in the DiT config or remove prepend_cond_ids")
        return self.to_prepend_embed(prepend_cond)

    def _embed_global(self, global_embed: Optional[torch.Tensor], t_embed: torch.Tensor) -> Optional[torch.Tensor]:
        """Projected global vector, plus the timestep embedding when it is a global condition."""
        if global_embed is not None:
            if self.global_cond_dim <= 0:
                raise ValueError("global_cond was given but this DiT has no global projection; set global_cond_dim "
                                 "in the DiT config or remove global_cond_ids")
            global_embed = self.to_global_embed(global_embed)
        if self.timestep_cond_type == "global":
            global_embed = t_embed if global_embed is None else global_embed + t_embed
        return global_embed

    def _input_tokens(self, x: torch.Tensor, input_concat_cond: Optional[torch.Tensor],
                      t_embed: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` → ``[B, T / patch, (C + concat) · patch]`` after the residual 1x1 pre-conv."""
        if x.shape[2] % self.patch_size:
            raise ValueError(f"the DiT input length {x.shape[2]} is not a multiple of patch_size {self.patch_size}; "
                             f"pad or crop the latent sequence")
        if input_concat_cond is not None:
            if input_concat_cond.shape[2] != x.shape[2]:
                input_concat_cond = F.interpolate(input_concat_cond, (x.shape[2],), mode="nearest")
            x = torch.cat([x, input_concat_cond], dim=1)
        if self.timestep_cond_type == "input_concat":
            x = torch.cat([x, t_embed.unsqueeze(2).expand(-1, -1, x.shape[2])], dim=1)
        if x.shape[1] != self.preprocess_conv.in_channels:
            raise ValueError(f"the DiT expects {self.preprocess_conv.in_channels} input channels (io_channels + "
                             f"input_concat_dim{' + timestep_embed_dim' if self.timestep_cond_type != 'global' else ''}"
                             f") but got {x.shape[1]}; check io_channels / input_concat_dim and the input_concat_ids")
        x = self.preprocess_conv(x) + x
        x = rearrange(x, "b c t -> b t c")
        if self.patch_size > 1:
            x = rearrange(x, "b (t p) c -> b t (c p)", p=self.patch_size)
        return x

    def _prepend_tokens(self, prepend: Optional[torch.Tensor],
                        global_embed: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if self.global_cond_type == "prepend" and global_embed is not None:
            token = global_embed.unsqueeze(1)
            return token if prepend is None else torch.cat([prepend, token], dim=1)
        return prepend

    # ---------------------------------------------------------------- transformer pass

    def _transform(self, tokens: torch.Tensor, context: Optional[torch.Tensor],
                   context_mask: Optional[torch.Tensor], prepend: Optional[torch.Tensor],
                   global_embed: Optional[torch.Tensor], return_info: bool, exit_layer_ix: Optional[int],
                   **kwargs: Any) -> Output:
        """Run the transformer on embedded inputs and undo the token layout (``[B, io, T]``)."""
        extra: Dict[str, Any] = {}
        if self.global_cond_type == "adaLN":
            extra["global_cond"] = global_embed
        if context is not None and context_mask is not None and self.use_cross_attn_mask:
            context, extra["cross_attention_score_mod"] = self._masked_context(tokens, context, context_mask)
        output = self.transformer(tokens, prepend_embeds=prepend, context=context, return_info=return_info,
                                  exit_layer_ix=exit_layer_ix, **extra, **kwargs)
        info: Dict[str, Any] = {}
        if return_info:
            output, info = output
        if exit_layer_ix is not None:
            return (output, info) if return_info else output
        prepend_length = 0 if prepend is None else prepend.shape[1]
        output = rearrange(output, "b t c -> b c t")[:, :, prepend_length:]
        if self.patch_size > 1:
            output = rearrange(output, "b (c p) t -> b c (t p)", p=self.patch_size)
        output = self.postprocess_conv(output) + output
        return (output, info) if return_info else output

    @staticmethod
    def _masked_context(tokens: torch.Tensor, context: torch.Tensor, mask: torch.Tensor):
        """Context and FlexAttention score_mod for ``use_cross_attn_mask``.

        Rows without any valid token get zero tokens and a full mask, so their cross-attention
        contributes exactly zero (the values are bias-free projections of zeros).
        """
        if torch.is_grad_enabled() and context.device.type == "cpu" and (tokens.requires_grad or context.requires_grad):
            raise ValueError("use_cross_attn_mask uses FlexAttention, which has no backward pass on CPU; train on a "
                             "GPU, run under torch.no_grad(), or set use_cross_attn_mask to false")
        mask = mask.to(device=context.device, dtype=torch.bool)
        if mask.shape != context.shape[:2]:
            raise ValueError(f"cross_attn_mask has shape {tuple(mask.shape)} but the cross-attention tokens have "
                             f"{tuple(context.shape[:2])} (batch, tokens)")
        empty = ~mask.any(dim=1)
        if bool(empty.any()):
            context = context.masked_fill(empty[:, None, None], 0.0)
            mask = mask | empty[:, None]
        return context, _cross_attn_score_mod(mask)

    def _forward(self, x: torch.Tensor, t: torch.Tensor, cross_attn_cond: Optional[torch.Tensor] = None,
                 cross_attn_cond_mask: Optional[torch.Tensor] = None,
                 input_concat_cond: Optional[torch.Tensor] = None, global_embed: Optional[torch.Tensor] = None,
                 prepend_cond: Optional[torch.Tensor] = None, return_info: bool = False,
                 exit_layer_ix: Optional[int] = None, **kwargs: Any) -> Output:
        """One conditioned pass (no CFG)."""
        t_embed = self.to_timestep_embed(self.timestep_features(t[:, None]))
        tokens = self._input_tokens(x, input_concat_cond, t_embed)
        global_embed = self._embed_global(global_embed, t_embed)
        prepend = self._prepend_tokens(self._embed_prepend(prepend_cond), global_embed)
        return self._transform(tokens, self._embed_cross(cross_attn_cond), cross_attn_cond_mask, prepend,
                               global_embed, return_info, exit_layer_ix, **kwargs)

    def _forward_cfg(self, x: torch.Tensor, t: torch.Tensor, cross_attn_cond: Optional[torch.Tensor],
                     cross_attn_cond_mask: Optional[torch.Tensor], negative_cross_attn_cond: Optional[torch.Tensor],
                     negative_cross_attn_mask: Optional[torch.Tensor], input_concat_cond: Optional[torch.Tensor],
                     global_embed: Optional[torch.Tensor], prepend_cond: Optional[torch.Tensor], cfg_scale: float,
                     scale_phi: float, return_info: bool, **kwargs: Any) -> Output:
        """Batched CFG: one ``2B`` pass, conditioned half first, null (or negative) half second."""
        t_embed = self.to_timestep_embed(self.timestep_features(t[:, None]))
        tokens = self._input_tokens(x, input_concat_cond, t_embed)
        global_embed = self._embed_global(global_embed, t_embed)

        context = context_mask = None
        if cross_attn_cond is not None:
            cond_tokens = self._embed_cross(cross_attn_cond)
            uncond_mask = cross_attn_cond_mask
            if negative_cross_attn_cond is not None:
                if negative_cross_attn_cond.shape != cross_attn_cond.shape:
                    raise ValueError(f"negative_cross_attn_cond has shape {tuple(negative_cross_attn_cond.shape)} "
                                     f"but cross_attn_cond has {tuple(cross_attn_cond.shape)}; encode the negative "
                                     f"prompt with the same conditioners and token length")
                if negative_cross_attn_mask is not None:
                    keep = negative_cross_attn_mask.to(torch.bool).unsqueeze(2)
                    negative_cross_attn_cond = torch.where(keep, negative_cross_attn_cond,
                                                           torch.zeros_like(negative_cross_attn_cond))
                    uncond_mask = negative_cross_attn_mask
                elif cross_attn_cond_mask is not None:
                    uncond_mask = torch.ones_like(cross_attn_cond_mask)
                uncond_tokens = self._embed_cross(negative_cross_attn_cond)
            else:
                uncond_tokens = torch.zeros_like(cond_tokens)  # the bias-free projection of zero tokens
            context = torch.cat([cond_tokens, uncond_tokens], dim=0)
            if cross_attn_cond_mask is not None and uncond_mask is not None:
                context_mask = torch.cat([cross_attn_cond_mask.to(torch.bool), uncond_mask.to(torch.bool)], dim=0)

        prepend = self._embed_prepend(prepend_cond)
        if prepend is not None:
            prepend = torch.cat([prepend, torch.zeros_like(prepend)], dim=0)
        global_embed = _cat(global_embed, global_embed)
        prepend = self._prepend_tokens(prepend, global_embed)

        batch_output = self._transform(torch.cat([tokens, tokens], dim=0), context, context_mask, prepend,
                                       global_embed, return_info, None, **kwargs)
        info: Dict[str, Any] = {}
        if return_info:
            batch_output, info = batch_output
        cond_output, uncond_output = torch.chunk(batch_output, 2, dim=0)
        output = uncond_output + (cond_output - uncond_output) * cfg_scale
        if scale_phi != 0.0:
            cond_std = cond_output.std(dim=1, keepdim=True)
            cfg_std = output.std(dim=1, keepdim=True)
            output = scale_phi * (output * (cond_std / cfg_std)) + (1 - scale_phi) * output
        if return_info:
            info["uncond_output"] = uncond_output
            return output, info
        return output

    # ---------------------------------------------------------------- public forward

    def forward(self, x: torch.Tensor, t: torch.Tensor, cross_attn_cond: Optional[torch.Tensor] = None,
                cross_attn_cond_mask: Optional[torch.Tensor] = None,
                negative_cross_attn_cond: Optional[torch.Tensor] = None,
                negative_cross_attn_mask: Optional[torch.Tensor] = None,
                input_concat_cond: Optional[torch.Tensor] = None, global_embed: Optional[torch.Tensor] = None,
                negative_global_embed: Optional[torch.Tensor] = None, prepend_cond: Optional[torch.Tensor] = None,
                prepend_cond_mask: Optional[torch.Tensor] = None, cfg_scale: float = 1.0,
                cfg_dropout_prob: float = 0.0, cfg_interval: Sequence[float] = (0, 1), causal: bool = False,
                scale_phi: float = 0.0, mask: Optional[torch.Tensor] = None, return_info: bool = False,
                exit_layer_ix: Optional[int] = None, **kwargs: Any) -> Output:
        """Predict the diffusion target for ``x`` ``[B, io_channels, T]`` at times ``t`` ``[B]``.

        Conditioning: ``cross_attn_cond`` ``[B, M, cond_token_dim]`` (+ ``cross_attn_cond_mask``
        ``[B, M]``, used only with ``use_cross_attn_mask``), ``global_embed`` ``[B, global_cond_dim]``,
        ``prepend_cond`` ``[B, P, prepend_cond_dim]``, ``input_concat_cond`` ``[B, C', T']`` (nearest-
        resampled to ``T``). ``prepend_cond_mask``, ``negative_global_embed`` and the padding ``mask``
        are accepted and unused, as upstream.

        ``cfg_dropout_prob`` (training, only with ``cfg_scale == 1``): per item, replace all
        cross-attention tokens by zeros with that probability, and independently the prepend tokens.
        ``cfg_scale != 1`` with cross-attention or prepend conditioning and ``cfg_interval[0] <= σ <=
        cfg_interval[1]`` (σ of the first item: ``sin(πt/2)`` for "v", ``t`` for rectified flow):
        batched CFG against zero tokens (or ``negative_cross_attn_cond``, its masked tokens zeroed),
        optionally rescaled by ``scale_phi``; ``info["uncond_output"]`` holds the null branch.
        ``return_info`` returns ``(output, info)`` with ``info["hidden_states"]`` (per-layer outputs).
        ``exit_layer_ix`` returns that layer's raw hidden states ``[B, prepend + T/patch, embed_dim]``
        (CFG and CFG dropout bypassed).
        """
        if causal:
            raise ValueError("DiffusionTransformer does not support causal=True")
        dtype = next(self.parameters()).dtype

        def cast(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if tensor is None else tensor.to(dtype)

        x, t = x.to(dtype), t.to(dtype)
        cross_attn_cond, negative_cross_attn_cond = cast(cross_attn_cond), cast(negative_cross_attn_cond)
        input_concat_cond, global_embed, prepend_cond = cast(input_concat_cond), cast(global_embed), cast(prepend_cond)
        if cross_attn_cond_mask is not None:
            cross_attn_cond_mask = cross_attn_cond_mask.bool() if self.use_cross_attn_mask else None

        conditioning = dict(cross_attn_cond=cross_attn_cond, cross_attn_cond_mask=cross_attn_cond_mask,
                            input_concat_cond=input_concat_cond, global_embed=global_embed)
        if exit_layer_ix is not None:
            return self._forward(x, t, prepend_cond=prepend_cond, return_info=return_info,
                                 exit_layer_ix=exit_layer_ix, **conditioning, **kwargs)

        if cfg_dropout_prob > 0.0 and cfg_scale == 1.0:
            conditioning["cross_attn_cond"] = self._cfg_dropout(cross_attn_cond, cfg_dropout_prob)
            prepend_cond = self._cfg_dropout(prepend_cond, cfg_dropout_prob)

        if (cfg_scale != 1.0 and (conditioning["cross_attn_cond"] is not None or prepend_cond is not None)
                and self._in_cfg_interval(t, cfg_interval)):
            return self._forward_cfg(x, t, negative_cross_attn_cond=negative_cross_attn_cond,
                                     negative_cross_attn_mask=negative_cross_attn_mask, prepend_cond=prepend_cond,
                                     cfg_scale=cfg_scale, scale_phi=scale_phi, return_info=return_info,
                                     **conditioning, **kwargs)
        return self._forward(x, t, prepend_cond=prepend_cond, return_info=return_info, **conditioning, **kwargs)

    @staticmethod
    def _cfg_dropout(cond: Optional[torch.Tensor], prob: float) -> Optional[torch.Tensor]:
        """Zero whole items of ``cond`` with probability ``prob`` (one Bernoulli draw per item)."""
        if cond is None:
            return None
        drop = torch.bernoulli(torch.full((cond.shape[0], 1, 1), prob, device=cond.device)).to(torch.bool)
        return torch.where(drop, torch.zeros_like(cond), cond)

    def _in_cfg_interval(self, t: torch.Tensor, cfg_interval: Sequence[float]) -> bool:
        sigma = torch.sin(t * math.pi / 2) if self.diffusion_objective == "v" else t
        return bool(cfg_interval[0] <= sigma[0] <= cfg_interval[1])


class DiTWrapper(ConditionedDiffusionModel):
    """``dit`` backbone of ``diffusion_cond`` models: ``model`` = DiffusionTransformer(*args, **kwargs).

    Maps the conditioned-wrapper keywords onto the DiT's (``cross_attn_mask`` →
    ``cross_attn_cond_mask``, ``global_cond`` → ``global_embed``). ``batch_cfg`` must be True;
    ``rescale_cfg``, ``negative_input_concat_cond`` and ``negative_global_cond`` are ignored, as
    upstream (CFG rescaling is ``scale_phi``; global and input-concat conditioning are kept in the
    null branch). Parameters are not rescaled at init (see docs/diffusion.md).
    """

    config_kwargs_to = ((DiffusionTransformer, ()),)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        model = DiffusionTransformer(*args, **kwargs)
        super().__init__(supports_cross_attention=model.cond_token_dim > 0,
                         supports_input_concat=model.input_concat_dim > 0,
                         supports_global_cond=model.global_cond_dim > 0,
                         supports_prepend_cond=model.prepend_cond_dim > 0)
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, cross_attn_cond: Optional[torch.Tensor] = None,
                cross_attn_mask: Optional[torch.Tensor] = None,
                negative_cross_attn_cond: Optional[torch.Tensor] = None,
                negative_cross_attn_mask: Optional[torch.Tensor] = None,
                input_concat_cond: Optional[torch.Tensor] = None,
                negative_input_concat_cond: Optional[torch.Tensor] = None,
                global_cond: Optional[torch.Tensor] = None, negative_global_cond: Optional[torch.Tensor] = None,
                prepend_cond: Optional[torch.Tensor] = None, prepend_cond_mask: Optional[torch.Tensor] = None,
                cfg_scale: float = 1.0, cfg_dropout_prob: float = 0.0, cfg_interval: Sequence[float] = (0.0, 1.0),
                batch_cfg: bool = True, rescale_cfg: bool = False, scale_phi: float = 0.0,
                mask: Optional[torch.Tensor] = None, return_info: bool = False, exit_layer_ix: Optional[int] = None,
                **kwargs: Any) -> Output:
        """See :meth:`DiffusionTransformer.forward`."""
        if not batch_cfg:
            raise ValueError("DiTWrapper always runs classifier-free guidance batched; pass batch_cfg=True")
        return self.model(x, t, cross_attn_cond=cross_attn_cond, cross_attn_cond_mask=cross_attn_mask,
                          negative_cross_attn_cond=negative_cross_attn_cond,
                          negative_cross_attn_mask=negative_cross_attn_mask, input_concat_cond=input_concat_cond,
                          global_embed=global_cond, prepend_cond=prepend_cond, prepend_cond_mask=prepend_cond_mask,
                          cfg_scale=cfg_scale, cfg_dropout_prob=cfg_dropout_prob, cfg_interval=cfg_interval,
                          scale_phi=scale_phi, mask=mask, return_info=return_info, exit_layer_ix=exit_layer_ix,
                          **kwargs)


class DiTUncondWrapper(DiffusionModel):
    """``dit`` backbone of ``diffusion_uncond`` models: ``model`` = DiffusionTransformer(io_channels=in_channels).

    Parameters are multiplied by 0.5 at init (see docs/diffusion.md). ``forward(x, t, **kwargs)`` calls the DiT.
    """

    config_kwargs_to = ((DiffusionTransformer, ("io_channels",)),)

    def __init__(self, in_channels: int, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        if "io_channels" in kwargs:
            raise ValueError("DiTUncondWrapper takes the channel count as in_channels; remove io_channels")
        self.model = DiffusionTransformer(*args, io_channels=in_channels, **kwargs)
        self.io_channels = in_channels
        with torch.no_grad():
            for param in self.model.parameters():
                param.mul_(0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> Output:
        """See :meth:`DiffusionTransformer.forward`."""
        return self.model(x, t, **kwargs)
