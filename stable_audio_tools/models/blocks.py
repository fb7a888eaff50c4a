"""Small shared building blocks (SPEC 9.1)."""
from __future__ import annotations

from functools import reduce

import torch
from torch import nn

__all__ = ["rms_norm", "AdaRMSNorm"]


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """``x * scale / sqrt(mean(x^2) + eps)`` over the last dim, computed in at least float32."""
    dtype = reduce(torch.promote_types, (x.dtype, scale.dtype, torch.float32))
    mean_sq = torch.mean(x.to(dtype) ** 2, dim=-1, keepdim=True)
    return x * (scale.to(dtype) * torch.rsqrt(mean_sq + eps)).to(x.dtype)


class AdaRMSNorm(nn.Module):
    """RMS norm whose per-feature scale is ``1 + linear(cond)`` (the linear layer starts at zero)."""

    def __init__(self, features: int, cond_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.linear = nn.Linear(cond_features, features, bias=False)
        nn.init.zeros_(self.linear.weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.linear(cond)[:, None, :] + 1, self.eps)
