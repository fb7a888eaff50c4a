"""Pre-encoded latents (``dataset_type: "pre_encoded"``): the dataset that reads ``pre_encode.py``'s output.

Layout (see docs/data_formats.md#pre-encoding-with-pre_encodepy, docs/data_formats.md#the-pre_encoded-dataset-type):
``<root>/<rank>/<13-digit id>.npy`` holds one item's latents ``[C, L]`` (or
tokens ``[n_q, L]``), ``<id>.json`` beside it the item's metadata with a latent-rate ``padding_mask``
(0/1 list of length ``L``). ``<root>/filelist.txt``, when present, lists the latent files (relative
paths, one per line) instead of scanning.

Differences from upstream: see docs/compatibility.md#stable_audio_toolsdatapre_encoded.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import warnings
from fractions import Fraction
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import ConfigError, ConfigWarning, get_bool, warn_unknown_keys
from .sources import (LocalDatasetConfig, fast_scandir, is_within, make_dataloader, optional_positive,
                      parse_local_sources)
from .skips import (BAD_LATENTS, BAD_METADATA, NON_FINITE, PERMISSION_DENIED, REJECTED, TOO_LONG, TOO_SHORT,
                    SkippingDataset, UnusableItem, os_error_reason)

__all__ = [
    "get_latent_filenames",
    "latent_frame_seconds",
    "crop_pre_encoded",
    "PreEncodedDataset",
    "create_pre_encoded_dataloader",
]

logger = logging.getLogger(__name__)

DETAILS_FILE = "details.json"
FILELIST_FILE = "filelist.txt"


def get_latent_filenames(paths: Union[str, Sequence[str]], extensions: Sequence[str] = ("npy",)) -> List[str]:
    """Latent files of one or more pre-encoded roots.

    A root holding ``filelist.txt`` contributes the files it lists (paths relative to the root, one
    per line, blank lines ignored); any other root is scanned recursively for ``extensions``
    (hidden files skipped, sorted per directory).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    filenames: List[str] = []
    for path in paths:
        path = os.fspath(path)
        filelist = os.path.join(path, FILELIST_FILE)
        if os.path.exists(filelist):
            with open(filelist, encoding="utf-8") as f:
                filenames.extend(os.path.join(path, line.strip()) for line in f if line.strip())
            continue
        filenames.extend(fast_scandir(path, extensions)[1])
    return filenames


def _read_details(root: str) -> Dict[str, Any]:
    path = os.path.join(root, DETAILS_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            details = json.load(f)
    except (OSError, ValueError) as err:
        logger.warning("Ignoring unreadable '%s': %s", path, err)
        return {}
    return details if isinstance(details, dict) else {}


def latent_frame_seconds(info: Mapping[str, Any], details: Optional[Mapping[str, Any]] = None,
                         latent_length: Optional[int] = None) -> Optional[Fraction]:
    """Duration of one latent frame in seconds (exact), or None when the metadata does not say.

    Uses ``info["downsampling_ratio"]`` (audio samples per latent frame) and ``info["sample_rate"]``;
    for data written without ``downsampling_ratio`` it falls back to ``details["sample_size"] /
    latent_length`` (the pre-encoding chunk length over the uncropped latent length).
    """
    sample_rate = info.get("sample_rate", (details or {}).get("sample_rate"))
    ratio = info.get("downsampling_ratio", (details or {}).get("downsampling_ratio"))
    if ratio is None and details and details.get("sample_size") and latent_length:
        ratio = Fraction(int(details["sample_size"]), int(latent_length))
    if not isinstance(sample_rate, (int, float)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        return None
    if ratio is None or isinstance(ratio, bool) or not isinstance(ratio, (int, float, Fraction)) or ratio <= 0:
        return None
    return Fraction(ratio) / Fraction(sample_rate)


def crop_pre_encoded(latents: torch.Tensor, info: Dict[str, Any], crop_length: int, random_crop: bool,
                     rng: Optional[random.Random] = None,
                     frame_seconds: Optional[Fraction] = None) -> Tuple[torch.Tensor, bool]:
    """Crop ``latents [C, L]`` to ``crop_length`` frames inside the real (unpadded) region; edits ``info``.

    The start is uniform in ``[0, n_real - crop_length]`` when ``random_crop`` and the real region
    (frames up to the last 1 of ``info["padding_mask"]``) is longer than the crop, else 0. Shorter
    latents are zero-padded. ``info`` gets the cropped ``padding_mask`` (list of 0/1),
    ``latent_crop_length``, ``latent_crop_start`` and, when ``frame_seconds`` is known,
    ``seconds_start`` advanced by the crop offset (floored to whole seconds like the audio loader).
    Returns ``(cropped latents, whether seconds_start needed an update but could not get one)``.
    """
    length = latents.shape[-1]
    mask = info.get("padding_mask")
    mask = [1] * length if mask is None else [int(v) for v in (mask.tolist() if hasattr(mask, "tolist") else mask)]
    n_real = len(mask) - mask[::-1].index(1) if 1 in mask else 0
    start = 0
    if random_crop and n_real > crop_length:
        start = (rng or random).randint(0, n_real - crop_length)
    latents = latents[..., start:start + crop_length]
    mask = mask[start:start + crop_length]
    if latents.shape[-1] < crop_length:
        latents = torch.nn.functional.pad(latents, (0, crop_length - latents.shape[-1]))
    mask = mask + [0] * (crop_length - len(mask))
    info["padding_mask"] = mask
    info["latent_crop_length"] = crop_length
    info["latent_crop_start"] = start
    unknown_rate = False
    if start and isinstance(info.get("seconds_start"), (int, float)):
        if frame_seconds is None:
            unknown_rate = True
        else:
            info["seconds_start"] = math.floor(Fraction(info["seconds_start"]) + start * frame_seconds)
    return latents, unknown_rate


class PreEncodedDataset(SkippingDataset):
    """Latents written by ``pre_encode.py``.

    Args:
        configs (list): sources (:class:`~stable_audio_tools.data.dataset.LocalDatasetConfig` or directories;
            their ``custom_metadata_fn(info, None)`` applies to files below their path).
        latent_crop_length (int, optional): crop every item to this many latent frames (see
            :func:`crop_pre_encoded`). Default ``None`` (whole items).
        min_length_sec (float, optional): items whose ``seconds_total`` is shorter are skipped ("too short").
            Default ``None``.
        max_length_sec (float, optional): items whose ``seconds_total`` is longer are skipped ("too long").
            Default ``None``.
        random_crop (bool): random crop offset inside the real region (else 0). Default ``False``.
        latent_extension (str): latent file extension. Default ``"npy"``.
        max_retries (int): replacement items one ``__getitem__`` may try before giving up. Default 1000.

    Items are ``(latents [C, L], info)``: ``info`` is the JSON metadata plus ``latent_filename``,
    ``padding_mask`` as a 1-element list holding a tensor (upstream's convention), ``audio`` (the
    latents) and, with a crop, ``latent_crop_length``/``latent_crop_start``. Metadata functions may
    return ``__reject__`` (skip the item) or ``__replace__`` (a tensor that replaces the latents).
    Skipped items are replaced and recorded as in :class:`~stable_audio_tools.data.skips.SkippingDataset`.
    """

    _file_kind = "pre-encoded file"
    _logger = logger

    def __init__(self, configs: Sequence[Union[str, LocalDatasetConfig]], latent_crop_length: Optional[int] = None,
                 min_length_sec: Optional[float] = None, max_length_sec: Optional[float] = None,
                 random_crop: bool = False, latent_extension: str = "npy", max_retries: int = 1000) -> None:
        super().__init__()
        if isinstance(configs, (str, os.PathLike, LocalDatasetConfig)):
            configs = [configs]
        self.sources: List[LocalDatasetConfig] = [
            c if isinstance(c, LocalDatasetConfig) else LocalDatasetConfig(id=str(i), path=os.fspath(c))
            for i, c in enumerate(configs)]
        self.latent_extension = latent_extension.lstrip(".")
        self.latent_crop_length = latent_crop_length
        self.random_crop = random_crop
        self.min_length_sec = min_length_sec
        self.max_length_sec = max_length_sec
        self._abs_roots = [os.path.abspath(s.path) for s in self.sources]
        self._details = [_read_details(s.path) for s in self.sources]
        self.filenames: List[str] = []
        self._file_source: List[int] = []
        for index, source in enumerate(self.sources):
            found = get_latent_filenames(source.path, [self.latent_extension])
            self.filenames.extend(found)
            self._file_source.extend([index] * len(found))
        self._init_skips(max_retries)
        self._warned_unknown_rate = False
        logger.info("Found %d files", len(self.filenames))

    def _load_item(self, idx: int, rng: random.Random) -> Tuple[torch.Tensor, Dict[str, Any]]:
        latent_filename = self.filenames[idx]
        source = self._file_source[idx]
        latents = torch.from_numpy(_read_latents(latent_filename))
        info = _read_metadata(latent_filename[:-len(self.latent_extension)] + "json")
        info["latent_filename"] = latent_filename
        self._check_length(info.get("seconds_total"))

        if self.latent_crop_length is not None:
            uncropped = len(info["padding_mask"]) if "padding_mask" in info else latents.shape[-1]
            frames = latent_frame_seconds(info, self._details[source], uncropped)
            latents, unknown_rate = crop_pre_encoded(latents, info, self.latent_crop_length, self.random_crop,
                                                     rng, frames)
            if unknown_rate and not self._warned_unknown_rate:
                self._warned_unknown_rate = True
                warnings.warn(f"'{latent_filename}': seconds_start cannot be updated after the random latent crop "
                              f"because the latent frame rate is unknown (the JSON has no 'downsampling_ratio' and "
                              f"'{DETAILS_FILE}' no 'sample_size'); re-encode with this version's pre_encode.py or "
                              f"set \"random_crop\": false to keep timing conditioning honest", stacklevel=2)
        info["padding_mask"] = [torch.tensor(info["padding_mask"] if "padding_mask" in info
                                             else [1] * latents.shape[-1])]

        for source_cfg, root in zip(self.sources, self._abs_roots):
            fn = source_cfg.custom_metadata_fn
            if fn is None or not is_within(os.path.abspath(latent_filename), root):
                continue
            custom = fn(info, None)
            if not isinstance(custom, Mapping):
                raise TypeError(f"get_custom_metadata must return a dict, got {type(custom).__name__}")
            info.update(custom)
            if info.get("__reject__"):
                raise UnusableItem(REJECTED, "a custom metadata function returned __reject__", permanent=False)
            replacement = info.pop("__replace__", None)
            if replacement is not None:
                latents = replacement if isinstance(replacement, torch.Tensor) else torch.as_tensor(replacement)
        info["audio"] = latents
        return latents, info

    def _check_length(self, seconds_total: Any) -> None:
        if self.min_length_sec is None and self.max_length_sec is None:
            return
        if isinstance(seconds_total, bool) or not isinstance(seconds_total, (int, float)):
            raise UnusableItem(BAD_METADATA, "min_length_sec/max_length_sec need 'seconds_total' in the metadata")
        if self.min_length_sec is not None and seconds_total < self.min_length_sec:
            raise UnusableItem(TOO_SHORT,
                               f"seconds_total {seconds_total} is below min_length_sec={self.min_length_sec}")
        if self.max_length_sec is not None and seconds_total > self.max_length_sec:
            raise UnusableItem(TOO_LONG,
                               f"seconds_total {seconds_total} is above max_length_sec={self.max_length_sec}")


def _read_latents(path: str) -> np.ndarray:
    """The ``[channels, frames]`` array of a latent file; :class:`UnusableItem` when it cannot be used."""
    try:
        latents = np.load(path, allow_pickle=False)
    except OSError as err:
        raise UnusableItem(os_error_reason(err), f"cannot read latents: {err}") from err
    except ValueError as err:
        raise UnusableItem(BAD_LATENTS, f"cannot read latents: {err}") from err
    if not isinstance(latents, np.ndarray) or latents.ndim != 2:
        raise UnusableItem(BAD_LATENTS, f"expected latents shaped [channels, frames], got "
                                        f"{getattr(latents, 'shape', type(latents).__name__)}")
    if latents.dtype.kind == "f" and not np.isfinite(latents).all():
        raise UnusableItem(NON_FINITE, f"{int((~np.isfinite(latents)).sum())} of {latents.size} latent values are "
                                       f"NaN or infinite")
    return latents


def _read_metadata(path: str) -> Dict[str, Any]:
    """The JSON object of a latent file's metadata; :class:`UnusableItem` when it cannot be used."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except PermissionError as err:
        raise UnusableItem(PERMISSION_DENIED, f"cannot read its metadata file '{path}': {err}") from err
    except (OSError, ValueError) as err:
        raise UnusableItem(BAD_METADATA, f"cannot read its metadata file '{path}': {err}") from err
    if not isinstance(info, dict):
        raise UnusableItem(BAD_METADATA, f"metadata file '{path}' does not hold a JSON object")
    return info


def _parse_pre_encoded_sources(dataset_config: Mapping) -> List[LocalDatasetConfig]:
    for index, source in enumerate(dataset_config.get("datasets") or []):
        if isinstance(source, Mapping) and "latent_crop_length" in source:
            warnings.warn(f"ignoring 'datasets[{index}].latent_crop_length': the crop length is read from the "
                          f"top-level 'latent_crop_length' key of the dataset config; move it there", ConfigWarning,
                          stacklevel=4)
    return parse_local_sources(dataset_config, example_path="/path/to/pre_encode/output",
                               directory_hint="point it at the --output-path of pre_encode.py",
                               ignored_keys=("latent_crop_length",))


def create_pre_encoded_dataloader(dataset_config: Mapping, batch_size: int, sample_size: int, sample_rate: int,
                                  force_channels: str, num_workers: int, shuffle: bool) -> DataLoader:
    """DataLoader over a ``pre_encoded`` dataset config (``sample_size``/``sample_rate``/channels are unused:
    the latents were cut and encoded by ``pre_encode.py``)."""
    warn_unknown_keys(dataset_config, ("dataset_type", "datasets", "random_crop", "drop_last", "latent_crop_length",
                                       "min_length_sec", "max_length_sec", "latent_extension"), "")
    sources = _parse_pre_encoded_sources(dataset_config)
    extension = dataset_config.get("latent_extension", "npy")
    if not isinstance(extension, str) or not extension.strip("."):
        raise ConfigError("latent_extension", f"expected a file extension such as \"npy\", got {extension!r:.60}")
    dataset = PreEncodedDataset(
        sources, latent_crop_length=optional_positive(dataset_config, "latent_crop_length", integer=True),
        min_length_sec=optional_positive(dataset_config, "min_length_sec"),
        max_length_sec=optional_positive(dataset_config, "max_length_sec"),
        random_crop=get_bool(dataset_config, "random_crop", False, ""), latent_extension=extension)
    used_sources = set(dataset._file_source)
    for index, source in enumerate(sources):
        if index not in used_sources:
            raise ConfigError(f"datasets[{index}].path", f"no .{dataset.latent_extension} latent files found under "
                              f"'{source.path}'", "run pre_encode.py with --output-path pointing there first")
    drop_last = get_bool(dataset_config, "drop_last", True, "")
    return make_dataloader(dataset, batch_size, shuffle, num_workers, drop_last, noun="latent files")
