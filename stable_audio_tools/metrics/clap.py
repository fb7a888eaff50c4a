"""CLAP score: cosine similarity between the CLAP text embedding of a prompt and the CLAP audio embedding of
the audio made from it (higher is better; range [-1, 1]).

Both stable-audio-metrics (``clap_score``) and audiocraft (``CLAPTextConsistencyMetric``) average
``cosine_similarity(audio_embedding, text_embedding, eps=1e-8)`` over prompt/audio pairs; they differ in
preprocessing (see ``docs/evaluation.md``) and in the CLAP checkpoint.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from .embedders.base import AudioEmbedder

__all__ = ["clap_scores", "clap_score", "rank_by_clap"]


def clap_scores(audio_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """Per-pair cosine similarity ``[N]`` between ``audio_embeddings [N, D]`` and ``text_embeddings [N, D]``
    (a single text row ``[1, D]`` is compared with every audio row)."""
    if audio_embeddings.dim() != 2 or text_embeddings.dim() != 2:
        raise ValueError(f"embeddings must be 2-D [count, dim], got {tuple(audio_embeddings.shape)} and "
                         f"{tuple(text_embeddings.shape)}")
    if text_embeddings.shape[0] not in (1, audio_embeddings.shape[0]):
        raise ValueError(f"{audio_embeddings.shape[0]} audio embeddings but {text_embeddings.shape[0]} text "
                         "embeddings (need as many, or one text for all)")
    return torch.nn.functional.cosine_similarity(audio_embeddings.double(), text_embeddings.double(), dim=1,
                                                 eps=1e-8)


def clap_score(audio_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> float:
    """Mean of :func:`clap_scores` over the pairs."""
    return float(clap_scores(audio_embeddings, text_embeddings).mean())


def rank_by_clap(candidates: Sequence[torch.Tensor], sample_rate: int, prompt: str,
                 embedder: AudioEmbedder) -> List[Tuple[int, float]]:
    """Order generated candidates for one prompt by CLAP score, best first.

    Args:
        candidates: audio tensors ``[channels, samples]`` (any length).
        sample_rate: int, their sample rate.
        prompt: the text they were generated from.
        embedder: an embedder with the ``"clap"`` capability (``create_embedder("clap", model=...)``).

    Returns ``[(candidate index, score), ...]`` sorted by decreasing score (ties keep the candidate order).
    """
    if not candidates:
        raise ValueError("rank_by_clap needs at least one candidate")
    audio = torch.cat([embedder.embed_clip(c, sample_rate) for c in candidates])
    text = embedder.embed_text([prompt])
    scores = clap_scores(audio, text).tolist()
    return sorted(enumerate(scores), key=lambda item: -item[1])
