"""Upstream's ``models/encodec.py`` import path (EnCodec's multi-scale STFT discriminator).

Re-exports only: the discriminator code lives in :mod:`stable_audio_tools.models.discriminators`, ``checkpoint`` in
:mod:`stable_audio_tools.models.common`.
"""
from .common import checkpoint
from .discriminators import DiscriminatorSTFT, MultiScaleSTFTDiscriminator, NormConv2d, get_2d_padding

__all__ = ["checkpoint", "NormConv2d", "get_2d_padding", "DiscriminatorSTFT", "MultiScaleSTFTDiscriminator"]
