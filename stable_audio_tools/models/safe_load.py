"""Safe reading of checkpoint files: the one place where stable-audio-tools opens a ``.ckpt`` / ``.safetensors``.

A PyTorch ``.ckpt`` is a pickle, and unpickling can run any code the file's author chose. Every checkpoint,
adapter and resume path of the package therefore reads files through :func:`torch_load` (``torch.load`` with
``weights_only=True``, which only rebuilds tensors, numbers, strings and containers, plus the plain types listed by
:func:`allowed_globals` that Lightning training checkpoints hold) or :func:`load_safetensors`.

A file that needs anything else is refused with :class:`UntrustedCheckpointError`, which names the Python
globals it asks for. For a file you trust, arbitrary unpickling is allowed by setting the environment variable
``STABLE_AUDIO_TOOLS_TRUST_PICKLE=1`` or passing ``--trust-pickle`` to ``train.py``, ``unwrap_model.py``,
``pre_encode.py`` or ``run_gradio.py``. That is dangerous: a malicious file then runs its code on your machine.

Files that are not checkpoints at all (audio, text, empty, truncated or damaged files) raise
:class:`NotACheckpointError` naming the file and what it looks like.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import logging
import os
import pathlib
import pickle
import re
import struct
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple, Union

import torch

__all__ = [
    "TRUST_PICKLE_ENV",
    "allowed_globals",
    "CheckpointError",
    "CheckpointKindError",
    "NotACheckpointError",
    "UntrustedCheckpointError",
    "trust_pickle_enabled",
    "enable_trust_pickle",
    "torch_load",
    "load_safetensors",
    "safetensors_keys",
    "safetensors_metadata",
]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
MapLocation = Union[str, torch.device, Callable, Dict[str, str], None]

TRUST_PICKLE_ENV = "STABLE_AUDIO_TOOLS_TRUST_PICKLE"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
_TRUST_HINT = (f"If, and only if, you trust where this file comes from, allow it with --trust-pickle (train.py, "
               f"unwrap_model.py, pre_encode.py, run_gradio.py) or the environment variable {TRUST_PICKLE_ENV}=1; "
               f"that lets the file run any code on this machine (see docs/security.md). Safer: ask its author for "
               f"a .safetensors file, or an unwrapped checkpoint written by unwrap_model.py.")


@functools.lru_cache(maxsize=1)
def _plain_globals() -> Tuple[Union[type, Callable, Tuple[Any, str]], ...]:
    import numpy as np

    local_path = type(pathlib.Path())
    pure_foreign = pathlib.PureWindowsPath if os.name != "nt" else pathlib.PurePosixPath
    foreign = "pathlib.WindowsPath" if os.name != "nt" else "pathlib.PosixPath"
    core = np._core if hasattr(np, "_core") else np.core
    return (
        argparse.Namespace,
        pathlib.PurePath, pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.Path, local_path,
        (pure_foreign, foreign),  # a path written on the other OS family is rebuilt as a pure path
        (local_path, f"pathlib._local.{local_path.__name__}"),  # the name Python 3.13+ pickles it under
        datetime.date, datetime.datetime, datetime.time, datetime.timedelta, datetime.timezone,
        frozenset, slice, torch.torch_version.TorchVersion,
        np.dtype, np.ndarray, core.multiarray.scalar, core.multiarray._reconstruct,
        *(type(np.dtype(code)) for code in "?bhilqBHILQefdgFDGUSV"),
        (core.multiarray.scalar, "numpy.core.multiarray.scalar"),  # the names numpy 1.x pickles under
        (core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        # Lightning's AttributeDict (hyper-parameters), under its current and older module names, is rebuilt as the
        # plain dict it is; this also saves importing Lightning (seconds) just to load a model
        *((dict, f"{module}.AttributeDict") for module in (
            "lightning_fabric.utilities.data", "lightning.fabric.utilities.data",
            "pytorch_lightning.utilities.parsing", "lightning.pytorch.utilities.parsing")),
    )


def allowed_globals() -> List[Union[type, Callable, Tuple[Any, str]]]:
    """The classes and functions the safe loader rebuilds on top of torch's own allowlist (tensors, numbers,
    strings, containers): ``argparse.Namespace`` (saved arguments), ``pathlib`` paths, ``datetime`` values,
    ``frozenset``, ``slice``, ``TorchVersion``, numpy scalars / dtypes / arrays and Lightning's
    ``AttributeDict`` (hyper-parameters; loaded as a plain ``dict``). None of them runs code chosen by the file.
    Entries are objects or ``(object, "module.Name")`` pairs for the other names files may use, as
    ``torch.serialization.safe_globals`` takes them."""
    return list(_plain_globals())


class CheckpointError(ValueError):
    """A checkpoint file could not be used; the message names the file and what to do."""


class CheckpointKindError(CheckpointError):
    """A file of the wrong kind was given (e.g. a training checkpoint where a model one is needed)."""


class NotACheckpointError(CheckpointKindError):
    """The file is not a checkpoint at all: empty, audio, text, truncated or damaged."""


class UntrustedCheckpointError(CheckpointError):
    """The file needs arbitrary unpickling (code execution), which is refused unless explicitly trusted."""


def trust_pickle_enabled() -> bool:
    """Whether ``STABLE_AUDIO_TOOLS_TRUST_PICKLE`` allows arbitrary unpickling (``1/true/yes/on``).

    Raises ``ValueError`` for a value that is neither true nor false, so a typo never silently trusts or refuses.
    """
    value = os.environ.get(TRUST_PICKLE_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"environment variable {TRUST_PICKLE_ENV}={os.environ[TRUST_PICKLE_ENV]!r}: use 1 to trust "
                     f"pickled checkpoints or 0 / unset to refuse them")


def enable_trust_pickle(source: str = TRUST_PICKLE_ENV) -> None:
    """Allow arbitrary unpickling for the rest of this process and its children (sets the environment variable).

    Args:
        source (str, default ``"STABLE_AUDIO_TOOLS_TRUST_PICKLE"``): what asked for it (e.g. ``"--trust-pickle"``),
            named in the warning that is logged.
    """
    os.environ[TRUST_PICKLE_ENV] = "1"
    log.warning("%s: checkpoints that need arbitrary unpickling will be loaded; a malicious file can run any code. "
                "Use it only for files you trust.", source)


_MAGIC = (
    (b"RIFF", "a RIFF/WAV audio file"), (b"fLaC", "a FLAC audio file"), (b"OggS", "an Ogg audio file"),
    (b"ID3", "an MP3 audio file"), (b"\xff\xfb", "an MP3 audio file"), (b"FORM", "an AIFF audio file"),
    (b"\x93NUMPY", "a NumPy .npy file"), (b"\x1f\x8b", "a gzip archive"), (b"\x89HDF", "an HDF5 file"),
)


def _not_a_checkpoint(path: Path, reason: str) -> NotACheckpointError:
    return NotACheckpointError(f"{path} is not a checkpoint: {reason}. Expected a PyTorch checkpoint (.ckpt / .pt "
                               f"written by torch.save, train.py or unwrap_model.py) or a .safetensors file.")


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    return len(head) > 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] <= size - 8


def _sniff(path: Path) -> str:
    """``'zip'`` or ``'legacy'`` for a torch.save file, else raise :class:`NotACheckpointError` saying what it is."""
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise _not_a_checkpoint(path, "it is a directory")
    size = path.stat().st_size
    if size == 0:
        raise _not_a_checkpoint(path, "the file is empty")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "legacy"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise _not_a_checkpoint(path, f"it is {what}")
    if _looks_like_safetensors(head, size):
        raise _not_a_checkpoint(path, "it is a safetensors file with another extension; rename it to end in "
                                      ".safetensors")
    try:
        head.decode("utf-8")
        what = "a text file"
    except UnicodeDecodeError:
        what = "an unknown binary format"
    raise _not_a_checkpoint(path, f"it is {what} (starts with {head[:16]!r})")


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _first_sentence(error: BaseException) -> str:
    """The informative part of an error, without torch's advice on ``weights_only`` and documentation links."""
    text = " ".join(str(error).split())
    text = re.sub(r"\s*Check the documentation of torch.load.*$", "", text)
    match = re.search(r"WeightsUnpickler error: (.*?)(\.\s|\.?$)", text)
    if match:
        return match.group(1)
    return text.split(". ")[0].rstrip(".")[:300]


def _describe(error: BaseException) -> str:
    detail = _first_sentence(error)
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def _unsafe_globals(path: Path, fmt: str, error: BaseException) -> List[str]:
    """The globals the file asks for beyond the allowlist (all of them for zip files, else the first one)."""
    names: List[str] = []
    if fmt == "zip":
        try:
            with torch.serialization.safe_globals(allowed_globals()):
                names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # a damaged archive: fall back to the name in the error
            names = []
    if not names:  # torch names builtins without their module ("GLOBAL exec")
        names = [name if "." in name else f"builtins.{name}" for name in _GLOBAL.findall(str(error))[:1]]
    return names


def torch_load(path: PathLike, map_location: MapLocation = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with the :func:`allowed_globals` allowlist and clear errors.

    Args:
        path (str | os.PathLike): a local ``torch.save`` file.
        map_location (str | torch.device | callable | dict, default ``"cpu"``): as for ``torch.load``.
        mmap (bool, default False): memory-map the tensors (zip-format files only; ignored for legacy files).

    Raises:
        FileNotFoundError: no such file.
        NotACheckpointError: the file is not a torch.save checkpoint (empty, audio, text, truncated, damaged).
        UntrustedCheckpointError: the file needs arbitrary unpickling and ``STABLE_AUDIO_TOOLS_TRUST_PICKLE`` is
            not set; the message lists the globals it needs. With the variable set, the file is loaded with
            ``weights_only=False`` and a warning naming them.
    """
    path = Path(path)
    fmt = _sniff(path)
    mmap = mmap and fmt == "zip"
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower() or "Unsupported operand" in str(error):  # not a pickle stream
            raise _not_a_checkpoint(path, f"it is damaged ({_first_sentence(error)})") from None
        refused = error
    except (RuntimeError, OSError, EOFError, IndexError, KeyError, ValueError, TypeError, AttributeError,
            struct.error, UnicodeDecodeError, OverflowError) as error:  # the file opened fine: its contents are bad
        raise _not_a_checkpoint(path, f"it is truncated or damaged ({_describe(error)})") from None
    names = _unsafe_globals(path, fmt, refused)
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    needs = (f"it references {shown}, which only arbitrary unpickling can rebuild" if names else
             f"the safe loader rejected it ({_first_sentence(refused)})")
    if not trust_pickle_enabled():
        raise UntrustedCheckpointError(f"refusing to load {path}: {needs}, and unpickling can run any code. "
                                       f"{_TRUST_HINT}") from None
    log.warning("%s is set: loading %s with arbitrary unpickling (%s)", TRUST_PICKLE_ENV, path, needs)
    try:
        return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, IndexError, KeyError, struct.error) as error:
        raise _not_a_checkpoint(path, f"it is damaged ({_describe(error)})") from None


def _safetensors_error(path: Path, error: BaseException) -> NotACheckpointError:
    return _not_a_checkpoint(path, f"it is not a valid safetensors file ({_first_sentence(error)})")


def load_safetensors(path: PathLike) -> Dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file (a format that cannot run code), on the CPU.

    Raises ``FileNotFoundError`` or :class:`NotACheckpointError` (empty, truncated or not safetensors).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as error:  # SafetensorError, OSError from a short read, ...
        raise _safetensors_error(path, error) from None


def safetensors_keys(path: PathLike) -> List[str]:
    """The tensor names of a ``.safetensors`` file, read from its header only."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as error:
        raise _safetensors_error(path, error) from None


def safetensors_metadata(path: PathLike) -> Dict[str, str]:
    """The string metadata of a ``.safetensors`` file's header (``{}`` when it has none)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as error:
        raise _safetensors_error(path, error) from None
