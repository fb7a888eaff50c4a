"""Adapter layers: :class:`LowRankAdapter` (the trainable update of one weight) and the adapted ``nn.Linear`` /
``nn.Conv1d`` replacements :class:`AdaptedLinear` / :class:`AdaptedConv1d` that hold them.

Weights are handled as 2-D ``fan_out × fan_in`` matrices; a Conv1d kernel ``(C_out, C_in/groups, k)`` is flattened
to ``(C_out, C_in/groups·k)``.

**The stacking rule.** Each adapter ``i`` defines a full-strength weight change ``D_i = W_i(W0) - W0`` computed
against the layer's *base* weight ``W0`` (never against another adapter's output), and the layer computes, per
batch element ``e``::

    y_e = base(x_e) + sum_i g_i(e) · (D_i applied to x_e),    g_i(e) = strength_i · [sigma_e in sigma_range_i]

so adapters are order independent, strength interpolates linearly between the base weight and the adapter's
full-strength weight (for DoRA/BoRA too), strength 0 (or a sigma outside the range) leaves the base output
bit-exact, and merging computes ``W0 + sum_i strength_i · D_i`` (see :func:`.manage.merge_adapters`).

``W_i`` per type (``s = alpha / rank``, ``Δ = B·A`` for LoRA, ``U·M·Vᵀ`` for ``-xs``, ``V = W0 + s·Δ``):
``lora``: ``V``; ``dora-rows``: each row of ``V`` normalised and scaled by ``magnitude[row]``; ``dora-cols``: each
column normalised and scaled by ``magnitude[col]``; ``bora``: rows by ``magnitude_r``, then columns by
``magnitude_c``. Magnitudes start at the matching norms of ``W0`` and ``B`` / ``M`` at zero, so a new adapter is
the identity. The DoRA norms are not detached (exact gradients).

The sigma gate reads :class:`SigmaState`, which the diffusion backbone's forward pre-hook fills with the
per-element noise level of the current call (see :mod:`.manage`). Under batched CFG the backbone runs ``k·B``
rows (conditioned half first, then the null half): row ``j`` gets ``sigma[j % B]``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import AdapterConfig, split_type

__all__ = ["SigmaState", "LowRankAdapter", "AdaptedLinear", "AdaptedConv1d", "ADAPTED_TYPES", "adapt_layer",
           "restore_layer", "svd_bases", "flat_weight"]

_EPS = 1e-12
Gate = Union[float, torch.Tensor]


class SigmaState:
    """The per-element noise level ``sigma`` ``[B]`` (in [0, 1]) of the diffusion backbone's latest call.

    It is kept after the call returns, so gradient-checkpoint recomputation during backward sees the same values.
    """

    __slots__ = ("sigma",)

    def __init__(self) -> None:
        self.sigma: Optional[torch.Tensor] = None


def flat_weight(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as a 2-D ``fan_out × fan_in`` view."""
    return layer.weight.reshape(layer.weight.shape[0], -1)


def svd_bases(weight: torch.Tensor, rank: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top-``rank`` left/right singular vectors ``U`` ``(fan_out, r)``, ``V`` ``(fan_in, r)`` of a 2-D weight, in
    float32, with signs fixed so that the largest-magnitude entry of each ``U`` column is positive (the bases are
    then reproducible from the same weight, as Stable Audio 3 computes them)."""
    u, _, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
    u, v = u[:, :rank], vh[:rank].T
    pivot = u.gather(0, u.abs().argmax(dim=0, keepdim=True))
    signs = torch.where(pivot < 0, -1.0, 1.0)
    return (u * signs).contiguous(), (v * signs).contiguous()


class LowRankAdapter(nn.Module):
    """One adapter on one weight.

    Args:
        config (AdapterConfig): type, rank, alpha and dropout (include/exclude/targets are not used here).
        base_weight (torch.Tensor): the layer's 2-D base weight ``fan_out × fan_in``; sets the shapes, the
            initial magnitudes and (``-xs``) the frozen SVD bases. Not stored.
        strength (float): multiplier of the adapter's weight change. Default 1.0.
        sigma_range (tuple[float, float] | None): the adapter is active only for batch elements whose noise
            level lies in ``[low, high]``; None = always. Default None.

    Parameters: ``lora_A`` ``(r, fan_in)`` / ``lora_B`` ``(fan_out, r)`` (LoRA deltas) or ``M_xs`` ``(r, r)`` with
    frozen, non-persistent buffers ``U`` / ``V`` (``-xs``); ``magnitude`` (``dora-rows``: ``(fan_out,)``,
    ``dora-cols``: ``(fan_in,)``) or ``magnitude_r`` / ``magnitude_c`` (``bora``).
    """

    def __init__(self, config: AdapterConfig, base_weight: torch.Tensor, strength: float = 1.0,
                 sigma_range: Optional[Tuple[float, float]] = None) -> None:
        super().__init__()
        self.adapter_type = config.type
        self.delta_kind, self.norm = split_type(config.type)
        fan_out, fan_in = base_weight.shape
        rank = config.rank
        if self.delta_kind == "xs" and rank > min(fan_out, fan_in):
            raise ValueError(f"lora-xs rank {rank} exceeds min(fan_out, fan_in) = {min(fan_out, fan_in)} of a "
                             f"{fan_out}x{fan_in} weight; lower the rank or exclude this layer")
        self.rank, self.alpha, self.scale = rank, config.alpha, config.alpha / rank
        self.fan_out, self.fan_in = fan_out, fan_in
        self.strength = float(strength)
        self.sigma_range = sigma_range
        weight = base_weight.detach().float()
        device = base_weight.device
        if self.delta_kind == "lora":
            self.lora_A = nn.Parameter(torch.empty(rank, fan_in, device=device))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.lora_B = nn.Parameter(torch.zeros(fan_out, rank, device=device))
        else:
            u, v = svd_bases(weight, rank)
            self.register_buffer("U", u, persistent=False)
            self.register_buffer("V", v, persistent=False)
            self.M_xs = nn.Parameter(torch.zeros(rank, rank, device=device))
        if self.norm == "rows":
            self.magnitude = nn.Parameter(weight.norm(dim=1))
        elif self.norm == "cols":
            self.magnitude = nn.Parameter(weight.norm(dim=0))
        elif self.norm == "both":
            self.magnitude_r = nn.Parameter(weight.norm(dim=1))
            self.magnitude_c = nn.Parameter(self._normalize_rows(weight, self.magnitude_r.detach()).norm(dim=0))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    def extra_repr(self) -> str:
        return (f"type={self.adapter_type}, rank={self.rank}, alpha={self.alpha:g}, shape=({self.fan_out}, "
                f"{self.fan_in}), strength={self.strength:g}, sigma_range={self.sigma_range}")

    @property
    def dtype(self) -> torch.dtype:
        return (self.lora_A if self.delta_kind == "lora" else self.M_xs).dtype

    # ------------------------------------------------------------------ factors
    def down_up(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(down (r, fan_in), up (fan_out, r))`` with ``Δ = up · down``."""
        if self.delta_kind == "lora":
            return self.lora_A, self.lora_B
        return self.V.T.to(self.M_xs.dtype), self.U.to(self.M_xs.dtype) @ self.M_xs

    def delta(self) -> torch.Tensor:
        """``s · Δ`` (fan_out × fan_in)."""
        down, up = self.down_up()
        return (up @ down) * self.scale

    @staticmethod
    def _normalize_rows(weight: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        return weight * (magnitude / weight.norm(dim=1).clamp_min(_EPS)).unsqueeze(1)

    @staticmethod
    def _normalize_cols(weight: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        return weight * (magnitude / weight.norm(dim=0).clamp_min(_EPS)).unsqueeze(0)

    def adapted_weight(self, base: torch.Tensor) -> torch.Tensor:
        """``W_i(W0)``: the full-strength adapted 2-D weight for the 2-D base weight ``base``."""
        weight = base.to(self.dtype) + self.delta()
        if self.norm in ("rows", "both"):
            weight = self._normalize_rows(weight, self.magnitude if self.norm == "rows" else self.magnitude_r)
        if self.norm in ("cols", "both"):
            weight = self._normalize_cols(weight, self.magnitude if self.norm == "cols" else self.magnitude_c)
        return weight

    def weight_change(self, base: torch.Tensor) -> torch.Tensor:
        """``D = W_i(W0) - W0`` (2-D, adapter dtype)."""
        if self.norm == "none":
            return self.delta()
        return self.adapted_weight(base) - base.to(self.dtype)

    def row_scale(self, base: torch.Tensor) -> torch.Tensor:
        """``dora-rows``: ``magnitude / ‖W0 + sΔ‖_row`` ``(fan_out,)``."""
        return self.magnitude / (base.to(self.dtype) + self.delta()).norm(dim=1).clamp_min(_EPS)

    # ------------------------------------------------------------------ gate
    def gate(self, batch: int, state: Optional[SigmaState], layer_name: str) -> Optional[Gate]:
        """The factor of this adapter's contribution: None when it is off for every row, a float when it is the
        same for every row, else a ``[batch]`` tensor."""
        if self.strength == 0.0:
            return None
        if self.sigma_range is None or state is None or state.sigma is None:
            return self.strength
        sigma = state.sigma
        if sigma.shape[0] != batch:
            if batch % sigma.shape[0]:
                raise RuntimeError(f"adapter layer {layer_name}: input batch {batch} is not a multiple of the "
                                   f"{sigma.shape[0]} noise levels of the backbone call, so the sigma gate cannot "
                                   f"be applied per element; load this adapter without sigma_range")
            sigma = sigma.repeat(batch // sigma.shape[0])
        low, high = self.sigma_range
        inside = (sigma >= low) & (sigma <= high)
        if not bool(inside.any()):
            return None
        if bool(inside.all()):
            return self.strength
        return inside.to(self.dtype) * self.strength


def _gated(contribution: torch.Tensor, gate: Gate) -> torch.Tensor:
    if isinstance(gate, torch.Tensor):
        return contribution * gate.to(contribution.device).view(-1, *([1] * (contribution.dim() - 1)))
    return contribution if gate == 1.0 else contribution * gate


class _AdaptedMixin:
    """Shared bookkeeping of the adapted layers (``adapters``: ModuleDict name -> LowRankAdapter)."""

    adapters: nn.ModuleDict
    _sigma_state: Optional[SigmaState]
    _adapter_layer_name: str

    def _active(self, x: torch.Tensor) -> List[Tuple[LowRankAdapter, Gate]]:
        if not len(self.adapters):
            return []
        batch = x.shape[0] if x.dim() > 1 else 1
        active = []
        for adapter in self.adapters.values():
            gate = adapter.gate(batch, self._sigma_state, self._adapter_layer_name)
            if gate is not None:
                active.append((adapter, gate))
        return active


def _drop_adapter_keys(module: nn.Module, state_dict, prefix: str, local_metadata) -> None:
    """state_dict hook: adapter tensors are never part of the base model's state dict."""
    for key in [k for k in state_dict if k.startswith(prefix + "adapters.")]:
        del state_dict[key]


def _keep_adapter_tensors(module: nn.Module, state_dict, prefix: str, local_metadata, strict, missing_keys,
                          unexpected_keys, error_msgs) -> None:
    """load_state_dict pre-hook: a base checkpoint (no adapter keys) loads strictly; present adapter keys load."""
    for name, tensor in module.adapters.state_dict(prefix=prefix + "adapters.", keep_vars=True).items():
        state_dict.setdefault(name, tensor.detach())


class AdaptedLinear(_AdaptedMixin, nn.Linear):
    """An ``nn.Linear`` with adapters; ``weight`` / ``bias`` are the original layer's parameter objects, so the
    state-dict keys and values of the base are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        active = self._active(x)
        if not active:
            return y
        out = y
        base = self.weight
        for adapter, gate in active:
            xa = adapter.dropout(x.to(adapter.dtype))
            if adapter.norm == "none":
                down, up = adapter.down_up()
                contribution = F.linear(F.linear(xa, down), up) * adapter.scale
            elif adapter.norm == "rows":
                down, up = adapter.down_up()
                scale = adapter.row_scale(base)
                base_out = (y if self.bias is None else y - self.bias).to(adapter.dtype)
                contribution = (scale - 1) * base_out + scale * (F.linear(F.linear(xa, down), up) * adapter.scale)
            else:
                contribution = F.linear(xa, adapter.weight_change(base))
            out = out + _gated(contribution, gate).to(y.dtype)
        return out


class AdaptedConv1d(_AdaptedMixin, nn.Conv1d):
    """An ``nn.Conv1d`` with adapters (same parameter objects as the original layer). The low-rank path runs
    ``lora_A`` as an ``r``-channel convolution with the layer's kernel size, stride, padding and dilation and
    ``lora_B`` as a 1x1 mix; grouped convolutions use the materialised weight change."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(x, self.weight, self.bias)
        active = self._active(x)
        if not active:
            return y
        out = y
        base = flat_weight(self)
        kernel = self.weight.shape[1:]
        for adapter, gate in active:
            xa = adapter.dropout(x.to(adapter.dtype))
            low_rank = self.groups == 1 and adapter.norm in ("none", "rows")
            if low_rank:
                down, up = adapter.down_up()
                hidden = self._conv_forward(xa, down.reshape(adapter.rank, *kernel), None)
                branch = torch.einsum("or,brt->bot", up, hidden) * adapter.scale
                if adapter.norm == "none":
                    contribution = branch
                else:
                    scale = adapter.row_scale(base).unsqueeze(1)
                    base_out = (y if self.bias is None else y - self.bias.unsqueeze(1)).to(adapter.dtype)
                    contribution = (scale - 1) * base_out + scale * branch
            else:
                change = adapter.weight_change(base).reshape(self.weight.shape)
                contribution = self._conv_forward(xa, change, None)
            out = out + _gated(contribution, gate).to(y.dtype)
        return out


ADAPTED_TYPES = {nn.Linear: AdaptedLinear, nn.Conv1d: AdaptedConv1d}


def _empty_like(layer: nn.Module, cls: type) -> nn.Module:
    if isinstance(layer, nn.Linear):
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
    else:
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                  padding=layer.padding, dilation=layer.dilation, groups=layer.groups, bias=layer.bias is not None,
                  padding_mode=layer.padding_mode, device="meta")
    new.weight = layer.weight
    if layer.bias is not None:
        new.bias = layer.bias
    new.train(layer.training)
    return new


def adapt_layer(layer: nn.Module, name: str, sigma_state: Optional[SigmaState]) -> nn.Module:
    """An adapted copy of a plain ``nn.Linear`` / ``nn.Conv1d`` sharing its parameters (returned as is when it is
    already adapted)."""
    if isinstance(layer, (AdaptedLinear, AdaptedConv1d)):
        return layer
    new = _empty_like(layer, ADAPTED_TYPES[type(layer)])
    new.adapters = nn.ModuleDict()
    new._sigma_state = sigma_state
    new._adapter_layer_name = name
    new.register_state_dict_post_hook(_drop_adapter_keys)
    new.register_load_state_dict_pre_hook(_keep_adapter_tensors)
    return new


def restore_layer(layer: nn.Module) -> nn.Module:
    """The plain ``nn.Linear`` / ``nn.Conv1d`` of an adapted layer (same parameter objects)."""
    base = nn.Linear if isinstance(layer, AdaptedLinear) else nn.Conv1d
    return _empty_like(layer, base)
