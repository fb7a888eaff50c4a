"""Semantic (self-supervised speech model) feature loss and the DAC-style mel loss (upstream
``training/losses/semantic.py``).

:class:`HubertLoss` compares the hidden states of a frozen HuBERT, WavLM or wav2vec 2.0 model for the decoded and
the real audio. Upstream loads torchaudio's pipeline bundles; here the same checkpoints are loaded through
``transformers`` (a core dependency) from the Hugging Face cache or a local directory, so torchaudio is not needed:

========================= ==================================
upstream ``model_name``   Hugging Face model
========================= ==================================
``HUBERT_LARGE``          ``facebook/hubert-large-ll60k``
``WAVLM_LARGE``           ``microsoft/wavlm-large``
``WAV2VEC2_LARGE_LV60K``  ``facebook/wav2vec2-large-lv60``
========================= ==================================

``model_name`` may also be any other Hub repo id or a local directory holding a ``save_pretrained`` HuBERT, WavLM or
wav2vec 2.0 model. ``MelSpectrogramLoss`` and ``fold_channels_into_batch`` are re-exported from
:mod:`.losses` and :mod:`stable_audio_tools.models.common`.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import julius
import torch
import torch.nn.functional as F
from torch import nn

from ...models.common import fold_channels_into_batch
from .losses import MelSpectrogramLoss

__all__ = ["HubertLoss", "HUBERT_MODELS", "fold_channels_into_batch", "MelSpectrogramLoss"]

HUBERT_MODELS: Dict[str, str] = {
    "HUBERT_LARGE": "facebook/hubert-large-ll60k",
    "WAVLM_LARGE": "microsoft/wavlm-large",
    "WAV2VEC2_LARGE_LV60K": "facebook/wav2vec2-large-lv60",
}
"""Upstream's torchaudio bundle names and the Hugging Face checkpoints of the same models."""

MODEL_SAMPLE_RATE = 16000


def _load_feature_model(model_name: str) -> nn.Module:
    from transformers import AutoModel

    source = HUBERT_MODELS.get(model_name, model_name)
    try:
        model = AutoModel.from_pretrained(source)
    except (OSError, ValueError) as err:
        if os.path.isdir(source):
            hint = "check that the directory holds the config.json and the weights written by save_pretrained"
        else:
            offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
            where = " (this process is offline: HF_HUB_OFFLINE=1)" if offline else ""
            hint = (f"it is read from the Hugging Face cache{where}; "
                    f"download it into the cache once while online with `hf download {source}` (older "
                    f"huggingface_hub: `huggingface-cli download {source}`), or set model_name to a local directory "
                    f"written by save_pretrained")
        raise OSError(f"HubertLoss: cannot load the feature model {model_name!r} (Hugging Face model {source}): "
                      f"{err}. Use one of {', '.join(HUBERT_MODELS)}, a Hub repo id or a local model directory; "
                      f"{hint}") from err
    if not hasattr(model, "feature_extractor") or not hasattr(model, "encoder"):
        raise ValueError(f"HubertLoss: {source} is a {type(model).__name__}, not a HuBERT, WavLM or wav2vec 2.0 "
                         f"model")
    return model


class HubertLoss(nn.Module):
    """L1 distance between self-supervised speech features of ``x`` and ``y``, each normalised by the standard
    deviation of the target's features: ``weight * mean_i(|f_i(x) - f_i(y)|_1 / (std(f_i(y)) + 1e-5))``.

    The features ``f_i`` are the outputs of the model's transformer layers (``i`` counts from 0), or, with
    ``feature_ids=[-1]``, the output of its convolutional feature encoder. Inputs ``[B, C, T]`` are compared channel
    by channel (channels are folded into the batch). With ``normalize_waveform`` the folded batch is layer-normalised
    as a whole first, as torchaudio's large-model bundles do. The feature model is frozen and always kept in eval
    mode (no dropout, no SpecAugment masking).

    Args:
        feature_ids (list of int, optional): layers to compare; None compares every layer, ``[-1]`` the
            convolutional features. Default None.
        weight (float): overall weight. Default 1.0.
        model_name (str): an upstream bundle name (:data:`HUBERT_MODELS`), a Hub repo id or a local directory.
            Default ``"HUBERT_LARGE"``.
        sample_rate (int, optional): sample rate of the audio given to :meth:`forward`; when set and not 16000 the
            audio is resampled to the model's 16 kHz first (upstream feeds it unchanged). Default None.
        normalize_waveform (bool): layer-normalise the input waveforms (torchaudio's large bundles do). Default True.
    """

    def __init__(self, feature_ids: Optional[Sequence[int]] = None, weight: float = 1.0,
                 model_name: str = "HUBERT_LARGE", sample_rate: Optional[int] = None,
                 normalize_waveform: bool = True) -> None:
        super().__init__()
        self.weight = weight
        self.feature_ids = None if feature_ids is None else [int(i) for i in feature_ids]
        self.model_name = model_name
        self.sample_rate = sample_rate
        self.normalize_waveform = normalize_waveform
        self.model = _load_feature_model(model_name)
        self.model.requires_grad_(False)
        self.model.eval()
        num_layers = self.model.config.num_hidden_layers
        if self.feature_ids is not None and not self.conv_features:
            bad = [i for i in self.feature_ids if not 0 <= i < num_layers]
            if bad:
                raise ValueError(f"HubertLoss: feature_ids {bad} out of range; {model_name} has {num_layers} "
                                 f"transformer layers (0..{num_layers - 1}), or use [-1] for the conv features")

    @property
    def conv_features(self) -> bool:
        """Whether only the convolutional feature encoder's output is compared (``feature_ids == [-1]``)."""
        return self.feature_ids == [-1]

    def train(self, mode: bool = True) -> "HubertLoss":
        super().train(mode)
        self.model.eval()
        return self

    def _prepare(self, audio: torch.Tensor) -> torch.Tensor:
        audio = fold_channels_into_batch(audio).float()
        if self.sample_rate is not None and self.sample_rate != MODEL_SAMPLE_RATE:
            audio = julius.resample_frac(audio, self.sample_rate, MODEL_SAMPLE_RATE)
        if self.normalize_waveform:
            audio = F.layer_norm(audio, audio.shape)
        return audio

    def features(self, audio: torch.Tensor) -> List[torch.Tensor]:
        """The compared feature tensors of ``audio [B, C, T]`` (all layers, or the conv features)."""
        audio = self._prepare(audio)
        if self.conv_features:
            return [self.model.feature_extractor(audio)]
        hidden = self.model(audio, output_hidden_states=True).hidden_states[1:]
        if self.feature_ids is None:
            return list(hidden)
        return [hidden[i] for i in sorted(set(self.feature_ids))]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of the estimate ``x`` against the target ``y`` (both ``[B, C, T]``)."""
        if x.shape != y.shape:
            raise ValueError(f"HubertLoss needs inputs of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        x_features = self.features(x)
        with torch.no_grad():
            y_features = self.features(y)
        losses = [F.l1_loss(fx, fy) / (fy.std() + 1e-5) for fx, fy in zip(x_features, y_features)]
        return self.weight * torch.stack(losses).mean()
