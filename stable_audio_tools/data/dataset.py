"""Local audio datasets (``dataset_type: "audio_dir"``), collation and the dataloader factory.

Differences from upstream: see docs/compatibility.md#stable_audio_toolsdatadataset.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import random
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..models.config import ConfigError, check_choice, require, require_mapping, warn_unknown_keys
from .skips import REJECTED, SILENT, SkippingDataset, SkipReportingDataLoader, UnusableItem, check_audio
from .utils import (AUDIO_EXTENSIONS, AudioDecodeError, Mono, PadCrop_Normalized_T, PhaseFlipper, Stereo, is_silence,
                    load_audio, resample)
from .utils import get_dbmax, is_silence_audio, remove_long_silence

__all__ = [
    "SUPPORTED_DATASET_TYPES",
    "DATASET_TYPES",
    "register_dataset_type",
    "fast_scandir",
    "get_audio_filenames",
    "LocalDatasetConfig",
    "CustomMetadataModule",
    "load_custom_metadata_fn",
    "NoAudioFilesError",
    "SampleDataset",
    "collation_fn",
    "optional_positive",
    "make_dataloader",
    "create_dataloader_from_config",
    "keyword_scandir",
    # defined elsewhere, importable from here as from upstream's data/dataset.py (see _UPSTREAM_NAMES)
    "get_dbmax",
    "is_silence_audio",
    "remove_long_silence",
]

logger = logging.getLogger(__name__)

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


class SampleDataset(SkippingDataset):
    """Random (or leading) fixed-length chunks of the audio files below one or more directories.

    Args:
        paths (str | list): a directory, or a list of directories and/or :class:`LocalDatasetConfig` (whose
            ``custom_metadata_fn`` is applied to files below its path).
        sample_size (int): chunk length in samples (after resampling to ``sample_rate``). Default 65536.
        sample_rate (int): every file is resampled to this rate. Default 48000.
        keywords (list of str, optional): keep only files whose name contains one of these (case-insensitive).
            Default ``None``.
        relpath (str, optional): compute ``info["relpath"]`` relative to this directory instead of the file's
            source. Default ``None``.
        random_crop (bool): random chunk offset (else the start of the file). Default ``True``.
        force_channels (str, optional): "stereo", "mono" or None (keep the file's channels). Default "stereo".
        custom_metadata_fn (callable, optional): applied to every item, after the per-source functions.
            Default ``None``.
        max_retries (int): how many replacement items one ``__getitem__`` may try before giving up. Default 1000.
        min_length_sec (float, optional): files shorter than this are skipped (reason "too short"); files
            without samples always are. Default ``None``.

    Items are ``(audio [C, sample_size], info)``; ``info`` holds ``path``, ``relpath``,
    ``timestamps``, ``seconds_start``, ``seconds_total``, ``padding_mask``, ``sample_rate``,
    ``load_time`` and whatever the custom metadata functions return. A function returning a truthy
    ``__reject__`` makes the item be skipped (reason "rejected"); ``__audio__`` (a dict of
    ``[C, T]`` tensors) is pad-cropped with its own random offset, clamped, channel-converted and
    stored under each key. A chunk whose peak is below -60 dBFS is skipped (reason "silent").

    ``dataset[i]`` (training) replaces a skipped item by a random other one and records the skip in the
    returned metadata (see :mod:`stable_audio_tools.data.skips`); :meth:`load_exact` (pre-encoding) raises
    :class:`~stable_audio_tools.data.skips.UnusableItem` instead. Unusable files (unreadable, undecodable,
    empty or too short, non-finite, silent throughout, or raising in a metadata function) are logged once
    per process, recorded in :attr:`unusable` / :attr:`bad_files` (per process: each DataLoader worker keeps
    its own) and never loaded again; :attr:`skipped_files` counts them.
    """

    _file_kind = "audio file"
    _logger = logger

    def __init__(self, paths: Union[str, Sequence[Union[str, LocalDatasetConfig]]], sample_size: int = 65536,
                 sample_rate: int = 48000, keywords: Optional[Sequence[str]] = None, relpath: Optional[str] = None,
                 random_crop: bool = True, force_channels: Optional[str] = "stereo",
                 custom_metadata_fn: Optional[MetadataFn] = None, max_retries: int = 1000,
                 min_length_sec: Optional[float] = None) -> None:
        super().__init__()
        if force_channels not in ("stereo", "mono", None):
            raise ValueError(f"force_channels must be 'stereo', 'mono' or None, got {force_channels!r}")
        if isinstance(paths, (str, os.PathLike, LocalDatasetConfig)):
            paths = [paths]
        self.sources: List[LocalDatasetConfig] = [
            p if isinstance(p, LocalDatasetConfig) else LocalDatasetConfig(id=str(i), path=os.fspath(p))
            for i, p in enumerate(paths)]
        self.sample_size = sample_size
        self.sr = sample_rate
        self.relpath = relpath
        self.random_crop = random_crop
        self.force_channels = force_channels
        self.custom_metadata_fn = custom_metadata_fn
        self.min_length_sec = min_length_sec
        self.pad_crop = PadCrop_Normalized_T(sample_size, sample_rate, randomize=random_crop)
        self.phase_flipper = PhaseFlipper()
        self._channel_op = Stereo() if force_channels == "stereo" else Mono() if force_channels == "mono" else None
        self._abs_roots = [os.path.abspath(s.path) for s in self.sources]

        self.filenames: List[str] = []
        self._file_source: List[int] = []
        for index, source in enumerate(self.sources):
            found = get_audio_filenames(source.path, keywords)
            if not found:
                raise NoAudioFilesError(index, source.path, AUDIO_EXTENSIONS)
            self.filenames.extend(found)
            self._file_source.extend([index] * len(found))
        self._init_skips(max_retries)
        logger.info("Found %d files", len(self.filenames))

    def _convert_channels(self, audio: torch.Tensor) -> torch.Tensor:
        return audio if self._channel_op is None else self._channel_op(audio)

    def _metadata_fns(self, idx: int) -> List[MetadataFn]:
        filename = os.path.abspath(self.filenames[idx])
        fns = [s.custom_metadata_fn for s, root in zip(self.sources, self._abs_roots)
               if s.custom_metadata_fn is not None and _is_within(filename, root)]
        if self.custom_metadata_fn is not None:
            fns.append(self.custom_metadata_fn)
        return fns

    def _load_item(self, idx: int, rng: random.Random) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """The item; raises :class:`UnusableItem` when it cannot be used."""
        start_time = time.time()
        filename = self.filenames[idx]
        try:
            audio, in_sr = load_audio(filename)
        except AudioDecodeError as err:
            raise UnusableItem(err.reason, str(err)) from err
        check_audio(audio, in_sr, self.min_length_sec)
        audio = resample(audio, in_sr, self.sr)
        chunk, t_start, t_end, seconds_start, seconds_total, padding_mask = self.pad_crop(audio, rng)
        if is_silence(chunk):
            if is_silence(audio):
                raise UnusableItem(SILENT, "the whole file is silent (peak below -60 dBFS)")
            raise UnusableItem(SILENT, f"the chunk at {seconds_start} s is silent (peak below -60 dBFS)",
                               permanent=False)
        chunk = self.phase_flipper(chunk, rng).clamp(-1, 1)
        chunk = self._convert_channels(chunk)

        root = self.relpath if self.relpath is not None else self.sources[self._file_source[idx]].path
        info: Dict[str, Any] = {
            "path": filename,
            "relpath": os.path.relpath(filename, root),
            "timestamps": (t_start, t_end),
            "seconds_start": seconds_start,
            "seconds_total": seconds_total,
            "padding_mask": padding_mask,
            "sample_rate": self.sr,
            "load_time": time.time() - start_time,
        }
        for fn in self._metadata_fns(idx):
            custom = fn(info, chunk)
            if not isinstance(custom, Mapping):
                raise TypeError(f"get_custom_metadata must return a dict, got {type(custom).__name__}")
            info.update(custom)
            if info.get("__reject__"):
                raise UnusableItem(REJECTED, "a custom metadata function returned __reject__", permanent=False)
            if "__audio__" in info:
                for key, extra in info.pop("__audio__").items():
                    if not isinstance(extra, torch.Tensor):
                        raise TypeError(f"__audio__['{key}'] must be a torch.Tensor, got {type(extra).__name__}")
                    extra = extra.unsqueeze(0) if extra.dim() == 1 else extra
                    info[key] = self._convert_channels(self.pad_crop(extra, rng)[0].clamp(-1, 1))
        return chunk, info


def _is_within(path: str, root: str) -> bool:
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


def _require_bool(cfg: Mapping, key: str, default: bool, path: str) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {value!r:.60}")
    return value


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


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
    value = cfg.get(key)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0 or value == float("inf"):
        raise ConfigError(key, f"expected a positive {'integer' if integer else 'number'} or null, got {value!r:.60}")
    return value


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


def _create_audio_dir_dataloader(dataset_config: Mapping, batch_size: int, sample_size: int, sample_rate: int,
                                 force_channels: str, num_workers: int, shuffle: bool) -> DataLoader:
    warn_unknown_keys(dataset_config, ("dataset_type", "datasets", "random_crop", "drop_last", "min_length_sec"), "")
    sources = parse_local_sources(dataset_config)
    random_crop = _require_bool(dataset_config, "random_crop", True, "random_crop")
    drop_last = _require_bool(dataset_config, "drop_last", True, "drop_last")
    try:
        dataset = SampleDataset(sources, sample_size=sample_size, sample_rate=sample_rate, random_crop=random_crop,
                                force_channels=force_channels,
                                min_length_sec=optional_positive(dataset_config, "min_length_sec"))
    except NoAudioFilesError as err:
        raise ConfigError(f"datasets[{err.source_index}].path", str(err),
                          "point it at a directory containing audio files (searched recursively; "
                          "hidden files are ignored)") from err
    return make_dataloader(dataset, batch_size, shuffle, num_workers, drop_last)


def _lazy_builder(module: str, name: str) -> Callable[..., DataLoader]:
    """A dataloader builder imported from ``module`` on first use (keeps webdataset out of import time)."""
    def build(*args: Any, **kwargs: Any) -> DataLoader:
        return getattr(importlib.import_module(module, __package__), name)(*args, **kwargs)
    return build


# The dataset-type registry: dataset_type -> builder(dataset_config, batch_size=, sample_size=, sample_rate=,
# force_channels=, num_workers=, shuffle=) -> DataLoader. The only list of dataset types.
DATASET_TYPES: Dict[str, Callable[..., DataLoader]] = {}


def register_dataset_type(name: str, builder: Callable[..., DataLoader]) -> None:
    """Make ``"dataset_type": name`` build its DataLoader with ``builder`` (keyword arguments ``batch_size``,
    ``sample_size``, ``sample_rate``, ``force_channels`` ("mono" / "stereo"), ``num_workers``, ``shuffle``).
    Raises ValueError for a name already registered."""
    if name in DATASET_TYPES:
        raise ValueError(f"dataset type {name!r} is already registered; pick another name")
    DATASET_TYPES[name] = builder


register_dataset_type("audio_dir", _create_audio_dir_dataloader)
register_dataset_type("pre_encoded", _lazy_builder(".pre_encoded", "create_pre_encoded_dataloader"))
register_dataset_type("s3", _lazy_builder(".webdataset", "create_webdataset_dataloader"))
register_dataset_type("wds", _lazy_builder(".webdataset", "create_webdataset_dataloader"))

# The built-in dataset types (a snapshot of DATASET_TYPES at import; the registry is the live list).
SUPPORTED_DATASET_TYPES: Tuple[str, ...] = tuple(DATASET_TYPES)


def create_dataloader_from_config(dataset_config: Mapping, batch_size: int, sample_size: int, sample_rate: int,
                                  audio_channels: int = 2, num_workers: int = 4, shuffle: bool = True) -> DataLoader:
    """Build the training/validation DataLoader described by a dataset config (see docs/dataset_config.md).

    ``audio_channels == 1`` forces mono items, anything else stereo. Batches are
    ``[audio [B, C, sample_size], (info, ...)]`` (see :func:`collation_fn`). ``drop_last``
    defaults to true; workers persist only when ``num_workers > 0``; memory is pinned only when
    CUDA is available. Supported ``dataset_type`` values: the keys of :data:`DATASET_TYPES` (see
    :func:`register_dataset_type`).
    """
    require_mapping(dataset_config, "<dataset config>")
    supported = ", ".join(repr(t) for t in DATASET_TYPES)
    dataset_type = require(dataset_config, "dataset_type", "", f"set it to one of {supported}", (str,))
    check_choice(dataset_type, DATASET_TYPES, "dataset_type")
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(sample_size, "sample_size")
    _check_positive_int(sample_rate, "sample_rate")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    force_channels = "mono" if audio_channels == 1 else "stereo"
    return DATASET_TYPES[dataset_type](dataset_config, batch_size=batch_size, sample_size=sample_size,
                                              sample_rate=sample_rate, force_channels=force_channels,
                                              num_workers=num_workers, shuffle=shuffle)


# --------------------------------------------------------------------------------------------------
# Upstream's other data/dataset.py names


def keyword_scandir(dir: str, ext: Sequence[str], keywords: Sequence[str]) -> Tuple[List[str], List[str]]:  # noqa: A002
    """Deprecated upstream helper: ``(subfolders, files)`` under ``dir`` whose file names contain one of
    ``keywords``; use :func:`fast_scandir` with ``keywords`` instead (an empty keyword list matches no file)."""
    warnings.warn("keyword_scandir is deprecated; use fast_scandir(directory, extensions, keywords)",
                  DeprecationWarning, stacklevel=2)
    subfolders, files = fast_scandir(dir, ext, keywords)
    return subfolders, files if keywords else []


# Upstream defines these in data/dataset.py too. Here they live in modules built on top of this one
# (:mod:`.pre_encoded`, :mod:`.webdataset` import this module), so a static import would be an import cycle:
# they are resolved on first attribute access instead (PEP 562), which ``from ...dataset import X`` also uses.
_UPSTREAM_NAMES = {
    "get_latent_filenames": ".pre_encoded",
    "PreEncodedDataset": ".pre_encoded",
    "get_s3_contents": ".webdataset",
    "get_all_s3_urls": ".webdataset",
    "log_and_continue": ".webdataset",
    "is_valid_sample": ".webdataset",
    "S3DatasetConfig": ".webdataset",
    "LocalWebDatasetConfig": ".webdataset",
    "audio_decoder": ".webdataset",
    "npy_decoder": ".webdataset",
    "WebDatasetDataLoader": ".webdataset",
}


def __getattr__(name: str) -> Any:
    if name in _UPSTREAM_NAMES:
        return getattr(importlib.import_module(_UPSTREAM_NAMES[name], __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(list(globals()) + list(_UPSTREAM_NAMES))
