"""Upstream's ``models/local_attention.py`` import path (local-attention transformer encoder/decoder).

Re-exports only: the code lives in :mod:`stable_audio_tools.models.local_attn`, ``checkpoint`` in
:mod:`stable_audio_tools.models.common`.
"""
from .common import checkpoint
from .local_attn import (ContinuousLocalTransformer, TransformerDecoder1D, TransformerDownsampleBlock1D,
                         TransformerEncoder1D, TransformerUpsampleBlock1D)

__all__ = ["checkpoint", "ContinuousLocalTransformer", "TransformerDownsampleBlock1D", "TransformerUpsampleBlock1D",
           "TransformerEncoder1D", "TransformerDecoder1D"]
