"""Checking a config block against the constructor it is given to (:func:`build_from_config`).

Every ``{"type": ..., "config": {...}}`` block of a model config ends up as keyword arguments of one class
(an encoder, a bottleneck, a DiT...). Before the class is called, the block is checked against the
constructor's signature, so that a mistake is a :class:`~stable_audio_tools.config.ConfigError` naming the
JSON path (``model.diffusion.config.embed_dimm``) instead of a ``TypeError`` from deep inside the model, and
so that nothing is allocated for a value that cannot be right. All problems of one block are reported at once.

* **Keys.** A key no constructor argument takes is an error, with "did you mean" when it is a typo of one.
  Classes that pass ``**kwargs`` on declare where in ``config_kwargs_to`` (a tuple of ``(callable, names
  the class sets itself)``), and the accepted keys are followed through that chain (``DiTWrapper`` →
  ``DiffusionTransformer`` → ``ContinuousTransformer`` → ``TransformerBlock``). A class whose ``**kwargs``
  are not declared checks them itself; there only typos of named arguments are errors here. Arguments that
  are keyword dicts for another class (``attn_kwargs``) are declared in ``config_dict_kwargs`` and checked
  the same way, recursively.
* **Required arguments** (no default) missing from the block are errors.
* **Types** follow the constructor's annotations: ``int`` takes integers (not ``true``), ``float`` any
  number, ``bool`` only ``true`` / ``false``, ``Sequence[int]`` a list of integers, ``Mapping`` an
  object; ``null`` only where the annotation is ``Optional``.
* **Sizes.** Arguments named in :data:`POSITIVE_SIZES` (channels, widths, heads, depths, strides...) must
  be integers >= 1, those in :data:`NON_NEGATIVE_SIZES` (optional conditioning widths, counts that may be
  zero) >= 0; both at most :data:`~stable_audio_tools.config.MAX_SIZE` (or the bound in
  :data:`SIZE_LIMITS`), checked for lists item by item.
* The constructor's own ``TypeError`` / ``ValueError`` (a rule only the class knows) becomes a ConfigError
  naming the block, or the argument when the message names exactly one of the block's keys.
"""
from __future__ import annotations

import copy
import inspect
import re
import typing
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .config import MAX_SIZE, ConfigError, close_key, join_path, raise_errors, require_mapping

__all__ = ["POSITIVE_SIZES", "NON_NEGATIVE_SIZES", "SIZE_LIMITS", "accepted_arguments", "nested_arguments",
           "check_arguments", "build_from_config"]

POSITIVE_SIZES = frozenset({
    "channels", "in_channels", "out_channels", "io_channels", "latent_dim", "embed_dim", "embed_dims", "dim",
    "dim_heads", "d_model", "dimension", "depth", "depths", "heads", "num_heads", "attention_heads",
    "attention_features", "attention_multiplier", "codebook_size", "codebook_dim", "input_dim", "n_codebooks",
    "num_codebooks", "num_quantizers", "n_filters", "kernel_size", "last_kernel_size", "residual_kernel_size",
    "patch_size", "strides", "ratios", "rates", "factors", "multipliers", "c_mults", "num_bands", "levels",
    "context_features", "context_embedding_features", "context_embedding_max_length", "resnet_groups",
    "context_features_multiplier", "kernel_multiplier_downsample", "abs_pos_emb_max_length",
    "local_attn_window_size", "dilation_base", "compress", "oversampling", "n_attn_layers",
    "quantize_dropout_multiple_of", "timestep_embed_dim", "output_dim", "max_length", "sample_rate",
})
NON_NEGATIVE_SIZES = frozenset({
    "cond_token_dim", "global_cond_dim", "input_concat_dim", "prepend_cond_dim", "cross_attn_cond_dim",
    "noise_augment_dim", "num_memory_tokens", "n_residual_layers", "lstm", "num_blocks", "attentions",
    "transformer_depths", "kmeans_iters", "quantize_dropout_cutoff_index", "cond_dim", "context_channels",
})
#: Upper bounds other than ``MAX_SIZE``: lengths and vocabularies, which are not layer widths.
SIZE_LIMITS: Dict[str, int] = {
    "codebook_size": 2 ** 24, "abs_pos_emb_max_length": 2 ** 24, "context_embedding_max_length": 2 ** 24,
    "max_length": 2 ** 24, "sample_rate": 10 ** 7,
}

_EMPTY = inspect.Parameter.empty


def _params(fn: Callable) -> Tuple[Dict[str, inspect.Parameter], Dict[str, Any], bool]:
    """(named keyword parameters, resolved annotations, takes ``**kwargs``) of ``fn``'s signature."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}, {}, True
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that cannot be resolved: no type checks for this callable
        hints = {}
    named = {n: p for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return named, hints, var_kw


def accepted_arguments(fn: Callable) -> Tuple[Dict[str, Tuple[inspect.Parameter, Any]], bool]:
    """Keyword arguments ``fn`` takes, followed through ``config_kwargs_to`` chains.

    Returns ``({name: (parameter, annotation)}, open)``; ``open`` is True when some ``**kwargs`` along the
    chain are not declared (then keys outside the dict may still be valid).
    """
    named, hints, var_kw = _params(fn)
    accepted = {n: (p, hints.get(n, Any)) for n, p in named.items()}
    if not var_kw:
        return accepted, False
    targets = getattr(fn, "config_kwargs_to", None)
    if not targets:
        return accepted, True
    open_chain = False
    for target, set_by_caller in targets:
        inner, inner_open = accepted_arguments(target)
        open_chain = open_chain or inner_open
        for name, entry in inner.items():
            if name not in set_by_caller:
                accepted.setdefault(name, entry)
    return accepted, open_chain


def nested_arguments(fn: Callable) -> Dict[str, Callable]:
    """Arguments that are themselves keyword dicts for another callable (``attn_kwargs`` -> ``Attention``),
    declared by a class's ``config_dict_kwargs`` along the ``config_kwargs_to`` chain."""
    nested = dict(getattr(fn, "config_dict_kwargs", None) or {})
    for target, _ in getattr(fn, "config_kwargs_to", None) or ():
        for name, inner in nested_arguments(target).items():
            nested.setdefault(name, inner)
    return nested


# ---------------------------------------------------------------------- annotation checks
def _describe(hint: Any) -> str:
    text = str(hint).replace("typing.", "")
    return re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a constructor annotation (unknown annotations accept anything)."""
    if hint is Any or hint is _EMPTY or isinstance(hint, (str, typing.ForwardRef)):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is typing.Literal:
        return value in args
    container = origin or hint
    if _is_sequence_hint(container):
        if not isinstance(value, (list, tuple)):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return all(_matches(v, item) for v in value)
    if container in (dict, typing.Mapping, typing.Dict) or \
            (isinstance(container, type) and container.__module__ == "collections.abc"
             and container.__name__ in ("Mapping", "MutableMapping")):
        return isinstance(value, Mapping)
    return True


def _is_sequence_hint(container: Any) -> bool:
    return container in (list, tuple, typing.Sequence, typing.List, typing.Tuple) or \
        (isinstance(container, type) and container.__module__ == "collections.abc"
         and container.__name__ in ("Sequence", "Iterable", "MutableSequence"))


def _item_hint(hint: Any) -> Any:
    """The item annotation of a homogeneous sequence annotation (``Optional[Sequence[int]]`` -> ``int``)."""
    candidates = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
    for candidate in candidates:
        args = typing.get_args(candidate)
        if _is_sequence_hint(typing.get_origin(candidate) or candidate) and args and \
                (len(args) == 1 or args[-1] is Ellipsis or len(set(args)) == 1):
            return args[0]
    return None


def _type_error(key_path: str, value: Any, hint: Any, owner: str) -> ConfigError:
    item = _item_hint(hint)
    if isinstance(value, (list, tuple)) and item is not None:
        for index, entry in enumerate(value):
            if not _matches(entry, item):
                return _type_error(join_path(key_path, index), entry, item, owner)
    problem = "is required but null" if value is None else \
        f"expected {_describe(hint)}, got {type(value).__name__} {value!r:.60}"
    return ConfigError(key_path, problem, f"an option of {owner}")


def _size_errors(name: str, value: Any, path: str) -> List[ConfigError]:
    if name in POSITIVE_SIZES:
        low = 1
    elif name in NON_NEGATIVE_SIZES:
        low = 0
    else:
        return []
    high = SIZE_LIMITS.get(name, MAX_SIZE)
    items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
    errors = []
    for index, item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            continue  # a list of mixed types or a float is the annotation check's business
        item_path = path if index is None else join_path(path, index)
        if item < low:
            errors.append(ConfigError(item_path, f"must be an integer >= {low}, got {item}"))
        elif item > high:
            errors.append(ConfigError(item_path, f"is {item}, larger than the limit {high}",
                                      "a typo? such a size cannot be built"))
    return errors


def check_arguments(factory: Callable, config: Mapping, path: str, given: Tuple[str, ...] = ()) -> None:
    """Check ``config`` (keyword arguments for ``factory``) as described in the module docstring.

    ``given`` are argument names the caller passes itself (not checked, but they count as present).
    Raises one ConfigError listing every problem found.
    """
    accepted, open_chain = accepted_arguments(factory)
    nested = nested_arguments(factory)
    name = getattr(factory, "__name__", str(factory))
    errors: List[ConfigError] = []
    listing = f"is not an option of {name}; accepted: {', '.join(sorted(accepted))}"
    for key in sorted(map(str, config)):
        if key in accepted:
            continue
        match = close_key(key, accepted)
        if match is not None:
            errors.append(ConfigError(join_path(path, key), listing, f"did you mean '{match}'?"))
        elif not open_chain:
            errors.append(ConfigError(join_path(path, key), listing))
    for key, (param, hint) in accepted.items():
        key_path = join_path(path, key)
        if key not in config:
            if param.default is _EMPTY and key not in given:
                errors.append(ConfigError(key_path, "is required but missing", f"needed by {name}"))
            continue
        value = config[key]
        if not _matches(value, hint):
            errors.append(_type_error(key_path, value, hint, name))
            continue
        errors.extend(_size_errors(key, value, key_path))
        if key in nested and isinstance(value, Mapping):
            try:
                # the owner passes the nested callable's required arguments itself
                check_arguments(nested[key], value, key_path, tuple(accepted_arguments(nested[key])[0]))
            except ConfigError as err:
                errors.extend(err.errors)
    raise_errors(errors)


def _key_paths(config: Mapping, path: str) -> List[Tuple[str, str]]:
    """(key, JSON path) of every key of ``config`` and of the objects nested in it."""
    out = []
    for key, value in config.items():
        out.append((str(key), join_path(path, key)))
        if isinstance(value, Mapping):
            out.extend(_key_paths(value, join_path(path, key)))
    return out


def _blame(message: str, config: Mapping, path: str) -> str:
    named = [p for k, p in _key_paths(config, path) if re.search(rf"(?<![\w.]){re.escape(k)}(?!\w)", message)]
    return named[0] if len(named) == 1 else path


def build_from_config(factory: Callable, config: Optional[Mapping], path: str, **extra: Any) -> Any:
    """Call ``factory(**extra, **config)`` after :func:`check_arguments`; ``config`` is deep copied first.

    A ``TypeError`` / ``ValueError`` / ``ZeroDivisionError`` raised by the constructor itself becomes a
    ConfigError naming ``path`` (or ``path.<key>`` when its message names exactly one key of ``config``).
    """
    config = {} if config is None else copy.deepcopy(dict(require_mapping(config, path)))
    check_arguments(factory, config, path, tuple(extra))
    try:
        return factory(**{**extra, **config})
    except ConfigError as err:
        if err.path in config and err.errors == [err]:  # the constructor named its own argument
            raise ConfigError(join_path(path, err.path), err.problem, err.hint) from err
        raise
    except (TypeError, ValueError, ZeroDivisionError) as err:
        name = getattr(factory, "__name__", str(factory))
        raise ConfigError(_blame(str(err), config, path), f"rejected by {name}: {err}") from err
