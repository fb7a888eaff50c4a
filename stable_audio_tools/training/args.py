"""INI-driven command-line arguments with prefigure semantics (see docs/training.md).

Each key of the ``[DEFAULTS]`` section of the INI file (``--config-file``, default ``defaults.ini``)
becomes a ``--kebab-case`` flag; the comment line just above a key is its help text; values are parsed
with ``ast.literal_eval`` (falling back to the raw string) and that type becomes the flag's type.
Precedence: command line > ``--wandb-config`` (a previous W&B run's config) > INI file.
"""
from __future__ import annotations

import argparse
import ast
import configparser
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["read_ini_defaults", "get_all_args", "str2bool"]

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


def _wandb_run_config(run_path: str) -> Dict[str, Any]:
    try:
        import wandb

        run = wandb.Api().run(run_path.replace("https://wandb.ai/", "").replace("/runs/", "/"))
    except Exception as e:
        raise SystemExit(f"--wandb-config {run_path}: could not read that W&B run's config ({type(e).__name__}: {e}). "
                         f"It needs network access and a W&B login (wandb login).") from None
    return {k: v for k, v in run.config.items() if not k.startswith("_")}


def get_all_args(defaults_file: Optional[os.PathLike] = None, argv: Optional[Sequence[str]] = None,
                 description: str = "") -> argparse.Namespace:
    """Parse ``argv`` against the flags declared by the INI file (see module docstring)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config-file", default=None)
    pre_args, _ = pre.parse_known_args(argv)
    config_file = pre_args.config_file or defaults_file or "defaults.ini"
    defaults = read_ini_defaults(config_file)

    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=str(config_file), help="INI file that declares the flags")
    parser.add_argument("--wandb-config", default=None,
                        help="W&B run path/URL whose config overrides the INI defaults (the command line still wins)")
    for key, value, help_text in defaults:
        _add_flag(parser, key, value, help_text)
    args = parser.parse_args(argv)
    if args.wandb_config:
        explicit = {a.dest for a in parser._actions if any(opt in (argv or []) for opt in a.option_strings)}
        for key, value in _wandb_run_config(args.wandb_config).items():
            if hasattr(args, key) and key not in explicit:
                setattr(args, key, value)
    return args
