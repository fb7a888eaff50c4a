"""Mask helpers and a running-statistics normalisation for transformer inputs (importable from
:mod:`.transformer`, as from upstream's ``models/transformer.py``)."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

__all__ = ["create_causal_mask", "or_reduce", "RunningInstanceNorm"]


def create_causal_mask(i: int, j: int, device: Union[str, torch.device, None]) -> torch.Tensor:
    """Boolean ``[i, j]`` mask that is True where query ``q`` may *not* attend key ``k`` (``k > q + j - i``)."""
    return torch.ones((i, j), device=device, dtype=torch.bool).triu(j - i + 1)


def or_reduce(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Element-wise OR of one or more boolean masks."""
    if not masks:
        raise ValueError("or_reduce needs at least one mask")
    head, *rest = masks
    for mask in rest:
        head = head | mask
    return head


class RunningInstanceNorm(nn.Module):
    """Normalise features ``x [B, T, dim]`` by running mean/std estimates (exponential moving averages updated in
    training mode from each batch), optionally squashed by ``asinh`` and scaled by a learned gain.

    Args:
        dim (int): feature size (last dim of the input).
        momentum (float): weight of the previous estimate in each update. Default 0.99.
        eps (float): lower bound of the running std. Default 1e-4.
        saturate (bool): apply ``asinh`` after normalising. Default True.
        trainable_gain (bool): learn a scalar ``gain`` multiplying the output. Default True.
    """

    def __init__(self, dim: int, momentum: float = 0.99, eps: float = 1e-4, saturate: bool = True,
                 trainable_gain: bool = True) -> None:
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(1, 1, dim))
        self.register_buffer("running_std", torch.ones(1, 1, dim))
        self.saturate = saturate
        self.eps = eps
        self.momentum = momentum
        self.dim = dim
        self.trainable_gain = trainable_gain
        if trainable_gain:
            self.gain = nn.Parameter(torch.ones(1))

    def _update_stats(self, x: torch.Tensor) -> None:
        mean = x.detach().mean(dim=(0, 1)).view(1, 1, self.dim)
        std = x.detach().std(dim=(0, 1)).view(1, 1, self.dim)
        self.running_mean = self.running_mean * self.momentum + mean * (1 - self.momentum)
        self.running_std = (self.running_std * self.momentum + std * (1 - self.momentum)).clip(min=self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._update_stats(x)
        x = (x - self.running_mean) / self.running_std
        if self.saturate:
            x = torch.asinh(x)
        if self.trainable_gain:
            x = x * self.gain
        return x
