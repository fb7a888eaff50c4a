"""What every local dataset type shares (``audio_dir``, ``pre_encoded``, WebDataset): file discovery, source
parsing, custom metadata modules, option checks, collation and the skip-reporting DataLoader.

:mod:`.dataset`, :mod:`.pre_encoded` and :mod:`.webdataset` build on this module (and ``data.dataset`` re-exports
its upstream names), so the dataset modules do not import each other.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..audio import AUDIO_EXTENSIONS
from ..config import ConfigError, get_positive, require, require_mapping, warn_unknown_keys
from .skips import SkipReportingDataLoader

__all__ = ["MetadataFn", "fast_scandir", "get_audio_filenames", "LocalDatasetConfig", "CustomMetadataModule",
           "load_custom_metadata_fn", "NoAudioFilesError", "is_within", "collation_fn",
           "parse_local_sources", "optional_positive", "make_dataloader"]

# Records keep the logger name users filter on (the module these helpers came from, as upstream's).
logger = logging.getLogger("stable_audio_tools.data.dataset")

MetadataFn = Callable[[Dict[str, Any], Optional[torch.Tensor]], Mapping[str, Any]]

_BANNED_NAME_PARTS = ("paxheader", "__macosx")


def fast_scandir(directory: str, extensions: Sequence[str] = AUDIO_EXTENSIONS,
                 keywords: Optional[Sequence[str]] = None) -> Tuple[List[str], List[str]]:
    """Recursively list ``(subfolders, files)`` under ``directory`` with ``os.scandir``.

    Extensions match case-insensitively (a leading dot is optional); hidden files (name starting
    with ".") are skipped; directories that cannot be read are ignored; each real directory is
    visited once, so symlink loops terminate. With ``keywords``, only files whose lower-cased
    name contains one of them are kept (and ``PaxHeader``/``__MACOSX`` artefacts are dropped).
    Files are returned sorted within each directory, directories depth first in sorted order.
    """
    exts = {("." + e.lstrip(".")).lower() for e in extensions}
    keys = [k.lower() for k in keywords] if keywords else None
    subfolders: List[str] = []
    files: List[str] = []
    visited = set()
    stack = [directory]
    while stack:
        current = stack.pop()
        real = os.path.realpath(current)
        if real in visited:
            continue
        visited.add(real)
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            continue
        children = []
        for entry in entries:
            try:
                if entry.is_dir():
                    children.append(entry.path)
                elif entry.is_file() and not entry.name.startswith("."):
                    name = entry.name.lower()
                    if os.path.splitext(name)[1] not in exts:
                        continue
                    if keys is not None and (not any(k in name for k in keys)
                                             or any(b in name for b in _BANNED_NAME_PARTS)):
                        continue
                    files.append(entry.path)
            except OSError:
                continue
        subfolders.extend(children)
        stack.extend(reversed(children))
    return subfolders, files


def get_audio_filenames(paths: Union[str, Sequence[str]], keywords: Optional[Sequence[str]] = None,
                        exts: Sequence[str] = AUDIO_EXTENSIONS) -> List[str]:
    """All audio files below ``paths`` (a directory or a list of directories), see :func:`fast_scandir`."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    filenames: List[str] = []
    for path in paths:
        filenames.extend(fast_scandir(os.fspath(path), exts, keywords)[1])
    return filenames


@dataclass
class LocalDatasetConfig:
    """One local source: ``path`` is scanned; ``custom_metadata_fn(info, audio)`` applies to its files."""

    id: str
    path: str
    custom_metadata_fn: Optional[MetadataFn] = None


class CustomMetadataModule:
    """Picklable handle on a custom metadata ``.py`` file exposing ``get_custom_metadata(info, audio)``.

    Only the file path is pickled; each process imports the module on first call, so the handle
    survives being sent to ``spawn``-ed DataLoader workers. Importing *executes* the file: a dataset
    config naming a module runs that Python code with the user's permissions (every process logs the
    file it executes), so only use dataset configs whose modules you trust.
    """

    def __init__(self, module_path: str) -> None:
        self.module_path = os.path.abspath(module_path)
        self._fn: Optional[MetadataFn] = None

    def load(self) -> MetadataFn:
        """Import the module (once per process) and return its ``get_custom_metadata``."""
        if self._fn is None:
            digest = hashlib.sha1(self.module_path.encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(f"_sat_custom_metadata_{digest}", self.module_path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import '{self.module_path}' (not a Python source file)")
            module = importlib.util.module_from_spec(spec)
            logger.info("Executing custom metadata module '%s' (Python code named by the dataset config)",
                        self.module_path)
            spec.loader.exec_module(module)
            fn = getattr(module, "get_custom_metadata", None)
            if not callable(fn):
                raise AttributeError(f"'{self.module_path}' does not define a function get_custom_metadata(info, audio)")
            self._fn = fn
        return self._fn

    def __call__(self, info: Dict[str, Any], audio: Optional[torch.Tensor]) -> Mapping[str, Any]:
        return self.load()(info, audio)

    def __getstate__(self) -> Dict[str, Any]:
        return {"module_path": self.module_path}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.module_path = state["module_path"]
        self._fn = None

    def __repr__(self) -> str:
        return f"CustomMetadataModule({self.module_path!r})"


def load_custom_metadata_fn(module_path: str, config_path: str = "custom_metadata_module") -> CustomMetadataModule:
    """Validate and load a custom metadata module; problems raise a ConfigError naming ``config_path``."""
    if not isinstance(module_path, (str, os.PathLike)):
        raise ConfigError(config_path, f"expected a path to a .py file, got {type(module_path).__name__}")
    module_path = os.fspath(module_path)
    if not os.path.isfile(module_path):
        raise ConfigError(config_path, f"file '{module_path}' does not exist",
                          "point it at a Python file that defines get_custom_metadata(info, audio)")
    handle = CustomMetadataModule(module_path)
    try:
        handle.load()
    except AttributeError as err:
        raise ConfigError(config_path, str(err), "add `def get_custom_metadata(info, audio): return {...}`") from err
    except Exception as err:
        raise ConfigError(config_path, f"importing '{module_path}' failed: {type(err).__name__}: {err}",
                          "fix the error in that file") from err
    return handle


class NoAudioFilesError(ValueError):
    """A dataset source directory holds no audio files; ``source_index`` says which one."""

    def __init__(self, source_index: int, directory: str, extensions: Sequence[str]) -> None:
        self.source_index = source_index
        self.directory = directory
        super().__init__(f"no audio files ({', '.join(extensions)}) found under '{directory}'")


def is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def collation_fn(samples: Sequence[Sequence[Any]]) -> List[Any]:
    """Transpose a list of item tuples into per-field batches.

    ints/floats -> numpy array, tensors -> ``torch.stack``, numpy arrays -> ``np.array``,
    anything else (metadata dicts) -> tuple. A batch of ``(audio, info)`` items becomes
    ``[audio [B, C, T], (info_1, ..., info_B)]``.
    """
    result: List[Any] = []
    for field in zip(*samples):
        first = field[0]
        if isinstance(first, (int, float)):
            result.append(np.array(field))
        elif isinstance(first, torch.Tensor):
            result.append(torch.stack(field))
        elif isinstance(first, np.ndarray):
            result.append(np.array(field))
        else:
            result.append(field)
    return result


def parse_local_sources(dataset_config: Mapping, example_path: str = "/path/to/audio",
                        directory_hint: str = "point it at the directory that holds the audio files",
                        ignored_keys: Sequence[str] = ()) -> List[LocalDatasetConfig]:
    """``datasets`` entries with a local ``path`` (and optional ``id``, ``custom_metadata_module``), validated.

    ``ignored_keys`` are accepted without an unknown-key warning (the caller reports them itself).
    """
    sources = require(dataset_config, "datasets", "", f"a list of sources such as [{{\"id\": \"my_data\", "
                      f"\"path\": \"{example_path}\"}}]", types=(list, tuple))
    if not sources:
        raise ConfigError("datasets", "is empty", f"add at least one source such as {{\"path\": \"{example_path}\"}}")
    configs = []
    for index, source in enumerate(sources):
        path = f"datasets[{index}]"
        require_mapping(source, path)
        warn_unknown_keys(source, ("id", "path", "custom_metadata_module", *ignored_keys), path)
        directory = require(source, "path", path, directory_hint, (str,))
        if not os.path.isdir(directory):
            reason = "it is not a directory" if os.path.exists(directory) else "it does not exist"
            raise ConfigError(f"{path}.path", f"'{directory}' is not an existing directory: {reason}",
                              f"{directory_hint} (relative paths are resolved from the working directory)")
        metadata_fn = None
        if source.get("custom_metadata_module") is not None:
            metadata_fn = load_custom_metadata_fn(source["custom_metadata_module"], f"{path}.custom_metadata_module")
        configs.append(LocalDatasetConfig(id=str(source.get("id", index)), path=directory,
                                          custom_metadata_fn=metadata_fn))
    return configs


def optional_positive(cfg: Mapping, key: str, integer: bool = False) -> Optional[Union[int, float]]:
    """``cfg[key]`` when it is a positive (integer) number, None when absent or null; else a ConfigError."""
    return get_positive(cfg, key, None, "", integer)


def make_dataloader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, drop_last: bool,
                    noun: str = "files") -> DataLoader:
    """The :class:`~.skips.SkipReportingDataLoader` of a map-style local dataset: workers persist only when
    ``num_workers > 0``, memory is pinned only with CUDA, and a warning says when ``drop_last`` leaves no batch."""
    if drop_last and len(dataset) < batch_size:  # type: ignore[arg-type]
        warnings.warn(f"the dataset has {len(dataset)} {noun} but batch_size is {batch_size} and drop_last is on, "
                      f"so an epoch has no batches; lower the batch size or set \"drop_last\": false", stacklevel=4)
    return SkipReportingDataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                                   persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available(),
                                   drop_last=drop_last, collate_fn=collation_fn)
