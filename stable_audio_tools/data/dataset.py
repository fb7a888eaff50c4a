"""Local audio datasets (``dataset_type: "audio_dir"``), collation and the dataloader factory.

Differences from upstream: see docs/compatibility.md#stable_audio_toolsdatadataset.
"""
from __future__ import annotations

import logging
import os
import random
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader

from ..config import (ConfigError, check_choice, check_positive_int, get_bool, require, require_mapping,
                      warn_unknown_keys)
from .pre_encoded import PreEncodedDataset, create_pre_encoded_dataloader, get_latent_filenames
from ..audio import exact_pcm_frames, load_audio_window
from .skips import REJECTED, SILENT, SkippingDataset, UnusableItem, check_audio, check_length
from .sources import (CustomMetadataModule, LocalDatasetConfig, MetadataFn, NoAudioFilesError,
                      collation_fn, fast_scandir, get_audio_filenames, is_within, load_custom_metadata_fn,
                      make_dataloader, optional_positive, parse_local_sources)
from .webdataset import (LocalWebDatasetConfig, S3DatasetConfig, WebDatasetDataLoader, audio_decoder,
                         create_webdataset_dataloader, get_all_s3_urls, get_s3_contents, is_valid_sample,
                         log_and_continue, npy_decoder)
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
    # defined elsewhere, importable from here as from upstream's data/dataset.py
    "get_dbmax",
    "is_silence_audio",
    "remove_long_silence",
    "get_latent_filenames",
    "PreEncodedDataset",
    "get_s3_contents",
    "get_all_s3_urls",
    "log_and_continue",
    "is_valid_sample",
    "S3DatasetConfig",
    "LocalWebDatasetConfig",
    "audio_decoder",
    "npy_decoder",
    "WebDatasetDataLoader",
]

logger = logging.getLogger(__name__)

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
        self._pcm_headers: Dict[str, Optional[Tuple[int, int, int]]] = {}  # see _decode_crop

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
               if s.custom_metadata_fn is not None and is_within(filename, root)]
        if self.custom_metadata_fn is not None:
            fns.append(self.custom_metadata_fn)
        return fns

    def _decode_whole(self, filename: str) -> torch.Tensor:
        """The whole file, checked and resampled to the dataset's rate."""
        try:
            audio, in_sr = load_audio(filename)
        except AudioDecodeError as err:
            raise UnusableItem(err.reason, str(err)) from err
        check_audio(audio, in_sr, self.min_length_sec)
        return resample(audio, in_sr, self.sr)

    def _decode_crop(self, filename: str, rng: random.Random) -> Tuple[tuple, Optional[torch.Tensor]]:
        """``(pad_crop result, whole audio or None)``. Integer-PCM WAV / FLAC / AIFF files at the dataset's rate and
        longer than a chunk decode only the chunk's window (the same samples, offsets and random draws as
        decoding the whole file and cropping it, which every other file does)."""
        if filename not in self._pcm_headers:  # read once per file and process: most datasets repeat files
            self._pcm_headers[filename] = exact_pcm_frames(filename)
        header = self._pcm_headers[filename]
        if header is not None and header[1] == self.sr and header[0] > self.sample_size:
            length = header[0]
            check_length(length, self.sr, self.min_length_sec)
            offset = self.pad_crop.draw_offset(length, rng)
            try:
                window = load_audio_window(filename, offset, self.sample_size)
            except AudioDecodeError as err:
                raise UnusableItem(err.reason, str(err)) from err
            if window.shape[-1] == self.sample_size:
                return self.pad_crop.place(window, length, offset), None
            # fewer samples than the header promised (a truncated file): crop the whole decoded file instead
        audio = self._decode_whole(filename)
        return self.pad_crop(audio, rng), audio

    def _load_item(self, idx: int, rng: random.Random) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """The item; raises :class:`UnusableItem` when it cannot be used."""
        start_time = time.time()
        filename = self.filenames[idx]
        cropped, audio = self._decode_crop(filename, rng)
        chunk, t_start, t_end, seconds_start, seconds_total, padding_mask = cropped
        if is_silence(chunk):
            if is_silence(audio if audio is not None else self._decode_whole(filename)):
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


def _create_audio_dir_dataloader(dataset_config: Mapping, batch_size: int, sample_size: int, sample_rate: int,
                                 force_channels: str, num_workers: int, shuffle: bool) -> DataLoader:
    warn_unknown_keys(dataset_config, ("dataset_type", "datasets", "random_crop", "drop_last", "min_length_sec"), "")
    sources = parse_local_sources(dataset_config)
    random_crop = get_bool(dataset_config, "random_crop", True, "")
    drop_last = get_bool(dataset_config, "drop_last", True, "")
    try:
        dataset = SampleDataset(sources, sample_size=sample_size, sample_rate=sample_rate, random_crop=random_crop,
                                force_channels=force_channels,
                                min_length_sec=optional_positive(dataset_config, "min_length_sec"))
    except NoAudioFilesError as err:
        raise ConfigError(f"datasets[{err.source_index}].path", str(err),
                          "point it at a directory containing audio files (searched recursively; "
                          "hidden files are ignored)") from err
    return make_dataloader(dataset, batch_size, shuffle, num_workers, drop_last)


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
register_dataset_type("pre_encoded", create_pre_encoded_dataloader)
register_dataset_type("s3", create_webdataset_dataloader)
register_dataset_type("wds", create_webdataset_dataloader)

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
    check_positive_int(batch_size, "batch_size", high=None)
    check_positive_int(sample_size, "sample_size", high=None)
    check_positive_int(sample_rate, "sample_rate", high=None)
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
