"""Upstream's ``models/fsq.py`` import path (dithered finite scalar quantization).

Re-exports only: the code lives in :mod:`stable_audio_tools.models.quantizers`.
"""
from .quantizers import DitheredFSQ, leaky_hard_clip, round_ste

__all__ = ["leaky_hard_clip", "round_ste", "DitheredFSQ"]
