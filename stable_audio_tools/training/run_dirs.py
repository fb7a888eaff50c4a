"""Run directories and resumable checkpoints of ``train.py``.

* :func:`new_version_dir`: a fresh ``version_<k>`` folder for a run (so runs never share a checkpoint folder);
* :func:`find_resume_checkpoint`: the newest training checkpoint under a folder whose embedded ``model_config``
  equals the run's (``--ckpt-path last``);
* :func:`config_differences`: where two configs differ, as JSON key paths.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple, Union

from ..models.safe_load import torch_load

__all__ = ["new_version_dir", "find_resume_checkpoint", "config_differences", "read_embedded_model_config"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_VERSION = re.compile(r"version_(\d+)")
_MAX_LISTED = 5
_MAX_CANDIDATES = 10


def new_version_dir(parent: PathLike, create: bool = True) -> Path:
    """``parent/version_<k>`` with ``k`` one more than the highest existing version (0 for the first run).

    With ``create`` the folder is made atomically (a run starting at the same time gets the next number);
    without, the path is only computed (for processes that must not create it, e.g. non-zero DDP ranks).
    """
    parent = Path(parent)
    existing = [int(m.group(1)) for d in (parent.iterdir() if parent.is_dir() else ())
                if (m := _VERSION.fullmatch(d.name))]
    k = max(existing, default=-1) + 1
    if not create:
        return parent / f"version_{k}"
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        candidate = parent / f"version_{k}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            k += 1


def _normalised(config: Any) -> Any:
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def config_differences(a: Any, b: Any, path: str = "") -> List[str]:
    """JSON key paths (``model.encoder.config.channels``, ``training.learning_rate``) where ``a`` and ``b``
    differ; ``[]`` when they are equal."""
    a, b = (_normalised(a), _normalised(b)) if not path else (a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        out: List[str] = []
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append(sub)
            else:
                out += config_differences(a[key], b[key], sub)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += config_differences(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [path or "(whole config)"]


def read_embedded_model_config(path: PathLike) -> Tuple[Optional[Mapping[str, Any]], str]:
    """``(model_config, "")`` of a training checkpoint, or ``(None, reason)``.

    Memory-maps the file and unpickles only plain data, so scanning many large checkpoints is cheap and safe.
    """
    try:
        ckpt = torch_load(path, mmap=True)
    except Exception as e:  # unreadable, truncated, or holding objects the safe loader refuses
        return None, f"could not be read safely ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    if not isinstance(ckpt, Mapping) or "model_config" not in ckpt:
        return None, "has no embedded model_config"
    return ckpt["model_config"], ""


def find_resume_checkpoint(root: PathLike, model_config: Mapping[str, Any]) -> Path:
    """The newest ``*.ckpt`` under ``root`` (by modification time) whose embedded model config equals
    ``model_config``. Raises ``FileNotFoundError`` naming every candidate and why it was not taken."""
    root = Path(root)
    found = sorted((p for p in root.rglob("*.ckpt") if not p.name.startswith(".") and p.is_file()),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        raise FileNotFoundError(f"no checkpoint (*.ckpt) found under {root}")
    rejected = []
    for candidate in found:
        embedded, reason = read_embedded_model_config(candidate)
        if embedded is not None:
            diff = config_differences(embedded, model_config)
            if not diff:
                return candidate
            shown = ", ".join(diff[:_MAX_LISTED]) + (f" and {len(diff) - _MAX_LISTED} more"
                                                     if len(diff) > _MAX_LISTED else "")
            reason = f"a different model config (differs at {shown})"
        rejected.append(f"  {candidate}: {reason}")
    listed = rejected[:_MAX_CANDIDATES] + ([f"  ... and {len(rejected) - _MAX_CANDIDATES} older ones"]
                                           if len(rejected) > _MAX_CANDIDATES else [])
    raise FileNotFoundError(
        f"no checkpoint under {root} was written with this model config; candidates (newest first):\n"
        + "\n".join(listed)
        + "\nPass --ckpt-path PATH to resume a specific checkpoint anyway, or use another --save-dir.")
