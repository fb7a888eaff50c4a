"""Embedders through ``transformers``: CLAP (``ClapModel`` + ``ClapProcessor``) and the Audio Spectrogram
Transformer AudioSet classifier (``ASTForAudioClassification``).

Weights come from a local directory written by ``save_pretrained`` or from the Hugging Face cache; with
``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` and nothing cached the embedders raise
:class:`~.base.MissingWeightsError` naming the model id and the ``huggingface-cli download`` command.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
import torch

from .base import AudioEmbedder, load_hf_pretrained, register_embedder, require_package

__all__ = ["ClapEmbedder", "ASTClassifier", "DEFAULT_CLAP_MODEL", "DEFAULT_AST_MODEL"]

DEFAULT_CLAP_MODEL = "laion/clap-htsat-fused"
DEFAULT_AST_MODEL = "MIT/ast-finetuned-audioset-10-10-0.4593"


def _pooled(output: Any) -> torch.Tensor:
    """``get_*_features`` return a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@register_embedder("clap")
class ClapEmbedder(AudioEmbedder):
    """LAION CLAP through ``transformers``: text and audio embeddings in one space (CLAP score), and the audio
    embedding as a clip embedding for a Frechet distance (FD_CLAP).

    Input: 48 kHz mono; under ``sam`` peak-normalised to -1 dBFS and quantised through int16 as
    stable-audio-metrics' ``clap_score``. The feature extractor repeat-pads short clips; longer than 10 s, a
    fused model gets its four-view fusion input and an unfused one a crop, both chosen at random by the
    feature extractor, so NumPy's generator is seeded with ``seed`` around every call (restored afterwards).

    Args:
        model: str, default ``"laion/clap-htsat-fused"``; a Hugging Face id or a ``save_pretrained`` directory
            holding both the model and the processor.
        convention: str, default ``"sam"`` (see :class:`AudioEmbedder`).
        device: str or torch.device, default ``"cpu"``.
        seed: int, default 0; NumPy seed for the feature extractor's random crops / fusion views.
        max_text_length: int, default 77; tokens per prompt (LAION's setting).
    """

    sample_rate = 48000
    channels = "mono"
    capabilities = ("fd", "clap")
    int16_round_trip = True
    comparable_to = ("CLAP score of stable-audio-metrics (Stable Audio Open paper) with a LAION fusion checkpoint "
                     "and convention 'sam'; FD on CLAP clip embeddings matches no published protocol exactly")

    def __init__(self, model: str = DEFAULT_CLAP_MODEL, convention: str = "sam", device: Any = "cpu",
                 seed: int = 0, max_text_length: int = 77) -> None:
        super().__init__(convention, device)
        transformers = require_package("transformers", "transformers", "clap")
        option = "--option clap.model=DIR"
        self.model_id = model
        self.model = load_hf_pretrained(transformers.ClapModel.from_pretrained, model, "CLAP model", option)
        self.model.to(self.device).eval()
        self.processor = load_hf_pretrained(transformers.ClapProcessor.from_pretrained, model, "CLAP processor",
                                            option)
        self.sample_rate = int(self.processor.feature_extractor.sampling_rate)
        self.fusion = bool(getattr(self.model.config.audio_config, "enable_fusion", False))
        self.seed = int(seed)
        self.max_text_length = int(max_text_length)

    def settings(self) -> Dict[str, Any]:
        return {**super().settings(), "model": self.model_id, "fusion": self.fusion, "seed": self.seed,
                "max_text_length": self.max_text_length}

    def clip_embedding(self, audio: torch.Tensor) -> torch.Tensor:
        state = np.random.get_state()
        np.random.seed(self.seed)
        try:
            inputs = self.processor.feature_extractor(
                audio[0].numpy(), sampling_rate=self.sample_rate, return_tensors="pt",
                truncation="fusion" if self.fusion else "rand_trunc", padding="repeatpad")
        finally:
            np.random.set_state(state)
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_features", "is_longer")}
        return _pooled(self.model.get_audio_features(**inputs))

    frames = clip_embedding

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str) or not texts:
            raise ValueError("embed_text takes a non-empty list of prompts")
        tokens = self.processor.tokenizer(list(texts), padding=True, truncation=True,
                                          max_length=self.max_text_length, return_tensors="pt")
        with torch.no_grad():
            output = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                  attention_mask=tokens["attention_mask"].to(self.device))
        return _pooled(output).detach().float().cpu()


@register_embedder("ast")
class ASTClassifier(AudioEmbedder):
    """Audio Spectrogram Transformer fine-tuned on AudioSet (527 labels) through ``transformers``: window logits
    for the KL divergence and pooled hidden states per 10 s window for a Frechet distance (consecutive windows;
    a last window under 1 s is dropped unless it is the whole clip).

    Input: 16 kHz mono (the feature extractor's rate), 10 s windows (the model sees 1024 frames of 10 ms,
    10.24 s, padded by its feature extractor); under ``sam`` peak-normalised to -1 dBFS.

    Args:
        model: str, default ``"MIT/ast-finetuned-audioset-10-10-0.4593"``; a Hugging Face id or a
            ``save_pretrained`` directory holding the model and its feature extractor.
        convention: str, default ``"sam"`` (see :class:`AudioEmbedder`).
        device: str or torch.device, default ``"cpu"``.
        batch_size: int, default 8; windows per forward pass.
    """

    sample_rate = 16000
    channels = "mono"
    capabilities = ("fd", "kl")
    comparable_to = ("no published KL: Stable Audio papers use PaSST (embedder 'passt'); AST gives the same kind of "
                     "AudioSet label distribution with a different classifier")

    def __init__(self, model: str = DEFAULT_AST_MODEL, convention: str = "sam", device: Any = "cpu",
                 batch_size: int = 8) -> None:
        super().__init__(convention, device)
        transformers = require_package("transformers", "transformers", "ast")
        option = "--option ast.model=DIR"
        self.model_id = model
        self.model = load_hf_pretrained(transformers.ASTForAudioClassification.from_pretrained, model,
                                        "AST classifier", option)
        self.model.to(self.device).eval()
        self.feature_extractor = load_hf_pretrained(transformers.AutoFeatureExtractor.from_pretrained, model,
                                                    "AST feature extractor", option)
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)

    def settings(self) -> Dict[str, Any]:
        return {**super().settings(), "model": self.model_id, "labels": int(self.model.config.num_labels),
                "batch_size": self.batch_size}

    def _batches(self, windows: Sequence[torch.Tensor]):
        for start in range(0, len(windows), self.batch_size):
            chunk = [w.numpy() for w in windows[start:start + self.batch_size]]
            features = self.feature_extractor(chunk, sampling_rate=self.sample_rate, return_tensors="pt")
            yield features["input_values"].to(self.device)

    def window_logits(self, windows: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.model(input_values=x).logits for x in self._batches(windows)])

    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        mono = audio[0]
        size = int(self.window_seconds * self.sample_rate)
        windows = [w for w in torch.split(mono, size) if w.shape[-1] * 10 >= size] or [mono]
        backbone = self.model.audio_spectrogram_transformer
        return torch.cat([backbone(input_values=x).pooler_output for x in self._batches(windows)])
