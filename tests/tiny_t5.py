"""A tiny, randomly initialised T5 encoder + tokenizer saved to disk, for tests that need a T5 without network.

``make_tiny_t5(directory)`` trains a word-level tokenizer on a small fixed corpus with the ``tokenizers``
library, wraps it as a ``transformers.PreTrainedTokenizerFast`` with T5's special tokens (``<pad>`` = 0,
``</s>`` = 1 appended to every sequence, ``<unk>`` = 2), builds a ``T5EncoderModel`` from a small
``T5Config`` (d_model 16, one layer, seeded) and ``save_pretrained``\\ s both into ``directory``. Point
``t5_model_name`` (or a ``lut`` conditioner's ``tokenizer_name``) at the returned path.

Needs ``pip install transformers tokenizers``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import torch

TINY_T5_DIM = 16

_CORPUS = [
    "a warm analog synth pad with slow attack",
    "punchy drums and a deep bass line at 120 bpm",
    "solo piano melody in a minor key",
    "ambient field recording of rain on a tin roof",
    "electric guitar riff with heavy distortion",
    "orchestral strings swelling into a crescendo",
    "lofi hip hop beat with vinyl crackle",
    "birds singing in a quiet forest at dawn",
]


def make_tiny_t5(directory: Union[str, os.PathLike], seed: int = 0) -> str:
    """Write a tiny T5 encoder and its tokenizer to ``directory``; return the directory path as a string."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(_CORPUS, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=512)
    fast.save_pretrained(str(directory))

    config = T5Config(vocab_size=tokenizer.get_vocab_size(), d_model=TINY_T5_DIM, d_kv=8, d_ff=32, num_layers=1,
                      num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                      dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = T5EncoderModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(str(directory))
    return str(directory)
