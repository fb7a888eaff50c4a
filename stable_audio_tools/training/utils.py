"""Optimizer and learning-rate scheduler factories (see docs/training.md#optimizer_configs) and the process rank.

As upstream's ``training/utils.py``, this module also exposes the logger helpers of :mod:`.logging_utils`.
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping

import torch
from torch.optim.lr_scheduler import LRScheduler

from ..config import ConfigError, require, require_mapping, warn_unknown_keys
from .logging_utils import log_audio, log_image, log_metric, log_point_cloud, logger_project_name

__all__ = ["InverseLR", "create_optimizer_from_config", "create_scheduler_from_config", "get_rank",
           # defined in .logging_utils, importable from here as from upstream's training/utils.py
           "logger_project_name", "log_metric", "log_audio", "log_image", "log_point_cloud"]


def get_rank() -> int:
    """Global rank of this process: ``SLURM_PROCID`` when set, else the initialised ``torch.distributed`` rank,
    else 0."""
    if "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"])
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return 0
    return torch.distributed.get_rank()


class InverseLR(LRScheduler):
    """Inverse-decay schedule with an optional exponential warmup (k-diffusion's ``InverseLR``).

    At step ``n``: ``lr = (1 - warmup ** (n + 1)) * max(final_lr, base_lr * (1 + n / inv_gamma) ** -power)``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, inv_gamma: float = 1.0, power: float = 1.0,
                 warmup: float = 0.0, final_lr: float = 0.0, last_epoch: int = -1) -> None:
        if not 0.0 <= warmup < 1:
            raise ValueError(f"InverseLR warmup must be in [0, 1), got {warmup}")
        self.inv_gamma = inv_gamma
        self.power = power
        self.warmup = warmup
        self.final_lr = final_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return self._get_closed_form_lr()

    def _get_closed_form_lr(self):
        warmup = 1 - self.warmup ** (self.last_epoch + 1)
        lr_mult = (1 + self.last_epoch / self.inv_gamma) ** -self.power
        return [warmup * max(self.final_lr, base_lr * lr_mult) for base_lr in self.base_lrs]


def _resolve(kind: str, path: str, module, extra: Mapping[str, type]) -> type:
    if kind in extra:
        return extra[kind]
    cls = getattr(module, kind, None)
    if isinstance(cls, type):
        return cls
    names = sorted(n for n in dir(module) if not n.startswith("_") and isinstance(getattr(module, n), type))
    raise ConfigError(path, f"unknown type {kind!r}", f"use one of {', '.join(list(extra) + names)}")


#: optimizers that get ``fused=True`` under ``fused_default`` (one kernel per tensor instead of a dozen)
FUSED_BY_DEFAULT = ("Adam", "AdamW")


def _fused_kernels_cover(parameters: Iterable) -> bool:
    """Whether torch's fused Adam kernels run every tensor of ``parameters`` (a list of tensors or of param-group
    dicts): real floating point on the CPU or a CUDA GPU (torch only finds out at the first step otherwise)."""
    tensors = [t for item in parameters for t in (item["params"] if isinstance(item, dict) else [item])]
    return all(t.device.type in ("cpu", "cuda") and t.dtype in (torch.float16, torch.bfloat16, torch.float32,
                                                                    torch.float64) for t in tensors)


def create_optimizer_from_config(optimizer_config: Mapping, parameters: Iterable,
                                 path: str = "optimizer", fused_default: bool = False) -> torch.optim.Optimizer:
    """``{"type": "AdamW", "config": {...}}`` -> a ``torch.optim`` optimizer (``FusedAdam`` needs DeepSpeed).

    With ``fused_default`` (the training wrappers set it under ``--precision bf16-mixed``), Adam / AdamW whose
    config sets neither ``fused`` nor ``foreach`` get ``fused=True`` (torch's fused CPU / CUDA kernels: about 3x
    faster steps, the same update up to float rounding); where torch refuses it (other devices or dtypes) the
    default implementation is used."""
    optimizer_config = require_mapping(optimizer_config, path)
    kind = require(optimizer_config, "type", path, "a torch.optim class name such as 'AdamW'", (str,))
    warn_unknown_keys(optimizer_config, ("type", "config"), path)
    config = dict(optimizer_config.get("config", {}))
    if kind == "FusedAdam":
        try:
            from deepspeed.ops.adam import FusedAdam
        except ImportError:
            raise ConfigError(f"{path}.type", "FusedAdam needs DeepSpeed", "pip install deepspeed, or use 'AdamW'")
        return FusedAdam(parameters, **config)
    cls = _resolve(kind, f"{path}.type", torch.optim, {})
    if fused_default and kind in FUSED_BY_DEFAULT and "fused" not in config and "foreach" not in config:
        parameters = [dict(g, params=list(g["params"])) if isinstance(g, dict) else g for g in parameters]
        if _fused_kernels_cover(parameters):
            try:
                return cls(parameters, **config, fused=True)
            except (RuntimeError, TypeError, ValueError):  # an option the fused kernels do not take
                pass
    try:
        return cls(parameters, **config)
    except TypeError as e:
        raise ConfigError(f"{path}.config", f"invalid options for {kind}: {e}") from None


def create_scheduler_from_config(scheduler_config: Mapping, optimizer: torch.optim.Optimizer,
                                 path: str = "scheduler") -> LRScheduler:
    """``{"type": "InverseLR" | any torch.optim.lr_scheduler class, "config": {...}}`` -> scheduler."""
    scheduler_config = require_mapping(scheduler_config, path)
    kind = require(scheduler_config, "type", path, "'InverseLR' or a torch.optim.lr_scheduler class name", (str,))
    warn_unknown_keys(scheduler_config, ("type", "config"), path)
    cls = _resolve(kind, f"{path}.type", torch.optim.lr_scheduler, {"InverseLR": InverseLR})
    try:
        return cls(optimizer, **dict(scheduler_config.get("config", {})))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}.config", f"invalid options for {kind}: {e}") from None
