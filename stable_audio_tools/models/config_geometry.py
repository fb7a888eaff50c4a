"""Whole-config checks run before a model is built: the declared geometry must match the model.

:func:`check_model_config` is called by ``create_model_from_config`` before any module is built. It
reports every problem it finds at once (one :class:`~stable_audio_tools.config.ConfigError` listing them):

* no number anywhere in the config (``training`` block included) is NaN or infinite;
* ``sample_rate`` is a positive integer, ``sample_size`` and ``audio_channels`` too when given;
* autoencoders (also those nested as an ``autoencoder`` pretransform, and diffusion autoencoders):
  ``latent_dim``, ``downsampling_ratio``, ``io_channels`` (and ``in_channels`` / ``out_channels``) are
  positive integers; ``downsampling_ratio`` equals the product of the encoder's strides and of the
  decoder's upsampling factors; the encoder reads and the decoder writes the autoencoder's channel count
  (when the autoencoder has no pretransform of its own);
* conditioned diffusion models: ``model.io_channels`` equals the latent width of an ``autoencoder``
  pretransform and the backbone's ``io_channels`` / ``in_channels``; a DiT's ``global_cond_dim``,
  ``cond_token_dim`` and ``prepend_cond_dim`` equal the widths of the conditioners routed to them
  (each conditioner outputs ``model.conditioning.cond_dim`` unless its config sets ``output_dim``); the
  routing keys (``cross_attention_cond_ids``...) are lists of conditioner ids;
* language models: ``cross_attn_cond_dim`` / ``prepend_cond_dim`` likewise;
* the encoder's output width is what the bottleneck takes: ``latent_dim`` (no bottleneck, ``tanh``,
  ``l2_norm``) or ``2 x latent_dim`` (``vae``).

Checks whose inputs are missing or mistyped are skipped here: the builders report those with their path.
"""
from __future__ import annotations

import importlib
import inspect
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..config import MAX_SIZE, ConfigError, check_positive_int, join_path, non_finite_paths, raise_errors, typo_of
from ..config_schema import SIZE_LIMITS
from .bottleneck import BOTTLENECK_TYPES
from .coder_types import DECODER_TYPES, ENCODER_TYPES

__all__ = ["check_model_config", "autoencoder_errors"]

# encoder / decoder type -> (config key of the stride list, key of the audio channel count)
_ENCODER_KEYS = {"oobleck": ("strides", "in_channels"), "taae": ("strides", "in_channels"),
                 "dac": ("strides", "in_channels"), "seanet": ("ratios", "channels"),
                 "local_attn": ("ratios", "in_channels")}
_DECODER_KEYS = {"oobleck": ("strides", "out_channels"), "taae": ("strides", "out_channels"),
                 "dac": ("rates", "out_channels"), "seanet": ("ratios", "channels"),
                 "local_attn": ("ratios", "out_channels")}
_SAMPLE_SIZE_LIMIT = 2 ** 31 - 1


def _class_for(registry: Mapping[str, str], kind: Any) -> Optional[Callable]:
    if not isinstance(kind, str) or kind not in registry:
        return None
    module, name = registry[kind].split(":")
    return getattr(importlib.import_module(module), name)


def _value(config: Mapping, key: str, cls: Optional[Callable]) -> Any:
    """``config[key]``, else the constructor's default for ``key`` (None when there is none, or when the config
    holds a typo of ``key``: the builder reports that)."""
    if key in config:
        return config[key]
    if cls is None or typo_of(config, key) is not None:
        return None
    param = inspect.signature(cls).parameters.get(key)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _ints(value: Any) -> Optional[List[int]]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       and 0 < v <= MAX_SIZE for v in value):
        return None
    return list(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(config: Mapping, key: str, path: str, errors: List[ConfigError], required: bool = True,
              high: Optional[int] = None) -> Optional[int]:
    """Append an error unless ``config[key]`` is a positive integer; return it when it is."""
    if key not in config:
        typo = typo_of(config, key) if required else None
        if typo is not None:
            errors.append(ConfigError(join_path(path, key), "is required but missing",
                                      f"found '{join_path(path, typo)}': did you mean '{key}'?"))
        elif required:
            errors.append(ConfigError(join_path(path, key), "is required but missing"))
        return None
    try:
        return check_positive_int(config[key], join_path(path, key), high=high or SIZE_LIMITS.get(key, 2 ** 16))
    except ConfigError as err:
        errors.append(err)
        return None


def _spec_errors(spec: Any, path: str, errors: List[ConfigError], required: bool = True) -> bool:
    """Append an error unless ``spec`` is a ``{"type", "config"?}`` object with an object (or null) config;
    return whether it is."""
    if spec is None and not required:
        return False
    if not isinstance(spec, Mapping):
        errors.append(ConfigError(path, f"expected a JSON object {{\"type\": ..., \"config\": {{...}}}}, got "
                                        f"{type(spec).__name__} {spec!r:.60}"))
        return False
    for key in ("type", "config"):
        typo = typo_of(spec, key)
        if typo is not None:
            errors.append(ConfigError(join_path(path, typo), "is not an accepted key here",
                                      f"did you mean '{key}'?"))
            return False
    if spec.get("config") is not None and not isinstance(spec["config"], Mapping):
        errors.append(ConfigError(join_path(path, "config"), f"expected a JSON object, got "
                                                             f"{type(spec['config']).__name__} {spec['config']!r:.60}"))
        return False
    return True


def _coder_errors(spec: Any, path: str, ratio: Optional[int], channels: Optional[int], encoder: bool,
                  errors: List[ConfigError]) -> None:
    if not _spec_errors(spec, path, errors):
        return
    kind = spec.get("type")
    cls = _class_for(ENCODER_TYPES if encoder else DECODER_TYPES, kind)
    keys = (_ENCODER_KEYS if encoder else _DECODER_KEYS).get(kind)
    if cls is None or keys is None:
        return
    config = spec.get("config") or {}
    stride_key, channel_key = keys
    strides = _ints(_value(config, stride_key, cls))
    role = "encoder" if encoder else "decoder"
    if ratio is not None and strides is not None and math.prod(strides) != ratio:
        errors.append(ConfigError(join_path(path, f"config.{stride_key}"),
                                  f"{'downsample' if encoder else 'upsample'} by {math.prod(strides)} "
                                  f"({' x '.join(map(str, strides))}), but the autoencoder declares "
                                  f"downsampling_ratio {ratio}",
                                  f"make the {role}'s {stride_key} multiply to {ratio}, or set downsampling_ratio "
                                  f"to {math.prod(strides)}"))
    coder_channels = _value(config, channel_key, cls)
    if channels is not None and _is_int(coder_channels) and coder_channels != channels:
        side = "reads" if encoder else "writes"
        errors.append(ConfigError(join_path(path, f"config.{channel_key}"),
                                  f"is {coder_channels}, but the autoencoder {side} {channels}-channel audio",
                                  f"set it to {channels}"))


def _latent_width_errors(ae: Mapping, path: str, latent_dim: Optional[int], errors: List[ConfigError]) -> None:
    """The encoder's output width must be what the bottleneck takes (``latent_dim``, twice that for a VAE)."""
    encoder, bottleneck = ae.get("encoder"), ae.get("bottleneck")
    if latent_dim is None or not isinstance(encoder, Mapping) or not isinstance(encoder.get("config", {}), Mapping):
        return
    if bottleneck is None:
        if typo_of(ae, "bottleneck") is not None:
            return
        kind = None
    elif isinstance(bottleneck, Mapping) and isinstance(bottleneck.get("type"), str) and \
            isinstance(bottleneck.get("config", {}), Mapping):
        kind = bottleneck["type"]
    else:
        return
    if kind == "dac_rvq":
        bottleneck_cls = BOTTLENECK_TYPES.get("dac_rvq")
        input_dim = _value(bottleneck.get("config") or {}, "input_dim",
                           bottleneck_cls if callable(bottleneck_cls) else None)
        if not _is_int(input_dim) or not 0 < input_dim <= MAX_SIZE:
            return
        expected, why = input_dim, f"the 'dac_rvq' bottleneck quantizes {input_dim} channels (its input_dim)"
    elif kind == "vae":
        expected = 2 * latent_dim
        why = f"a 'vae' bottleneck needs the encoder to output 2 x latent_dim = {expected} channels (mean and scale)"
    elif kind in (None, "tanh", "l2_norm"):
        expected, why = latent_dim, f"the bottleneck passes the encoder's output on as the {latent_dim}-channel latents"
    else:
        return
    key = {"oobleck": "latent_dim", "taae": "latent_dim", "dac": "latent_dim",
           "seanet": "dimension"}.get(encoder.get("type"))
    if key is None:
        return
    config = encoder.get("config") or {}
    cls = _class_for(ENCODER_TYPES, encoder.get("type"))
    width = _value(config, key, cls)
    if encoder.get("type") == "dac" and width is None and typo_of(config, key) is None:
        # no projection: the DAC encoder's own width
        d_model, strides = _value(config, "d_model", cls), _ints(_value(config, "strides", cls))
        width = d_model * 2 ** len(strides) if _is_int(d_model) and strides is not None else None
    if _is_int(width) and width != expected:
        errors.append(ConfigError(join_path(path, f"encoder.config.{key}"), f"is {width}, but {why}",
                                  f"set it to {expected}"))


def autoencoder_errors(ae: Any, path: str) -> List[ConfigError]:
    """Problems of an autoencoder ``model`` block (see the module docstring); ``path`` is its JSON path."""
    errors: List[ConfigError] = []
    if not isinstance(ae, Mapping):
        return errors
    latent_dim = _positive(ae, "latent_dim", path, errors)
    ratio = _positive(ae, "downsampling_ratio", path, errors)
    io_channels = _positive(ae, "io_channels", path, errors)
    in_channels = _positive(ae, "in_channels", path, errors, required=False)
    out_channels = _positive(ae, "out_channels", path, errors, required=False)
    own_pretransform = ae.get("pretransform") is not None
    in_channels = None if own_pretransform else (in_channels or io_channels)
    out_channels = None if own_pretransform else (out_channels or io_channels)
    if "encoder" in ae:
        _coder_errors(ae["encoder"], join_path(path, "encoder"), ratio, in_channels, True, errors)
    if "decoder" in ae:
        _coder_errors(ae["decoder"], join_path(path, "decoder"), ratio, out_channels, False, errors)
    if "bottleneck" in ae:
        _spec_errors(ae["bottleneck"], join_path(path, "bottleneck"), errors, required=False)
    _latent_width_errors(ae, path, latent_dim, errors)
    errors.extend(_pretransform_errors(ae.get("pretransform"), join_path(path, "pretransform")))
    return errors


def _pretransform_errors(spec: Any, path: str) -> List[ConfigError]:
    errors: List[ConfigError] = []
    if not _spec_errors(spec, path, errors, required=False):
        return errors
    if spec.get("type") == "autoencoder":
        if not isinstance(spec.get("config"), Mapping):
            return [ConfigError(join_path(path, "config"), "is required: the autoencoder's model definition")]
        return autoencoder_errors(spec["config"], join_path(path, "config"))
    return errors


def _pretransform_latent_dim(model: Mapping) -> Optional[int]:
    spec = model.get("pretransform")
    if isinstance(spec, Mapping) and spec.get("type") == "autoencoder" and isinstance(spec.get("config"), Mapping):
        latent = spec["config"].get("latent_dim")
        return latent if _is_int(latent) else None
    return None


def _conditioner_widths(model: Mapping) -> Dict[str, int]:
    """Conditioner id -> output width, for the entries whose width is known from the config."""
    conditioning = model.get("conditioning")
    if not isinstance(conditioning, Mapping) or not _is_int(conditioning.get("cond_dim")):
        return {}
    widths = {}
    for entry in conditioning.get("configs") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str):
            config = entry.get("config") if isinstance(entry.get("config"), Mapping) else {}
            width = config.get("output_dim", conditioning["cond_dim"])
            if _is_int(width):
                widths[entry["id"]] = width
    return widths


def _routed_width(ids: Any, widths: Mapping[str, int]) -> Optional[int]:
    """Summed width of the conditioners ``ids`` routes, or None when unknown (or none are routed)."""
    if not isinstance(ids, (list, tuple)) or not ids or not all(isinstance(i, str) and i in widths for i in ids):
        return None
    return sum(widths[i] for i in ids)


def _width_errors(backbone: Mapping, routes: Mapping, widths: Mapping[str, int], path: str, route_path: str,
                  pairs: Sequence[tuple]) -> List[ConfigError]:
    """``(ids key, backbone width key, combine)`` pairs: the backbone width must equal the routed width."""
    errors = []
    for ids_key, width_key, how in pairs:
        expected = _routed_width(routes.get(ids_key), widths)
        if expected is None:
            continue
        if how == "each":  # tokens: every routed conditioner has the width
            distinct = {widths[i] for i in routes[ids_key]}
            if len(distinct) != 1:
                continue
            expected = distinct.pop()
        declared = backbone.get(width_key, None if typo_of(backbone, width_key) else 0)
        if _is_int(declared) and declared != expected:
            ids = ", ".join(routes[ids_key])
            what = "concatenated width" if how == "sum" else "width"
            errors.append(ConfigError(join_path(path, width_key),
                                      f"is {declared}, but {join_path(route_path, ids_key)} routes [{ids}] with "
                                      f"{what} {expected}", f"set it to {expected}"))
    return errors


_ROUTE_KEYS = ("cross_attention_cond_ids", "global_cond_ids", "input_concat_ids", "prepend_cond_ids")


def _route_errors(block: Mapping, path: str) -> List[ConfigError]:
    """The routing keys (``cross_attention_cond_ids``...) must be lists of conditioner ids (strings)."""
    errors = []
    for key in _ROUTE_KEYS:
        ids = block.get(key)
        if ids is None:
            continue
        if not isinstance(ids, (list, tuple)):
            errors.append(ConfigError(join_path(path, key), f"expected a list of conditioner ids, got "
                                                            f"{type(ids).__name__} {ids!r:.60}"))
            continue
        errors.extend(ConfigError(join_path(path, f"{key}[{i}]"), f"expected a conditioner id (a string), got "
                                                                  f"{type(cid).__name__} {cid!r:.60}")
                      for i, cid in enumerate(ids) if not isinstance(cid, str))
    return errors


def _diffusion_cond_errors(model: Mapping) -> List[ConfigError]:
    errors: List[ConfigError] = []
    io_channels = _positive(model, "io_channels", "model", errors)
    latent = _pretransform_latent_dim(model)
    if io_channels is not None and latent is not None and latent != io_channels:
        errors.append(ConfigError("model.io_channels", f"is {io_channels}, but the autoencoder pretransform "
                                                       f"outputs {latent}-channel latents (model.pretransform."
                                                       f"config.latent_dim)", f"set it to {latent}"))
    errors.extend(_pretransform_errors(model.get("pretransform"), "model.pretransform"))
    conditioning = model.get("conditioning")
    if isinstance(conditioning, Mapping):
        _positive(conditioning, "cond_dim", "model.conditioning", errors)
    diffusion = model.get("diffusion")
    if not isinstance(diffusion, Mapping) or not _spec_errors(diffusion, "model.diffusion", errors) or \
            not isinstance(diffusion.get("config"), Mapping):
        return errors
    errors.extend(_route_errors(diffusion, "model.diffusion"))
    backbone, kind, path = diffusion["config"], diffusion.get("type"), "model.diffusion.config"
    channel_key = {"dit": "io_channels", "adp_cfg_1d": "in_channels", "adp_1d": "in_channels"}.get(kind)
    declared = backbone.get(channel_key, 32 if kind == "dit" else None) if channel_key else None
    if channel_key and typo_of(backbone, channel_key):
        declared = None
    if io_channels is not None and _is_int(declared) and declared != io_channels:
        errors.append(ConfigError(join_path(path, channel_key), f"is {declared}, but model.io_channels is "
                                                                f"{io_channels}", f"set it to {io_channels}"))
    if kind == "dit":
        errors.extend(_width_errors(backbone, diffusion, _conditioner_widths(model), path, "model.diffusion", (
            ("global_cond_ids", "global_cond_dim", "sum"), ("cross_attention_cond_ids", "cond_token_dim", "each"),
            ("prepend_cond_ids", "prepend_cond_dim", "each"))))
    return errors


def _lm_errors(model: Mapping) -> List[ConfigError]:
    errors: List[ConfigError] = []
    conditioning = model.get("conditioning")
    if isinstance(conditioning, Mapping):
        _positive(conditioning, "cond_dim", "model.conditioning", errors)
    errors.extend(_pretransform_errors(model.get("pretransform"), "model.pretransform"))
    lm = model.get("lm")
    if isinstance(lm, Mapping):
        errors.extend(_route_errors(lm, "model.lm"))
    if isinstance(lm, Mapping) and isinstance(lm.get("config"), Mapping):
        errors.extend(_width_errors(lm["config"], lm, _conditioner_widths(model), "model.lm.config", "model.lm", (
            ("cross_attention_cond_ids", "cross_attn_cond_dim", "each"),
            ("prepend_cond_ids", "prepend_cond_dim", "each"))))
    return errors


def check_model_config(config: Mapping) -> None:
    """Raise one ConfigError listing every problem of the checks above (nothing is built)."""
    errors = [ConfigError(p, "must be a finite number, got NaN or infinity") for p in non_finite_paths(config)]
    model, kind = config.get("model"), config.get("model_type")
    _positive(config, "sample_rate", "", errors)
    _positive(config, "sample_size", "", errors, required=kind == "diffusion_uncond", high=_SAMPLE_SIZE_LIMIT)
    _positive(config, "audio_channels", "", errors, required=False)
    if isinstance(model, Mapping):
        if kind == "autoencoder":
            errors.extend(autoencoder_errors(model, "model"))
        elif kind == "diffusion_autoencoder":
            for key in ("latent_dim", "downsampling_ratio", "io_channels"):
                _positive(model, key, "model", errors)
            errors.extend(_pretransform_errors(model.get("pretransform"), "model.pretransform"))
        elif kind in ("diffusion_cond", "diffusion_cond_inpaint"):
            errors.extend(_diffusion_cond_errors(model))
        elif kind == "diffusion_uncond":
            errors.extend(_pretransform_errors(model.get("pretransform"), "model.pretransform"))
        elif kind == "lm":
            errors.extend(_lm_errors(model))
    raise_errors(errors)
