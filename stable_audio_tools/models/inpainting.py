"""Random inpainting masks for training ``diffusion_cond_inpaint`` models (upstream ``models/inpainting.py``) and
the validation of a config's ``training.inpainting`` block.

A mask is ``[B, 1, L]`` float with 1 = keep (given to the model) and 0 = to be generated. Each item draws
one mask type with ``mask_type_probabilities`` (default ``[0.1, 0.8, 0.1]``):

* ``RANDOM_SEGMENTS``: 1..``max_mask_segments`` zeroed segments (they may overlap) of random length up to
  ``real_length // num_segments``, inside the item's real (unpadded) region;
* ``FULL_MASK``: all zeros (plain generation);
* ``CAUSAL_MASK``: keep a random-length prefix of the real region and zero the rest of the real region.

The real region is the leading ``padding_mask.sum()`` positions. Items without real data keep all ones
unless they draw ``FULL_MASK``. Random choices use Python's ``random`` module, as upstream.
"""
from __future__ import annotations

import math
import random
from enum import Enum
from typing import Any, Mapping, Optional, Sequence, Tuple

import torch

from .config import ConfigError, require_mapping, warn_unknown_keys

__all__ = ["MaskType", "random_inpaint_mask", "check_inpainting_config", "INPAINT_IDS"]

INPAINT_IDS = ("inpaint_mask", "inpaint_masked_input")
"""Conditioning ids under which the training wrapper provides the mask and the masked latents."""

_MASK_KWARGS = ("max_mask_segments", "mask_type_probabilities")


class MaskType(Enum):
    """Kinds of inpainting mask drawn by :func:`random_inpaint_mask`."""

    RANDOM_SEGMENTS = 0
    FULL_MASK = 1
    CAUSAL_MASK = 2


def _check_mask_kwargs(max_mask_segments: Any, probabilities: Sequence[float]) -> None:
    if isinstance(max_mask_segments, bool) or not isinstance(max_mask_segments, int) or max_mask_segments < 1:
        raise ValueError(f"max_mask_segments must be a positive integer, got {max_mask_segments!r}")
    if not isinstance(probabilities, (list, tuple)) or len(probabilities) != len(MaskType):
        raise ValueError(f"mask_type_probabilities needs {len(MaskType)} values (random segments, full mask, "
                         f"causal mask), got {probabilities!r}")
    if any(isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0 for p in probabilities):
        raise ValueError(f"mask_type_probabilities must be non-negative numbers, got {list(probabilities)}")
    if not math.isclose(sum(probabilities), 1.0, rel_tol=1e-6, abs_tol=1e-6):
        raise ValueError(f"mask_type_probabilities must sum to 1, got {list(probabilities)} "
                         f"(sum {sum(probabilities)})")


def random_inpaint_mask(sequence: torch.Tensor, padding_masks: torch.Tensor, max_mask_segments: int = 10,
                        mask_type_probabilities: Optional[Sequence[float]] = None
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw one inpainting mask per item of ``sequence [B, C, L]``.

    Args:
        sequence: the latents (or audio) to mask.
        padding_masks: ``[B, L]``, 1 where the data is real and 0 over padding.
        max_mask_segments: maximum number of zeroed segments of a ``RANDOM_SEGMENTS`` mask.
        mask_type_probabilities: probabilities of ``RANDOM_SEGMENTS``, ``FULL_MASK``, ``CAUSAL_MASK``.

    Returns:
        ``(sequence * mask, mask)`` with ``mask`` of shape ``[B, 1, L]`` (float32, 1 = keep, 0 = generate).
    """
    probabilities = [0.1, 0.8, 0.1] if mask_type_probabilities is None else list(mask_type_probabilities)
    _check_mask_kwargs(max_mask_segments, probabilities)
    batch, _, length = sequence.shape
    if padding_masks.shape != (batch, length):
        raise ValueError(f"padding_masks must be [batch, length] = {(batch, length)}, got {tuple(padding_masks.shape)}")
    real_lengths = (padding_masks == 1).sum(dim=1).tolist()
    mask = torch.ones(batch, 1, length, dtype=torch.float32)
    for i, real in enumerate(real_lengths):
        kind = random.choices(list(MaskType), weights=probabilities, k=1)[0]
        if kind is MaskType.FULL_MASK:
            mask[i] = 0
        elif real == 0:
            continue
        elif kind is MaskType.RANDOM_SEGMENTS:
            segments = random.randint(1, max_mask_segments)
            longest = max(1, real // segments)
            for _ in range(segments):
                segment = random.randint(1, longest)
                if segment > real:
                    continue
                start = random.randint(0, real - segment)
                mask[i, :, start:start + segment] = 0
        else:
            prefix = random.randint(0, real)
            mask[i, :, prefix:real] = 0
    mask = mask.to(sequence.device)
    return sequence * mask.to(sequence.dtype), mask


def check_inpainting_config(inpainting: Any, path: str = "training.inpainting") -> Mapping[str, Any]:
    """Validate a ``training.inpainting`` block; returns its ``mask_kwargs`` (possibly empty)."""
    inpainting = require_mapping(inpainting, path)
    warn_unknown_keys(inpainting, ("mask_kwargs",), path)
    kwargs = require_mapping(inpainting.get("mask_kwargs", {}), f"{path}.mask_kwargs")
    unknown = sorted(set(kwargs) - set(_MASK_KWARGS))
    if unknown:
        raise ConfigError(f"{path}.mask_kwargs.{unknown[0]}", "is not a mask option",
                          f"accepted: {', '.join(_MASK_KWARGS)}")
    try:
        _check_mask_kwargs(kwargs.get("max_mask_segments", 10), kwargs.get("mask_type_probabilities", [0.1, 0.8, 0.1]))
    except ValueError as e:
        raise ConfigError(f"{path}.mask_kwargs", str(e)) from None
    return dict(kwargs)
