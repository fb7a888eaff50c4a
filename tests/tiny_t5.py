"""The tiny offline T5 of ``scripts/make_tiny_text_encoder.py`` for tests that need a T5 without network.

``make_tiny_t5(directory)`` writes a randomly initialised ``T5EncoderModel`` (d_model ``TINY_T5_DIM``) and a
word-level fast tokenizer with T5's special tokens into ``directory`` and returns the path; point
``t5_model_name`` (or a ``lut`` conditioner's ``tokenizer_name``) at it. Needs ``transformers`` and ``tokenizers``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_tiny_text_encoder.py"
_spec = importlib.util.spec_from_file_location("make_tiny_text_encoder", _SCRIPT)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

TINY_T5_DIM = _module.TINY_T5_DIM
make_tiny_t5 = _module.make_tiny_t5
