"""Loss utilities (upstream ``training/losses/utils.py``): learned loss weighting and a multi-bandwidth maximum mean
discrepancy (MMD) between two batches of signals or latents."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from einops import rearrange
from torch import nn

__all__ = ["DynamicLossWeighting", "flat_pairwise_sq_distance", "multi_bandwidth_kernel_2d", "mmd_loss_flat", "mmd",
           "grouped_mmd"]


class DynamicLossWeighting(nn.Module):
    """Learned (homoscedastic-uncertainty) loss weighting: ``loss / exp(w) + w`` with a trainable scalar ``w``.

    Args:
        init_val (float): initial value of ``w`` (``loss_weight``). Default 1.0.
    """

    def __init__(self, init_val: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = nn.Parameter(torch.tensor(init_val))

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return loss / torch.exp(self.loss_weight) + self.loss_weight


def flat_pairwise_sq_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-feature mean squared distances ``mean_d (x_i - y_j)^2`` between the rows of ``x [N, D]`` and ``y [M, D]``,
    as an ``[N, M]`` matrix (expanded form, so it may be slightly negative by rounding)."""
    x_norm = (x ** 2).mean(dim=1, keepdim=True)
    y_norm = (y ** 2).mean(dim=1, keepdim=True).transpose(0, 1)
    return x_norm + y_norm - 2.0 * torch.mm(x, y.t()) / x.shape[1]


def multi_bandwidth_kernel_2d(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float]) -> torch.Tensor:
    """Mean over all row pairs of ``x`` and ``y`` (``[N, D]``, ``[M, D]``) of the inverse multiquadric kernel
    ``1 / (1 + d / (2 bw))`` (``d`` from :func:`flat_pairwise_sq_distance`, clipped at 0), averaged over
    ``bandwidths``; a scalar."""
    dist_sq = flat_pairwise_sq_distance(x, y).clip(min=0.0)
    total = sum((1 / (1 + dist_sq / (2 * bw))).mean() for bw in bandwidths)
    return total / len(bandwidths)


def mmd_loss_flat(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float]) -> torch.Tensor:
    """MMD between the rows of ``x`` and ``y``: ``K(x, x) + K(y, y) - 2 K(x, y)`` with
    :func:`multi_bandwidth_kernel_2d`."""
    return (multi_bandwidth_kernel_2d(x, x, bandwidths) + multi_bandwidth_kernel_2d(y, y, bandwidths)
            - 2.0 * multi_bandwidth_kernel_2d(x, y, bandwidths))


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (1,), dim: Optional[int] = None) -> torch.Tensor:
    """MMD between ``x`` and ``y`` (same shape). With ``dim=None`` each batch item is one flattened sample; otherwise
    axis ``dim`` holds the features and every position along the other axes is a sample."""
    if x.shape != y.shape:
        raise ValueError(f"mmd needs x and y of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if dim is None:
        features = math.prod(x.shape[1:])
        return mmd_loss_flat(x.reshape(-1, features), y.reshape(-1, features), bandwidths)
    x = torch.movedim(x, dim, -1)
    y = torch.movedim(y, dim, -1)
    return mmd_loss_flat(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), bandwidths)


def grouped_mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (1,), groups: int = 2) -> torch.Tensor:
    """:func:`mmd` of ``[B, C, T]`` signals regrouped to ``[B, groups, C / groups * T]`` (as upstream, with
    ``dim=None``: each batch item, all groups flattened, is one sample)."""
    grouped_x = rearrange(x, "... (g f) t -> ... g (f t)", g=groups)
    grouped_y = rearrange(y, "... (g f) t -> ... g (f t)", g=groups)
    return mmd(grouped_x, grouped_y, bandwidths, dim=None)
