"""Pre-encoded latents (``dataset_type: "pre_encoded"``): the dataset that reads ``pre_encode.py``'s output.

Layout (SPEC 1.4 / 7.4): ``<root>/<rank>/<13-digit id>.npy`` holds one item's latents ``[C, L]`` (or
tokens ``[n_q, L]``), ``<id>.json`` beside it the item's metadata with a latent-rate ``padding_mask``
(0/1 list of length ``L``). ``<root>/filelist.txt``, when present, lists the latent files (relative
paths, one per line) instead of scanning.

Differences from upstream, all deliberate:

* A random latent crop updates ``seconds_start`` (upstream kept the uncropped start, so timing
  conditioning saw the wrong offset; upstream PR 219). The latent frame rate comes from the item
  JSON (``sample_rate`` and ``downsampling_ratio``, both written by our ``pre_encode.py``) or, for
  older data, from ``<root>/details.json`` (``sample_size`` / uncropped latent length) and the item's
  ``sample_rate``. Without either, ``seconds_start`` is left as it was and one warning says so.
* The crop window may end on the last real frame (upstream's window stopped one frame short), and
  latents shorter than ``latent_crop_length`` are zero-padded (padding mask 0) instead of producing
  batches that cannot be stacked.
* Broken items (missing JSON, unreadable ``.npy``) are skipped with one warning each and replaced;
  when no item can be used, or every item is filtered out, a ``RuntimeError`` says why instead of
  recursing forever.
* ``latent_crop_length`` placed inside a ``datasets`` entry (as upstream's docs once showed) is
  reported with a warning naming the top-level key that is read.
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
from torch.utils.data import DataLoader, Dataset

from ..models.config import ConfigError, ConfigWarning, warn_unknown_keys
from .dataset import LocalDatasetConfig, _is_within, _require_bool, collation_fn, fast_scandir, parse_local_sources

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


class _UnusableLatents(Exception):
    """A latent file or its metadata can never be loaded."""


class PreEncodedDataset(Dataset):
    """Latents written by ``pre_encode.py`` (SPEC 7.4).

    Args:
        configs: sources (:class:`~stable_audio_tools.data.dataset.LocalDatasetConfig`; their
            ``custom_metadata_fn(info, None)`` applies to files below their path).
        latent_crop_length: crop every item to this many latent frames (see :func:`crop_pre_encoded`).
        min_length_sec / max_length_sec: items whose ``seconds_total`` lies outside are replaced.
        random_crop: random crop offset inside the real region (else 0).
        latent_extension: latent file extension (``npy``).
        max_retries: replacement items one ``__getitem__`` may try before giving up.

    Items are ``(latents [C, L], info)``: ``info`` is the JSON metadata plus ``latent_filename``,
    ``padding_mask`` as a 1-element list holding a tensor (upstream's convention), ``audio`` (the
    latents) and, with a crop, ``latent_crop_length``/``latent_crop_start``. Metadata functions may
    return ``__reject__`` (replace the item) or ``__replace__`` (a tensor that replaces the latents).
    """

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
        self.max_retries = max_retries
        self._abs_roots = [os.path.abspath(s.path) for s in self.sources]
        self._details = [_read_details(s.path) for s in self.sources]
        self.filenames: List[str] = []
        self._file_source: List[int] = []
        for index, source in enumerate(self.sources):
            found = get_latent_filenames(source.path, [self.latent_extension])
            self.filenames.extend(found)
            self._file_source.extend([index] * len(found))
        self._num_unique_files = len(set(self.filenames))
        self.bad_files: Dict[str, str] = {}
        self._warned_unknown_rate = False
        logger.info("Found %d files", len(self.filenames))

    def __len__(self) -> int:
        return len(self.filenames)

    def __getitem__(self, idx: int) -> Tuple[torch.Tensor, Dict[str, Any]]:
        rng = random.Random(int(torch.randint(0, 2 ** 62, ()).item()))
        return self.get_item(idx, rng)

    def get_item(self, idx: int, rng: random.Random) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """Item ``idx`` (or a replacement) with every random choice drawn from ``rng``."""
        counts = {"rejected": 0, "too_short": 0, "too_long": 0}
        for _ in range(self.max_retries + 1):
            path = self.filenames[idx]
            if path not in self.bad_files:
                try:
                    item = self._load_item(idx, rng)
                except Exception as err:  # any failure: skip this file for good, use another
                    reason = str(err) if isinstance(err, _UnusableLatents) else f"{type(err).__name__}: {err}"
                    self.bad_files[path] = reason
                    logger.warning("Skipping pre-encoded file '%s': %s", path, reason)
                else:
                    if isinstance(item, tuple):
                        return item
                    counts[item] += 1
            if len(self.bad_files) >= self._num_unique_files:
                raise RuntimeError(f"all {len(self.bad_files)} pre-encoded files are unusable, e.g. "
                                   f"{next(iter(self.bad_files.items()))}; check the dataset paths")
            idx = rng.randrange(len(self.filenames))
        raise RuntimeError(
            f"no usable pre-encoded item after {self.max_retries} retries ({counts['rejected']} rejected by a custom "
            f"metadata function, {counts['too_short']} shorter than min_length_sec={self.min_length_sec}, "
            f"{counts['too_long']} longer than max_length_sec={self.max_length_sec}); check the length filters")

    def _load_item(self, idx: int, rng: random.Random) -> Union[Tuple[torch.Tensor, Dict[str, Any]], str]:
        latent_filename = self.filenames[idx]
        source = self._file_source[idx]
        try:
            latents = torch.from_numpy(np.load(latent_filename))
        except (OSError, ValueError) as err:
            raise _UnusableLatents(f"cannot read latents: {err}") from err
        if latents.dim() != 2:
            raise _UnusableLatents(f"expected latents shaped [channels, frames], got {tuple(latents.shape)}")
        md_filename = latent_filename[:-len(self.latent_extension)] + "json"
        try:
            with open(md_filename, encoding="utf-8") as f:
                info = json.load(f)
        except (OSError, ValueError) as err:
            raise _UnusableLatents(f"cannot read its metadata file '{md_filename}': {err}") from err
        if not isinstance(info, dict):
            raise _UnusableLatents(f"metadata file '{md_filename}' does not hold a JSON object")
        info["latent_filename"] = latent_filename

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

        seconds_total = info.get("seconds_total")
        if self.min_length_sec is not None or self.max_length_sec is not None:
            if not isinstance(seconds_total, (int, float)):
                raise _UnusableLatents("min_length_sec/max_length_sec need 'seconds_total' in the metadata")
            if self.min_length_sec is not None and seconds_total < self.min_length_sec:
                return "too_short"
            if self.max_length_sec is not None and seconds_total > self.max_length_sec:
                return "too_long"

        for source_cfg, root in zip(self.sources, self._abs_roots):
            fn = source_cfg.custom_metadata_fn
            if fn is None or not _is_within(os.path.abspath(latent_filename), root):
                continue
            custom = fn(info, None)
            if not isinstance(custom, Mapping):
                raise TypeError(f"get_custom_metadata must return a dict, got {type(custom).__name__}")
            info.update(custom)
            if info.get("__reject__"):
                return "rejected"
            replacement = info.pop("__replace__", None)
            if replacement is not None:
                latents = replacement if isinstance(replacement, torch.Tensor) else torch.as_tensor(replacement)
        info["audio"] = latents
        return latents, info


def _optional_number(cfg: Mapping, key: str, integer: bool = False) -> Optional[Union[int, float]]:
    value = cfg.get(key)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        raise ConfigError(key, f"expected a positive {'integer' if integer else 'number'} or null, got {value!r:.60}")
    return value


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
        sources, latent_crop_length=_optional_number(dataset_config, "latent_crop_length", integer=True),
        min_length_sec=_optional_number(dataset_config, "min_length_sec"),
        max_length_sec=_optional_number(dataset_config, "max_length_sec"),
        random_crop=_require_bool(dataset_config, "random_crop", False, "random_crop"), latent_extension=extension)
    used_sources = set(dataset._file_source)
    for index, source in enumerate(sources):
        if index not in used_sources:
            raise ConfigError(f"datasets[{index}].path", f"no .{dataset.latent_extension} latent files found under "
                              f"'{source.path}'", "run pre_encode.py with --output-path pointing there first")
    drop_last = _require_bool(dataset_config, "drop_last", True, "drop_last")
    if drop_last and len(dataset) < batch_size:
        warnings.warn(f"the dataset has {len(dataset)} latent files but batch_size is {batch_size} and drop_last is "
                      f"on, so an epoch has no batches; lower the batch size or set \"drop_last\": false", stacklevel=3)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available(),
                      drop_last=drop_last, collate_fn=collation_fn)
