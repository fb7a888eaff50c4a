"""Config validation for the models, importable from its historical path.

The validators live in :mod:`stable_audio_tools.config` (the foundation layer, shared with data and
training); :func:`build_from_config` and the constructor-argument checks in :mod:`stable_audio_tools.config_schema`; the
whole-config geometry checks in :mod:`.config_geometry`. This module re-exports them.
"""
from __future__ import annotations

from ..config import (ConfigError, ConfigWarning, check_choice, check_unknown_keys, require, require_mapping,
                      warn_unknown_keys)
from ..config_schema import build_from_config

__all__ = [
    "ConfigError",
    "ConfigWarning",
    "require",
    "require_mapping",
    "check_choice",
    "check_unknown_keys",
    "warn_unknown_keys",
    "build_from_config",
]
