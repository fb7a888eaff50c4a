"""Inference helpers: audio preparation (re-exported from :mod:`stable_audio_tools.data.utils`), soft inpainting
masks and chunked latent decoding."""
from __future__ import annotations

import math
from typing import Mapping, Optional, Union

import torch
from torch import nn

from ..audio import prepare_audio, set_audio_channels
from ..samplers import get_bmask

__all__ = ["prepare_audio", "set_audio_channels", "build_mask", "get_bmask", "decode_latents", "select_device"]


def build_mask(sample_size: int, mask_args: Mapping[str, float]) -> torch.Tensor:
    """Soft keep-mask of ``sample_size`` values in [0, 1] (1 = keep the input audio, 0 = generate).

    ``mask_args``: ``maskstart`` / ``maskend`` (percent of ``sample_size``) bound the kept region,
    ``softnessL`` / ``softnessR`` (percent) fade its edges with half Hann windows, and ``marination`` in [0, 1)
    scales the whole mask by ``1 - marination`` (lets the kept audio change in the final denoising steps).
    """
    for key in ("maskstart", "maskend", "softnessL", "softnessR", "marination"):
        if key not in mask_args:
            raise ValueError(f"build_mask needs mask_args[{key!r}] (percentages maskstart, maskend, softnessL, "
                             "softnessR and a marination factor)")
    start = math.floor(mask_args["maskstart"] / 100.0 * sample_size)
    end = math.ceil(mask_args["maskend"] / 100.0 * sample_size)
    soft_left = round(mask_args["softnessL"] / 100.0 * sample_size)
    soft_right = round(mask_args["softnessR"] / 100.0 * sample_size)
    mask = torch.zeros(sample_size)
    mask[start:end] = 1
    mask[start:start + soft_left] = torch.hann_window(soft_left * 2, periodic=False)[:soft_left]
    mask[end - soft_right:end] = torch.hann_window(soft_right * 2, periodic=False)[soft_right:]
    marination = mask_args["marination"]
    if marination > 0:
        mask = mask * (1 - marination)
    return mask


def _module_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    param = next(module.parameters(), None)
    return default if param is None else param.dtype


def decode_latents(pretransform: nn.Module, latents: torch.Tensor, chunked: bool = False, chunk_size: int = 128,
                   overlap: int = 32) -> torch.Tensor:
    """``pretransform.decode(latents)`` (latents cast to the pretransform's parameter dtype), optionally in windows.

    With ``chunked``, latents longer than ``chunk_size`` frames are decoded in windows of ``chunk_size`` frames
    overlapping by ``overlap`` frames; each window's outer ``overlap // 2`` frames (in audio samples:
    ``x downsampling_ratio``) are discarded at interior seams, bounding peak memory for long outputs at the cost
    of small seam differences versus a single decode.
    """
    latents = latents.to(_module_dtype(pretransform, latents.dtype))
    total = latents.shape[-1]
    if not chunked or total <= chunk_size:
        return pretransform.decode(latents)
    if chunk_size <= overlap or overlap < 0:
        raise ValueError(f"decode chunk_size ({chunk_size}) must be larger than overlap ({overlap}) and overlap >= 0")
    ratio = int(pretransform.downsampling_ratio)
    hop = chunk_size - overlap
    starts = list(range(0, total - chunk_size + 1, hop))
    if starts[-1] + chunk_size != total:
        starts.append(total - chunk_size)
    trim = (overlap // 2) * ratio
    out = None
    for n, start in enumerate(starts):
        piece = pretransform.decode(latents[..., start:start + chunk_size])
        if out is None:
            out = piece.new_zeros((*piece.shape[:-1], total * ratio))
        lo, hi = start * ratio, start * ratio + piece.shape[-1]
        c_lo, c_hi = 0, piece.shape[-1]
        if n > 0:
            lo, c_lo = lo + trim, c_lo + trim
        if n < len(starts) - 1:
            hi, c_hi = hi - trim, c_hi - trim
        out[..., lo:hi] = piece[..., c_lo:c_hi]
    return out


def select_device(device: Optional[Union[str, torch.device]] = None) -> torch.device:
    """``device`` if given (checked to exist), else (``None`` or ``"auto"``) CUDA when available, else Apple MPS
    when available, else CPU. Raises ``ValueError`` naming the ``--device`` value when it cannot be used."""
    mps = getattr(torch.backends, "mps", None)
    mps_available = mps is not None and mps.is_available()
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device {device!r} is not a torch device (e.g. cuda, cuda:1, mps, cpu): {e}") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    if chosen.type == "mps" and not mps_available:
        raise ValueError(f"--device {device}: Apple MPS is not available on this machine")
    return chosen
