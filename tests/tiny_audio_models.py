"""Tiny, randomly initialised CLAP and AST models saved to disk, for tests of the metric embedders offline.

``make_tiny_clap(directory, fusion=False)`` writes a ``ClapModel`` (one-layer RoBERTa text tower, two-stage
HTSAT audio tower, 8-d joint space) with a ``ClapProcessor`` (default 48 kHz feature extractor and a word-level
tokenizer); ``make_tiny_ast(directory)`` writes an ``ASTForAudioClassification`` with 5 labels over 128 frames
and its feature extractor. Both return the directory as a string.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import torch

_CORPUS = ["a dog barks in the rain", "soft piano music", "loud drums and bass", "birds at dawn"]


def _seeded(build, seed: int):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(state)


def make_tiny_clap(directory: Union[str, os.PathLike], fusion: bool = False, seed: int = 0) -> str:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(_CORPUS, trainers.WordLevelTrainer(special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                             special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=77)
    text = dict(vocab_size=tokenizer.get_vocab_size(), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, max_position_embeddings=80, pad_token_id=1, projection_dim=8)
    audio = dict(hidden_size=16, patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[1, 2],
                 window_size=8, projection_dim=8, enable_fusion=fusion)
    config = ClapConfig(text_config=text, audio_config=audio, projection_dim=8)
    model = _seeded(lambda: ClapModel(config), seed)
    model.save_pretrained(str(directory))
    ClapProcessor(feature_extractor=ClapFeatureExtractor(), tokenizer=fast).save_pretrained(str(directory))
    return str(directory)


def make_tiny_ast(directory: Union[str, os.PathLike], seed: int = 0, labels: int = 5) -> str:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = {i: f"label_{i}" for i in range(labels)}
    config = ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       max_length=128, num_mel_bins=128, num_labels=labels, id2label=names,
                       label2id={v: k for k, v in names.items()})
    model = _seeded(lambda: ASTForAudioClassification(config), seed)
    model.save_pretrained(str(directory))
    ASTFeatureExtractor(max_length=128).save_pretrained(str(directory))
    return str(directory)
