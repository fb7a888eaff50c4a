"""LoRA-family adapters for every diffusion and LM model of the package (see ``docs/adapters.md``).

* :mod:`.config`: the adapter config (``type``, ``rank``, ``alpha``, ``dropout``, ``include``, ``exclude``,
  ``targets``) and module-name patterns;
* :mod:`.layers`: the adapter math (LoRA, DoRA rows/cols, BoRA, LoRA-XS) and the adapted Linear / Conv1d layers,
  with the stacking rule;
* :mod:`.manage`: apply / strength / sigma range / remove / merge, and helpers for training;
* :mod:`.io`, :mod:`.interop` and :mod:`.files`: the native ``.safetensors`` format, PEFT and Stable Audio 3 files.
"""
from .config import ADAPTER_TYPES, TARGETS, AdapterConfig, expand_pattern, parse_adapter_config, pattern_matches
from .files import AdapterFileError
from .io import load_adapter, parse_adapter_flag, read_adapter_file, save_adapter
from .layers import AdaptedConv1d, AdaptedLinear, LowRankAdapter
from .manage import (AdapterInfo, adapter_parameters, adapter_state_dict, apply_adapters, base_parameters,
                     base_state_hash, freeze_base, list_adapters, model_config_hash, merge_adapters, remove_adapter, set_adapter_sigma_range,
                     set_adapter_strength)

__all__ = [
    "parse_adapter_flag",
    "ADAPTER_TYPES", "TARGETS", "AdapterConfig", "AdapterInfo", "AdapterFileError", "AdaptedLinear",
    "AdaptedConv1d", "LowRankAdapter", "adapter_parameters", "adapter_state_dict", "apply_adapters",
    "base_parameters", "base_state_hash", "model_config_hash", "expand_pattern", "freeze_base", "list_adapters", "load_adapter", "merge_adapters",
    "parse_adapter_config", "pattern_matches", "read_adapter_file", "remove_adapter", "save_adapter",
    "set_adapter_sigma_range", "set_adapter_strength",
]
