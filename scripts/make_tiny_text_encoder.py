"""Build a tiny, randomly initialised T5 text encoder and its tokenizer, fully offline, for the tiny example configs.

    python scripts/make_tiny_text_encoder.py tiny_t5

writes ``tiny_t5/`` (``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json`` ...):
a ``T5EncoderModel`` from a small ``T5Config`` (``--d-model`` 16 wide, one layer, seeded random weights) and a
word-level tokenizer trained with the ``tokenizers`` library on a small fixed corpus (the toy dataset's prompts
plus a few music descriptions; other words map to ``<unk>``), wrapped as a ``transformers`` fast tokenizer with
T5's special tokens (``<pad>`` = 0, ``</s>`` = 1 appended to every text, ``<unk>`` = 2). Both are written with
``save_pretrained``, so ``AutoTokenizer.from_pretrained`` and ``T5EncoderModel.from_pretrained`` load them
without network access.

A ``t5`` conditioner uses it when its ``t5_model_name`` is this directory, e.g. ``"t5_model_name": "tiny_t5"``
in ``stable_audio_tools/configs/model_configs/tiny/dit_text_cond.json`` (a relative path is resolved against
the current directory, so run the commands from the directory that holds ``tiny_t5/``). The encoder is random:
it gives each prompt a distinct, fixed embedding, which is all a smoke test or tutorial needs; use a real T5
(``t5-base``) for real models.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable, Union

import torch

TINY_T5_DIM = 16

CORPUS = (
    "a steady harmonic tone",
    "a sine chirp sweeping in pitch",
    "pulsing bursts of noise",
    "a warm analog synth pad with slow attack",
    "punchy drums and a deep bass line at 120 bpm",
    "solo piano melody in a minor key",
    "ambient field recording of rain on a tin roof",
    "electric guitar riff with heavy distortion",
    "orchestral strings swelling into a crescendo",
    "lofi hip hop beat with vinyl crackle",
    "birds singing in a quiet forest at dawn",
)


def make_tiny_t5(directory: Union[str, os.PathLike], seed: int = 0, d_model: int = TINY_T5_DIM,
                 corpus: Iterable[str] = CORPUS) -> str:
    """Write a tiny T5 encoder and its tokenizer to ``directory``; return the directory as a string.

    Args:
        directory (str | os.PathLike): output directory (created if missing; existing files are overwritten).
        seed (int, default 0): seed of the random encoder weights (the global torch RNG is left unchanged).
        d_model (int, default 16): width of the encoder's hidden states (the conditioner's input width).
        corpus (Iterable[str], default ``CORPUS``): texts whose lower-cased words make up the vocabulary.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    if not isinstance(d_model, int) or d_model < 2 or d_model % 2:
        raise ValueError(f"d_model must be an even integer >= 2, got {d_model!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(list(corpus), trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=512)
    fast.save_pretrained(str(directory))

    config = T5Config(vocab_size=tokenizer.get_vocab_size(), d_model=d_model, d_kv=d_model // 2, d_ff=2 * d_model,
                      num_layers=1, num_heads=2, relative_attention_num_buckets=8,
                      relative_attention_max_distance=16, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = T5EncoderModel(config)
    finally:
        torch.random.set_rng_state(rng_state)
    model.save_pretrained(str(directory))
    return str(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="directory to write the encoder and tokenizer to (e.g. tiny_t5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    parser.add_argument("--d-model", type=int, default=TINY_T5_DIM,
                        help=f"hidden width of the encoder, even (default: {TINY_T5_DIM})")
    args = parser.parse_args()
    try:
        path = make_tiny_t5(args.out_dir, seed=args.seed, d_model=args.d_model)
    except ValueError as err:
        parser.error(f"--d-model: {err}")
    print(f"wrote a tiny T5 encoder (d_model {args.d_model}) and its tokenizer to {path}")


if __name__ == "__main__":
    main()
