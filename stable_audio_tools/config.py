"""Config validation helpers: :class:`ConfigError`, :class:`ConfigWarning` and the small validators.

This is the lowest layer of the package: data, models and training import it, it imports none of them.
Every check raises :class:`ConfigError` whose message names the JSON path of the offending key
(``model.encoder.config.latent_dim``), what was expected and, where there is a closed set, the accepted
values. Factories never mutate the config they are given.

Unknown keys follow one policy (:func:`check_unknown_keys`): a key within a small edit distance of an
accepted key (``embed_dimm`` for ``embed_dim``) is a typo and an error with "did you mean"; any other
unknown key is ignored with a :class:`ConfigWarning` (released configs carry extra keys). Keys starting
with ``_`` are comments and never reported.
"""
from __future__ import annotations

import difflib
import math
import warnings
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "ConfigError",
    "ConfigWarning",
    "MAX_SIZE",
    "join_path",
    "require",
    "require_mapping",
    "check_choice",
    "close_key",
    "typo_of",
    "check_unknown_keys",
    "warn_unknown_keys",
    "check_bool",
    "get_bool",
    "check_int",
    "check_positive_int",
    "get_positive",
    "check_number",
    "get_number",
    "check_list",
    "non_finite_paths",
    "check_finite_tree",
    "raise_errors",
    "resolve_learning_rate",
]

#: Upper bound of any width, channel count, head count or depth read from a config. Far above any
#: audio model (Stable Audio Open's DiT is 1536 wide); a larger value is a typo and is refused before
#: anything is allocated.
MAX_SIZE = 2 ** 16


class ConfigError(ValueError):
    """A model, dataset or training config is invalid. The message names the JSON path.

    Args:
        path (str): JSON path of the offending key, e.g. ``model.diffusion.config.embed_dim``.
        problem (str): what is wrong with it.
        hint (str, default ""): how to fix it (appended in parentheses).
        errors (Sequence[ConfigError], default ()): when several problems are reported at once, all of
            them (``path`` is then the first one's); the message lists each on its own line.
    """

    def __init__(self, path: str, problem: str, hint: str = "", errors: Sequence["ConfigError"] = ()) -> None:
        self.path = path
        self.problem = problem
        self.hint = hint
        self.errors: List[ConfigError] = list(errors) or [self]
        if errors:
            message = f"{len(errors)} config problems:\n" + "\n".join(f"  - {e}" for e in errors)
        else:
            message = f"config key '{path}': {problem}"
            if hint:
                message += f" ({hint})"
        super().__init__(message)

    def __reduce__(self):
        # picklable (DataLoader workers send exceptions to the main process)
        return (type(self), (self.path, self.problem, self.hint, self.errors if len(self.errors) > 1 else ()))

    @property
    def paths(self) -> List[str]:
        """The JSON paths of every problem reported by this error."""
        return [e.path for e in self.errors]


class ConfigWarning(UserWarning):
    """A config contains something that is ignored (unknown key, deprecated option)."""


def raise_errors(errors: Sequence[ConfigError]) -> None:
    """Raise nothing for no errors, the error itself for one, and one :class:`ConfigError` listing all for more."""
    flat = [leaf for e in errors for leaf in e.errors]
    if len(flat) == 1:
        raise flat[0]
    if flat:
        raise ConfigError(flat[0].path, flat[0].problem, flat[0].hint, errors=flat)


def join_path(path: str, key: Any) -> str:
    """``join_path("model", "latent_dim") == "model.latent_dim"``; integer keys give ``path[3]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r:.60}"


def require_mapping(value: Any, path: str) -> Mapping:
    """Return ``value`` if it is a JSON object, else raise a ConfigError naming ``path``."""
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected a JSON object, got {_show(value)}")
    return value


def require(cfg: Mapping, key: str, path: str, expected: str = "", types: Optional[tuple] = None) -> Any:
    """Return ``cfg[key]``; raise a ConfigError naming ``path.key`` when it is missing, null or mistyped.

    ``types`` containing ``int`` does not accept ``true`` / ``false``.
    """
    require_mapping(cfg, path or "<root>")
    full = join_path(path, key)
    if key not in cfg:
        typo = typo_of(cfg, key)
        if typo is not None:
            raise ConfigError(full, "is required but missing", f"found '{join_path(path, typo)}': did you mean "
                                                               f"'{key}'?")
        raise ConfigError(full, "is required but missing", expected)
    value = cfg[key]
    if types is not None:
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            names = " or ".join(t.__name__ for t in types)
            problem = "is required but null" if value is None else f"expected {names}, got {_show(value)}"
            raise ConfigError(full, problem, expected)
    return value


def check_choice(value: Any, choices: Iterable[str], path: str) -> Any:
    """Raise a ConfigError listing ``choices`` (with a close-match suggestion) if ``value`` is not one."""
    choices = list(choices)
    if value in choices:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)], n=1)
        if close:
            hint = f"did you mean '{close[0]}'?"
    raise ConfigError(path, f"unknown value {value!r:.60}; accepted values: {', '.join(map(repr, choices))}", hint)


def _edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent swaps."""
    prev2: List[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def close_key(key: str, accepted: Iterable[str]) -> Optional[str]:
    """The accepted key ``key`` is a typo of, or None.

    A typo is at most 1 edit away for keys up to 5 characters and at most 2 edits away for longer keys
    (an edit inserts, deletes or replaces one character or swaps two neighbours; case is ignored).
    """
    key_l = key.lower()
    limit = 1 if len(key) <= 5 else 2
    best: Optional[Tuple[int, str]] = None
    for candidate in accepted:
        distance = _edit_distance(key_l, str(candidate).lower())
        if distance <= limit and (best is None or distance < best[0]):
            best = (distance, str(candidate))
    return best[1] if best else None


def typo_of(cfg: Mapping, key: str) -> Optional[str]:
    """The key of ``cfg`` that is a typo of the absent ``key`` (see :func:`close_key`), or None."""
    if key in cfg:
        return None
    return next((str(k) for k in cfg if close_key(str(k), (key,)) is not None), None)


def check_unknown_keys(cfg: Mapping, known: Iterable[str], path: str) -> None:
    """Typos of accepted keys are a ConfigError ("did you mean"); other unknown keys warn once per call.

    Keys starting with ``_`` are comments and never reported.
    """
    known = sorted(set(known))
    unknown = sorted(str(k) for k in cfg if k not in known and not str(k).startswith("_"))
    typos = [(k, close_key(k, known)) for k in unknown]
    errors = [ConfigError(join_path(path, k), f"is not an accepted key here; accepted: {', '.join(known)}",
                          f"did you mean '{match}'?") for k, match in typos if match is not None]
    raise_errors(errors)
    if unknown:
        shown = ", ".join(f"'{join_path(path, k)}'" for k in unknown)
        warnings.warn(f"ignoring unknown config key(s) {shown}; accepted keys here: {', '.join(known)}",
                      ConfigWarning, stacklevel=3)


#: The name most call sites use; unknown keys that are not typos still only warn.
warn_unknown_keys = check_unknown_keys


def check_bool(value: Any, path: str) -> bool:
    """``value`` if it is ``true`` / ``false``, else a ConfigError."""
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {_show(value)}")
    return value


def get_bool(cfg: Mapping, key: str, default: bool, path: str) -> bool:
    """``cfg[key]`` (``default`` when absent) checked by :func:`check_bool`; ``path`` is the parent's path."""
    return check_bool(cfg.get(key, default), join_path(path, key))


def check_int(value: Any, path: str, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """``value`` if it is an integer (not a bool) within ``[low, high]``, else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int):
        problem = "expected an integer, got null" if value is None else f"expected an integer, got {_show(value)}"
        raise ConfigError(path, problem)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(path, f"must be in [{low if low is not None else '-inf'}, "
                                f"{high if high is not None else 'inf'}], got {value}")
    return value


def check_positive_int(value: Any, path: str, high: Optional[int] = MAX_SIZE) -> int:
    """``value`` if it is an integer in ``[1, high]`` (``high`` None: no upper bound), else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problem = "expected a positive integer, got null" if value is None else \
            f"expected a positive integer, got {_show(value)}"
        raise ConfigError(path, problem)
    if high is not None and value > high:
        raise ConfigError(path, f"is {value}, larger than the limit {high}", "a typo? such a size cannot be built")
    return value


def check_number(value: Any, path: str, low: Optional[float] = None, high: Optional[float] = None,
                 low_open: bool = False) -> float:
    """``float(value)`` if it is a finite number (not a bool) within the bounds, else a ConfigError.

    ``low_open`` makes the lower bound exclusive (``> low`` instead of ``>= low``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problem = "expected a number, got null" if value is None else f"expected a number, got {_show(value)}"
        raise ConfigError(path, problem)
    if not math.isfinite(value):
        raise ConfigError(path, f"must be a finite number, got {value}")
    below = low is not None and (value <= low if low_open else value < low)
    if below or (high is not None and value > high):
        lower = f"> {low}" if low_open else f">= {low}"
        bounds = f"{lower} and <= {high}" if low is not None and high is not None else \
            (lower if low is not None else f"<= {high}")
        raise ConfigError(path, f"must be {bounds}, got {value}")
    return float(value)


def get_number(cfg: Mapping, key: str, default: Optional[float], path: str, low: Optional[float] = None,
               high: Optional[float] = None, low_open: bool = False) -> Optional[float]:
    """``cfg[key]`` (``default`` when absent) checked by :func:`check_number`; a null value gives None."""
    value = cfg.get(key, default)
    if value is None:
        return None
    return check_number(value, join_path(path, key), low, high, low_open)


def get_positive(cfg: Mapping, key: str, default: Any, path: str, integer: bool = True) -> Any:
    """``cfg[key]`` (``default`` when absent) as a positive integer (or positive number); None when absent
    and ``default`` is None."""
    value = cfg.get(key, default)
    if value is None and default is None:
        return None
    full = join_path(path, key)
    if integer:
        return check_positive_int(value, full, high=None)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(full, f"expected a positive number, got {_show(value)}")
    return value


def check_list(value: Any, path: str, length: Optional[int] = None, allow_empty: bool = True) -> list:
    """``list(value)`` if it is a JSON list (of ``length`` items when given), else a ConfigError."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(path, f"expected a list, got {_show(value)}")
    if length is not None and len(value) != length:
        raise ConfigError(path, f"expected a list of {length} items, got {len(value)}")
    if not allow_empty and not value:
        raise ConfigError(path, "must not be empty")
    return list(value)


def non_finite_paths(tree: Any, path: str = "") -> List[str]:
    """JSON paths of every NaN / inf number in a nested dict / list config."""
    if isinstance(tree, float):
        return [] if math.isfinite(tree) else [path or "<root>"]
    if isinstance(tree, Mapping):
        return [p for k, v in tree.items() for p in non_finite_paths(v, join_path(path, k))]
    if isinstance(tree, (list, tuple)):
        return [p for i, v in enumerate(tree) for p in non_finite_paths(v, join_path(path, i))]
    return []


def check_finite_tree(tree: Any, path: str = "") -> None:
    """A ConfigError listing every NaN / inf number in ``tree`` (a loss weight, a size, a rate...)."""
    raise_errors([ConfigError(p, "must be a finite number, got NaN or infinity") for p in non_finite_paths(tree, path)])


def resolve_learning_rate(training: Mapping, groups: Sequence[str], path: str = "training",
                          default_lr: Optional[float] = None) -> Tuple[Optional[float], Optional[dict]]:
    """The ``learning_rate`` vs ``optimizer_configs`` rule shared by every training block.

    ``optimizer_configs`` (when given) must be an object holding each of ``groups``, each with an
    ``optimizer`` (and optionally a ``scheduler``); it wins over ``learning_rate`` (with a warning when
    both are set). Without it, ``learning_rate`` is required (``default_lr`` None) and must be > 0.

    Returns:
        ``(learning_rate or default_lr, a copy of optimizer_configs or None)``.
    """
    lr = get_number(training, "learning_rate", None, path, low=0, low_open=True)
    configs = training.get("optimizer_configs")
    if configs is None:
        if lr is None and default_lr is None:
            raise ConfigError(join_path(path, "learning_rate"),
                              f"is required when '{join_path(path, 'optimizer_configs')}' is not given",
                              "e.g. \"learning_rate\": 1e-4")
        return (lr if lr is not None else default_lr), None
    opt_path = join_path(path, "optimizer_configs")
    require_mapping(configs, opt_path)
    for group in groups:
        group_path = join_path(opt_path, group)
        group_cfg = require_mapping(require(configs, group, opt_path, f"an optimizer group named '{group}'"),
                                    group_path)
        require(group_cfg, "optimizer", group_path, "{'type': 'AdamW', 'config': {...}}")
        check_unknown_keys(group_cfg, ("optimizer", "scheduler"), group_path)
    if lr is not None:
        warnings.warn(f"both {join_path(path, 'learning_rate')} and {opt_path} are set; optimizer_configs wins",
                      ConfigWarning, stacklevel=2)
    return lr, {k: dict(v) for k, v in configs.items()}
