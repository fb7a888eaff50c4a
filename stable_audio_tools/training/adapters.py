"""Adapter fine-tuning runs: ``train.py --adapter-config FILE`` and ``unwrap_model.py`` on such runs.

An adapter run applies the adapter (named ``default``) to the model after ``--pretrained-ckpt-path`` /
``--pretransform-ckpt-path`` are loaded, freezes every base parameter, optionally stores the frozen backbone in
bf16 / fp16 (``--base-precision``; adapter weights stay fp32 and the backbone's output is returned in fp32) and
turns the EMA off unless ``--adapter-ema true`` (the ``diffusion_uncond`` wrapper always keeps its EMA).
The DiT's transformer blocks are gradient-checkpointed whenever gradients are on (the backbone's default), which
adapter layers support (the sigma gate survives recomputation).

Its wrapped checkpoints hold the adapter tensors (and EMA copies), the optimizer state and step counters only,
plus ``adapter_run``: ``{"adapter_config", "adapter_name", "base_hash", "base_model_config_hash",
"base_precision"}``. Resuming (``--ckpt-path``) checks that the base weights hash equals ``base_hash`` (pass the
same ``--pretrained-ckpt-path`` / ``--pretransform-ckpt-path``) and that the adapter config is unchanged.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytorch_lightning as pl
import torch
from torch import nn

from ..models.adapters import (apply_adapters, base_state_hash, freeze_base, merge_adapters,
                               model_config_hash, parse_adapter_config, save_adapter)
from ..models.adapters.manage import base_parameters
from ..config import ConfigError
from ..models.factory import create_model_from_config
from ..models.safe_load import torch_load
from ..models.utils import load_ckpt_state_dict
from .export import save_unwrapped

__all__ = ["BASE_PRECISIONS", "AdapterRun", "AdapterCheckpointCallback", "is_adapter_checkpoint",
           "check_resume_kind", "unwrap_adapter_checkpoint"]

log = logging.getLogger(__name__)

BASE_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ADAPTER_NAME = "default"
# model types whose training wrapper takes training.use_ema
_EMA_CONFIGURABLE = ("diffusion_cond", "diffusion_cond_inpaint", "lm")
# EMA copies in wrapped checkpoints, and the root-model prefix they stand for
_EMA_PREFIXES = {"diffusion_ema.ema_model.": "model.", "model_ema.ema_model.": ""}


def _backbone(model: nn.Module) -> nn.Module:
    if hasattr(model, "lm"):
        return model.lm
    return model.model


def _to_float32(module: nn.Module, args: Any, output: Any) -> Any:
    return output.float() if isinstance(output, torch.Tensor) and output.is_floating_point() else output


class AdapterRun:
    """Set-up of one adapter fine-tuning run.

    Args:
        adapter_config (Mapping): the adapter config (see ``docs/adapters.md``).
        source (str): where it came from, for messages (the ``--adapter-config`` path). Default ``"--adapter-config"``.
        base_precision (str): ``fp32`` | ``bf16`` | ``fp16``, storage precision of the frozen backbone. Default fp32.
        ema (bool): keep an EMA of the adapter weights (where the wrapper supports turning it off). Default False.
    """

    def __init__(self, adapter_config: Mapping[str, Any], source: str = "--adapter-config",
                 base_precision: str = "fp32", ema: bool = False) -> None:
        if base_precision not in BASE_PRECISIONS:
            raise ValueError(f"--base-precision {base_precision!r}: use one of {', '.join(BASE_PRECISIONS)}")
        try:
            self.config = parse_adapter_config(adapter_config)
        except ConfigError as err:
            raise ValueError(f"{source}: {err}") from None
        self.source = source
        self.base_precision = base_precision
        self.ema = bool(ema)
        self.base_hash: Optional[str] = None
        self.model_config_hash: Optional[str] = None

    @classmethod
    def from_file(cls, path: str, **kwargs: Any) -> "AdapterRun":
        try:
            config = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"--adapter-config {path}: file not found") from None
        except (OSError, ValueError) as err:
            raise ValueError(f"--adapter-config {path}: not a readable JSON file ({err})") from None
        return cls(config, source=f"--adapter-config {path}", **kwargs)

    def prepare(self, model: nn.Module, model_config: Mapping[str, Any]) -> int:
        """Hash the base, apply the adapter, freeze the base, cast the backbone; return the trainable count."""
        self.base_hash = base_state_hash(model)
        self.model_config_hash = model_config_hash(model_config)
        try:
            layers = apply_adapters(model, self.config, name=ADAPTER_NAME)
        except ConfigError as err:
            raise ValueError(f"{self.source}: {err}") from None
        trainable = freeze_base(model)
        dtype = BASE_PRECISIONS[self.base_precision]
        if dtype != torch.float32:
            backbone = _backbone(model)
            for _, param in base_parameters(backbone):
                param.data = param.data.to(dtype)
            for name, buffer in backbone.named_buffers():
                if buffer.is_floating_point() and ".adapters." not in f".{name}":
                    buffer.data = buffer.data.to(dtype)
            backbone.register_forward_hook(_to_float32)
        total = sum(p.numel() for _, p in base_parameters(model))
        log.info("adapter run: %s rank %d on %d layers, %d trainable parameters (%.2f%% of the %d frozen), base "
                 "backbone in %s", self.config.type, self.config.rank, len(layers), trainable,
                 100.0 * trainable / max(total, 1), total, self.base_precision)
        return trainable

    def wrapper_config(self, model_config: Mapping[str, Any]) -> Dict[str, Any]:
        """The model config given to the training-wrapper factory (``training.use_ema`` = ``ema``)."""
        config = copy.deepcopy(dict(model_config))
        if config.get("model_type") in _EMA_CONFIGURABLE:
            config.setdefault("training", {})["use_ema"] = self.ema
        elif not self.ema:
            log.warning("adapter run: the %s training wrapper always keeps an EMA copy", config.get("model_type"))
        return config

    def attach(self, wrapper: pl.LightningModule) -> List[pl.Callback]:
        """Configure the training wrapper for adapter checkpoints; returns the callbacks to add to the Trainer."""
        wrapper.strict_loading = False  # adapter checkpoints hold no base weights
        return [AdapterCheckpointCallback(self)]

    def run_info(self) -> Dict[str, Any]:
        return {"adapter_config": self.config.to_dict(), "adapter_name": ADAPTER_NAME, "base_hash": self.base_hash,
                "base_model_config_hash": self.model_config_hash, "base_precision": self.base_precision}

    def check_resume(self, ckpt: Mapping[str, Any], path: str) -> None:
        """Refuse to resume an adapter checkpoint onto other base weights or with another adapter config."""
        info = ckpt.get("adapter_run")
        if not isinstance(info, Mapping):
            raise ValueError(f"--ckpt-path {path} is not a checkpoint of an adapter run (it has full model weights); "
                             f"to fine-tune from its weights unwrap it and pass it as --pretrained-ckpt-path")
        if info.get("base_hash") != self.base_hash:
            raise ValueError(f"--ckpt-path {path}: the base model weights differ from those this adapter run was "
                             f"trained on (base hash {str(info.get('base_hash'))[:12]}..., now "
                             f"{str(self.base_hash)[:12]}...); pass the same --pretrained-ckpt-path and "
                             f"--pretransform-ckpt-path as the original run")
        if parse_adapter_config(info.get("adapter_config", {})) != self.config:
            raise ValueError(f"--ckpt-path {path} was trained with another adapter config "
                             f"({json.dumps(info.get('adapter_config'))}); pass the run's own {self.source}")


def _is_base_key(key: str, root_prefix: str) -> bool:
    return key.startswith(root_prefix) or any(key.startswith(p) for p in _EMA_PREFIXES)


def _root_prefix(wrapper: nn.Module) -> str:
    for attr in ("diffusion", "model", "diffae", "autoencoder"):
        if isinstance(getattr(wrapper, attr, None), nn.Module):
            return attr + "."
    raise ValueError(f"{type(wrapper).__name__}: adapter runs support diffusion and LM training wrappers")


class AdapterCheckpointCallback(pl.Callback):
    """Reduces every checkpoint of an adapter run to adapter tensors, optimizer state and counters."""

    def __init__(self, run: AdapterRun) -> None:
        self.run = run

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        prefix = _root_prefix(pl_module)
        state = {k: v for k, v in checkpoint["state_dict"].items() if not _is_base_key(k, prefix)}
        state.update({name: param.detach() for name, param in pl_module.named_parameters()
                      if ".adapters." in name})
        checkpoint["state_dict"] = state
        checkpoint["adapter_run"] = self.run.run_info()


def is_adapter_checkpoint(path: str) -> bool:
    """Whether ``path`` is a wrapped checkpoint of an adapter run (read safely, memory-mapped)."""
    try:
        ckpt = torch_load(path, mmap=True)
    except Exception:  # unreadable files are reported by the regular unwrap path
        return False
    return isinstance(ckpt, Mapping) and isinstance(ckpt.get("adapter_run"), Mapping)


def check_resume_kind(resume: Optional[str], run: Optional[AdapterRun]) -> None:
    """``--ckpt-path`` and ``--adapter-config`` must agree about whether the run is an adapter run."""
    if not resume:
        return
    if Path(resume).is_dir():  # a DeepSpeed ZeRO checkpoint folder
        if run is not None:
            raise ValueError(f"--ckpt-path {resume} is a DeepSpeed checkpoint folder; adapter runs resume from their "
                             f"own single-file checkpoints")
        return
    ckpt = torch_load(resume, mmap=True)
    if run is not None:
        run.check_resume(ckpt, resume)
    elif isinstance(ckpt, Mapping) and "adapter_run" in ckpt:
        config = json.dumps(ckpt["adapter_run"].get("adapter_config"))
        raise ValueError(f"--ckpt-path {resume} is a checkpoint of an adapter run; resume it with --adapter-config "
                         f"(a file holding {config}) and the same --pretrained-ckpt-path")


def _adapter_tensors(state_dict: Mapping[str, torch.Tensor], root_prefix: str) -> Dict[str, torch.Tensor]:
    """Adapter tensors of a wrapped state dict, in root-model naming (EMA copies preferred)."""
    online = {k[len(root_prefix):]: v for k, v in state_dict.items()
              if k.startswith(root_prefix) and ".adapters." in k}
    for ema_prefix, target in _EMA_PREFIXES.items():
        ema = {target + k[len(ema_prefix):]: v for k, v in state_dict.items()
               if k.startswith(ema_prefix) and ".adapters." in k}
        if ema:
            log.info("exporting the EMA adapter weights")
            online.update(ema)
    return online


def unwrap_adapter_checkpoint(ckpt_path: str, model_config: Mapping[str, Any], name: str,
                              dtype: str = "fp16", merge: bool = False, base_ckpt_path: str = "",
                              use_safetensors: bool = True) -> str:
    """Write the adapter of an adapter-run checkpoint as ``<name>.safetensors`` (native format, ``dtype`` fp16 or
    fp32, metadata: adapter config, base model config hash, base weights hash, training steps), or with ``merge``
    the full model merged onto ``base_ckpt_path`` (``<name>.safetensors`` / ``.ckpt``). Returns the file written."""
    if dtype not in ("fp16", "fp32"):
        raise ValueError(f"--adapter-dtype {dtype!r}: use fp16 or fp32")
    ckpt = torch_load(ckpt_path)
    info = ckpt["adapter_run"]
    adapter_name = info.get("adapter_name", ADAPTER_NAME)
    config_hash = model_config_hash(model_config)
    if info.get("base_model_config_hash") not in (None, config_hash):
        raise ValueError(f"{ckpt_path} was trained on another model config than the one given (config hash "
                         f"{str(info.get('base_model_config_hash'))[:12]}... vs {config_hash[:12]}...)")
    model = create_model_from_config(model_config)
    if merge:
        if not base_ckpt_path:
            raise ValueError("--merge-adapters needs --base-ckpt-path: the released model the adapter was trained on")
        model.load_state_dict(load_ckpt_state_dict(base_ckpt_path), strict=True)
        if base_state_hash(model) != info.get("base_hash"):
            raise ValueError(f"--base-ckpt-path {base_ckpt_path}: these are not the base weights the adapter run "
                             f"started from (hash mismatch); pass the run's --pretrained-ckpt-path file")
    elif base_ckpt_path:
        model.load_state_dict(load_ckpt_state_dict(base_ckpt_path), strict=True)
    apply_adapters(model, info["adapter_config"], name=adapter_name)
    root_prefix = _root_prefix_of_state(ckpt["state_dict"])
    tensors = _adapter_tensors(ckpt["state_dict"], root_prefix)
    result = model.load_state_dict(tensors, strict=False)
    missing = [k for k in result.missing_keys if ".adapters." in k]
    if missing or not tensors:
        raise ValueError(f"{ckpt_path}: the adapter tensors are incomplete (missing {', '.join(missing[:5])})")
    steps = int(ckpt.get("global_step", 0))
    if merge:
        merge_adapters(model)
        out = f"{name}.safetensors" if use_safetensors else f"{name}.ckpt"
        save_unwrapped(model, out, use_safetensors)
        return out
    out = Path(f"{name}.safetensors")
    save_adapter(model, out, adapter_name, dtype=BASE_PRECISIONS[dtype], metadata={
        "base_model_config_hash": config_hash, "base_hash": str(info.get("base_hash")), "training_steps": str(steps),
        "model_type": str(model_config.get("model_type"))})
    return str(out)


def _root_prefix_of_state(state_dict: Mapping[str, torch.Tensor]) -> str:
    for key in state_dict:
        if ".adapters." in key and not any(key.startswith(p) for p in _EMA_PREFIXES):
            return key.split(".", 1)[0] + "."
    return "diffusion."
