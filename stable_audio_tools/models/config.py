"""Config validation helpers shared by every factory.

Factories never mutate the config they are given, and report problems as :class:`ConfigError`,
whose message names the JSON path of the offending key (``model.encoder.config.latent_dim``),
what was expected and, where there is a closed set, the accepted values.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import warnings
from typing import Any, Callable, Iterable, Mapping, Optional

__all__ = [
    "ConfigError",
    "ConfigWarning",
    "require",
    "require_mapping",
    "check_choice",
    "warn_unknown_keys",
    "build_from_config",
]

_MISSING = object()


class ConfigError(ValueError):
    """A model, dataset or training config is invalid. The message names the JSON path."""

    def __init__(self, path: str, problem: str, hint: str = "") -> None:
        self.path = path
        self.problem = problem
        self.hint = hint
        message = f"config key '{path}': {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class ConfigWarning(UserWarning):
    """A config contains something that is ignored (unknown key, deprecated option)."""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def require_mapping(value: Any, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a JSON object, got {type(value).__name__} {value!r:.60}")
    return value


def require(cfg: Mapping, key: str, path: str, expected: str = "", types: Optional[tuple] = None) -> Any:
    """Return ``cfg[key]``; raise a ConfigError naming ``path.key`` when it is missing or mistyped."""
    require_mapping(cfg, path or "<root>")
    full = _join(path, key)
    if key not in cfg:
        raise ConfigError(full, "is required but missing", expected)
    value = cfg[key]
    if types is not None and not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise ConfigError(full, f"expected {names}, got {type(value).__name__} {value!r:.60}", expected)
    return value


def check_choice(value: Any, choices: Iterable[str], path: str) -> Any:
    """Raise a ConfigError listing ``choices`` (with a close-match suggestion) if ``value`` is not one."""
    choices = list(choices)
    if value in choices:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, choices, n=1)
        if close:
            hint = f"did you mean '{close[0]}'?"
    raise ConfigError(path, f"unknown value {value!r}; accepted values: {', '.join(map(repr, choices))}", hint)


def warn_unknown_keys(cfg: Mapping, known: Iterable[str], path: str) -> None:
    """Warn (once per call) about keys of ``cfg`` that nothing reads. Keys starting with ``_`` are comments."""
    unknown = sorted(k for k in set(cfg) - set(known) if not str(k).startswith("_"))
    if unknown:
        shown = ", ".join(f"'{_join(path, k)}'" for k in unknown)
        warnings.warn(f"ignoring unknown config key(s) {shown}; accepted keys here: {', '.join(sorted(known))}",
                      ConfigWarning, stacklevel=3)


def build_from_config(factory: Callable, config: Optional[Mapping], path: str, **extra: Any) -> Any:
    """Call ``factory(**extra, **config)`` after checking ``config`` against its signature.

    Unknown keys raise a ConfigError (the constructor would reject them anyway, with a worse
    message); missing required arguments raise a ConfigError naming the key. ``config`` is deep
    copied so that the caller's dict is never mutated.
    """
    config = {} if config is None else copy.deepcopy(dict(require_mapping(config, path)))
    kwargs = {**extra, **config}
    sig = inspect.signature(factory)
    params = sig.parameters
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_var_kw:
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            close = difflib.get_close_matches(unknown[0], accepted, n=1)
            raise ConfigError(_join(path, unknown[0]),
                              f"is not an option of {getattr(factory, '__name__', factory)}; accepted: "
                              f"{', '.join(accepted)}", f"did you mean '{close[0]}'?" if close else "")
    for name, p in params.items():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.default is inspect.Parameter.empty and name not in kwargs:
            raise ConfigError(_join(path, name), "is required but missing",
                              f"needed by {getattr(factory, '__name__', factory)}")
    return factory(**kwargs)
