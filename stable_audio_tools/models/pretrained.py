"""``get_pretrained_model``: a model and its config from a Hugging Face repo or a local directory."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Tuple

from torch import nn

from .factory import create_model_from_config
from .utils import load_ckpt_state_dict

__all__ = ["get_pretrained_model"]

log = logging.getLogger(__name__)


def _fetch(name: str, filename: str) -> str:
    local = Path(name)
    if local.is_dir():
        path = local / filename
        if not path.exists():
            raise FileNotFoundError(f"{path} not found in local model directory {local}")
        return str(path)
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(name, filename=filename, repo_type="model")
    except Exception as e:  # offline, gated, missing file...
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        hint = (" HF_HUB_OFFLINE is set: download the model once with network access (or log in for gated models "
                "with `huggingface-cli login`), or pass a local directory holding model_config.json and "
                "model.safetensors / model.ckpt.") if offline else (
                " If the repository is gated, accept its licence on the Hub and run `huggingface-cli login`; or pass "
                "a local directory holding model_config.json and model.safetensors / model.ckpt.")
        raise FileNotFoundError(f"could not get '{filename}' of pretrained model '{name}': {type(e).__name__}: "
                                f"{e}.{hint}") from e


def get_pretrained_model(name: str) -> Tuple[nn.Module, Dict[str, Any]]:
    """Return ``(model, model_config)`` for a Hub repo id (e.g. ``stabilityai/stable-audio-open-1.0``) or a
    local directory. Weights come from ``model.safetensors``, else ``model.ckpt``, and load strictly.

    A ``model.ckpt`` is read safely: one that needs arbitrary unpickling raises
    :class:`~stable_audio_tools.models.safe_load.UntrustedCheckpointError` unless
    ``STABLE_AUDIO_TOOLS_TRUST_PICKLE=1`` (see :mod:`stable_audio_tools.models.safe_load`)."""
    with open(_fetch(name, "model_config.json"), encoding="utf-8") as f:
        model_config = json.load(f)
    model = create_model_from_config(model_config)
    try:
        ckpt = _fetch(name, "model.safetensors")
    except FileNotFoundError as safetensors_error:
        log.info("no model.safetensors for %s (%s); trying model.ckpt", name, safetensors_error)
        ckpt = _fetch(name, "model.ckpt")
    model.load_state_dict(load_ckpt_state_dict(ckpt), strict=True)
    return model, model_config
