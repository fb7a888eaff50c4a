"""Batch and module helpers shared by the diffusion, ARC and LM training wrappers (and their demo callbacks)."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["split_batch", "encode_to_latents", "padding_masks_from_metadata", "swapped_child"]


def split_batch(batch: Any) -> Tuple[torch.Tensor, Sequence[Dict[str, Any]]]:
    """``(audio_or_latents [B, C, L], metadata)`` of a collated batch; a leading WebDataset singleton dim is
    removed and a bare tensor gets empty metadata."""
    if isinstance(batch, (list, tuple)):
        reals = batch[0]
        metadata = batch[1] if len(batch) > 1 else ()
    else:
        reals, metadata = batch, ()
    if not isinstance(reals, torch.Tensor):
        raise TypeError(f"diffusion training batches must start with an audio/latent tensor, got "
                        f"{type(reals).__name__}")
    if reals.ndim == 4 and reals.shape[0] == 1:
        reals = reals[0]
    if reals.ndim != 3:
        raise ValueError(f"diffusion training expects [batch, channels, length] inputs, got shape "
                         f"{tuple(reals.shape)}")
    return reals, metadata


def encode_to_latents(model: nn.Module, reals: torch.Tensor, pre_encoded: bool) -> torch.Tensor:
    """What the diffusion model is trained on: ``model.pretransform.encode(reals)`` (with gradients only for a
    trainable pretransform), or for ``pre_encoded`` data the stored latents divided by the pretransform's
    ``scale`` (encode would have applied it); ``reals`` unchanged without a pretransform."""
    pretransform = getattr(model, "pretransform", None)
    if pretransform is None:
        return reals
    if pre_encoded:
        scale = getattr(pretransform, "scale", 1.0)
        return reals / scale if scale != 1.0 else reals
    trainable = bool(getattr(pretransform, "enable_grad", False))
    pretransform.train(trainable)
    with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
        return pretransform.encode(reals)


def padding_masks_from_metadata(metadata: Sequence[Dict[str, Any]], length: int, device: torch.device,
                                required: bool = False) -> torch.Tensor:
    """Boolean ``[B, length]`` masks (True = real data) from each item's ``padding_mask``.

    A mask is a tensor or list (pre-encoded datasets store lists), possibly wrapped in a 1-element list; it is
    nearest-resized to ``length`` (audio-rate masks become latent-rate masks). Items without a
    ``padding_mask`` count as all real unless ``required``, which raises a ValueError instead.
    """
    masks = []
    for index, info in enumerate(metadata):
        mask = info.get("padding_mask") if isinstance(info, dict) else None
        if mask is None:
            if required:
                raise ValueError(f"batch item {index} has no 'padding_mask' in its metadata, which "
                                 f"training.mask_padding needs; use a dataset that provides it (audio_dir and "
                                 f"pre_encoded do) or set mask_padding to false")
            masks.append(torch.ones(length))
            continue
        if isinstance(mask, (list, tuple)) and len(mask) == 1 and isinstance(mask[0], (torch.Tensor, list, tuple)):
            mask = mask[0]
        mask = torch.as_tensor(mask).float().flatten()
        if mask.shape[0] != length:
            mask = F.interpolate(mask[None, None], size=length, mode="nearest")[0, 0]
        masks.append(mask)
    return torch.stack(masks).to(device).bool()


@contextlib.contextmanager
def swapped_child(parent: nn.Module, name: str, replacement: Optional[nn.Module]) -> Iterator[nn.Module]:
    """Temporarily replace the child module ``parent.<name>`` by ``replacement`` (no-op when None)."""
    original = getattr(parent, name)
    if replacement is not None:
        setattr(parent, name, replacement)
    try:
        yield parent
    finally:
        setattr(parent, name, original)
