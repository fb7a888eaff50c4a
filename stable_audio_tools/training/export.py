"""Atomic checkpoint writing: Lightning training checkpoints and unwrapped model files."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch
from torch import nn
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ..models.safe_load import torch_load

__all__ = ["atomic_write", "save_unwrapped", "AtomicCheckpointIO"]

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A crash or kill at any point leaves either the old file or the new one, never a truncated file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_unwrapped(model: nn.Module, path: PathLike, use_safetensors: bool = False,
                   metadata: Optional[Dict[str, str]] = None) -> None:
    """Save ``model``'s state dict as ``.safetensors`` (flat) or ``.ckpt`` (``{"state_dict": ...}``), atomically."""
    if use_safetensors:
        from safetensors.torch import save_model

        atomic_write(path, lambda tmp: save_model(model, tmp, metadata=metadata))
    else:
        state = {"state_dict": model.state_dict()}
        atomic_write(path, lambda tmp: torch.save(state, tmp))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes to a temporary file and renames it into place, and reads safely.

    Loading (``trainer.fit(ckpt_path=...)`` resumes) goes through
    :func:`stable_audio_tools.models.safe_load.torch_load`: no arbitrary unpickling unless
    ``STABLE_AUDIO_TOOLS_TRUST_PICKLE`` is set, whatever ``weights_only`` Lightning asks for.
    """

    def load_checkpoint(self, path: PathLike, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        return torch_load(path, map_location="cpu" if map_location is None else map_location)

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
