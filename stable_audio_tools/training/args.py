"""INI-driven command-line arguments with prefigure semantics (see docs/training.md).

Each key of the ``[DEFAULTS]`` section of the INI file (``--config-file``, default ``defaults.ini``)
becomes a ``--kebab-case`` flag; the comment line just above a key is its help text; values are parsed
with ``ast.literal_eval`` (falling back to the raw string) and that type becomes the flag's type.
Precedence: command line (``--flag value`` or ``--flag=value``) > ``--wandb-config`` (a previous W&B run's config:
a local ``config.yaml`` / run directory, or a run path read through the W&B API) > INI file. Flags are accepted only
in full; an abbreviation is refused with the flag it could stand for.
"""
from __future__ import annotations

import argparse
import ast
import configparser
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["read_ini_defaults", "get_all_args", "str2bool", "wandb_run_config"]

log = logging.getLogger(__name__)

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off", ""}


def str2bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_ini_defaults(path: os.PathLike) -> List[Tuple[str, Any, str]]:
    """Return ``[(key, parsed value, help)]`` from the ``[DEFAULTS]`` section, in file order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"defaults file not found: {path} (pass --config-file PATH, or run from the "
                                f"directory holding defaults.ini)")
    lines = path.read_text(encoding="utf-8").splitlines()
    helps: Dict[str, str] = {}
    comment = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(("#", ";")):
            comment = stripped.lstrip("#;").strip()
        elif "=" in stripped and not stripped.startswith("["):
            helps[stripped.split("=", 1)[0].strip()] = comment
            comment = ""
        elif stripped:
            comment = ""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path, encoding="utf-8")
    if "DEFAULTS" not in parser:
        raise ValueError(f"{path} has no [DEFAULTS] section")
    return [(key, _literal(raw), helps.get(key, "")) for key, raw in parser["DEFAULTS"].items()]


def _add_flag(parser: argparse.ArgumentParser, key: str, value: Any, help_text: str) -> None:
    flag = "--" + key.replace("_", "-")
    shown = f"{help_text} (default: {value!r})" if help_text else f"(default: {value!r})"
    if value is None:
        parser.add_argument(flag, dest=key, type=str, nargs="?", default=None, help=shown)
    elif isinstance(value, bool):
        parser.add_argument(flag, dest=key, type=str2bool, nargs="?", const=True, default=value, help=shown)
    elif isinstance(value, (list, tuple, dict)):
        parser.add_argument(flag, dest=key, type=_literal, default=value, help=shown)
    else:
        parser.add_argument(flag, dest=key, type=type(value), default=value, help=shown)


def _read_yaml_config(path: Path, flag_value: str) -> Dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise SystemExit(f"--wandb-config {flag_value}: cannot read {path} ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise SystemExit(f"--wandb-config {flag_value}: {path} is not a W&B config.yaml (expected a mapping of "
                         f"keys, found {type(data).__name__})")
    # W&B writes each key as {"value": ..., "desc": ...}; a hand-written file may hold plain values
    return {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in data.items()}


def _local_config_file(path: Path) -> Optional[Path]:
    """The config.yaml of a local W&B run: the file itself, ``<run dir>/files/config.yaml`` or
    ``<dir>/config.yaml``."""
    if path.is_file():
        return path
    for candidate in (path / "files" / "config.yaml", path / "config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def wandb_run_config(source: str) -> Dict[str, Any]:
    """The config of a previous W&B run, without W&B's own ``_``-prefixed keys.

    ``source`` is a local ``config.yaml`` (as W&B writes it into ``<run dir>/files/``, or a plain YAML mapping), a
    local run directory holding ``files/config.yaml``, or a run path / URL (``entity/project/run_id``,
    ``https://wandb.ai/entity/project/runs/run_id``) read through the W&B API, which needs network access and a
    login.
    """
    local = Path(source).expanduser()
    if local.exists():
        config_file = _local_config_file(local)
        if config_file is None:
            raise SystemExit(f"--wandb-config {source}: no config.yaml in that directory (nor in its files/ folder); "
                             f"pass a W&B run directory, its files/config.yaml, or a run path entity/project/run_id")
        config = _read_yaml_config(config_file, source)
    elif source.endswith((".yaml", ".yml")) or source.startswith((".", "/", "~")):
        raise SystemExit(f"--wandb-config {source}: no such file or directory")
    else:
        try:
            import wandb

            run_path = source.replace("https://wandb.ai/", "").replace("/runs/", "/").split("?")[0]
            config = dict(wandb.Api().run(run_path).config)
        except Exception as e:
            raise SystemExit(f"--wandb-config {source}: not a local file or directory, and reading it as a W&B run "
                             f"path failed ({type(e).__name__}: {e}). A run path needs network access and a W&B login "
                             f"(wandb login); offline, pass the run's files/config.yaml instead.") from None
    return {k: v for k, v in config.items() if not str(k).startswith("_")}


# keys of a run's config that describe that run's own invocation, never applied to a new run
_NOT_APPLIED = {"wandb_config", "config_file"}


def _wandb_defaults(parser: argparse.ArgumentParser, source: str) -> Dict[str, Any]:
    """The run config's values for the flags ``parser`` declares, to be used as that parser's defaults."""
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    config = wandb_run_config(source)
    applied: Dict[str, Any] = {}
    for key, value in config.items():
        if key in _NOT_APPLIED or key not in actions or value == "OMITTED":
            continue
        action = actions[key]
        if isinstance(value, str) and action.type is not None:
            try:
                value = action.type(value)
            except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
                raise SystemExit(f"--wandb-config {source}: value {value!r} of {key!r} does not fit "
                                 f"{action.option_strings[0]} ({e})") from None
        applied[key] = value
    ignored = sorted(k for k in config if k not in applied and k not in _NOT_APPLIED)
    if ignored:
        log.info("--wandb-config %s: keys that are not flags here were ignored: %s", source, ", ".join(ignored))
    log.info("--wandb-config %s: defaults taken from the run: %s", source, ", ".join(sorted(applied)) or "none")
    return applied


class _FlagParser(argparse.ArgumentParser):
    """An argument parser that accepts flags only in full and says which flag an abbreviation meant."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def parse_args(self, args: Optional[Sequence[str]] = None, namespace: Any = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            flags = [s for a in self._actions for s in a.option_strings]
            for extra in extras:
                word = extra.split("=", 1)[0]
                meant = [f for f in flags if word.startswith("--") and f.startswith(word)]
                if meant:
                    self.error(f"{word}: flags must be written in full (abbreviations are not accepted); did you "
                               f"mean {' or '.join(meant[:4])}?")
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def _with_missing_keys(defaults: List[Tuple[str, Any, str]], base: List[Tuple[str, Any, str]],
                       config_file: os.PathLike, base_file: os.PathLike) -> List[Tuple[str, Any, str]]:
    """``defaults`` plus the keys of ``base`` it lacks (an INI written for upstream or an older version has no
    entry for newer flags; those keep the shipped default instead of being missing from the parsed arguments)."""
    have = {key for key, _, _ in defaults}
    missing = [entry for entry in base if entry[0] not in have]
    if missing:
        log.info("--config-file %s lacks %d flag(s); their defaults come from %s: %s", config_file, len(missing),
                 base_file, ", ".join(key for key, _, _ in missing))
    return defaults + missing


def get_all_args(defaults_file: Optional[os.PathLike] = None, argv: Optional[Sequence[str]] = None,
                 description: str = "") -> argparse.Namespace:
    """Parse ``argv`` (default: ``sys.argv[1:]``) against the flags declared by the INI file (see module docstring).

    ``--config-file FILE`` replaces ``defaults_file``; flags that ``FILE`` does not declare (an upstream or older
    INI) keep their value from ``defaults_file``.

    With ``--wandb-config RUN`` the run's config replaces the INI defaults of the flags it holds, then the command
    line is parsed again over them, so every flag typed on the command line wins, in any spelling argparse accepts
    (``--flag value``, ``--flag=value``). Abbreviated flags are refused with the full name they could stand for.
    """
    pre = _FlagParser(add_help=False)
    pre.add_argument("--config-file", default=None)
    pre_args, _ = pre.parse_known_args(argv)
    config_file = pre_args.config_file or defaults_file or "defaults.ini"
    defaults = read_ini_defaults(config_file)
    if defaults_file is not None and Path(config_file).resolve() != Path(defaults_file).resolve():
        defaults = _with_missing_keys(defaults, read_ini_defaults(defaults_file), config_file, defaults_file)

    parser = _FlagParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=str(config_file), help="INI file that declares the flags")
    parser.add_argument("--wandb-config", default=None,
                        help="a previous W&B run whose config replaces the INI defaults (flags on the command line "
                             "still win): its files/config.yaml, its local run directory, or a run path / URL "
                             "entity/project/run_id (needs network and a W&B login)")
    for key, value, help_text in defaults:
        _add_flag(parser, key, value, help_text)
    args = parser.parse_args(argv)
    if args.wandb_config:
        parser.set_defaults(**_wandb_defaults(parser, args.wandb_config))
        args = parser.parse_args(argv)
    return args
