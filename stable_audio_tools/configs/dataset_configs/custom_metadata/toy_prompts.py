"""Text prompts for the toy dataset of ``scripts/make_toy_dataset.py`` (a ``custom_metadata_module``).

Its files are named ``<number>_<kind>.wav`` with kind ``tone``, ``chirp`` or ``noise``; the prompt describes
that kind. A file with another name gets its name without extension, underscores as spaces, as prompt.
"""
import os
from typing import Any, Dict

PROMPTS = {
    "tone": "a steady harmonic tone",
    "chirp": "a sine chirp sweeping in pitch",
    "noise": "pulsing bursts of noise",
}


def get_custom_metadata(info: Dict[str, Any], audio: Any) -> Dict[str, Any]:
    """Return ``{"prompt": ...}`` for the item whose metadata ``info`` holds its ``relpath``."""
    stem = os.path.splitext(os.path.basename(info["relpath"]))[0]
    kind = stem.rsplit("_", 1)[-1]
    return {"prompt": PROMPTS.get(kind, stem.replace("_", " "))}
