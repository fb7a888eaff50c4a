"""Applying, listing, re-weighting, removing and merging adapters on a model.

Where adapter tensors live: an adapted ``nn.Linear`` / ``nn.Conv1d`` is replaced by an :class:`.AdaptedLinear` /
:class:`.AdaptedConv1d` that shares the original ``weight`` / ``bias`` parameter objects and holds its adapters in
the child ``adapters.<name>`` (so ``named_parameters()``, ``.to()``, optimizers and DDP see them). ``state_dict()``
*excludes* every ``*.adapters.*`` entry and ``load_state_dict`` does not require them, so the base model's state-dict
keys never change and a released checkpoint still loads strictly into an adapted model. Adapter tensors are saved
only by :func:`.io.save_adapter` / :func:`adapter_state_dict`.

Adapter metadata (config, strength, sigma range, layer names) is kept in the root model's plain attribute
``_sat_adapters``. For diffusion models a forward pre-hook on the backbone ``model`` records the per-element noise
level ``sigma`` (``sin(πt/2)`` for the ``v`` objective, ``t`` for rectified flow) of every call in a
:class:`.SigmaState` read by the backbone's adapted layers; conditioner and LM layers are never sigma-gated.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..config import ConfigError
from ..diffusion import ConditionedDiffusionModelWrapper, DiffusionModelWrapper
from ..lm import AudioLanguageModelWrapper
from .config import AdapterConfig, name_selected, parse_adapter_config, unmatched_patterns
from .layers import ADAPTED_TYPES, AdaptedConv1d, AdaptedLinear, LowRankAdapter, SigmaState, adapt_layer, \
    flat_weight, restore_layer

__all__ = ["AdapterInfo", "apply_adapters", "set_adapter_strength", "set_adapter_sigma_range", "remove_adapter",
           "merge_adapters", "list_adapters", "adapter_state_dict", "adapter_parameters", "adapter_layers",
           "target_modules", "candidate_layers", "default_targets", "freeze_base", "base_parameters", "base_state_hash", "model_config_hash"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_\-]+\Z")


@dataclass
class AdapterInfo:
    """What the model knows about one applied adapter."""

    name: str
    config: AdapterConfig
    layers: List[str]
    strength: float = 1.0
    sigma_range: Optional[Tuple[float, float]] = None
    metadata: Dict[str, str] = field(default_factory=dict)


def _registry(model: nn.Module) -> Dict[str, AdapterInfo]:
    registry = model.__dict__.get("_sat_adapters")
    if registry is None:
        registry = {}
        model.__dict__["_sat_adapters"] = registry
    return registry


def list_adapters(model: nn.Module) -> Dict[str, AdapterInfo]:
    """The adapters applied to ``model`` (name -> :class:`AdapterInfo`), in application order."""
    return dict(model.__dict__.get("_sat_adapters") or {})


# ---------------------------------------------------------------------- targets
def _is_diffusion(model: nn.Module) -> bool:
    return isinstance(model, (ConditionedDiffusionModelWrapper, DiffusionModelWrapper))


def _is_lm(model: nn.Module) -> bool:
    return isinstance(model, AudioLanguageModelWrapper)


def default_targets(model: nn.Module) -> List[str]:
    return ["diffusion"] if _is_diffusion(model) else ["lm"] if _is_lm(model) else []


def _external_encoders(conditioner: nn.Module, prefix: str) -> Iterator[Tuple[str, nn.Module]]:
    """Frozen external encoders (T5, CLAP) kept outside the module tree, loaded on demand."""
    for name, module in conditioner.named_modules(prefix=prefix.rstrip(".")):
        external = module.__dict__.get("model")
        if "model" in module._modules or not hasattr(module, "load"):
            continue
        if external is None:
            module.load()
            external = module.__dict__.get("model")
        if isinstance(external, nn.Module):
            yield f"{name}.model", external


def target_modules(model: nn.Module, targets: Sequence[str]) -> List[Tuple[str, str, nn.Module]]:
    """``(target, name prefix, module)`` for each requested target of ``model`` (names relative to the root)."""
    if not targets:
        targets = default_targets(model)
        if not targets:
            return [("model", "", model)]
    found = []
    for i, target in enumerate(targets):
        if target == "diffusion":
            if not _is_diffusion(model):
                raise ConfigError(f"targets[{i}]", f"'diffusion': {type(model).__name__} is not a diffusion model")
            found.append(("diffusion", "model.", model.model))
        elif target == "lm":
            if not _is_lm(model):
                raise ConfigError(f"targets[{i}]", f"'lm': {type(model).__name__} is not a language model")
            found.append(("lm", "lm.", model.lm))
        elif target == "conditioner":
            conditioner = getattr(model, "conditioner", None)
            if not isinstance(conditioner, nn.Module):
                raise ConfigError(f"targets[{i}]", f"'conditioner': {type(model).__name__} has no conditioner")
            found.append(("conditioner", "conditioner.", conditioner))
            for name, external in _external_encoders(conditioner, "conditioner."):
                found.append(("conditioner", name + ".", external))
    return found


def candidate_layers(model: nn.Module, targets: Sequence[str]) -> Dict[str, Tuple[str, nn.Module, nn.Module, str]]:
    """name -> (target, parent module, layer, attribute) of every adaptable layer of the targets."""
    layers = {}
    for target, prefix, root in target_modules(model, targets):
        for name, module in root.named_modules():
            for attr, child in module._modules.items():
                adaptable = type(child) in ADAPTED_TYPES or isinstance(child, (AdaptedLinear, AdaptedConv1d))
                if child is None or not adaptable:
                    continue
                full = prefix + (f"{name}.{attr}" if name else attr)
                layers[full] = (target, module, child, attr)
    return layers


def _sigma_state(model: nn.Module) -> SigmaState:
    """The model's SigmaState, with the backbone pre-hook that fills it (installed once)."""
    state = model.__dict__.get("_sat_sigma_state")
    if state is None:
        state = SigmaState()
        model.__dict__["_sat_sigma_state"] = state
        objective = getattr(model, "diffusion_objective", "v")
        handle = model.model.register_forward_pre_hook(functools.partial(_record_sigma, state=state,
                                                                         objective=objective), with_kwargs=True)
        model.__dict__["_sat_sigma_hook"] = handle
    return state


def _record_sigma(module: nn.Module, args: tuple, kwargs: dict, state: SigmaState, objective: str) -> None:
    t = args[1] if len(args) > 1 else kwargs.get("t")
    if not isinstance(t, torch.Tensor):
        state.sigma = None
        return
    t = t.detach().float().reshape(-1)
    state.sigma = torch.sin(t * math.pi / 2) if objective == "v" else t


def _check_name(name: str, registry: Mapping[str, AdapterInfo]) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"adapter name {name!r}: use letters, digits, '_' and '-' only")
    if name in registry:
        raise ValueError(f"an adapter named {name!r} is already applied; pass another name or remove_adapter first")


def _check_sigma_range(sigma_range: Optional[Sequence[float]]) -> Optional[Tuple[float, float]]:
    if sigma_range is None:
        return None
    try:
        low, high = (float(v) for v in sigma_range)
    except (TypeError, ValueError):
        raise ValueError(f"sigma_range {sigma_range!r}: expected (low, high) noise levels in [0, 1]") from None
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"sigma_range ({low}, {high}): expected 0 <= low <= high <= 1")
    return low, high


def apply_adapters(model: nn.Module, config: Any, name: str = "default", strength: float = 1.0,
                   sigma_range: Optional[Sequence[float]] = None, layers: Optional[Sequence[str]] = None,
                   layer_ranks: Optional[Mapping[str, int]] = None) -> List[str]:
    """Add a new (identity-initialised) adapter to ``model`` and return the names of the adapted layers.

    Args:
        model: a diffusion / LM model from ``create_model_from_config`` (or any module: its own layers are
            searched and no target or sigma gate is available).
        config: adapter config (dict or :class:`AdapterConfig`; see :mod:`.config`).
        name: adapter name (letters, digits, ``_``, ``-``). Default ``"default"``.
        strength: multiplier of the adapter's weight change. Default 1.0.
        sigma_range: ``(low, high)``: active only for batch elements with noise level in the range (diffusion
            backbone layers only). Default None (always).
        layers: adapt exactly these layer names (used by the file loaders), instead of include/exclude.
        layer_ranks: per-layer rank overrides (that layer's scale is ``alpha / its rank``, as PEFT's
            ``rank_pattern``).
    """
    config = parse_adapter_config(config)
    registry = _registry(model)
    _check_name(name, registry)
    sigma_range = _check_sigma_range(sigma_range)
    candidates = candidate_layers(model, config.targets)
    if layers is not None:
        missing = [n for n in layers if n not in candidates]
        if missing:
            raise ValueError(f"adapter {name!r}: {len(missing)} target module(s) do not exist in this model (or are "
                             f"not nn.Linear / nn.Conv1d): {', '.join(missing[:8])}"
                             f"{' ...' if len(missing) > 8 else ''}; the adapter was made for another model")
        selected = list(layers)
    else:
        names = list(candidates)
        for i, pattern in enumerate(config.include):
            if pattern in unmatched_patterns([pattern], names):
                raise ConfigError(f"include[{i}]", f"pattern {pattern!r} matches no nn.Linear / nn.Conv1d layer of "
                                                   f"the targets {config.targets or default_targets(model)}",
                                  "patterns match whole dot-separated name parts, e.g. 'transformer.layers.[0-3]'")
        for pattern in unmatched_patterns(config.exclude, names):
            log.warning("adapter %r: exclude pattern %r matches no layer", name, pattern)
        selected = [n for n in names if name_selected(n, config.include, config.exclude)]
        if not selected:
            raise ConfigError("exclude" if config.exclude else "targets",
                              "no nn.Linear / nn.Conv1d layer is left to adapt",
                              "loosen include/exclude or add targets")
    state = _sigma_state(model) if _is_diffusion(model) else None
    for layer_name in selected:
        target, parent, layer, attr = candidates[layer_name]
        adapted = adapt_layer(layer, layer_name, state if target == "diffusion" else None)
        rank = (layer_ranks or {}).get(layer_name, config.rank)
        layer_config = replace(config, rank=rank) if rank != config.rank else config
        adapter = LowRankAdapter(layer_config, flat_weight(adapted), strength=strength, sigma_range=sigma_range)
        adapted.adapters[name] = adapter
        if adapted is not layer:
            setattr(parent, attr, adapted)
    registry[name] = AdapterInfo(name=name, config=config, layers=selected, strength=float(strength),
                                 sigma_range=sigma_range)
    return selected


def adapter_layers(model: nn.Module, name: str) -> Iterator[Tuple[str, nn.Module, LowRankAdapter]]:
    """``(layer name, adapted layer, adapter)`` of adapter ``name``."""
    info = _info(model, name)
    modules = _all_adapted(model)
    for layer_name in info.layers:
        layer = modules[layer_name]
        yield layer_name, layer, layer.adapters[name]


def _named_modules(model: nn.Module) -> Dict[str, nn.Module]:
    """``named_modules()`` of the model plus those of its loaded external encoders (T5, CLAP)."""
    modules = dict(model.named_modules())
    for root_name, external in _external_roots(model):
        modules.update({f"{root_name}.{n}" if n else root_name: m for n, m in external.named_modules()})
    return modules


def _all_adapted(model: nn.Module) -> Dict[str, nn.Module]:
    return {n: m for n, m in _named_modules(model).items() if isinstance(m, (AdaptedLinear, AdaptedConv1d))}


def _info(model: nn.Module, name: Optional[str]) -> AdapterInfo:
    registry = list_adapters(model)
    if name is None:
        if len(registry) != 1:
            raise ValueError(f"the model has {len(registry)} adapters ({', '.join(registry) or 'none'}); "
                             f"pass name=")
        name = next(iter(registry))
    if name not in registry:
        raise KeyError(f"no adapter named {name!r}; applied adapters: {', '.join(registry) or 'none'}")
    return registry[name]


def set_adapter_strength(model: nn.Module, name: str, strength: float) -> None:
    """Set the strength of adapter ``name`` (0 = the base model's output exactly)."""
    info = _info(model, name)
    info.strength = float(strength)
    for _, _, adapter in adapter_layers(model, info.name):
        adapter.strength = float(strength)


def set_adapter_sigma_range(model: nn.Module, name: str, sigma_range: Optional[Sequence[float]]) -> None:
    """Set (or with None clear) the noise-level interval in which adapter ``name`` is active."""
    info = _info(model, name)
    info.sigma_range = _check_sigma_range(sigma_range)
    for _, _, adapter in adapter_layers(model, info.name):
        adapter.sigma_range = info.sigma_range


def _restore_unused(model: nn.Module, layer_names: Sequence[str]) -> None:
    modules = _named_modules(model)
    for layer_name in layer_names:
        layer = modules.get(layer_name)
        if isinstance(layer, (AdaptedLinear, AdaptedConv1d)) and not len(layer.adapters):
            parent_name, _, attr = layer_name.rpartition(".")
            setattr(modules[parent_name] if parent_name else model, attr, restore_layer(layer))


def _external_roots(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    conditioner = getattr(model, "conditioner", None)
    if not isinstance(conditioner, nn.Module):
        return []
    roots = []
    for name, module in conditioner.named_modules(prefix="conditioner"):
        external = module.__dict__.get("model")
        if "model" not in module._modules and isinstance(external, nn.Module):
            roots.append((f"{name}.model", external))
    return roots


def remove_adapter(model: nn.Module, name: str) -> None:
    """Remove adapter ``name``; layers left without adapters become plain ``nn.Linear`` / ``nn.Conv1d`` again."""
    info = _info(model, name)
    for _, layer, _ in list(adapter_layers(model, info.name)):
        del layer.adapters[info.name]
    _restore_unused(model, info.layers)
    del _registry(model)[info.name]
    if not _registry(model):
        handle = model.__dict__.pop("_sat_sigma_hook", None)
        if handle is not None:
            handle.remove()
        model.__dict__.pop("_sat_sigma_state", None)


@torch.no_grad()
def merge_adapters(model: nn.Module, names: Optional[Sequence[str]] = None) -> None:
    """Fold adapters (default: all) into the base weights, ``W0 <- W0 + sum_i strength_i · D_i`` (D_i computed
    from the pre-merge ``W0``), and remove them. A sigma-gated adapter (range not covering [0, 1]) cannot be folded
    into static weights and raises ``ValueError``."""
    registry = list_adapters(model)
    names = list(registry) if names is None else list(names)
    for name in names:
        info = _info(model, name)
        if info.sigma_range is not None and info.sigma_range != (0.0, 1.0):
            raise ValueError(f"adapter {name!r} is active only for sigma in {info.sigma_range}; a merged weight "
                             f"cannot depend on the noise level. Clear it with set_adapter_sigma_range(model, "
                             f"{name!r}, None) to merge it at every noise level, or keep it unmerged")
    changes: Dict[int, Tuple[nn.Module, torch.Tensor]] = {}
    for name in names:
        for _, layer, adapter in adapter_layers(model, name):
            if adapter.strength == 0.0:
                continue
            change = adapter.weight_change(flat_weight(layer).float()).float() * adapter.strength
            key = id(layer)
            changes[key] = (layer, changes[key][1] + change if key in changes else change)
    for layer, change in changes.values():
        layer.weight.copy_((layer.weight.float() + change.reshape(layer.weight.shape)).to(layer.weight.dtype))
    for name in names:
        remove_adapter(model, name)


# ---------------------------------------------------------------------- tensors and training helpers
def adapter_state_dict(model: nn.Module, name: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Adapter ``name``'s tensors keyed ``<layer name>.<param>`` (e.g. ``model.model.transformer.layers.0.
    self_attn.to_qkv.lora_A``). The frozen ``-xs`` bases are not included (they are recomputed from the base)."""
    info = _info(model, name)
    tensors = {}
    for layer_name, _, adapter in adapter_layers(model, info.name):
        for param_name, param in adapter.named_parameters():
            tensors[f"{layer_name}.{param_name}"] = param.detach()
    return tensors


def adapter_parameters(model: nn.Module, names: Optional[Sequence[str]] = None) -> List[nn.Parameter]:
    """The trainable parameters of the given adapters (default: all)."""
    names = list(list_adapters(model)) if names is None else list(names)
    params = []
    for name in names:
        for _, _, adapter in adapter_layers(model, name):
            params.extend(adapter.parameters())
    return params


def base_parameters(model: nn.Module) -> Iterator[Tuple[str, nn.Parameter]]:
    """``named_parameters()`` of the model without the adapter parameters."""
    for name, param in model.named_parameters():
        if ".adapters." not in f".{name}":
            yield name, param


def freeze_base(model: nn.Module) -> int:
    """Freeze every base parameter, make every adapter parameter trainable; return the trainable count."""
    for _, param in base_parameters(model):
        param.requires_grad_(False)
    params = adapter_parameters(model)
    for param in params:
        param.requires_grad_(True)
    return sum(p.numel() for p in params)


def base_state_hash(model: nn.Module) -> str:
    """SHA-256 of the base model's state dict (names, dtypes, shapes and bytes; adapters are not part of it), used
    to check that an adapter run resumes / merges onto the weights it was trained on."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def model_config_hash(model_config: Mapping[str, Any]) -> str:
    """SHA-256 of the parts of a model config that define the architecture (``model_type``, ``sample_rate``,
    ``sample_size``, ``audio_channels``, ``model``), as canonical JSON."""
    keys = ("model_type", "sample_rate", "sample_size", "audio_channels", "model")
    canonical = json.dumps({k: model_config.get(k) for k in keys}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
