"""Token sampling helpers for the audio LM (see docs/compatibility.md; AudioCraft semantics).

* :func:`multinomial` — ``torch.multinomial`` over the last dimension of a tensor of any rank; one
  sample uses the exponential-race trick ``argmax(p / E)``, ``E ~ Exp(1)``.
* :func:`sample_top_k` — keep the ``k`` most probable tokens (ties with the k-th kept), renormalise, sample.
* :func:`sample_top_p` — nucleus sampling: keep the most probable tokens whose *preceding*
  cumulative probability is ``<= p``, renormalise, sample.

Differences from upstream: see docs/compatibility.md#stable_audio_toolsmodelssampling_utils.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["multinomial", "sample_top_k", "sample_top_p"]


def multinomial(input: torch.Tensor, num_samples: int, replacement: bool = False, *,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw ``num_samples`` indices from the distributions on the last dimension of ``input``.

    Returns int64 indices of shape ``[..., num_samples]``.
    """
    if num_samples == 1:
        race = torch.empty_like(input).exponential_(1, generator=generator)
        return torch.argmax(input / race, dim=-1, keepdim=True).to(torch.int64)
    flat = input.reshape(-1, input.shape[-1])
    out = torch.multinomial(flat, num_samples=num_samples, replacement=replacement, generator=generator)
    return out.reshape(*input.shape[:-1], -1)


def sample_top_k(probs: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Sample one token ``[..., 1]`` among the ``k`` most probable of ``probs`` (last dimension)."""
    if k <= 0:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    k = min(int(k), probs.shape[-1])
    kth = torch.topk(probs, k, dim=-1)[0][..., -1:]
    probs = probs * (probs >= kth).to(probs.dtype)
    probs = probs / probs.sum(dim=-1, keepdim=True)
    return multinomial(probs, num_samples=1, generator=generator)


def sample_top_p(probs: torch.Tensor, p: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Sample one token ``[..., 1]`` from the smallest set of top tokens whose probability mass reaches ``p``."""
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)
    cumulative = torch.cumsum(probs_sort, dim=-1)
    outside = cumulative - probs_sort > p
    probs_sort = probs_sort * (~outside).to(probs_sort.dtype)
    probs_sort = probs_sort / probs_sort.sum(dim=-1, keepdim=True)
    choice = multinomial(probs_sort, num_samples=1, generator=generator)
    return torch.gather(probs_idx, -1, choice)
