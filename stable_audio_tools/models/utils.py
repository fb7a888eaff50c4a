"""Checkpoint utilities: loading, lenient copying and weight-norm removal.

Three kinds of checkpoint exist:

* **unwrapped** ``.safetensors``: a flat ``{key: tensor}`` file of a bare model (``model.encoder...``);
* **unwrapped** ``.ckpt``: ``torch.save({"state_dict": model.state_dict()})`` of a bare model;
* **wrapped** Lightning training checkpoint (``.ckpt``): the whole training state (``state_dict`` keys
  prefixed by the training wrapper, e.g. ``autoencoder.encoder...``, plus ``optimizer_states``,
  ``global_step``...). It is what ``train.py --ckpt-path`` resumes from and what ``unwrap_model.py``
  turns into an unwrapped checkpoint.

``load_ckpt_state_dict`` recognises a wrapped checkpoint and refuses it with a message that says
what to do, instead of failing later with hundreds of missing keys. Files are read safely (no arbitrary
unpickling unless trusted): see :mod:`stable_audio_tools.models.safe_load`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .common import compile, next_multiple_of_64, next_power_of_two
from .sampling_utils import multinomial, sample_top_k, sample_top_p
from .safe_load import CheckpointError, CheckpointKindError, load_safetensors, torch_load

__all__ = [
    "CheckpointKindError",
    "checkpoint_kind",
    "read_checkpoint",
    "load_ckpt_state_dict",
    "copy_state_dict",
    "CheckpointMismatchError",
    "state_dict_problems",
    "check_state_dict",
    "remove_weight_norm_from_model",
    "WRAPPED_CKPT_KEYS",
    # upstream's models/utils.py also holds these (defined in .common and .sampling_utils)
    "compile",
    "multinomial",
    "sample_top_k",
    "sample_top_p",
    "next_power_of_two",
    "next_multiple_of_64",
]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# Keys that only a Lightning training checkpoint has.
WRAPPED_CKPT_KEYS = ("optimizer_states", "pytorch-lightning_version", "loops", "global_step")


def read_checkpoint(path: PathLike) -> Tuple[str, Dict[str, Any]]:
    """Read a checkpoint file safely (see :mod:`stable_audio_tools.models.safe_load`) and classify it.

    Returns ``(kind, contents)`` with ``kind`` as for :func:`checkpoint_kind`; ``contents`` is the whole
    file (a Lightning checkpoint keeps its ``state_dict``, ``model_config``... keys).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return "unwrapped-safetensors", load_safetensors(path)
    obj = torch_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointKindError(f"{path} does not contain a checkpoint dict (found {type(obj).__name__})")
    if any(k in obj for k in WRAPPED_CKPT_KEYS):
        return "wrapped", dict(obj)
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        return "unwrapped-ckpt", dict(obj)
    if obj and all(torch.is_tensor(v) for v in obj.values()):
        return "bare-state-dict", dict(obj)
    raise CheckpointKindError(
        f"{path} is not a model checkpoint: expected a .safetensors file, a torch file holding "
        f"{{'state_dict': ...}}, or a Lightning training checkpoint; found top-level keys {sorted(obj)[:8]}")


def checkpoint_kind(path: PathLike) -> str:
    """Return ``'wrapped'``, ``'unwrapped-ckpt'``, ``'unwrapped-safetensors'`` or ``'bare-state-dict'``."""
    return read_checkpoint(path)[0]


def load_ckpt_state_dict(ckpt_path: PathLike, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Load the state dict of an *unwrapped* checkpoint (``.safetensors`` or ``{"state_dict": ...}`` file).

    A Lightning training checkpoint is refused with an explanation (resume it with
    ``train.py --ckpt-path``, or unwrap it with ``unwrap_model.py`` first). ``prefix``, when given,
    keeps only keys starting with it and strips it (e.g. ``"pretransform.model."``).
    """
    kind, obj = read_checkpoint(ckpt_path)
    if kind == "wrapped":
        step = obj.get("global_step", "?")
        raise CheckpointKindError(
            f"{ckpt_path} is a wrapped training checkpoint (Lightning, global_step {step}), not a model checkpoint. "
            f"To resume training pass it to train.py --ckpt-path; to use the weights elsewhere (--pretrained-ckpt-path, "
            f"--pretransform-ckpt-path, pre_encode.py, inference) first run: python unwrap_model.py --model-config "
            f"<config.json> --ckpt-path {ckpt_path} --name <out>")
    state_dict = obj["state_dict"] if kind == "unwrapped-ckpt" else obj
    state_dict = dict(state_dict)
    if prefix:
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return state_dict


def copy_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                    verbose: bool = True) -> Tuple[List[str], List[str], List[str]]:
    """Copy every tensor of ``state_dict`` whose key and shape match ``model`` (lenient load).

    Returns ``(copied, skipped_shape_mismatch, skipped_unknown)`` and, when ``verbose``, logs a
    one-line summary plus the skipped keys so a partial initialisation is never silent.
    """
    own = model.state_dict()
    copied, mismatched, unknown = [], [], []
    for key, value in state_dict.items():
        if isinstance(value, nn.Parameter):
            value = value.data
        if key not in own:
            unknown.append(key)
        elif own[key].shape != value.shape:
            mismatched.append(key)
        else:
            own[key] = value
            copied.append(key)
    model.load_state_dict(own, strict=False)
    missing = [k for k in own if k not in state_dict]
    if verbose:
        log.info("copy_state_dict: copied %d tensors, skipped %d with a different shape, %d unknown to the model; "
                 "%d model tensors kept their current values", len(copied), len(mismatched), len(unknown), len(missing))
        for key in mismatched:
            log.info("  shape mismatch, skipped: %s checkpoint %s model %s", key, tuple(state_dict[key].shape),
                     tuple(own[key].shape))
        for key in unknown[:50]:
            log.info("  not in model, skipped: %s", key)
    return copied, mismatched, unknown


def remove_weight_norm_from_model(model: nn.Module) -> nn.Module:
    """Fold weight normalisation into plain weights everywhere in ``model``; other modules are left alone.

    Handles our weight-normed layers (``remove_weight_norm()`` method), legacy
    ``torch.nn.utils.weight_norm`` hooks and ``parametrizations.weight_norm``. Unlike upstream it
    does not raise on modules that have a plain ``weight`` (mixed models work).
    """
    from torch.nn.utils import parametrize
    from torch.nn.utils.weight_norm import WeightNorm

    for module in model.modules():
        if hasattr(module, "remove_weight_norm") and getattr(module, "weight_norm_enabled", False):
            module.remove_weight_norm()
            continue
        for hook_id, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, WeightNorm):
                hook.remove(module)
                del module._forward_pre_hooks[hook_id]
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's tensors do not fit the model built from the config."""


MISMATCH_HINT = ("Use the model config the checkpoint was trained with (a training checkpoint embeds it under "
                 "'model_config') and an unwrapped checkpoint (python unwrap_model.py ...)")


def _listing(keys: List[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def state_dict_problems(own: Mapping[str, torch.Tensor], checkpoint: Mapping[str, torch.Tensor],
                        allow_missing: Tuple[str, ...] = ()) -> List[str]:
    """What keeps ``checkpoint`` from loading strictly into a model whose state dict is ``own``: model keys it
    lacks (except those starting with a prefix in ``allow_missing``), keys unknown to the model and tensors with
    another shape, one sentence each; empty when it fits exactly."""
    missing = [k for k in own if k not in checkpoint and not k.startswith(tuple(allow_missing))]
    unexpected = [k for k in checkpoint if k not in own]
    shapes = [f"{k} (checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)})" for k, v in checkpoint.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} model key(s) missing from the checkpoint: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} checkpoint key(s) unknown to the model: {_listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} tensor(s) with another shape: {_listing(shapes)}")
    return problems


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
                     allow_missing: Tuple[str, ...] = ()) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` loads strictly into ``model`` (keys starting
    with a prefix in ``allow_missing`` may be absent); the message names the offending keys (see
    :func:`state_dict_problems`)."""
    problems = state_dict_problems(model.state_dict(), state_dict, tuple(allow_missing))
    if problems:
        raise CheckpointMismatchError(f"{source} does not fit the model config: {'; '.join(problems)}. {MISMATCH_HINT}.")

