"""Conditioners: per-item metadata -> conditioning tensors for diffusion models and LMs (see
docs/diffusion.md#conditioners-modelconditioning).

Every conditioner maps the list of one metadata field over a batch to ``[embeddings, mask]``
(``forward(values, device)``). :class:`MultiConditioner` runs one conditioner per id on a batch of
metadata dicts; :func:`~.builders.conditioners.create_multi_conditioner_from_conditioning_config` builds it from the
``model.conditioning`` block of a model config.

This module holds the small learned conditioners (``int``, ``number``, ``list``) and the audio ones
(``pretransform``, ``source_mix``). The conditioners that wrap external pretrained models or
tokenizers (``t5``, ``clap_text``, ``clap_audio``, ``phoneme``, ``lut``) live in
:mod:`stable_audio_tools.models.text_conditioners` (importable from here too); their optional
dependencies are only imported when such a conditioner is built.

Deviations from upstream: see docs/compatibility.md#stable_audio_toolsmodelsconditioners.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from einops import rearrange
from torch import nn

from ..audio import set_audio_channels
from .adp_blocks import NumberEmbedder

__all__ = [
    "Conditioner",
    "NumberEmbedder",
    "IntConditioner",
    "NumberConditioner",
    "ListConditioner",
    "PretransformConditioner",
    "SourceMixConditioner",
    "MultiConditioner",
    "CONDITIONER_TYPES",
    "create_multi_conditioner_from_conditioning_config",
]

Device = Union[str, torch.device, None]

_TEXT_CONDITIONERS = ("T5Conditioner", "CLAPTextConditioner", "CLAPAudioConditioner", "PhonemeConditioner",
                      "TokenizerLUTConditioner", "clap_load_state_dict")


def __getattr__(name: str) -> Any:
    """Lazily re-export the external-model conditioners (and upstream's ``clap_load_state_dict`` helper) from
    :mod:`.text_conditioners`, so importing this module stays light, and the conditioning builder from
    :mod:`.builders.conditioners` (upstream's path), so this module never imports a builder."""
    if name in _TEXT_CONDITIONERS:
        from . import text_conditioners

        return getattr(text_conditioners, name)
    if name == "create_multi_conditioner_from_conditioning_config":
        from .builders import conditioners

        return getattr(conditioners, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Conditioner(nn.Module):
    """Base class: ``proj_out`` = Linear(dim, output_dim) if ``dim != output_dim`` or ``project_out``, else Identity.

    Subclasses implement ``forward(values: list, device) -> [embeddings, mask]``.
    """

    def __init__(self, dim: int, output_dim: int, project_out: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.output_dim = output_dim
        self.proj_out = nn.Linear(dim, output_dim) if (dim != output_dim or project_out) else nn.Identity()

    def forward(self, values: Any, device: Device = None) -> List[Optional[torch.Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(values, device)")

    def _cast_to_proj_dtype(self, x: torch.Tensor) -> torch.Tensor:
        """Cast ``x`` to the dtype of a non-identity ``proj_out`` (no-op for Identity)."""
        if isinstance(self.proj_out, nn.Identity):
            return x
        return x.to(self.proj_out.weight.dtype)


def _ones_mask(batch: int, length: int, device: Device) -> torch.Tensor:
    return torch.ones(batch, length, device=device)


# --------------------------------------------------------------------------------------------
# small learned conditioners


class IntConditioner(Conditioner):
    """Integers -> ``int_embedder`` rows ``[B, 1, output_dim]`` (mask ones ``[B, 1]``).

    Values are clamped to ``[min_val, max_val]`` and used directly as indices into an Embedding of
    ``max_val - min_val + 1`` rows. Like upstream they are **not** offset by ``min_val`` (kept so that
    upstream-trained checkpoints keep their numerics), so with ``min_val > 0`` only values up to
    ``max_val - min_val`` are usable; larger ones raise a ValueError.
    """

    def __init__(self, output_dim: int, min_val: int = 0, max_val: int = 512) -> None:
        super().__init__(output_dim, output_dim)
        if max_val < min_val:
            raise ValueError(f"IntConditioner: max_val ({max_val}) must be >= min_val ({min_val})")
        self.min_val = min_val
        self.max_val = max_val
        self.int_embedder = nn.Embedding(max_val - min_val + 1, output_dim)

    def forward(self, ints: Sequence[Any], device: Device = None) -> List[torch.Tensor]:
        values = [min(max(int(v), self.min_val), self.max_val) for v in ints]
        rows = self.int_embedder.num_embeddings
        if values and max(values) >= rows:
            raise ValueError(
                f"IntConditioner: value {max(values)} indexes past the embedding table ({rows} rows). "
                f"Like upstream, values are not offset by min_val={self.min_val}, so with min_val > 0 only values "
                f"up to max_val - min_val = {rows - 1} work; use min_val 0 (and max_val >= your largest value)")
        embeds = self.int_embedder(torch.tensor(values, device=device)).unsqueeze(1)
        return [embeds, _ones_mask(embeds.shape[0], 1, device)]


class NumberConditioner(Conditioner):
    """Floats -> clamp to ``[min_val, max_val]`` -> normalise to [0, 1] -> NumberEmbedder ``[B, 1, output_dim]``."""

    def __init__(self, output_dim: int, min_val: float = 0, max_val: float = 1) -> None:
        super().__init__(output_dim, output_dim)
        if max_val <= min_val:
            raise ValueError(f"NumberConditioner: max_val ({max_val}) must be > min_val ({min_val})")
        self.min_val = min_val
        self.max_val = max_val
        self.embedder = NumberEmbedder(features=output_dim)

    def forward(self, floats: Sequence[Any], device: Device = None) -> List[torch.Tensor]:
        values = torch.tensor([float(v) for v in floats], device=device).clamp(self.min_val, self.max_val)
        normalized = (values - self.min_val) / (self.max_val - self.min_val)
        normalized = normalized.to(self.embedder.embedding[1].weight.dtype)
        embeds = self.embedder(normalized).unsqueeze(1)
        return [embeds, _ones_mask(embeds.shape[0], 1, device)]


class ListConditioner(Conditioner):
    """Strings from a closed list -> ``embedder`` rows ``[B, 1, output_dim]``; unknown strings use row 0."""

    def __init__(self, output_dim: int, options: Sequence[str]) -> None:
        super().__init__(output_dim, output_dim)
        self.options = list(options)
        self.embedder = nn.Embedding(len(self.options) + 1, output_dim)

    def forward(self, texts: Sequence[Any], device: Device = None) -> List[torch.Tensor]:
        indices = [self.options.index(x) + 1 if x in self.options else 0 for x in texts]
        embeds = self.embedder(torch.tensor(indices, device=device)).unsqueeze(1)
        return [embeds, _ones_mask(embeds.shape[0], 1, device)]


# --------------------------------------------------------------------------------------------
# audio conditioners built on a pretransform


def _set_pretransform(module: nn.Module, pretransform: nn.Module, save_pretransform: bool) -> None:
    """Register ``pretransform`` as a child only when it should be saved with the model."""
    if save_pretransform:
        module.pretransform = pretransform
    else:
        module.__dict__["pretransform"] = pretransform


def _device_or(device: Device, tensor: torch.Tensor) -> Union[str, torch.device]:
    return tensor.device if device is None else device


def _move(module: nn.Module, device: Device) -> None:
    if device is not None:
        module.to(device)


def _encode(pretransform: nn.Module, audio: torch.Tensor) -> torch.Tensor:
    with torch.set_grad_enabled(torch.is_grad_enabled() and bool(getattr(pretransform, "enable_grad", False))):
        return pretransform.encode(audio)


class PretransformConditioner(Conditioner):
    """Audio -> pretransform latents ``[B, output_dim, L]`` (mask ones ``[B, L]``).

    The pretransform is kept out of the module tree (and so out of checkpoints) unless
    ``save_pretransform``. Input: a list of ``[C, T]`` tensors (stacked) or one ``[B, C, T]`` / ``[C, T]``
    tensor; channels are converted to the pretransform's ``io_channels``. A non-identity ``proj_out``
    (when ``encoded_channels != output_dim``) projects the channel axis (upstream applied it over time).
    """

    def __init__(self, pretransform: nn.Module, output_dim: int, save_pretransform: bool = False) -> None:
        super().__init__(pretransform.encoded_channels, output_dim)
        _set_pretransform(self, pretransform, save_pretransform)

    def forward(self, audio: Union[torch.Tensor, Sequence[torch.Tensor]], device: Device = None) -> List[torch.Tensor]:
        if isinstance(audio, (list, tuple)):
            audio = torch.stack(list(audio), dim=0)
        if audio.dim() == 2:
            audio = audio.unsqueeze(0)
        _move(self.pretransform, device)
        audio = set_audio_channels(audio, self.pretransform.io_channels).to(_device_or(device, audio))
        latents = _encode(self.pretransform, audio)
        if not isinstance(self.proj_out, nn.Identity):
            latents = rearrange(self.proj_out(rearrange(self._cast_to_proj_dtype(latents), "b c l -> b l c")),
                                "b l c -> b c l")
        return [latents, _ones_mask(latents.shape[0], latents.shape[2], latents.device)]


class SourceMixConditioner(Conditioner):
    """Sum of per-source 1x1-conv projections of pretransform latents ``[B, output_dim, L]`` (mask ones ``[B, L]``).

    Each batch item is a dict ``{source_key: audio [C, T]}`` (or latents ``[encoded_channels, L]`` when
    ``pre_encoded``); ``source_heads.{i}`` = Conv1d(encoded_channels, output_dim, 1) for ``source_keys[i]``.
    Items without any source use the learned ``null_source [output_dim, 1]`` repeated to ``source_length``
    when ``allow_null_source``. ``proj_out`` exists (state-dict compatibility) but is not used.
    """

    def __init__(self, pretransform: nn.Module, output_dim: int, save_pretransform: bool = False,
                 source_keys: Sequence[str] = (), pre_encoded: bool = False, allow_null_source: bool = False,
                 source_length: Optional[int] = None) -> None:
        super().__init__(pretransform.encoded_channels, output_dim)
        _set_pretransform(self, pretransform, save_pretransform)
        self.source_keys = list(source_keys)
        self.source_heads = nn.ModuleList(
            [nn.Conv1d(pretransform.encoded_channels, output_dim, kernel_size=1) for _ in self.source_keys])
        self.pre_encoded = pre_encoded
        self.allow_null_source = allow_null_source
        if allow_null_source:
            if source_length is None:
                raise ValueError("SourceMixConditioner: source_length (latent frames) is required when "
                                 "allow_null_source is true")
            self.null_source = nn.Parameter(torch.randn(output_dim, 1))
            self.source_length = source_length

    def _dtype(self) -> torch.dtype:
        if len(self.source_heads):
            return self.source_heads[0].weight.dtype
        return self.null_source.dtype if self.allow_null_source else torch.get_default_dtype()

    def _latents(self, source: torch.Tensor, device: Device) -> torch.Tensor:
        source = source.to(_device_or(device, source))
        if self.pre_encoded:
            return source
        if source.dim() != 2:
            raise ValueError(f"SourceMixConditioner: source audio must be [channels, samples], got shape "
                             f"{tuple(source.shape)}")
        audio = set_audio_channels(source.unsqueeze(0), self.pretransform.io_channels)
        return _encode(self.pretransform, audio).squeeze(0)

    def forward(self, sources: Sequence[Mapping[str, torch.Tensor]], device: Device = None) -> List[torch.Tensor]:
        if not self.pre_encoded:
            _move(self.pretransform, device)
        dtype = self._dtype()
        mixes = []
        for item in sources:
            mix = None
            for head, key in zip(self.source_heads, self.source_keys):
                if key in item:
                    projected = head(self._latents(item[key], device).to(dtype))
                    mix = projected if mix is None else mix + projected
            if mix is None:
                if not self.allow_null_source:
                    raise ValueError(f"SourceMixConditioner: a batch item has none of the sources "
                                     f"{self.source_keys} (found keys {sorted(item)}); set allow_null_source")
                mix = self.null_source.repeat(1, self.source_length)
            mixes.append(mix)
        mixes = torch.stack(mixes, dim=0)
        return [mixes, _ones_mask(mixes.shape[0], mixes.shape[2], mixes.device)]


# --------------------------------------------------------------------------------------------
# multi-conditioner and factory


class MultiConditioner(nn.Module):
    """Run one conditioner per id over a batch of metadata dicts.

    Child ``conditioners`` = ModuleDict keyed by id. ``default_keys`` maps an id to the metadata key
    used when the id itself is missing (e.g. ``{"prompt_t5": "prompt"}``). Ids in ``pre_encoded_keys``
    are not run: their per-item tensors are stacked (mask None).
    """

    def __init__(self, conditioners: Mapping[str, nn.Module], default_keys: Optional[Mapping[str, str]] = None,
                 pre_encoded_keys: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        self.conditioners = nn.ModuleDict(dict(conditioners))
        self.default_keys = dict(default_keys or {})
        self.pre_encoded_keys = list(pre_encoded_keys or [])

    def _gather(self, cond_id: str, batch_metadata: Sequence[Mapping[str, Any]]) -> List[Any]:
        inputs = []
        for item in batch_metadata:
            key = cond_id
            if key not in item:
                if cond_id not in self.default_keys or self.default_keys[cond_id] not in item:
                    fallback = (f" or its default key '{self.default_keys[cond_id]}'" if cond_id in self.default_keys
                                else " (map it to another metadata key with conditioning.default_keys)")
                    raise ValueError(f"conditioner '{cond_id}': key '{cond_id}'{fallback} not found in batch metadata "
                                     f"(available keys: {sorted(item)})")
                key = self.default_keys[cond_id]
            value = item[key]
            # collation may wrap single values in a list or tuple
            if isinstance(value, (list, tuple)) and len(value) == 1:
                value = value[0]
            inputs.append(value)
        return inputs

    def forward(self, batch_metadata: Sequence[Mapping[str, Any]], device: Device = None) -> Dict[str, list]:
        output = {}
        for cond_id, conditioner in self.conditioners.items():
            inputs = self._gather(cond_id, batch_metadata)
            if cond_id in self.pre_encoded_keys:
                stacked = torch.stack(inputs, dim=0)
                output[cond_id] = [stacked.to(_device_or(device, stacked)), None]
            else:
                output[cond_id] = conditioner(inputs, device)
        return output


CONDITIONER_TYPES = ("t5", "clap_text", "clap_audio", "int", "number", "list", "phoneme", "lut", "pretransform",
                     "source_mix")
