"""Metrics for generated audio: Frechet distance (:mod:`.frechet`), KL divergence of classifier label
distributions in both published conventions (:mod:`.kl`), CLAP score (:mod:`.clap`), reconstruction metrics for
autoencoders (:mod:`.reconstruction`), the pluggable embedders they run on (:mod:`.embedders`) and the
folder/tensor evaluation pipeline behind ``evaluate.py`` (:mod:`.evaluation`). See ``docs/evaluation.md``.

Layering: metrics imports data (audio loading, resampling, filterbanks) and nothing above it.
"""
from .clap import clap_score, clap_scores, rank_by_clap
from .collections import AudioCollection, EvaluationError, load_prompts, prompt_ids
from .embedders import (AudioEmbedder, MissingPackageError, MissingWeightsError, available_embedders,
                        create_embedder, register_embedder)
from .evaluation import METRICS, EvaluationConfig, Evaluator, parse_metrics
from .frechet import embedding_statistics, frechet_distance, frechet_distance_from_embeddings, sqrtm_psd
from .kl import (KL_CONVENTIONS, audiocraft_segments, kl_audiocraft, kl_divergence, kl_sam, sam_label_distribution,
                 sam_windows)
from .ranking import rank_generated_files
from .preprocessing import Preprocessing, int16_round_trip, peak_normalize
from .reconstruction import log_mel_distance, multi_resolution_stft_distance, si_sdr

__all__ = [
    "clap_score", "clap_scores", "rank_by_clap",
    "AudioCollection", "EvaluationError", "load_prompts", "prompt_ids",
    "AudioEmbedder", "MissingPackageError", "MissingWeightsError", "available_embedders", "create_embedder",
    "register_embedder",
    "METRICS", "EvaluationConfig", "Evaluator", "parse_metrics",
    "embedding_statistics", "frechet_distance", "frechet_distance_from_embeddings", "sqrtm_psd",
    "KL_CONVENTIONS", "audiocraft_segments", "kl_audiocraft", "kl_divergence", "kl_sam", "sam_label_distribution",
    "sam_windows",
    "rank_generated_files",
    "Preprocessing", "int16_round_trip", "peak_normalize",
    "log_mel_distance", "multi_resolution_stft_distance", "si_sdr",
]
