"""Start-of-training check for the most common cause of 'latent diffusion training only produces noise':
an autoencoder pretransform that was never loaded and so keeps its random initial weights."""
from __future__ import annotations

import logging
import os
from typing import List, Union

from torch import nn

from ..models.pretransforms import AutoencoderPretransform
from ..models.safe_load import safetensors_keys, torch_load

__all__ = ["checkpoint_keys", "pretransform_is_untrained", "warn_if_pretransform_untrained"]

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


def checkpoint_keys(path: PathLike) -> List[str]:
    """The tensor names of an unwrapped checkpoint, read without loading the tensors where possible
    (``.safetensors`` header; memory-mapped ``.ckpt``), safely (see :mod:`stable_audio_tools.models.safe_load`)."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return safetensors_keys(path)
    obj = torch_load(path, mmap=True)
    state_dict = obj.get("state_dict", obj) if isinstance(obj, dict) else {}
    return list(state_dict) if isinstance(state_dict, dict) else []


def pretransform_is_untrained(model: nn.Module, pretrained_ckpt_path: PathLike = "",
                              pretransform_ckpt_path: PathLike = "", resume_ckpt_path: PathLike = "") -> bool:
    """True when ``model`` has an autoencoder pretransform whose weights none of the given checkpoints provide:
    no ``--pretransform-ckpt-path``, no resumed training checkpoint, and no ``pretransform.*`` key in the
    ``--pretrained-ckpt-path`` checkpoint. Pretransforms without learnt weights (wavelet, PQMF, patching) or
    with their own pretrained weights (DAC, EnCodec) never count as untrained."""
    if not isinstance(getattr(model, "pretransform", None), AutoencoderPretransform):
        return False
    if pretransform_ckpt_path or resume_ckpt_path:
        return False
    if pretrained_ckpt_path:
        return not any(key.startswith("pretransform.") for key in checkpoint_keys(pretrained_ckpt_path))
    return True


def warn_if_pretransform_untrained(model: nn.Module, pretrained_ckpt_path: PathLike = "",
                                   pretransform_ckpt_path: PathLike = "", resume_ckpt_path: PathLike = "") -> bool:
    """Log a loud warning (and return True) when :func:`pretransform_is_untrained`; call it once the
    checkpoints are loaded, with train.py's ``--pretrained-ckpt-path``, ``--pretransform-ckpt-path`` and
    ``--ckpt-path`` values."""
    if not pretransform_is_untrained(model, pretrained_ckpt_path, pretransform_ckpt_path, resume_ckpt_path):
        return False
    log.warning(
        "THE PRETRANSFORM (AUTOENCODER) OF THIS MODEL HAS RANDOM WEIGHTS. Neither --pretransform-ckpt-path nor "
        "--pretrained-ckpt-path (no 'pretransform.*' weights in it) nor a resumed --ckpt-path provides them, so "
        "the model is trained on the latents of an untrained autoencoder and everything it generates will decode "
        "to noise. Pass your trained autoencoder's unwrapped checkpoint with --pretransform-ckpt-path (unwrap a "
        "training checkpoint with unwrap_model.py first), or a full model checkpoint that includes the "
        "pretransform with --pretrained-ckpt-path. Ignore this only if a random pretransform is intended.")
    return True
