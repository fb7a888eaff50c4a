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
from ..config import get_bool, get_number
from .config import ConfigError, ConfigWarning, build_from_config, check_choice, require, require_mapping, warn_unknown_keys
from .config_geometry import check_model_config

__all__ = [
    "MODEL_TYPES",
    "create_autoencoder_model",
    "create_model_from_config",
    "create_model_from_config_path",
    "create_pretransform_from_config",
    "create_bottleneck_from_config",
    "load_model_config",
]

TOP_LEVEL_KEYS = ("model_type", "sample_size", "sample_rate", "audio_channels", "model", "training")
PRETRANSFORM_TYPES = ("autoencoder", "wavelet", "pqmf", "dac_pretrained", "audiocraft_pretrained", "patched")


def create_autoencoder_model(config: Mapping) -> nn.Module:
    """The ``autoencoder`` model builder: :func:`~.autoencoders.create_autoencoder_from_config`, warning when
    ``sample_size`` is not a multiple of the total downsampling ratio."""
    from .autoencoders import create_autoencoder_from_config

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


def create_pretransform_from_config(pretransform_config: Mapping, sample_rate: int,
                                    path: str = "model.pretransform") -> nn.Module:
    """Build a pretransform from ``{"type", "config", "enable_grad"?, ...}`` (see
    docs/model_config.md#pretransforms-modelpretransform).

    The result is in eval mode with ``requires_grad`` = ``enable_grad`` (default False).
    """
    from . import pretransforms as P

    spec = require_mapping(pretransform_config, path)
    kind = check_choice(require(spec, "type", path, f"one of {', '.join(PRETRANSFORM_TYPES)}"),
                        PRETRANSFORM_TYPES, f"{path}.type")
    config = spec.get("config", {})
    if kind == "autoencoder":
        from .autoencoders import create_autoencoder_from_config

        warn_unknown_keys(spec, ("type", "config", "enable_grad", "scale", "model_half", "iterate_batch", "chunked"),
                          path)
        inner = create_autoencoder_from_config({"model": require(spec, "config", path), "sample_rate": sample_rate},
                                               path=f"{path}.config")
        pretransform = P.AutoencoderPretransform(inner,
                                                 scale=get_number(spec, "scale", 1.0, path, low=0, low_open=True),
                                                 model_half=get_bool(spec, "model_half", False, path),
                                                 iterate_batch=get_bool(spec, "iterate_batch", False, path),
                                                 chunked=get_bool(spec, "chunked", False, path))
    else:
        warn_unknown_keys(spec, ("type", "config", "enable_grad"), path)
        classes = {
            "wavelet": P.WaveletPretransform,
            "pqmf": P.PQMFPretransform,
            "dac_pretrained": P.PretrainedDACPretransform,
            "audiocraft_pretrained": P.AudiocraftCompressionPretransform,
            "patched": P.PatchedPretransform,
        }
        pretransform = build_from_config(classes[kind], config, f"{path}.config")
    enable_grad = get_bool(spec, "enable_grad", False, path)
    pretransform.enable_grad = enable_grad
    pretransform.eval().requires_grad_(enable_grad)
    return pretransform
