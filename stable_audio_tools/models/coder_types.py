"""The encoder and decoder types of autoencoder configs (``model.encoder.type`` / ``model.decoder.type``).

Each type string maps to ``"module:Class"``, imported when a model of that type is built or its config is
checked (:mod:`.autoencoders`, :mod:`.config_geometry`). A new encoder or decoder is one entry here.
"""
from __future__ import annotations

from typing import Dict

__all__ = ["ENCODER_TYPES", "DECODER_TYPES"]

# type string -> "module:Class", resolved when a model of that type is built.
ENCODER_TYPES: Dict[str, str] = {
    "oobleck": "stable_audio_tools.models.oobleck:OobleckEncoder",
    "seanet": "stable_audio_tools.models.seanet:SEANetEncoder",
    "dac": "stable_audio_tools.models.dac:DACEncoderWrapper",
    "local_attn": "stable_audio_tools.models.local_attn:TransformerEncoder1D",
    "taae": "stable_audio_tools.models.taae:TAAEEncoder",
}
DECODER_TYPES: Dict[str, str] = {
    "oobleck": "stable_audio_tools.models.oobleck:OobleckDecoder",
    "seanet": "stable_audio_tools.models.seanet:SEANetDecoder",
    "dac": "stable_audio_tools.models.dac:DACDecoderWrapper",
    "local_attn": "stable_audio_tools.models.local_attn:TransformerDecoder1D",
    "taae": "stable_audio_tools.models.taae:TAAEDecoder",
}
