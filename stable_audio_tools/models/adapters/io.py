"""Saving and loading adapter files.

**Native format** (written by :func:`save_adapter`, ``unwrap_model.py``): one ``.safetensors`` file, tensors keyed
``<layer name>.<param>`` with layer names relative to the model root (``model.model.transformer.layers.0.
self_attn.to_qkv.lora_A``) and the string metadata ``format`` = ``stable-audio-tools-adapter``, ``format_version``,
``adapter_config`` (the JSON adapter config) plus caller entries (``base_model_config_hash``, ``training_steps``,
...). It never contains base weights, nor the ``-xs`` SVD bases (recomputed from the base weight on load).

:func:`load_adapter` also reads PEFT directories (``adapter_config.json`` + ``adapter_model.safetensors``) and
Stable Audio 3 LoRA files (``.safetensors`` with a ``lora_config`` metadata entry, or its legacy ``.ckpt``), see
:mod:`.interop`. ``.ckpt`` files are read with the project's safe loader.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from safetensors.torch import save_file
from torch import nn

from ..config import ConfigError
from ..safe_load import CheckpointError, load_safetensors, safetensors_keys, safetensors_metadata, torch_load
from .config import parse_adapter_config
from .files import AdapterFileError, ParsedAdapter, expected_params, group_by_layer, layer_rank
from .interop import layer_targets, read_peft, read_sa3_checkpoint, read_sa3_safetensors, resolve_layer_names, \
    write_peft
from .manage import adapter_layers, adapter_state_dict, apply_adapters, list_adapters, remove_adapter

__all__ = ["parse_adapter_flag", "AdapterFileError", "ParsedAdapter", "NATIVE_FORMAT", "save_adapter", "load_adapter",
           "read_adapter_file", "expected_params", "install_adapter"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
NATIVE_FORMAT = "stable-audio-tools-adapter"
FORMAT_VERSION = "1"


# ---------------------------------------------------------------------- native format
def save_adapter(model: nn.Module, path: PathLike, name: Optional[str] = None,
                 dtype: Optional[torch.dtype] = None, metadata: Optional[Mapping[str, Any]] = None,
                 format: str = "native") -> Path:
    """Write adapter ``name`` (default: the only one) of ``model`` and return the path written.

    Args:
        model: the adapted model.
        path: ``.safetensors`` file (native) or a directory (``format="peft"``).
        name: adapter name; may be omitted when the model has exactly one adapter.
        dtype: cast the floating tensors (e.g. ``torch.float16``); None keeps them as they are. Default None.
        metadata: extra string metadata (native format; values are stored with ``str()``, dicts as JSON).
        format: ``"native"`` or ``"peft"``. Default ``"native"``.
    """
    infos = list_adapters(model)
    if name is None:
        if len(infos) != 1:
            raise ValueError(f"the model has {len(infos)} adapters ({', '.join(infos) or 'none'}); pass name=")
        name = next(iter(infos))
    if format == "peft":
        return write_peft(model, path, name, dtype)
    if format != "native":
        raise ValueError(f"format {format!r}: use 'native' or 'peft'")
    info = infos[name] if name in infos else None
    tensors = adapter_state_dict(model, name)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous().cpu()
               for k, v in tensors.items()}
    meta = {"format": NATIVE_FORMAT, "format_version": FORMAT_VERSION,
            "adapter_config": json.dumps(info.config.to_dict() if info else {}), "adapter_name": name}
    for key, value in (metadata or {}).items():
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"adapter file {path}: use a .safetensors name (or format='peft' with a directory)")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def _read_native(path: Path, metadata: Dict[str, str]) -> ParsedAdapter:
    try:
        raw = json.loads(metadata.get("adapter_config", ""))
    except ValueError:
        raise AdapterFileError(f"{path}: its adapter_config metadata is not valid JSON") from None
    try:
        config = parse_adapter_config(raw)
    except ConfigError as err:
        raise AdapterFileError(f"{path}: invalid adapter_config metadata: {err}") from None
    tensors = group_by_layer(load_safetensors(path), str(path))
    return ParsedAdapter(config=config, tensors=tensors, metadata=metadata, source=str(path))


def read_adapter_file(path: PathLike) -> ParsedAdapter:
    """Read a native, PEFT or Stable Audio 3 adapter file into native naming (no model needed).

    Foreign layer names are returned as written (see :func:`.interop.resolve_layer_names` for mapping them onto
    a model)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "adapter_config.json").is_file():
            raise AdapterFileError(f"{path} is a directory without adapter_config.json; pass a PEFT adapter "
                                   f"directory or an adapter .safetensors file")
        return read_peft(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter file not found: {path}")
    if path.name == "adapter_model.safetensors" or path.name == "adapter_config.json":
        return read_peft(path.parent)
    if path.suffix in (".ckpt", ".pt", ".pth", ".bin"):
        return read_sa3_checkpoint(path, torch_load(path))
    try:
        metadata = safetensors_metadata(path)
    except CheckpointError as err:
        raise AdapterFileError(f"{path} is not an adapter file: {err}") from None
    if metadata.get("format") == NATIVE_FORMAT:
        return _read_native(path, metadata)
    if "lora_config" in metadata or any(".parametrizations.weight." in k for k in _keys(path)):
        return read_sa3_safetensors(path, metadata)
    if any(k.startswith("base_model.model.") for k in _keys(path)):
        raise AdapterFileError(f"{path} holds PEFT adapter tensors but no adapter_config.json is next to it; "
                               f"keep the PEFT directory together and pass the directory")
    raise AdapterFileError(f"{path} is not an adapter file: no '{NATIVE_FORMAT}' or Stable Audio 3 'lora_config' "
                           f"metadata and no adapter tensor names (a full model checkpoint? load it with "
                           f"--pretrained-ckpt-path / load_ckpt_state_dict instead)")


def _keys(path: Path) -> List[str]:
    return safetensors_keys(path)


def _unique_name(model: nn.Module, stem: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_\-]+", "_", stem).strip("_") or "adapter"
    existing = list_adapters(model)
    name, i = base, 2
    while name in existing:
        name, i = f"{base}_{i}", i + 1
    return name


def install_adapter(model: nn.Module, parsed: ParsedAdapter, name: str, strength: float = 1.0,
                    sigma_range: Optional[Sequence[float]] = None) -> str:
    """Apply a parsed adapter to exactly its layers and copy its tensors in (shapes checked)."""
    source = parsed.source or "adapter"
    tensors = resolve_layer_names(model, parsed.tensors, source)
    expected = expected_params(parsed.config.type)
    for layer, params in tensors.items():
        missing = [p for p in expected if p not in params]
        extra = [p for p in params if p not in expected]
        if missing or extra:
            raise AdapterFileError(f"{source}: layer {layer} of a '{parsed.config.type}' adapter "
                                   f"{'lacks ' + ', '.join(missing) if missing else ''}"
                                   f"{'; ' if missing and extra else ''}"
                                   f"{'has unexpected ' + ', '.join(extra) if extra else ''} "
                                   f"(expected {', '.join(expected)})")
    targets = layer_targets(model, tensors)
    config = replace(parsed.config, targets=targets, include=[], exclude=[])
    ranks = {layer: layer_rank(params) for layer, params in tensors.items()}
    try:
        apply_adapters(model, config, name=name, strength=strength, sigma_range=sigma_range, layers=list(tensors),
                       layer_ranks=ranks)
    except (ValueError, ConfigError) as err:
        raise AdapterFileError(f"{source}: {err}") from None
    try:
        with torch.no_grad():
            for layer_name, _, adapter in adapter_layers(model, name):
                for param_name, value in tensors[layer_name].items():
                    param = getattr(adapter, param_name)
                    if value.numel() == param.numel() and value.shape != param.shape and value.dim() > param.dim():
                        value = value.reshape(param.shape)  # legacy 2-D / PEFT (1, C, 1) magnitudes
                    if value.shape != param.shape:
                        raise AdapterFileError(f"{source}: {layer_name}.{param_name} has shape {tuple(value.shape)} "
                                               f"but this model's layer needs {tuple(param.shape)}; the adapter was "
                                               f"made for a model with other layer sizes")
                    if not torch.isfinite(value).all():
                        raise AdapterFileError(f"{source}: {layer_name}.{param_name} holds NaN or infinite values")
                    param.copy_(value)
    except AdapterFileError:
        remove_adapter(model, name)
        raise
    info = list_adapters(model)[name]
    info.config = replace(parsed.config, targets=targets or parsed.config.targets)
    info.metadata = dict(parsed.metadata)
    return name


def parse_adapter_flag(value: str) -> Tuple[str, float]:
    """The value of an ``--adapter`` flag (``generate.py``, ``run_gradio.py``): ``PATH`` or ``PATH:STRENGTH`` ->
    ``(path, strength)`` (a suffix that is not a number belongs to the path)."""
    path, sep, tail = value.rpartition(":")
    if sep and path:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return value, 1.0


def load_adapter(model: nn.Module, path: PathLike, strength: float = 1.0,
                 sigma_range: Optional[Sequence[float]] = None, name: Optional[str] = None) -> str:
    """Load an adapter file onto ``model`` and return the adapter's name.

    Args:
        model: the base model (adapters already applied stay; this one stacks on top, see :mod:`.layers`).
        path: native ``.safetensors``, PEFT directory, or Stable Audio 3 ``.safetensors`` / ``.ckpt``.
        strength: multiplier of the adapter's weight change. Default 1.0.
        sigma_range: ``(low, high)`` noise-level interval in which the adapter acts (diffusion backbone layers,
            per batch element). Default None (always).
        name: adapter name; default: derived from the file name (made unique).

    Raises :class:`AdapterFileError` naming the file for malformed files, target modules missing from the model and
    shape mismatches; ``FileNotFoundError`` for a missing path.
    """
    parsed = read_adapter_file(path)
    if name is None:
        stem = Path(path).name if Path(path).is_dir() else Path(path).stem
        name = _unique_name(model, stem)
    return install_adapter(model, parsed, name, strength=strength, sigma_range=sigma_range)
