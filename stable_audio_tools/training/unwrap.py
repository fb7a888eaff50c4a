"""Unwrapping training checkpoints into bare-model checkpoints (used by ``unwrap_model.py``).

Each model family names how to export its wrapper in its model-family entry (``unwrapper`` in
:mod:`stable_audio_tools.families`; ``UNWRAPPERS`` is a view): a function taking the model config, the wrapped
state dict and returning the bare model (with the weights to export loaded).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import torch
from torch import nn

from ..families import BuilderTable, get_model_family, resolve_builder
from ..models.factory import create_model_from_config, load_model_config
from ..models.utils import CheckpointKindError, read_checkpoint
from .export import atomic_write, save_unwrapped
from .run_dirs import config_differences

__all__ = ["unwrap_checkpoint", "UNWRAPPERS", "unwrap_autoencoder", "unwrap_diffusion", "unwrap_diffusion_autoencoder",
           "unwrap_lm", "extract_prefixed", "model_config_path_for", "check_model_config_file",
           "write_model_config_file"]

log = logging.getLogger(__name__)


def extract_prefixed(state_dict: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """Keys starting with ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def unwrap_autoencoder(model_config: Mapping, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    model = create_model_from_config(model_config)
    ema = extract_prefixed(state_dict, "autoencoder_ema.ema_model.")
    use_ema = bool(ema) and model_config.get("training", {}).get("use_ema", True)
    weights = ema if use_ema else extract_prefixed(state_dict, "autoencoder.")
    log.info("exporting the %s autoencoder weights", "EMA" if use_ema else "online")
    model.load_state_dict(weights, strict=True)
    return model


def unwrap_diffusion(model_config: Mapping, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """diffusion_uncond / diffusion_cond(_inpaint), ARC runs included: the ``diffusion.*`` weights with the
    backbone (``model.*``) taken from ``diffusion_ema.ema_model.*`` when the run kept an EMA."""
    model = create_model_from_config(model_config)
    weights = extract_prefixed(state_dict, "diffusion.")
    ema = extract_prefixed(state_dict, "diffusion_ema.ema_model.")
    if ema:
        weights = {k: v for k, v in weights.items() if not k.startswith("model.")}
        weights.update({f"model.{k}": v for k, v in ema.items()})
    log.info("exporting the %s diffusion backbone", "EMA" if ema else "online")
    model.load_state_dict(weights, strict=True)
    return model


def unwrap_diffusion_autoencoder(model_config: Mapping, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """The EMA copy of the diffusion autoencoder (``diffae_ema.ema_model.*``), else the online ``diffae.*``."""
    model = create_model_from_config(model_config)
    ema = extract_prefixed(state_dict, "diffae_ema.ema_model.")
    log.info("exporting the %s diffusion autoencoder", "EMA" if ema else "online")
    model.load_state_dict(ema or extract_prefixed(state_dict, "diffae."), strict=True)
    return model


def unwrap_lm(model_config: Mapping, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """The EMA copy of the language model (``model_ema.ema_model.*``), else the online ``model.*``."""
    model = create_model_from_config(model_config)
    ema = extract_prefixed(state_dict, "model_ema.ema_model.")
    log.info("exporting the %s language model", "EMA" if ema else "online")
    model.load_state_dict(ema or extract_prefixed(state_dict, "model."), strict=True)
    return model


# model_type -> unwrapper(model_config, state_dict), a view of the model-family registry (stable_audio_tools.families).
UNWRAPPERS: Mapping[str, Callable[[Mapping, Mapping[str, torch.Tensor]], nn.Module]] = BuilderTable("unwrapper")


def model_config_path_for(name: str) -> Path:
    """The config file written beside the weights ``name`` + extension: ``<name>_config.json`` (so ``DIR/model``
    gives ``DIR/model.ckpt`` + ``DIR/model_config.json``, the layout ``get_pretrained_model(DIR)`` reads)."""
    return Path(f"{name}_config.json")


def check_model_config_file(path: Path, model_config: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` when ``path`` exists and holds a different model config (it is never overwritten)."""
    if not path.exists():
        return
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} already exists and is not a readable JSON model config ({e}); remove it or "
                         f"choose another --name") from None
    diff = config_differences(existing, model_config)
    if diff:
        raise ValueError(f"{path} already exists and describes a different model (differs at "
                         f"{', '.join(diff[:5])}); it is not overwritten: remove it or choose another --name")


def write_model_config_file(path: Path, model_config: Mapping[str, Any]) -> None:
    """Write ``model_config`` as indented JSON to ``path`` atomically (after :func:`check_model_config_file`)."""
    text = json.dumps(model_config, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def unwrap_checkpoint(ckpt_path: str, model_config_path: Optional[str], name: str,
                      use_safetensors: bool = False) -> str:
    """Unwrap ``ckpt_path``; returns the written file name (``name`` + ``.ckpt`` / ``.safetensors``).

    The model config is written beside it as ``<name>_config.json``; an existing file of that name holding a
    different config is an error (checked before anything is written), one holding the same config is kept.
    The training checkpoint is read safely (``weights_only``; see :mod:`stable_audio_tools.models.safe_load`).
    """
    kind, ckpt = read_checkpoint(ckpt_path)
    if kind != "wrapped":
        raise CheckpointKindError(f"{ckpt_path} is already an unwrapped model checkpoint ({kind}); it can be used "
                                  f"directly (--pretrained-ckpt-path, get_pretrained_model, pre_encode.py)")
    if model_config_path:
        model_config = load_model_config(model_config_path)
    elif "model_config" in ckpt:
        model_config = ckpt["model_config"]
        log.info("using the model config embedded in %s", ckpt_path)
    else:
        raise ValueError(f"{ckpt_path} has no embedded model_config; pass --model-config")
    family = get_model_family(model_config.get("model_type"), "unwrapper")
    config_path = model_config_path_for(name)
    check_model_config_file(config_path, model_config)
    model = resolve_builder(family.unwrapper)(model_config, ckpt["state_dict"])
    out = f"{name}.safetensors" if use_safetensors else f"{name}.ckpt"
    save_unwrapped(model, out, use_safetensors)
    if not config_path.exists():
        write_model_config_file(config_path, model_config)
    log.info("model config: %s", config_path)
    return out
