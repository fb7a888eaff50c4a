"""Model factory: JSON model config -> ``nn.Module`` (see docs/model_config.md,
docs/model_config.md#pretransforms-modelpretransform).

Configs are never mutated. Errors are :class:`~stable_audio_tools.models.config.ConfigError` naming the
JSON path of the bad key.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable, Dict, Mapping, Union

from torch import nn

from ..families import BuilderTable, get_model_family, resolve_builder
from .bottleneck import create_bottleneck_from_config
from .builders.autoencoders import PRETRANSFORM_TYPES, create_autoencoder_from_config, create_pretransform_from_config
from .config import ConfigError, ConfigWarning, require, require_mapping, warn_unknown_keys
from .config_geometry import check_model_config

__all__ = [
    "MODEL_TYPES",
    "PRETRANSFORM_TYPES",
    "create_autoencoder_model",
    "create_model_from_config",
    "create_model_from_config_path",
    "create_pretransform_from_config",
    "create_bottleneck_from_config",
    "load_model_config",
]

TOP_LEVEL_KEYS = ("model_type", "sample_size", "sample_rate", "audio_channels", "model", "training")


def create_autoencoder_model(config: Mapping) -> nn.Module:
    """The ``autoencoder`` model builder: :func:`~.autoencoders.create_autoencoder_from_config`, warning when
    ``sample_size`` is not a multiple of the total downsampling ratio."""
    model = create_autoencoder_from_config(config)
    sample_size = config.get("sample_size")
    ratio = model.downsampling_ratio * (getattr(model.pretransform, "downsampling_ratio", 1) or 1)
    if sample_size is not None and sample_size % ratio != 0:
        lower, upper = (sample_size // ratio) * ratio, (sample_size // ratio + 1) * ratio
        warnings.warn(f"config key 'sample_size': {sample_size} is not a multiple of the downsampling ratio {ratio}; "
                      f"training reconstructs only the first {lower} samples of each crop (use e.g. {lower or upper} "
                      f"or {upper})", ConfigWarning, stacklevel=3)
    return model


# model_type -> model builder, a view of the model-family registry (stable_audio_tools.families).
MODEL_TYPES: Mapping[str, Callable[[Mapping], nn.Module]] = BuilderTable("model")


def create_model_from_config(model_config: Mapping) -> nn.Module:
    """Build the model described by a full model config (``model_type``, ``sample_rate``, ``model``...)."""
    model_config = require_mapping(model_config, "<root>")
    model_type = require(model_config, "model_type", "", f"one of {', '.join(MODEL_TYPES)}")
    family = get_model_family(model_type, "model")
    warn_unknown_keys(model_config, TOP_LEVEL_KEYS, "")
    check_model_config(model_config)
    require(model_config, "sample_rate", "", "audio sample rate in Hz", (int,))
    require(model_config, "model", "", "the model definition")
    return resolve_builder(family.model)(model_config)


def load_model_config(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a JSON config file, with an error that names the file and the JSON problem."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(str(path), f"is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def create_model_from_config_path(model_config_path: Union[str, os.PathLike]) -> nn.Module:
    """``create_model_from_config(json.load(open(path)))``."""
    return create_model_from_config(load_model_config(model_config_path))
