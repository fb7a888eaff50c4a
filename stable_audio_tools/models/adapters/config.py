"""Adapter configs: validation, adapter types and module-name patterns.

An adapter config is a JSON object::

    {"type": "lora", "rank": 16, "alpha": 16, "dropout": 0.0,
     "include": ["transformer.layers.[0-11]"], "exclude": ["to_timestep_embed"], "targets": ["diffusion"]}

Keys (all but ``type`` and ``rank`` optional):

* ``type``: one of :data:`ADAPTER_TYPES`. ``lora``: ``W0 + s·B·A``. ``lora-xs``: ``W0 + s·U·M·Vᵀ`` with ``U``/``V``
  the frozen top-``rank`` SVD bases of ``W0`` and only the ``rank × rank`` core ``M`` trained. ``dora-rows`` /
  ``dora-cols``: the LoRA weight normalised per output row / per input column and rescaled by a trained magnitude
  (``dora`` is ``dora-rows``). ``bora``: rows then columns, two magnitudes. ``*-xs`` variants use the LoRA-XS
  delta.
* ``rank`` (int >= 1), ``alpha`` (number > 0, default ``rank``; the scale is ``alpha / rank``), ``dropout``
  (probability in [0, 1) applied to the adapter branch's input while training, default 0).
* ``include`` / ``exclude``: lists of module-name patterns (see :func:`pattern_matches`). A layer is adapted when
  it matches some ``include`` pattern (or ``include`` is empty / missing) and no ``exclude`` pattern.
* ``targets``: the parts of the model searched for ``nn.Linear`` / ``nn.Conv1d`` layers, a list of
  :data:`TARGETS`: ``diffusion`` (the diffusion backbone ``model``), ``conditioner`` (every conditioner, including
  the external T5 / CLAP encoders, which are loaded for it), ``lm`` (the language model ``lm``). Default: the
  backbone (``diffusion`` for diffusion models, ``lm`` for LMs).

Errors are :class:`~stable_audio_tools.models.config.ConfigError` naming the key.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

from ..config import ConfigError, check_choice, require, require_mapping

__all__ = ["ADAPTER_TYPES", "TARGETS", "AdapterConfig", "parse_adapter_config", "expand_pattern",
           "pattern_matches", "name_selected", "split_type", "check_pattern", "unmatched_patterns"]

ADAPTER_TYPES = ("lora", "lora-xs", "dora", "dora-rows", "dora-cols", "bora", "dora-rows-xs", "dora-cols-xs",
                 "bora-xs")
TARGETS = ("diffusion", "conditioner", "lm")
CONFIG_KEYS = ("type", "rank", "alpha", "dropout", "include", "exclude", "targets")

_RANGE = re.compile(r"\[(\d+)-(\d+)\]")


def split_type(adapter_type: str) -> Tuple[str, str]:
    """``(delta, norm)`` of a type: delta ``lora`` | ``xs``; norm ``none`` | ``rows`` | ``cols`` | ``both``."""
    delta = "xs" if adapter_type.endswith("-xs") else "lora"
    family = adapter_type[:-3] if delta == "xs" else adapter_type
    norm = {"lora": "none", "dora": "rows", "dora-rows": "rows", "dora-cols": "cols", "bora": "both"}[family]
    return delta, norm


@dataclass
class AdapterConfig:
    """A validated adapter config (see the module docstring for the meaning of each field).

    Args:
        type (str): adapter type, one of :data:`ADAPTER_TYPES`.
        rank (int): rank ``r`` of the update.
        alpha (float): scale numerator; the update is multiplied by ``alpha / rank``. Default: ``rank``.
        dropout (float): dropout probability on the adapter branch's input during training. Default 0.
        include (list[str]): module-name patterns to adapt; empty = every Linear / Conv1d of the targets.
        exclude (list[str]): module-name patterns never adapted (wins over ``include``).
        targets (list[str]): parts of the model searched, from :data:`TARGETS`; empty = the model's backbone.
    """

    type: str
    rank: int
    alpha: float
    dropout: float = 0.0
    include: List[str] = field(default_factory=list)
    exclude: List[str] = field(default_factory=list)
    targets: List[str] = field(default_factory=list)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _pattern_list(config: Mapping, key: str, path: str) -> List[str]:
    value = config.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path}{key}", f"expected a list of module-name patterns, got {type(value).__name__}")
    for i, pattern in enumerate(value):
        if not isinstance(pattern, str) or not pattern.strip():
            raise ConfigError(f"{path}{key}[{i}]", f"expected a non-empty string pattern, got {pattern!r:.60}")
        check_pattern(pattern, f"{path}{key}[{i}]")
    return list(value)


def parse_adapter_config(config: Any, path: str = "") -> AdapterConfig:
    """Validate a JSON adapter config (or pass an :class:`AdapterConfig` through).

    ``path`` prefixes the key names in errors (e.g. ``"adapter."``). Unknown keys raise (a misspelt ``exclude``
    would otherwise silently adapt layers that were meant to stay untouched).
    """
    if isinstance(config, AdapterConfig):
        config = config.to_dict()
    require_mapping(config, path.rstrip(".") or "<adapter config>")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"{path}{unknown[0]}", "is not an adapter config key",
                          f"accepted keys: {', '.join(CONFIG_KEYS)}")
    where = path.rstrip(".")
    kind = check_choice(require(config, "type", where, f"one of {', '.join(ADAPTER_TYPES)}"), ADAPTER_TYPES,
                        f"{path}type")
    if kind == "dora":
        kind = "dora-rows"
    rank = require(config, "rank", where, "the adapter rank, e.g. 16", (int,))
    if isinstance(rank, bool) or rank < 1:
        raise ConfigError(f"{path}rank", f"must be an integer >= 1, got {rank!r}")
    alpha = config.get("alpha", rank)
    if alpha is None:
        alpha = rank
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ConfigError(f"{path}alpha", f"must be a number > 0, got {alpha!r:.60}", "the default is the rank")
    dropout = config.get("dropout", 0.0)
    if dropout is None:
        dropout = 0.0
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{path}dropout", f"must be a probability in [0, 1), got {dropout!r:.60}")
    targets = config.get("targets") or []
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, (list, tuple)):
        raise ConfigError(f"{path}targets", f"expected a list of {', '.join(TARGETS)}, got {type(targets).__name__}")
    for i, target in enumerate(targets):
        check_choice(target, TARGETS, f"{path}targets[{i}]")
    return AdapterConfig(type=kind, rank=int(rank), alpha=float(alpha), dropout=float(dropout),
                         include=_pattern_list(config, "include", path), exclude=_pattern_list(config, "exclude", path),
                         targets=list(dict.fromkeys(targets)))


# ---------------------------------------------------------------------- module-name patterns
def check_pattern(pattern: str, path: str) -> None:
    """Raise a ConfigError for malformed ``[i-j]`` ranges or brackets that are not ranges."""
    stripped = _RANGE.sub("0", pattern)
    if "[" in stripped or "]" in stripped:
        raise ConfigError(path, f"pattern {pattern!r} has a bracket that is not an index range [i-j]",
                          "write index ranges as e.g. 'transformer.layers.[0-11]'")


def expand_pattern(pattern: str) -> List[str]:
    """Expand every ``[i-j]`` to each integer from i to j inclusive (j < i counts down); several ranges expand as
    a cartesian product. ``"layers.[0-2].ff"`` -> ``["layers.0.ff", "layers.1.ff", "layers.2.ff"]``."""
    pieces = _RANGE.split(pattern)
    literals, ranges = pieces[0::3], list(zip(pieces[1::3], pieces[2::3]))
    choices = []
    for low, high in ranges:
        low_i, high_i = int(low), int(high)
        step = 1 if high_i >= low_i else -1
        choices.append([str(i) for i in range(low_i, high_i + step, step)])
    expanded = []
    for combo in itertools.product(*choices):
        text = literals[0]
        for number, literal in zip(combo, literals[1:]):
            text += number + literal
        expanded.append(text)
    return expanded


def _part_regex(part: str) -> "re.Pattern[str]":
    return re.compile("".join("[^.]*" if ch == "*" else re.escape(ch) for ch in part) + r"\Z")


def pattern_matches(pattern: str, name: str) -> bool:
    """Whether a module-name pattern matches the dotted module name ``name``.

    The rule: after ``[i-j]`` expansion, the pattern's dot-separated parts must equal a run of *consecutive whole
    parts* of the name; ``*`` inside a part matches any characters within that one part. So ``to_qkv`` matches
    every ``...self_attn.to_qkv``, ``transformer.layers.[0-3]`` matches everything inside blocks 0 to 3 (and not
    block 10, 11, ...), and ``cross_attn.to_*`` matches ``to_q``, ``to_kv`` and ``to_out`` of cross-attention.
    """
    name_parts = name.split(".")
    for expanded in expand_pattern(pattern):
        regexes = [_part_regex(p) for p in expanded.strip(".").split(".")]
        width = len(regexes)
        for start in range(len(name_parts) - width + 1):
            if all(r.match(part) for r, part in zip(regexes, name_parts[start:start + width])):
                return True
    return False


def name_selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """``include`` (empty = everything) minus ``exclude``."""
    if any(pattern_matches(p, name) for p in exclude):
        return False
    return not include or any(pattern_matches(p, name) for p in include)


def unmatched_patterns(patterns: Iterable[str], names: Sequence[str]) -> List[str]:
    """The patterns that match none of ``names`` (reported so that typos do not pass silently)."""
    return [p for p in patterns if not any(pattern_matches(p, n) for n in names)]
