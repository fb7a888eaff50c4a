"""Shared pieces of the adapter file readers and writers: :class:`AdapterFileError`, :class:`ParsedAdapter` (an
adapter read from any format, in native naming) and per-layer helpers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping

import torch

from .config import AdapterConfig, split_type

__all__ = ["AdapterFileError", "ParsedAdapter", "expected_params", "layer_rank", "group_by_layer"]


class AdapterFileError(ValueError):
    """An adapter file is missing, malformed or does not fit the model. The message names the file."""


@dataclass
class ParsedAdapter:
    """An adapter read from a file, in native naming: ``tensors[layer][param]`` (2-D/1-D native shapes)."""

    config: AdapterConfig
    tensors: Dict[str, Dict[str, torch.Tensor]]
    metadata: Dict[str, str] = field(default_factory=dict)
    source: str = ""


def expected_params(adapter_type: str) -> List[str]:
    """The tensors an adapter of this type stores per layer."""
    delta, norm = split_type(adapter_type)
    params = ["lora_A", "lora_B"] if delta == "lora" else ["M_xs"]
    return params + {"none": [], "rows": ["magnitude"], "cols": ["magnitude"], "both": ["magnitude_r",
                                                                                        "magnitude_c"]}[norm]


def layer_rank(params: Mapping[str, torch.Tensor]) -> int:
    if "lora_A" in params:
        return int(params["lora_A"].shape[0])
    return int(params["M_xs"].shape[0])


def group_by_layer(flat: Mapping[str, torch.Tensor], source: str) -> Dict[str, Dict[str, torch.Tensor]]:
    grouped: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        layer, _, param = key.rpartition(".")
        if not layer:
            raise AdapterFileError(f"{source}: tensor {key!r} is not named <layer>.<param>")
        grouped.setdefault(layer, {})[param] = tensor
    return grouped
