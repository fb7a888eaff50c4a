"""Embedders for the metrics, pluggable through one registry (see :mod:`.base` for adding one).

Registered here: ``clap`` and ``ast`` (``transformers``), ``logmel`` (weight-free), and ``openl3``, ``panns``,
``vggish``, ``passt`` (their optional packages).
"""
from .base import (CAPABILITIES, CONVENTIONS, AudioEmbedder, MissingPackageError, MissingWeightsError,
                   available_embedders, create_embedder, embedder_class, load_hf_pretrained, register_embedder,
                   require_package)
from .hf import DEFAULT_AST_MODEL, DEFAULT_CLAP_MODEL, ASTClassifier, ClapEmbedder
from .logmel import LogMelStatsEmbedder
from .optional import OpenL3Embedder, PANNsEmbedder, PaSSTClassifier, VGGishEmbedder

__all__ = [
    "CAPABILITIES", "CONVENTIONS", "AudioEmbedder", "MissingPackageError", "MissingWeightsError",
    "available_embedders", "create_embedder", "embedder_class", "load_hf_pretrained", "register_embedder",
    "require_package", "DEFAULT_AST_MODEL", "DEFAULT_CLAP_MODEL", "ASTClassifier", "ClapEmbedder",
    "LogMelStatsEmbedder", "OpenL3Embedder", "PANNsEmbedder", "PaSSTClassifier", "VGGishEmbedder",
]
