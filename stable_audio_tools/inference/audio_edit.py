"""Sample-domain helpers of continuation and inpainting: keep masks from time regions, and pasting the given audio
back into the decoded output with click-free joins.

The autoencoder does not reproduce its input exactly, so after sampling the kept regions of the output are replaced
by the given samples themselves. At each boundary between kept and generated audio the decoded signal is shifted by
the reconstruction error ``given - decoded`` at the last kept sample, and that shift fades out with a raised-cosine
ramp over ``fade`` samples into the generated side. The output is therefore continuous at the join (the step a plain
paste would leave is spread over the fade), the kept samples are bit-exact, and beyond the fade the output is the
decoded generation unchanged.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch

__all__ = ["parse_regions", "keep_mask_from_regions", "kept_runs", "paste_known"]

Region = Tuple[float, float]


def parse_regions(text: str, flag: str = "--mask") -> List[Region]:
    """``"START:END[,START:END...]"`` (seconds) -> sorted, merged ``[(start, end), ...]``.

    Raises ``ValueError`` naming ``flag`` for a malformed entry, a negative start or an empty region."""
    if not text or not text.strip():
        raise ValueError(f"{flag} is empty; give regions to regenerate as START:END seconds, e.g. 2:4,7.5:9")
    regions = []
    for part in text.split(","):
        pieces = part.strip().split(":")
        if len(pieces) != 2:
            raise ValueError(f"{flag} entry {part.strip()!r} is not START:END (seconds), e.g. 2:4")
        try:
            start, end = float(pieces[0]), float(pieces[1])
        except ValueError:
            raise ValueError(f"{flag} entry {part.strip()!r}: START and END must be numbers of seconds") from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise ValueError(f"{flag} entry {part.strip()!r}: need 0 <= START < END")
        regions.append((start, end))
    regions.sort()
    merged = [regions[0]]
    for start, end in regions[1:]:
        if start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def keep_mask_from_regions(regions: Sequence[Region], length: int, sample_rate: int) -> torch.Tensor:
    """Keep mask ``[length]`` (1 = keep the given audio, 0 = generate) that regenerates ``regions`` (seconds)."""
    mask = torch.ones(length)
    for start, end in regions:
        mask[int(round(start * sample_rate)):int(round(end * sample_rate))] = 0
    return mask


def kept_runs(keep: torch.Tensor) -> List[Tuple[int, int]]:
    """Half-open ``[start, end)`` sample runs where the 1-D mask ``keep`` is above 0.5."""
    flags = (keep > 0.5).to(torch.int8)
    edges = torch.diff(torch.nn.functional.pad(flags, (1, 1))).nonzero().flatten().tolist()
    return list(zip(edges[0::2], edges[1::2]))


def _fade(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Raised-cosine weights falling from (almost) 1 to 0 over ``n`` samples."""
    k = torch.arange(1, n + 1, dtype=torch.float64, device=device)
    return (0.5 + 0.5 * torch.cos(math.pi * k / (n + 1))).to(dtype)


def paste_known(generated: torch.Tensor, given: torch.Tensor, keep: torch.Tensor, fade: int) -> torch.Tensor:
    """Put ``given`` back into ``generated`` where ``keep`` is 1, with click-free joins (see the module notes).

    Args:
        generated (torch.Tensor): decoded output ``[B, C, N]``.
        given (torch.Tensor): the given audio aligned with the output, ``[C, N]`` or ``[B, C, N]`` (values outside
            the kept runs are ignored).
        keep (torch.Tensor): keep mask ``[N]`` (1 = keep).
        fade (int): length of the join ramps in samples (0: plain paste).
    """
    if given.dim() == 2:
        given = given.unsqueeze(0)
    if given.shape[-1] != generated.shape[-1] or keep.shape[-1] != generated.shape[-1]:
        raise ValueError(f"given audio ({given.shape[-1]}), keep mask ({keep.shape[-1]}) and output "
                         f"({generated.shape[-1]} samples) must have the same length")
    given = given.to(generated.dtype).expand_as(generated)
    out = generated.clone()
    total = generated.shape[-1]
    runs = kept_runs(keep)
    for start, end in runs:
        out[..., start:end] = given[..., start:end]
    if fade <= 0:
        return out
    for index, (start, end) in enumerate(runs):
        limit_right = runs[index + 1][0] if index + 1 < len(runs) else total
        limit_left = runs[index - 1][1] if index > 0 else 0
        if end < total:
            n = min(fade, limit_right - end)
            offset = (given[..., end - 1] - generated[..., end - 1]).unsqueeze(-1)
            out[..., end:end + n] += offset * _fade(n, out.dtype, out.device)
        if start > 0:
            n = min(fade, start - limit_left)
            offset = (given[..., start] - generated[..., start]).unsqueeze(-1)
            out[..., start - n:start] += offset * _fade(n, out.dtype, out.device).flip(0)
    return out
