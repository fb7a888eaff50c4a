"""Language-model builder: the ``lm`` model type (see docs/training.md#audio-language-models-model_type-lm)."""
from __future__ import annotations

import warnings
from typing import Any, List, Mapping

from ..codebook_patterns import PATTERN_PROVIDERS
from ..config import ConfigError, ConfigWarning, build_from_config, check_choice, require, require_mapping, \
    warn_unknown_keys
from ..lm import LM_BACKBONES, AudioLanguageModel, AudioLanguageModelWrapper
from .autoencoders import create_pretransform_from_config
from .conditioners import create_multi_conditioner_from_conditioning_config

__all__ = ["create_audio_lm_from_config"]

_LM_KEYS = ("type", "config", "codebook_pattern", "cross_attention_cond_ids", "prepend_cond_ids", "global_cond_ids")


def create_audio_lm_from_config(config: Mapping[str, Any]) -> AudioLanguageModelWrapper:
    """``model_type: lm`` (see docs/training.md#audio-language-models-model_type-lm): ``model.pretransform``
    (discrete, required), ``model.conditioning``,
    ``model.lm`` {type, config, codebook_pattern, cross_attention_cond_ids, prepend_cond_ids, global_cond_ids}."""
    model_config = require_mapping(require(config, "model", ""), "model")
    warn_unknown_keys(model_config, ("pretransform", "conditioning", "lm"), "model")
    sample_rate = require(config, "sample_rate", "", "audio sample rate in Hz", (int,))
    lm_config = require_mapping(require(model_config, "lm", "model", "the language model definition"), "model.lm")
    warn_unknown_keys(lm_config, _LM_KEYS, "model.lm")
    pattern_name = check_choice(lm_config.get("codebook_pattern", "delay"), PATTERN_PROVIDERS,
                                "model.lm.codebook_pattern")
    kind = check_choice(require(lm_config, "type", "model.lm", "continuous_transformer (or x_transformers)"),
                        LM_BACKBONES, "model.lm.type")
    backbone_config = require_mapping(require(lm_config, "config", "model.lm", "the backbone options"),
                                      "model.lm.config")

    pretransform_spec = require(model_config, "pretransform", "model",
                                "a discrete pretransform, e.g. an autoencoder with an rvq / dac_rvq / fsq bottleneck")
    pretransform = create_pretransform_from_config(pretransform_spec, sample_rate, "model.pretransform")
    if not getattr(pretransform, "is_discrete", False):
        raise ConfigError("model.pretransform", f"must be discrete (produce codes), got a continuous "
                                                f"{type(pretransform).__name__}",
                          "use an autoencoder with a quantizing bottleneck (rvq, rvq_vae, dac_rvq, dac_rvq_vae, fsq, "
                          "dithered_fsq) or a pretrained codec (dac_pretrained, audiocraft_pretrained)")

    conditioner, cond_ids = None, []
    if model_config.get("conditioning") is not None:
        conditioner = create_multi_conditioner_from_conditioning_config(model_config["conditioning"],
                                                                        pretransform=pretransform)
        cond_ids = list(conditioner.conditioners.keys())
    routes = {}
    for key in ("cross_attention_cond_ids", "prepend_cond_ids", "global_cond_ids"):
        ids = list(require(lm_config, key, "model.lm", types=(list,)) if key in lm_config else [])
        for i, cid in enumerate(ids):
            if cid not in cond_ids:
                defined = ", ".join(map(str, cond_ids)) or "none (model.conditioning missing)"
                raise ConfigError(f"model.lm.{key}[{i}]", f"'{cid}' is not a conditioner id", f"defined ids: {defined}")
        routes[key] = ids
    _check_routes(routes, backbone_config)

    backbone = build_from_config(LM_BACKBONES[kind], backbone_config, "model.lm.config")
    provider = PATTERN_PROVIDERS[pattern_name](n_q=int(pretransform.num_quantizers))
    lm = AudioLanguageModel(provider, backbone, num_quantizers=int(pretransform.num_quantizers),
                            codebook_size=int(pretransform.codebook_size))
    return AudioLanguageModelWrapper(pretransform, lm, sample_rate=sample_rate,
                                     min_input_length=int(pretransform.downsampling_ratio or 1),
                                     conditioner=conditioner, cross_attn_cond_ids=routes["cross_attention_cond_ids"],
                                     prepend_cond_ids=routes["prepend_cond_ids"],
                                     global_cond_ids=routes["global_cond_ids"])


def _check_routes(routes: Mapping[str, List[str]], backbone_config: Mapping[str, Any]) -> None:
    """Conditioning routed to the LM must have somewhere to go in the backbone."""
    if routes["prepend_cond_ids"] and not backbone_config.get("prepend_cond_dim", 0):
        raise ConfigError("model.lm.config.prepend_cond_dim", "must be > 0 when model.lm.prepend_cond_ids are given",
                          "set it to the conditioning dim (model.conditioning.cond_dim)")
    if routes["cross_attention_cond_ids"] and not backbone_config.get("cross_attn_cond_dim", 0):
        warnings.warn("model.lm.cross_attention_cond_ids are given but model.lm.config.cross_attn_cond_dim is 0: "
                      "the LM has no cross-attention and ignores them", ConfigWarning, stacklevel=3)
    if routes["global_cond_ids"] and backbone_config.get("global_cond_dim") is None:
        warnings.warn("model.lm.global_cond_ids are given but model.lm.config.global_cond_dim is not set: the LM "
                      "ignores global conditioning (as upstream); set global_cond_dim to use it",
                      ConfigWarning, stacklevel=3)
