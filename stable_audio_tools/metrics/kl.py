"""KL divergence between the label distributions an audio classifier gives generated and reference audio.

Two published conventions compute different numbers from the same classifier; both are implemented here and
named after the tool that defines them. ``p_ref`` / ``p_gen`` are the label probabilities of a reference and
of a generated item, ``eps`` = 1e-6 is added inside the logarithm of the second argument only.

============================  ================================================  ==================================
                              ``"sam"`` (Stability-AI/stable-audio-metrics,      ``"audiocraft"``
                              ``passt_kld``)                                     (facebookresearch/audiocraft,
                                                                                 ``metrics/kld.py``)
============================  ================================================  ==================================
audio                         mono at the classifier's rate, peak-normalised     mono at the classifier's rate,
                              to -1 dBFS                                         no normalisation
long inputs                   10 s windows every 5 s (5 s overlap); a window     consecutive 10 s segments, no
                              shorter than 10 s is zero-padded to 10 s when      overlap, no padding; segments of
                              longer than 1.5 s (only a whole clip under 1.5 s   0.15 s or less are dropped
                              stays shorter)
distribution per item         logits averaged over the windows, then one        one softmax per segment: every
                              softmax                                            segment is an item of its own
divergence                    ``KL(p_gen || p_ref)`` =                           ``kld_pq`` = ``KL(p_ref || p_gen)``
                              ``sum p_gen (log p_gen - log(p_ref + eps))``       (reported as "kld"),
                                                                                 ``kld_qp`` = ``KL(p_gen || p_ref)``,
                                                                                 ``kld_both`` = their sum
average                       over generated/reference pairs (same id)          over segment pairs
============================  ================================================  ==================================

Note on direction: the ``sam`` code calls ``F.kl_div(log(p_ref + eps), p_gen)``, which is ``KL(p_gen || p_ref)``
(``F.kl_div(input, target)`` is ``sum target (log target - input)``), the same formula as audiocraft's ``kld_qp``
for a single segment. Terms with zero probability in the first argument contribute 0, as in ``F.kl_div``.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence

import torch

__all__ = [
    "KL_CONVENTIONS",
    "KL_EPS",
    "kl_divergence",
    "sam_windows",
    "audiocraft_segments",
    "sam_label_distribution",
    "kl_sam",
    "kl_audiocraft",
]

log = logging.getLogger(__name__)

KL_CONVENTIONS = ("sam", "audiocraft")
"""Names of the two KL conventions (see the module docstring)."""

KL_EPS = 1e-6
"""Both reference tools add this to the second distribution inside the logarithm."""


def kl_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = KL_EPS) -> torch.Tensor:
    """``KL(p || q) = sum_c p_c (log p_c - log(q_c + eps))`` over the last dimension, in float64.

    Args:
        p: probabilities ``[..., classes]`` (each row sums to 1); zero entries contribute 0.
        q: probabilities of the same shape.
        eps: float, default 1e-6; added to ``q`` inside the logarithm.
    """
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    p64, q64 = p.double(), q.double()
    return (torch.xlogy(p64, p64) - p64 * torch.log(q64 + eps)).sum(dim=-1)


def _check_mono(audio: torch.Tensor) -> None:
    if audio.dim() != 1:
        raise ValueError(f"expected mono audio [samples], got shape {tuple(audio.shape)}")


def sam_windows(audio: torch.Tensor, sample_rate: int, window_seconds: float = 10.0,
                overlap_seconds: float = 5.0, pad_above_fraction: float = 0.15) -> List[torch.Tensor]:
    """Split mono ``audio [T]`` into stable-audio-metrics' analysis windows.

    Windows of ``window_seconds`` start every ``window_seconds - overlap_seconds``; starts run over
    ``range(0, max(step, T - step), step)``. A window shorter than the full length is zero-padded to it when it
    holds more than ``pad_above_fraction`` of a window, else it is kept as it is.

    Args:
        audio: mono samples ``[T]``.
        sample_rate: int, samples per second of ``audio``.
        window_seconds: float, default 10.0.
        overlap_seconds: float, default 5.0.
        pad_above_fraction: float, default 0.15.
    """
    _check_mono(audio)
    window = int(window_seconds * sample_rate)
    step = int((window_seconds - overlap_seconds) * sample_rate)
    if window <= 0 or step <= 0:
        raise ValueError(f"window_seconds ({window_seconds}) must exceed overlap_seconds ({overlap_seconds}) "
                         f"and both must give whole samples at {sample_rate} Hz")
    length = audio.shape[-1]
    windows = []
    for start in range(0, max(step, length - step), step):
        chunk = audio[start:start + window]
        if chunk.shape[-1] < window and chunk.shape[-1] > int(window * pad_above_fraction):
            chunk = torch.nn.functional.pad(chunk, (0, window - chunk.shape[-1]))
        windows.append(chunk)
    return windows


def audiocraft_segments(audio: torch.Tensor, sample_rate: int, segment_seconds: float = 10.0,
                        min_seconds: float = 0.15) -> List[torch.Tensor]:
    """Split mono ``audio [T]`` into audiocraft's consecutive segments of ``segment_seconds`` (the last one
    shorter, never padded), dropping segments of ``min_seconds`` or less.

    Args:
        audio: mono samples ``[T]``.
        sample_rate: int, samples per second of ``audio``.
        segment_seconds: float, default 10.0.
        min_seconds: float, default 0.15.
    """
    _check_mono(audio)
    size = int(segment_seconds * sample_rate)
    if size <= 0:
        raise ValueError(f"segment_seconds must be positive, got {segment_seconds}")
    minimum = int(min_seconds * sample_rate)
    return [s for s in torch.split(audio, size, dim=-1) if s.shape[-1] > minimum]


def sam_label_distribution(window_logits: torch.Tensor) -> torch.Tensor:
    """One item's label distribution in the ``sam`` convention: softmax of the logits ``[windows, classes]``
    averaged over windows (float64)."""
    if window_logits.dim() != 2 or window_logits.shape[0] == 0:
        raise ValueError(f"window_logits must be [windows >= 1, classes], got {tuple(window_logits.shape)}")
    return torch.softmax(window_logits.double().mean(dim=0), dim=-1)


def kl_sam(generated_logits: Sequence[torch.Tensor], reference_logits: Sequence[torch.Tensor],
           eps: float = KL_EPS) -> Dict[str, float]:
    """``sam`` KL: mean over pairs of ``KL(p_gen || p_ref)``.

    Args:
        generated_logits: per generated item, its window logits ``[windows, classes]``.
        reference_logits: per reference item (same order: item ``i`` pairs with item ``i``), its window logits.
        eps: float, default 1e-6.

    Returns ``{"kl": mean, "pairs": count}``.
    """
    if len(generated_logits) != len(reference_logits) or not generated_logits:
        raise ValueError(f"need the same non-zero number of generated and reference items, got "
                         f"{len(generated_logits)} and {len(reference_logits)}")
    values = [kl_divergence(sam_label_distribution(g), sam_label_distribution(r), eps)
              for g, r in zip(generated_logits, reference_logits)]
    return {"kl": float(torch.stack(values).mean()), "pairs": len(values)}


def kl_audiocraft(generated_logits: Sequence[torch.Tensor], reference_logits: Sequence[torch.Tensor],
                  eps: float = KL_EPS) -> Dict[str, float]:
    """``audiocraft`` KL over segment pairs: ``kld_pq`` = ``KL(p_ref || p_gen)``, ``kld_qp`` =
    ``KL(p_gen || p_ref)``, ``kld_both`` = their sum, each averaged over segment pairs.

    Args:
        generated_logits: per generated item, its segment logits ``[segments, classes]``.
        reference_logits: per reference item (same order), its segment logits. Audiocraft compares audio of equal
            length, so both have the same number of segments; when they differ, the first
            ``min(count_gen, count_ref)`` segments pair up and a warning names the item index.
        eps: float, default 1e-6.

    Returns ``{"kl": kld_pq, "kl_pq": ..., "kl_qp": ..., "kl_both": ..., "pairs": segment pairs}``.
    """
    if len(generated_logits) != len(reference_logits) or not generated_logits:
        raise ValueError(f"need the same non-zero number of generated and reference items, got "
                         f"{len(generated_logits)} and {len(reference_logits)}")
    gen_rows, ref_rows = [], []
    for index, (g, r) in enumerate(zip(generated_logits, reference_logits)):
        count = min(g.shape[0], r.shape[0])
        if g.shape[0] != r.shape[0]:
            log.warning("item %d: %d generated and %d reference segments; pairing the first %d", index, g.shape[0],
                        r.shape[0], count)
        gen_rows.append(g[:count])
        ref_rows.append(r[:count])
    p_gen = torch.softmax(torch.cat(gen_rows).double(), dim=-1)
    p_ref = torch.softmax(torch.cat(ref_rows).double(), dim=-1)
    if p_gen.shape[0] == 0:
        raise ValueError("no segment pairs to compare (every item shorter than the minimum segment length)")
    pq = float(kl_divergence(p_ref, p_gen, eps).mean())
    qp = float(kl_divergence(p_gen, p_ref, eps).mean())
    return {"kl": pq, "kl_pq": pq, "kl_qp": qp, "kl_both": pq + qp, "pairs": int(p_gen.shape[0])}
