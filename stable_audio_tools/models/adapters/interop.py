"""Foreign adapter formats: PEFT (read and write) and Stable Audio 3 LoRA files (read).

**PEFT** (a directory with ``adapter_config.json`` and ``adapter_model.safetensors``): keys
``base_model.model.<layer>.lora_A.weight`` / ``.lora_B.weight`` (``.lora_magnitude_vector`` with ``use_dora``),
scale ``lora_alpha / r`` (``/ √r`` with ``use_rslora``). Conv1d factors are stored as ``(r, C_in, k)`` /
``(C_out, r, 1)`` and the Conv1d DoRA magnitude as ``(1, C_out, 1)``. Only ``lora`` and ``dora-rows`` adapters
exist in PEFT; PEFT's DoRA equals ``dora-rows`` at strength 1. Files with ``bias`` other than ``"none"``,
``lora_bias``, ``modules_to_save``, ``alpha_pattern`` or ``fan_in_fan_out`` are refused (naming the key).
``<layer>`` is matched against the model root, its ``model.`` child and ``model.model.`` (PEFT applied to the
whole model, to the backbone wrapper, or to the DiT itself).

**Stable Audio 3** (``.safetensors`` with the JSON metadata ``lora_config``, or its legacy ``.ckpt`` holding
``{"state_dict", "lora_config"}``): keys ``<module>.parametrizations.weight.0.<param>`` relative to the DiT
wrapper (mapped to ``model.<module>``) or the conditioner (``conditioners.*``, mapped to ``conditioner.*``). All
adapter types load; legacy 2-D magnitudes are squeezed and legacy ``dora`` resolved from their shape;
``baked_vnorm_row`` is derived data and skipped. Stable Audio 3 applies strength inside the DoRA normalisation and
chains stacked adapters; here strength and stacking follow the one rule of :mod:`.layers` (the outputs agree at
strength 1 for a single adapter).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import torch
from safetensors.torch import save_file
from torch import nn

from ..config import ConfigError
from ..safe_load import load_safetensors
from .config import AdapterConfig, parse_adapter_config
from .files import AdapterFileError, ParsedAdapter, layer_rank
from .layers import AdaptedConv1d
from .manage import adapter_layers, candidate_layers, default_targets, list_adapters

__all__ = ["read_peft", "write_peft", "read_sa3_safetensors", "read_sa3_checkpoint", "resolve_layer_names",
           "layer_targets"]

log = logging.getLogger(__name__)

PEFT_PREFIX = "base_model.model."
_PEFT_SUFFIXES = {".lora_A.weight": "lora_A", ".lora_B.weight": "lora_B", ".lora_magnitude_vector": "magnitude",
                  ".lora_magnitude_vector.weight": "magnitude"}
SA3_PARAMS = ("lora_A", "lora_B", "M_xs", "magnitude", "magnitude_r", "magnitude_c")


# ---------------------------------------------------------------------- layer names
def _target_of(name: str) -> str:
    return "conditioner" if name.startswith("conditioner.") else "lm" if name.startswith("lm.") else "diffusion"


def layer_targets(model: nn.Module, names) -> List[str]:
    """The adapter-config targets that hold the given layer names (empty for a model without targets)."""
    if not default_targets(model):
        return []
    return sorted({_target_of(n) for n in names})


def resolve_layer_names(model: nn.Module, tensors: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """Map layer names onto ``model``'s, trying the prefixes ``""``, ``"model."``, ``"model.model."``; raise
    :class:`AdapterFileError` naming the target modules that do not exist."""
    first_missing: List[str] = []
    for prefix in ("", "model.", "model.model."):
        mapped = {prefix + name: value for name, value in tensors.items()}
        try:
            candidates = candidate_layers(model, layer_targets(model, mapped))
        except ConfigError:
            continue
        missing = [n for n in mapped if n not in candidates]
        if not missing:
            return mapped
        if not prefix:
            first_missing = missing
    shown = ", ".join(first_missing[:8]) + (f" and {len(first_missing) - 8} more" if len(first_missing) > 8 else "")
    raise AdapterFileError(f"{source}: {len(first_missing)} of its {len(tensors)} target modules do not exist in "
                           f"this model (or are not nn.Linear / nn.Conv1d): {shown}; the adapter was made for "
                           f"another model")


# ---------------------------------------------------------------------- PEFT
def _peft_config(directory: Path) -> Dict[str, Any]:
    path = directory / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterFileError(f"{directory}: no adapter_config.json (a PEFT adapter directory holds "
                               f"adapter_config.json and adapter_model.safetensors)") from None
    except (OSError, ValueError) as err:
        raise AdapterFileError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(config, dict):
        raise AdapterFileError(f"{path}: expected a JSON object")
    return config


def _refuse(path: Path, key: str, value: Any, why: str) -> AdapterFileError:
    return AdapterFileError(f"{path}: '{key}' = {value!r} is not supported ({why})")


def read_peft(directory: Path) -> ParsedAdapter:
    """Read a PEFT LoRA / DoRA adapter directory."""
    directory = Path(directory)
    config = _peft_config(directory)
    cfg_path = directory / "adapter_config.json"
    peft_type = config.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise _refuse(cfg_path, "peft_type", peft_type, "only LORA adapters (with or without use_dora) are read")
    for key, ok in (("bias", lambda v: v in (None, "none")), ("lora_bias", lambda v: not v),
                    ("modules_to_save", lambda v: not v), ("alpha_pattern", lambda v: not v),
                    ("fan_in_fan_out", lambda v: not v)):
        if not ok(config.get(key)):
            raise _refuse(cfg_path, key, config.get(key), "only the low-rank factors and DoRA magnitudes are read")
    weights = directory / "adapter_model.safetensors"
    if not weights.is_file():
        extra = " (adapter_model.bin is a pickle and is not read; convert it to safetensors)" \
            if (directory / "adapter_model.bin").is_file() else ""
        raise AdapterFileError(f"{directory}: no adapter_model.safetensors{extra}")
    rank = config.get("r", 8)
    alpha = config.get("lora_alpha", rank)
    if config.get("use_rslora"):
        if config.get("rank_pattern"):
            raise _refuse(cfg_path, "use_rslora", True, "together with rank_pattern")
        alpha = alpha * math.sqrt(rank)
    try:
        adapter_config = parse_adapter_config({"type": "dora-rows" if config.get("use_dora") else "lora",
                                               "rank": rank, "alpha": alpha,
                                               "dropout": config.get("lora_dropout") or 0.0})
    except ConfigError as err:
        raise AdapterFileError(f"{cfg_path}: {err} (read from PEFT keys r / lora_alpha / lora_dropout)") from None
    flat = load_safetensors(weights)
    tensors: Dict[str, Dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in flat.items():
        stripped = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        for suffix, param in _PEFT_SUFFIXES.items():
            if stripped.endswith(suffix):
                tensors.setdefault(stripped[:-len(suffix)], {})[param] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise AdapterFileError(f"{weights}: tensors that are not LoRA factors or DoRA magnitudes: "
                               f"{', '.join(unknown[:5])}")
    if not tensors:
        raise AdapterFileError(f"{weights}: holds no LoRA tensors")
    for layer, params in tensors.items():
        if "lora_A" in params and params["lora_A"].dim() == 3:  # Conv1d factors
            params["lora_A"] = params["lora_A"].reshape(params["lora_A"].shape[0], -1)
            params["lora_B"] = params["lora_B"].reshape(params["lora_B"].shape[0], -1)
        if "magnitude" in params:
            params["magnitude"] = params["magnitude"].reshape(-1)
    return ParsedAdapter(config=adapter_config, tensors=tensors,
                         metadata={"base_model_name_or_path": str(config.get("base_model_name_or_path") or "")},
                         source=str(directory))


def write_peft(model: nn.Module, directory, name: str, dtype=None) -> Path:
    """Write adapter ``name`` as a PEFT directory (``lora`` and ``dora-rows`` adapters only)."""
    info = list_adapters(model)[name]
    if info.config.type not in ("lora", "dora-rows"):
        raise ValueError(f"adapter {name!r} has type '{info.config.type}', which PEFT cannot represent; PEFT holds "
                         f"'lora' and 'dora-rows' (use_dora) adapters; save it in the native format instead")
    directory = Path(directory)
    tensors: Dict[str, torch.Tensor] = {}
    ranks = {}
    for layer_name, layer, adapter in adapter_layers(model, name):
        a, b = adapter.lora_A.detach(), adapter.lora_B.detach()
        if isinstance(layer, AdaptedConv1d):
            if layer.groups != 1:
                raise ValueError(f"{layer_name}: grouped Conv1d adapters cannot be written in PEFT's layout")
            a = a.reshape(adapter.rank, *layer.weight.shape[1:])
            b = b.reshape(*b.shape, 1)
        key = PEFT_PREFIX + layer_name
        tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"] = a, b
        if adapter.norm == "rows":
            magnitude = adapter.magnitude.detach()
            tensors[f"{key}.lora_magnitude_vector"] = magnitude.reshape(1, -1, 1) \
                if isinstance(layer, AdaptedConv1d) else magnitude
        ranks[layer_name] = adapter.rank
    tensors = {k: (v.to(dtype) if dtype is not None else v).contiguous().cpu() for k, v in tensors.items()}
    rank = info.config.rank
    rank_pattern = {n: r for n, r in ranks.items() if r != rank}
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": info.config.alpha, "lora_dropout": info.config.dropout,
              "target_modules": sorted(ranks), "use_dora": info.config.type == "dora-rows", "use_rslora": False,
              "bias": "none", "fan_in_fan_out": False, "modules_to_save": None, "init_lora_weights": True,
              "rank_pattern": rank_pattern, "alpha_pattern": {}, "inference_mode": True, "task_type": None,
              "base_model_name_or_path": None}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    return directory


# ---------------------------------------------------------------------- Stable Audio 3
def _sa3_config(raw: Any, source: str, tensors: Mapping[str, Mapping[str, torch.Tensor]],
                legacy_cols: bool) -> AdapterConfig:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise AdapterFileError(f"{source}: its lora_config metadata is not valid JSON") from None
    raw = dict(raw or {})
    kind = raw.get("adapter_type") or "lora"
    if kind == "dora":  # legacy: the 2-D magnitude shape told rows (fan_out, 1) from cols (1, fan_in)
        kind = "dora-cols" if legacy_cols else "dora-rows"
    first = next(iter(tensors.values()))
    rank = raw.get("rank") or layer_rank(first)
    try:
        return parse_adapter_config({"type": kind, "rank": rank, "alpha": raw.get("alpha") or rank,
                                     "dropout": raw.get("dropout") or 0.0})
    except ConfigError as err:
        raise AdapterFileError(f"{source}: lora_config: {err}") from None


def _sa3_tensors(flat: Mapping[str, torch.Tensor], source: str) -> Tuple[Dict[str, Dict[str, torch.Tensor]], bool]:
    """Tensors in native naming, and whether legacy 2-D magnitudes were column-wise ``(1, fan_in)``."""
    tensors: Dict[str, Dict[str, torch.Tensor]] = {}
    legacy_cols = False
    indices = set()
    for key, tensor in flat.items():
        parts = key.split(".")
        if len(parts) < 5 or parts[-4] != "parametrizations" or parts[-3] != "weight":
            continue
        param = parts[-1]
        if param == "baked_vnorm_row":
            continue
        if param not in SA3_PARAMS:
            continue
        indices.add(parts[-2])
        module = ".".join(parts[:-4])
        module = "conditioner." + module if module.startswith("conditioners.") else "model." + module
        value = tensor.float()
        if param.startswith("magnitude") and value.dim() == 2:
            legacy_cols = legacy_cols or (value.shape[0] == 1 and value.shape[1] > 1)
            value = value.reshape(-1)
        tensors.setdefault(module, {})[param] = value
    if not tensors:
        raise AdapterFileError(f"{source}: no Stable Audio 3 adapter tensors (<module>.parametrizations.weight.0."
                               f"lora_A / lora_B / M_xs / magnitude*)")
    if len(indices) > 1:
        raise AdapterFileError(f"{source}: holds several stacked adapters (parametrization indices "
                               f"{', '.join(sorted(indices))}); save each one to its own file")
    return tensors, legacy_cols


def read_sa3_safetensors(path: Path, metadata: Mapping[str, str]) -> ParsedAdapter:
    """Read a Stable Audio 3 LoRA-family ``.safetensors`` file."""
    tensors, legacy_cols = _sa3_tensors(load_safetensors(path), str(path))
    config = _sa3_config(metadata.get("lora_config"), str(path), tensors, legacy_cols)
    return ParsedAdapter(config=config, tensors=tensors, metadata=dict(metadata), source=str(path))


def read_sa3_checkpoint(path: Path, checkpoint: Any) -> ParsedAdapter:
    """Read a Stable Audio 3 legacy ``.ckpt`` (``{"state_dict": ..., "lora_config": ...}``), already unpickled by
    the safe loader."""
    if not isinstance(checkpoint, dict) or "lora_config" not in checkpoint or "state_dict" not in checkpoint:
        raise AdapterFileError(f"{path} is not an adapter file: a .ckpt adapter must be a Stable Audio 3 LoRA "
                               f"checkpoint holding 'state_dict' and 'lora_config' (a model checkpoint? use "
                               f"--pretrained-ckpt-path)")
    state_dict = checkpoint["state_dict"]
    if not isinstance(state_dict, Mapping):
        raise AdapterFileError(f"{path}: 'state_dict' is not a mapping of tensors")
    tensors, legacy_cols = _sa3_tensors({k: v for k, v in state_dict.items() if torch.is_tensor(v)}, str(path))
    config = _sa3_config(checkpoint["lora_config"], str(path), tensors, legacy_cols)
    return ParsedAdapter(config=config, tensors=tensors, source=str(path))

