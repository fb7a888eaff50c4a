"""DeepSpeed ZeRO checkpoint directories -> one Lightning checkpoint file, without DeepSpeed installed.

``train.py --strategy deepspeed`` saves each checkpoint as a directory (``epoch=0-step=N.ckpt/``) in DeepSpeed's
layout instead of a file::

    <dir>/latest                                         the tag (sub-folder) of the newest save, e.g. "checkpoint"
    <dir>/<tag>/mp_rank_00_model_states.pt               ZeRO 1/2: module state (16-bit), parameter names and shapes,
                                                         buffer names, and Lightning's own keys (step, loops, ...)
    <dir>/<tag>/zero_pp_rank_<r>_mp_rank_00_model_states.pt   ZeRO 3: the same, one per data-parallel rank
    <dir>/<tag>/*zero_pp_rank_<r>_mp_rank_00_optim_states.pt  per rank: the fp32 master weights, flattened per
                                                         parameter group (``single_partition_of_fp32_groups`` for
                                                         ZeRO 1/2, ``fp32_flat_groups`` for ZeRO 3)

:func:`load_zero_checkpoint` rebuilds the full fp32 ``state_dict`` from the ranks' flat partitions (as DeepSpeed's
``zero_to_fp32`` and Lightning's ``convert_zero_checkpoint_to_fp32_state_dict`` do) and returns Lightning's
checkpoint keys with it, which ``unwrap_model.py`` reads like any training checkpoint.

Every file is read with the project's safe loader (:func:`~stable_audio_tools.models.safe_load.torch_load`). The
few DeepSpeed classes these files pickle (:data:`DEEPSPEED_STAND_INS`: the ZeRO stage enum, the loss scaler, the
parameter-fragment addresses) are plain records; they are rebuilt as inert stand-ins, so neither DeepSpeed nor
arbitrary unpickling is needed. Anything else is refused unless ``--trust-pickle`` is given.
"""
from __future__ import annotations

import logging
import math
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..models.safe_load import torch_load
from .export import atomic_write, check_finite_before_save

__all__ = ["DEEPSPEED_STAND_INS", "DeepSpeedRecord", "ZeroCheckpointError", "load_zero_checkpoint",
           "convert_zero_checkpoint"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class ZeroCheckpointError(ValueError):
    """A directory is not a complete DeepSpeed ZeRO checkpoint; the message names the missing or bad part."""


class DeepSpeedRecord:
    """Inert stand-in for a DeepSpeed object in a checkpoint (its attributes are restored, no code runs)."""

    def __repr__(self) -> str:
        return f"DeepSpeedRecord({vars(self)})"


DEEPSPEED_STAND_INS: List[Tuple[Any, str]] = [
    (int, "deepspeed.runtime.zero.config.ZeroStageEnum"),
    (DeepSpeedRecord, "deepspeed.runtime.fp16.loss_scaler.LossScaler"),
    (DeepSpeedRecord, "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler"),
    (DeepSpeedRecord, "deepspeed.utils.tensor_fragment.fragment_address"),
]
"""``(stand-in, "deepspeed.Name")`` pairs the ZeRO files are loaded with (``torch.serialization.safe_globals``)."""

# DeepSpeed's bookkeeping in the model-states file; everything else there is Lightning's checkpoint
_DEEPSPEED_KEYS = {
    "module", "buffer_names", "optimizer", "param_shapes", "frozen_param_shapes", "shared_params",
    "frozen_param_fragments", "lr_scheduler", "data_sampler", "random_ltd", "sparse_tensor_module_names",
    "csr_tensor_module_names", "skipped_steps", "global_steps", "global_samples", "dp_world_size", "mp_world_size",
    "ds_config", "ds_version",
}
_LIGHTNING_PREFIX = "_forward_module."  # Lightning < 2.1 wrapped the module


def _natural(path: Path) -> List[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _load(path: Path, mmap: bool = False) -> Dict[str, Any]:
    with torch.serialization.safe_globals(DEEPSPEED_STAND_INS):
        obj = torch_load(path, mmap=mmap)
    if not isinstance(obj, Mapping):
        raise ZeroCheckpointError(f"{path} is not a DeepSpeed checkpoint file (found a {type(obj).__name__})")
    return dict(obj)


def _tag_folder(checkpoint_dir: Path, tag: Optional[str]) -> Path:
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"DeepSpeed checkpoint directory not found: {checkpoint_dir}")
    if tag is None:
        latest = checkpoint_dir / "latest"
        if not latest.is_file():
            raise ZeroCheckpointError(f"{checkpoint_dir} has no 'latest' file naming the checkpoint tag; pass the "
                                      f"tag (the name of the sub-folder holding the *_states.pt files) with --tag")
        tag = latest.read_text(encoding="utf-8").strip()
    folder = checkpoint_dir / tag
    if not folder.is_dir():
        raise ZeroCheckpointError(f"{checkpoint_dir}: the checkpoint tag {tag!r} has no folder {folder}")
    return folder


def _optimizer_states(folder: Path) -> Tuple[int, int, List[List[torch.Tensor]]]:
    """``(zero stage, data-parallel world size, per-rank lists of flat fp32 groups)``."""
    files = sorted(folder.glob("*_optim_states.pt"), key=_natural)
    if not files:
        raise ZeroCheckpointError(f"{folder} holds no *_optim_states.pt files (the fp32 weights of a ZeRO "
                                  f"checkpoint); is it a DeepSpeed ZeRO checkpoint folder?")
    states = []
    for path in files:
        state = _load(path, mmap=True).get("optimizer_state_dict")
        if not isinstance(state, Mapping) or "zero_stage" not in state:
            raise ZeroCheckpointError(f"{path} holds no ZeRO optimizer state ('optimizer_state_dict' with a "
                                      f"'zero_stage'); only ZeRO stage 1, 2 and 3 checkpoints can be converted")
        states.append(state)
    stage = int(states[0]["zero_stage"])
    world = states[0].get("partition_count", len(files))
    world = max(world) if isinstance(world, (list, tuple)) else int(world)
    if world != len(files):
        raise ZeroCheckpointError(f"{folder}: the checkpoint was written by {world} data-parallel ranks but "
                                  f"{len(files)} *_optim_states.pt files are there; a rank's file is missing or "
                                  f"stale (from another save)")
    key = "single_partition_of_fp32_groups" if stage <= 2 else "fp32_flat_groups"
    if stage not in (1, 2, 3):
        raise ZeroCheckpointError(f"{files[0]}: unknown ZeRO stage {stage}")
    groups = []
    for path, state in zip(files, states):
        flat = state.get(key)
        if flat is None:
            raise ZeroCheckpointError(f"{path}: a ZeRO stage {stage} optimizer state needs {key!r}")
        groups.append(list(flat) if isinstance(flat, (list, tuple)) else [flat])
    return stage, world, groups


def _model_states(folder: Path, stage: int, world: int) -> List[Dict[str, Any]]:
    if stage <= 2:
        names = ["mp_rank_00_model_states.pt"]
    else:
        names = [f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" for rank in range(world)]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise ZeroCheckpointError(f"{folder} lacks the model states file(s) {', '.join(missing)} of a ZeRO stage "
                                  f"{stage} checkpoint")
    states = [_load(folder / n) for n in names]
    for name, state in zip(names, states):
        for key in ("buffer_names", "param_shapes", "module"):
            if key not in state:
                raise ZeroCheckpointError(f"{folder / name} is not a ZeRO model states file (no {key!r})")
    return states


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


def _merge_stage12(groups: List[List[torch.Tensor]], param_shapes: Sequence[Mapping[str, Sequence[int]]],
                   world: int, source: Path) -> Dict[str, torch.Tensor]:
    """ZeRO 1/2: each parameter group's flat fp32 vector is split in consecutive slices over the ranks."""
    weights: Dict[str, torch.Tensor] = OrderedDict()
    if len(param_shapes) != len(groups[0]):
        raise ZeroCheckpointError(f"{source}: {len(param_shapes)} parameter groups in the model states but "
                                  f"{len(groups[0])} in the optimizer states")
    align = 2 * world  # DeepSpeed pads each group's flat vector to a multiple of 2 x world size

    def aligned(n: int) -> int:
        return align * math.ceil(n / align)

    for index, shapes in enumerate(param_shapes):
        flat = torch.cat([rank_groups[index].reshape(-1) for rank_groups in groups])
        offset = 0
        for name, shape in shapes.items():
            n = _numel(shape)
            if offset + n > flat.numel():
                raise ZeroCheckpointError(f"{source}: group {index} holds {flat.numel()} values, too few for "
                                          f"{name} {tuple(shape)}")
            weights[name] = flat.narrow(0, offset, n).view(*shape).clone()
            offset += n
        if aligned(offset) != aligned(flat.numel()):
            raise ZeroCheckpointError(f"{source}: group {index} holds {flat.numel()} values but its parameters "
                                      f"use {offset}; the files do not belong together")
    return weights


def _merge_stage3(groups: List[List[torch.Tensor]], param_shapes: Sequence[Mapping[str, Sequence[int]]],
                  world: int, source: Path) -> Dict[str, torch.Tensor]:
    """ZeRO 3: every parameter is split in ``ceil(numel / world)`` slices (the last zero-padded), one per rank,
    laid out one parameter after another in each rank's flat groups."""
    weights: Dict[str, torch.Tensor] = OrderedDict()
    flats = [torch.cat([g.reshape(-1) for g in rank_groups]) for rank_groups in groups]
    shapes = {name: shape for group in param_shapes for name, shape in group.items()}
    offset = 0
    for name, shape in shapes.items():
        n = _numel(shape)
        part = math.ceil(n / world)
        if offset + part > flats[0].numel():
            raise ZeroCheckpointError(f"{source}: the flat fp32 groups are too small for {name} {tuple(shape)}")
        full = torch.cat([flat.narrow(0, offset, part) for flat in flats])
        weights[name] = full.narrow(0, 0, n).view(*shape).clone()
        offset += part
    if offset != flats[0].numel():
        raise ZeroCheckpointError(f"{source}: each rank holds {flats[0].numel()} values but the parameters use "
                                  f"{offset}; the files do not belong together")
    return weights


def _frozen(model_states: List[Dict[str, Any]], stage: int, world: int) -> Dict[str, torch.Tensor]:
    shapes = model_states[0].get("frozen_param_shapes") or {}
    weights: Dict[str, torch.Tensor] = OrderedDict()
    for name, shape in shapes.items():
        fragments = [state["frozen_param_fragments"][name] for state in model_states]
        if stage <= 2:
            weights[name] = fragments[0].float().view(*shape)
        else:
            weights[name] = torch.cat([f.reshape(-1) for f in fragments]).narrow(0, 0, _numel(shape)).float() \
                .view(*shape)
    return weights


def load_zero_checkpoint(checkpoint_dir: PathLike, tag: Optional[str] = None) -> Dict[str, Any]:
    """The Lightning checkpoint held by a DeepSpeed ZeRO (stage 1, 2 or 3) checkpoint directory.

    Args:
        checkpoint_dir (str | os.PathLike): the directory DeepSpeed saved (the one holding ``latest``).
        tag (str, optional): the sub-folder to read; default None reads the one named by ``latest``.

    Returns:
        The checkpoint's Lightning keys (``global_step``, ``epoch``, ``loops``, ``model_config``, ...) and
        ``state_dict``: the consolidated fp32 weights (trainable and frozen parameters, buffers, shared
        parameters), named as in the LightningModule. DeepSpeed's bookkeeping and the optimizer state are dropped.

    Raises:
        FileNotFoundError: ``checkpoint_dir`` does not exist.
        ZeroCheckpointError: a part of the layout is missing or inconsistent (the message names it).
        UntrustedCheckpointError: a file needs classes other than :data:`DEEPSPEED_STAND_INS` and
            ``--trust-pickle`` / ``STABLE_AUDIO_TOOLS_TRUST_PICKLE`` is not set.
    """
    checkpoint_dir = Path(checkpoint_dir)
    folder = _tag_folder(checkpoint_dir, tag)
    stage, world, groups = _optimizer_states(folder)
    model_states = _model_states(folder, stage, world)
    first = model_states[0]
    log.info("%s: ZeRO stage %d checkpoint of %d rank(s)", folder, stage, world)

    state_dict: Dict[str, torch.Tensor] = OrderedDict()
    buffer_names = set(first["buffer_names"])
    for name, value in first["module"].items():
        if name in buffer_names and torch.is_tensor(value):
            state_dict[name] = value.float() if value.is_floating_point() else value
    state_dict.update(_frozen(model_states, stage, world))
    merge = _merge_stage12 if stage <= 2 else _merge_stage3
    state_dict.update(merge(groups, first["param_shapes"], world, folder))
    for name, source in (first.get("shared_params") or {}).items():
        if source in state_dict:
            state_dict[name] = state_dict[source]
    state_dict = OrderedDict((k[len(_LIGHTNING_PREFIX):] if k.startswith(_LIGHTNING_PREFIX) else k, v)
                             for k, v in state_dict.items())

    checkpoint = {k: v for k, v in first.items() if k not in _DEEPSPEED_KEYS}
    checkpoint["state_dict"] = state_dict
    return checkpoint


def convert_zero_checkpoint(checkpoint_dir: PathLike, output_file: PathLike, tag: Optional[str] = None) -> \
        Dict[str, Any]:
    """Write :func:`load_zero_checkpoint`'s result to ``output_file`` (atomically; refused, with nothing written,
    when a weight is NaN or infinite) and return it."""
    checkpoint = load_zero_checkpoint(checkpoint_dir, tag)
    check_finite_before_save(checkpoint["state_dict"], output_file)
    atomic_write(output_file, lambda tmp: torch.save(checkpoint, tmp))
    log.info("wrote %s (%d tensors, step %s)", output_file, len(checkpoint["state_dict"]),
             checkpoint.get("global_step", "?"))
    return checkpoint
