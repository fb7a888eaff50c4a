"""Conditioner builder: the ``model.conditioning`` block of a model config -> :class:`MultiConditioner` (see
docs/diffusion.md#conditioners-modelconditioning).

The external-model conditioners (``t5``, ``clap_*``, ``phoneme``, ``lut``) are imported only when a config
names one, since their dependencies (transformers, laion_clap, g2p_en) are optional.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Mapping, Optional

from torch import nn

from ..conditioners import (CONDITIONER_TYPES, IntConditioner, ListConditioner, MultiConditioner, NumberConditioner,
                            PretransformConditioner, SourceMixConditioner)
from ..config import ConfigError, ConfigWarning, build_from_config, check_choice, require, require_mapping, \
    warn_unknown_keys
from ..utils import load_ckpt_state_dict
from .autoencoders import create_pretransform_from_config

__all__ = ["create_multi_conditioner_from_conditioning_config"]

_PRETRANSFORM_KEYS = ("sample_rate", "use_model_pretransform", "pretransform_config", "pretransform_ckpt_path")


def _conditioner_class(kind: str) -> type:
    if kind in ("int", "number", "list", "pretransform", "source_mix"):
        return {"int": IntConditioner, "number": NumberConditioner, "list": ListConditioner,
                "pretransform": PretransformConditioner, "source_mix": SourceMixConditioner}[kind]
    from .. import text_conditioners as T

    return {"t5": T.T5Conditioner, "clap_text": T.CLAPTextConditioner, "clap_audio": T.CLAPAudioConditioner,
            "phoneme": T.PhonemeConditioner, "lut": T.TokenizerLUTConditioner}[kind]


def _build_audio_conditioner(cls: type, config: Mapping, cond_dim: int, model_pretransform: Optional[nn.Module],
                             path: str) -> nn.Module:
    """``pretransform`` / ``source_mix``: resolve the pretransform keys, pass the rest to ``cls``."""
    sample_rate = require(config, "sample_rate", path, "the audio sample rate in Hz of the conditioning audio",
                          (int,))
    if config.get("use_model_pretransform", False):
        if model_pretransform is None:
            raise ConfigError(f"{path}.use_model_pretransform", "is true but the model has no pretransform",
                              "add model.pretransform or give pretransform_config instead")
        pretransform = model_pretransform
    else:
        spec = require(config, "pretransform_config", path,
                       "a pretransform spec {type, config}, or set use_model_pretransform: true")
        pretransform = create_pretransform_from_config(spec, sample_rate, path=f"{path}.pretransform_config")
    if config.get("pretransform_ckpt_path") is not None:
        pretransform.load_state_dict(load_ckpt_state_dict(config["pretransform_ckpt_path"]))
    rest = {k: v for k, v in config.items() if k not in _PRETRANSFORM_KEYS}
    return build_from_config(cls, rest, path, pretransform=pretransform, output_dim=cond_dim)


def create_multi_conditioner_from_conditioning_config(config: Mapping[str, Any], pretransform: Optional[nn.Module] = None,
                                                      path: str = "model.conditioning") -> MultiConditioner:
    """Build a :class:`MultiConditioner` from ``{configs: [{id, type, config}], cond_dim, default_keys?,
    pre_encoded_keys?}`` (see docs/diffusion.md#conditioners-modelconditioning).

    Each conditioner gets ``output_dim = cond_dim`` unless its ``config`` sets ``output_dim``.
    ``pretransform`` is the model's pretransform, used by ``pretransform`` / ``source_mix`` conditioners
    with ``use_model_pretransform: true``. The config is not modified.
    """
    config = require_mapping(config, path)
    warn_unknown_keys(config, ("configs", "cond_dim", "default_keys", "pre_encoded_keys"), path)
    cond_dim = require(config, "cond_dim", path, "the conditioning embedding size", (int,))
    entries = require(config, "configs", path, "a list of {id, type, config} conditioner entries", (list,))
    default_keys = require_mapping(config.get("default_keys", {}), f"{path}.default_keys")
    pre_encoded_keys = require(config, "pre_encoded_keys", path, types=(list,)) if "pre_encoded_keys" in config else []

    conditioners: Dict[str, nn.Module] = {}
    for i, entry in enumerate(entries):
        entry_path = f"{path}.configs[{i}]"
        entry = require_mapping(entry, entry_path)
        warn_unknown_keys(entry, ("id", "type", "config"), entry_path)
        cond_id = require(entry, "id", entry_path, "the metadata key this conditioner reads", (str,))
        if cond_id in conditioners:
            raise ConfigError(f"{entry_path}.id", f"duplicate conditioner id {cond_id!r}", "ids must be unique")
        kind = check_choice(require(entry, "type", entry_path, f"one of {', '.join(CONDITIONER_TYPES)}"),
                            CONDITIONER_TYPES, f"{entry_path}.type")
        cond_config = require_mapping(entry.get("config", {}), f"{entry_path}.config")
        cls = _conditioner_class(kind)
        if kind in ("pretransform", "source_mix"):
            conditioners[cond_id] = _build_audio_conditioner(cls, cond_config, cond_dim, pretransform,
                                                             f"{entry_path}.config")
        else:
            conditioners[cond_id] = build_from_config(cls, cond_config, f"{entry_path}.config", output_dim=cond_dim)
    for key, ids in (("default_keys", list(default_keys)), ("pre_encoded_keys", list(pre_encoded_keys))):
        unknown = [i for i in ids if i not in conditioners]
        if unknown:
            warnings.warn(f"config key '{path}.{key}' names conditioner id(s) {unknown} that no entry of "
                          f"'{path}.configs' defines (ids: {sorted(conditioners)}); they are ignored",
                          ConfigWarning, stacklevel=2)
    return MultiConditioner(conditioners, default_keys=default_keys, pre_encoded_keys=pre_encoded_keys)
