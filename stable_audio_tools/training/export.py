"""Safe checkpoint writing: atomic, umask-honouring, never holding NaN/inf tensors.

Training checkpoints (through :class:`AtomicCheckpointIO`) and unwrapped model files (:func:`save_unwrapped`) are
written to a temporary file beside the target and renamed over it, so a crash leaves the old file or the new one.
The temporary file is named ``.<target name>.<host>-<pid>.<random>.tmp``; :func:`remove_orphaned_temporaries`
removes the ones whose writing process is gone (a run killed while saving).
"""
from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch
from torch import nn
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ..models.safe_load import torch_load

__all__ = ["atomic_write", "save_unwrapped", "AtomicCheckpointIO", "NonFiniteError", "NonFiniteCheckpointError",
           "find_nonfinite", "check_finite_before_save", "remove_orphaned_temporaries"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_MAX_LISTED = 5


class NonFiniteError(RuntimeError):
    """Base class of the errors raised when training values or weights become NaN or infinite."""


class NonFiniteCheckpointError(NonFiniteError):
    """A checkpoint was not written because some of its tensors hold NaN or infinite values."""


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(path: Path) -> int:
    """Permissions for the file written to ``path``: those of the file it replaces, else ``0o666 & ~umask``
    (what ``open(path, "w")`` gives; ``mkstemp`` alone would leave the file private, 0o600)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_current_umask()


def atomic_write(path: PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A crash or kill at any point leaves either the old file or the new one, never a truncated file. The new file
    gets the permissions a plain ``open(path, "w")`` would give it (it honours the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host_tag()}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _target_mode(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# .<target>.<host>-<pid>.<mkstemp random>.tmp, and the untagged .<target>.<random>.tmp of older versions
_TAGGED_TMP = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[a-z0-9_]+\.tmp$")
_LEGACY_TMP = re.compile(r"^\.(?P<target>.+\.ckpt)\.[a-z0-9_]{8}\.tmp$")


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process there; never claim a writer is gone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists but belongs to someone else
        return True
    return True


def remove_orphaned_temporaries(root: PathLike) -> List[Path]:
    """Delete the temporary files under ``root`` (recursively) left by :func:`atomic_write` calls that were killed.

    A file is removed only when its writer is known to be gone: its process id (from the file name) is not running
    on this host, or it has the untagged name of older versions and a ``.ckpt`` target. Files written from other
    hosts (a shared file system) are left alone. Returns the removed paths.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    host, removed, foreign = _host_tag(), [], 0
    for tmp in root.rglob(".*.tmp"):
        if not tmp.is_file():
            continue
        tagged = _TAGGED_TMP.match(tmp.name)
        if tagged:
            if tagged["host"] != host:
                foreign += 1
                continue
            if _process_alive(int(tagged["pid"])):
                continue
        elif not _LEGACY_TMP.match(tmp.name):
            continue
        try:
            tmp.unlink()
        except FileNotFoundError:
            continue
        log.warning("removed %s, an unfinished checkpoint write of a killed run", tmp)
        removed.append(tmp)
    if foreign:
        log.info("left %d temporary checkpoint file(s) under %s that other hosts are or were writing", foreign, root)
    return removed


def find_nonfinite(obj: Any, prefix: str = "") -> List[str]:
    """Key paths of the floating-point tensors in ``obj`` (nested mappings / lists / tuples) holding NaN or inf."""
    named: List[tuple] = []

    def visit(value: Any, key: str) -> None:
        if isinstance(value, torch.Tensor):
            if (value.is_floating_point() or value.is_complex()) and value.numel() and value.device.type != "meta":
                named.append((key, value))
        elif isinstance(value, Mapping):
            for k, v in value.items():
                visit(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                visit(v, f"{key}[{i}]")

    visit(obj, prefix)
    by_device: Dict[torch.device, List[tuple]] = {}
    for key, tensor in named:
        by_device.setdefault(tensor.device, []).append((key, tensor))
    bad = []
    for items in by_device.values():  # one device sync per device, not one per tensor
        finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in items]).tolist()
        bad += [key for (key, _), ok in zip(items, finite) if not ok]
    return bad


def check_finite_before_save(tensors: Mapping[str, Any], path: PathLike) -> None:
    """Raise :class:`NonFiniteCheckpointError` (nothing is written) when ``tensors`` hold NaN or inf values."""
    bad = find_nonfinite(tensors)
    if bad:
        listed = ", ".join(bad[:_MAX_LISTED]) + (f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED
                                                 else "")
        raise NonFiniteCheckpointError(
            f"refusing to write the checkpoint {path}: {len(bad)} tensor(s) hold NaN or infinite values ({listed}). "
            f"The weights have diverged; nothing was written and earlier checkpoints are untouched. Resume from an "
            f"earlier checkpoint with a lower learning rate or with --gradient-clip-val.")


def save_unwrapped(model: nn.Module, path: PathLike, use_safetensors: bool = False,
                   metadata: Optional[Dict[str, str]] = None) -> None:
    """Save ``model``'s state dict as ``.safetensors`` (flat) or ``.ckpt`` (``{"state_dict": ...}``), atomically.

    Raises :class:`NonFiniteCheckpointError` (writing nothing) when a weight holds NaN or inf values.
    """
    check_finite_before_save(model.state_dict(), path)
    if use_safetensors:
        from safetensors.torch import save_model

        atomic_write(path, lambda tmp: save_model(model, tmp, metadata=metadata))
    else:
        state = {"state_dict": model.state_dict()}
        atomic_write(path, lambda tmp: torch.save(state, tmp))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes to a temporary file and renames it into place, and reads safely.

    It refuses (:class:`NonFiniteCheckpointError`) to write a checkpoint whose weights (``state_dict``) or
    optimizer states hold NaN or infinite values. Loading (``trainer.fit(ckpt_path=...)`` resumes) goes through
    :func:`stable_audio_tools.models.safe_load.torch_load`: no arbitrary unpickling unless
    ``STABLE_AUDIO_TOOLS_TRUST_PICKLE`` is set, whatever ``weights_only`` Lightning asks for.
    """

    def load_checkpoint(self, path: PathLike, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        return torch_load(path, map_location="cpu" if map_location is None else map_location)

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        check_finite_before_save({"state_dict": checkpoint.get("state_dict", {}),
                                  "optimizer_states": checkpoint.get("optimizer_states", [])}, path)
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
