"""WebDataset loaders (``dataset_type: "wds"``, or ``"s3"`` for backwards compatibility), see
docs/data_formats.md#webdataset-shards-wds--s3.

Sources are directories of local ``.tar`` shards (``path``) or S3 prefixes (``s3_path``, optional
``profile``). S3 shards are listed with ``aws s3 ls`` and streamed through ``pipe:aws s3 cp <url> -``
exactly like upstream, so the `aws` command-line tool (``pip install awscli``, or AWS CLI v2) must be on
``PATH``; it honours the usual AWS environment (``AWS_PROFILE``, ``AWS_ENDPOINT_URL``...).

Differences from upstream: see docs/compatibility.md#stable_audio_toolsdatawebdataset.
"""
from __future__ import annotations

import io
import logging
import os
import posixpath
import random
import re
import shlex
import shutil
import subprocess
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import ConfigError, get_bool, get_positive, require, require_mapping, warn_unknown_keys
from .sources import MetadataFn, collation_fn, fast_scandir, load_custom_metadata_fn
from .pre_encoded import crop_pre_encoded, latent_frame_seconds
from .skips import (BAD_LATENTS, BAD_METADATA, LOAD_ERROR, NO_AUDIO, NON_FINITE, REJECTED, SILENT, SkipRecord,
                    SkipReportingDataLoader, UnusableItem, attach_skips, check_audio)
from .utils import (AudioDecodeError, Mono, PadCrop_Normalized_T, PhaseFlipper, Stereo, VolumeNorm, is_silence,
                    load_audio, remove_long_silence, resample)

__all__ = [
    "AUDIO_KEYS",
    "AwsCliNotFoundError",
    "S3AccessError",
    "require_aws_cli",
    "get_s3_contents",
    "get_all_s3_urls",
    "S3DatasetConfig",
    "LocalWebDatasetConfig",
    "log_and_continue",
    "audio_decoder",
    "npy_decoder",
    "sample_skip",
    "is_valid_sample",
    "WebDatasetDataLoader",
    "create_webdataset_dataloader",
]

logger = logging.getLogger(__name__)

AUDIO_KEYS: Tuple[str, ...] = ("flac", "wav", "mp3", "m4a", "ogg", "opus", "aiff", "aif")
"""Sample keys (file extensions inside a shard) that hold audio."""

MAX_CONSECUTIVE_SHARD_ERRORS = 32
_LS_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(\d+)\s+(.*)$")


class AwsCliNotFoundError(FileNotFoundError):
    """The ``aws`` command-line tool, needed for ``s3_path`` sources, is not installed."""


class S3AccessError(OSError):
    """An S3 prefix could not be listed (missing bucket, credentials, endpoint...)."""


def require_aws_cli() -> str:
    """Path of the ``aws`` executable; raises :class:`AwsCliNotFoundError` saying how to install it."""
    aws = shutil.which("aws")
    if aws is None:
        raise AwsCliNotFoundError(
            "the AWS command-line tool 'aws' is needed to list and stream s3_path WebDataset sources but it is not on "
            "PATH; install it with `pip install awscli` (or AWS CLI v2), or copy the shards to a local directory and "
            "use \"path\" instead of \"s3_path\"")
    return aws


def _access_hint(profile: Optional[str]) -> str:
    credentials = f"profile '{profile}'" if profile else "`aws configure`, AWS_PROFILE or AWS_ACCESS_KEY_ID / " \
                                                          "AWS_SECRET_ACCESS_KEY"
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    where = f"the endpoint {endpoint} (AWS_ENDPOINT_URL)" if endpoint else "the network connection to S3"
    return f"check that the bucket and prefix exist, the credentials ({credentials}) and {where}"


def get_s3_contents(dataset_path: str, s3_url_prefix: Optional[str] = None, filter: str = "",
                    recursive: bool = True, profile: Optional[str] = None) -> List[str]:
    """Full ``s3://bucket/key`` URLs of the objects under ``dataset_path`` (listed with ``aws s3 ls``).

    ``s3_url_prefix`` is joined in front of ``dataset_path``; only names containing ``filter`` are
    kept. Raises :class:`AwsCliNotFoundError` without the CLI and :class:`S3AccessError` when the
    listing fails. An existing prefix without objects gives an empty list.
    """
    aws = require_aws_cli()
    if dataset_path and not dataset_path.endswith("/"):
        dataset_path += "/"
    bucket_path = posixpath.join(s3_url_prefix or "", dataset_path)
    if not bucket_path.startswith("s3://"):
        raise ValueError(f"expected an s3:// URL, got '{bucket_path}'")
    bucket = bucket_path[len("s3://"):].split("/", 1)[0]
    cmd = [aws, "s3", "ls", bucket_path]
    if profile is not None:
        cmd += ["--profile", profile]
    if recursive:
        cmd.append("--recursive")
    logger.info("Listing %s with the aws CLI", bucket_path)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    stderr = proc.stderr.strip()
    if proc.returncode != 0 and not (proc.returncode == 1 and not stderr and not proc.stdout.strip()):
        raise S3AccessError(f"listing {bucket_path} failed (`aws s3 ls` exit status {proc.returncode}: "
                            f"{stderr[-600:] or 'no message'}); {_access_hint(profile)}")
    urls = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        match = _LS_LINE.match(line)
        if not match or line.endswith("/"):
            continue  # "PRE subdir/" entries and directory markers
        name = match.group(4)
        url = f"s3://{bucket}/{name}" if recursive else bucket_path + name
        if filter in name:
            urls.append(url)
    return urls


def _s3_pipe_url(s3_url: str, profile: Optional[str]) -> str:
    url = f"pipe:aws s3 --cli-connect-timeout 0 cp {shlex.quote(s3_url)} -"
    if profile:
        url += f" --profile {shlex.quote(profile)}"
    return url


def get_all_s3_urls(names: Sequence[str] = (), subsets: Sequence[str] = ("",), s3_url_prefix: Optional[str] = None,
                    recursive: bool = True, filter_str: str = "tar",
                    profiles: Optional[Mapping[str, str]] = None) -> List[str]:
    """``pipe:aws s3 cp ... -`` URLs of every shard (name containing ``filter_str``) under each name/subset."""
    profiles = profiles or {}
    urls = []
    for name in names:
        root = name if s3_url_prefix is None else posixpath.join(s3_url_prefix, name)
        for subset in subsets:
            profile = profiles.get(name)
            for s3_url in get_s3_contents(posixpath.join(root, subset), recursive=recursive, filter=filter_str,
                                          profile=profile):
                urls.append(_s3_pipe_url(s3_url, profile))
    return urls


class S3DatasetConfig:
    """An S3 prefix of ``.tar`` shards; ``custom_metadata_fn(json, audio)`` applies to its samples."""

    def __init__(self, id: str, s3_path: str, custom_metadata_fn: Optional[MetadataFn] = None,
                 profile: Optional[str] = None) -> None:
        self.id = id
        self.path = s3_path
        self.custom_metadata_fn = custom_metadata_fn
        self.profile = profile
        self.urls: List[str] = []

    def load_data_urls(self) -> List[str]:
        """List the shards (``aws s3 ls``) and return their ``pipe:`` URLs."""
        self.urls = get_all_s3_urls(names=[self.path], recursive=True,
                                    profiles={self.path: self.profile} if self.profile else {})
        return self.urls


class LocalWebDatasetConfig:
    """A local directory of ``.tar`` shards (searched recursively)."""

    def __init__(self, id: str, path: str, custom_metadata_fn: Optional[MetadataFn] = None,
                 profile: Optional[str] = None) -> None:
        self.id = id
        self.path = path
        self.custom_metadata_fn = custom_metadata_fn
        self.profile = profile
        self.urls: List[str] = []

    def load_data_urls(self) -> List[str]:
        """All ``.tar`` files below the directory."""
        self.urls = fast_scandir(self.path, ["tar"])[1]
        return self.urls


WebDatasetSource = Union[S3DatasetConfig, LocalWebDatasetConfig]


def log_and_continue(exn: BaseException) -> bool:
    """WebDataset error handler: log the error and skip the sample."""
    logger.warning("Handling webdataset error (%r). Ignoring.", exn)
    return True


class _ShardErrorGuard:
    """Error handler for shard reading that gives up after too many consecutive failures.

    :meth:`watch` sits after the tar reader and resets the count on every sample read; a stream that
    ends with no sample read and at least one error also raises (every shard of a finite list failed).
    """

    def __init__(self, limit: int = MAX_CONSECUTIVE_SHARD_ERRORS) -> None:
        self.limit = limit
        self.consecutive = 0
        self.last_error: Optional[BaseException] = None

    def __call__(self, exn: BaseException) -> bool:
        log_and_continue(exn)
        self.consecutive += 1
        self.last_error = exn
        if self.consecutive >= self.limit:
            raise RuntimeError(self._message(f"{self.consecutive} shard reads in a row failed")) from exn
        return True

    def _message(self, what: str) -> str:
        hint = "for s3_path sources check that `aws` is installed (pip install awscli) and that the bucket is " \
               "reachable with the configured credentials/profile/AWS_ENDPOINT_URL; for local shards check the files"
        return f"WebDataset: {what}; last error: {self.last_error!r}; {hint}"

    def watch(self, src: Iterable[Dict[str, Any]]) -> Iterator[Dict[str, Any]]:
        read_any = False
        for sample in src:
            self.consecutive = 0
            read_any = True
            yield sample
        if not read_any and self.last_error is not None:
            raise RuntimeError(self._message("no shard of this worker could be read"))


class _Undecodable:
    """What the decoders store for a member that cannot be decoded; the preprocessor turns it into a skip."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def audio_decoder(key: str, value: bytes) -> Optional[Union[Tuple[torch.Tensor, int], _Undecodable]]:
    """Decode ``value`` to ``(audio [C, T], sample_rate)`` when ``key`` ends with an audio extension (a marker
    that makes the sample be skipped as "undecodable" when libsndfile cannot read it)."""
    if key.split(".")[-1].lower() not in AUDIO_KEYS:
        return None
    try:
        return load_audio(io.BytesIO(value))
    except AudioDecodeError as err:
        return _Undecodable(err.reason, f"member '{key}': {err}")


def npy_decoder(key: str, value: bytes) -> Optional[Union[np.ndarray, _Undecodable]]:
    """Decode ``.npy`` entries (pre-encoded latents; a "bad latents" marker when they cannot be read)."""
    if key.split(".")[-1].lower() != "npy":
        return None
    try:
        return np.lib.format.read_array(io.BytesIO(value), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        return _Undecodable(BAD_LATENTS, f"member '{key}': {err}")


def sample_skip(sample: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
    """``(reason, detail)`` when a preprocessed sample cannot be used: no JSON, no audio, silent (-60 dBFS;
    not for pre-encoded latents) or ``__reject__``-ed; else None."""
    if "json" not in sample or not isinstance(sample["json"], Mapping):
        return BAD_METADATA, "the sample has no JSON object"
    if "audio" not in sample:
        return NO_AUDIO, "the sample has no audio member"
    if not sample.get("__pre_encoded__", False) and is_silence(sample["audio"]):
        return SILENT, "the chunk is silent (peak below -60 dBFS)"
    if sample["json"].get("__reject__", False):
        return REJECTED, "a custom metadata function returned __reject__"
    return None


def is_valid_sample(sample: Mapping[str, Any]) -> bool:
    """Has ``json`` and ``audio``, is not silent (unless pre-encoded) and not ``__reject__``-ed."""
    return sample_skip(sample) is None


def _sample_name(sample: Mapping[str, Any]) -> str:
    return f"{sample.get('__url__', '?')}#{sample.get('__key__', '?')}"


class _SkipTracker:
    """Pipeline stage: drops unusable samples, logs each one once per process and attaches their skip records to
    the next usable sample. It holds one usable sample back, so that the records of skips after the last usable
    sample of a worker's stream ride on that one (only a stream without any usable sample loses its records)."""

    def __init__(self) -> None:
        self._warned: set = set()

    def __call__(self, src: Iterable[Dict[str, Any]]) -> Iterator[Dict[str, Any]]:
        pending: List[SkipRecord] = []
        held: Optional[Dict[str, Any]] = None
        for sample in src:
            record = sample.pop("__skip__", None)
            if record is None:
                problem = sample_skip(sample)
                record = SkipRecord(_sample_name(sample), *problem) if problem else None
            if record is not None:
                if record.path not in self._warned:
                    self._warned.add(record.path)
                    logger.warning("Skipping WebDataset sample '%s': %s", record.path, record)
                pending.append(record)
                continue
            if held is not None:
                yield held
            attach_skips(sample["json"], pending)
            pending = []
            held = sample
        if held is not None:
            attach_skips(held["json"], pending)
            yield held


def _worker_init_fn(worker_id: int) -> None:
    torch.multiprocessing.set_sharing_strategy("file_system")


def _as_is(batch: Any) -> Any:
    """The DataLoader's per-item hook: keep the pipeline's batches exactly (no tuple -> list conversion)."""
    return batch


class _Preprocessor:
    """The per-sample transform of :class:`WebDatasetDataLoader` (a plain picklable object)."""

    def __init__(self, datasets: Sequence[WebDatasetSource], sample_size: Optional[int], sample_rate: int,
                 random_crop: bool, force_channels: str, augment_phase: bool, remove_silence: bool,
                 silence_threshold: Sequence[float], max_silence_duration: float, volume_norm: bool,
                 volume_norm_param: Sequence[float], pre_encoded: bool, latent_crop_length: Optional[int]) -> None:
        self.metadata_fns = [(d.path, d.custom_metadata_fn) for d in datasets if d.custom_metadata_fn is not None]
        self.sample_size = sample_size
        self.sample_rate = sample_rate
        self.random_crop = random_crop
        self.augment_phase = augment_phase
        self.remove_silence = remove_silence
        self.silence_threshold = tuple(silence_threshold)
        self.max_silence_duration = max_silence_duration
        self.pre_encoded = pre_encoded
        self.latent_crop_length = latent_crop_length
        self.channel_op = Stereo() if force_channels == "stereo" else Mono() if force_channels == "mono" else None
        self.volume_norm = VolumeNorm(volume_norm_param, sample_rate) if volume_norm else None
        self.phase_flipper = PhaseFlipper()

    def __call__(self, sample: Dict[str, Any]) -> Dict[str, Any]:
        """The preprocessed sample; an unusable one gets a ``__skip__`` record instead (never raises)."""
        try:
            return self._process(sample)
        except UnusableItem as skip:
            sample["__skip__"] = SkipRecord(_sample_name(sample), skip.reason, skip.detail)
        except Exception as err:  # a broken sample (or metadata function) must not end the stream
            sample["__skip__"] = SkipRecord(_sample_name(sample), LOAD_ERROR, f"{type(err).__name__}: {err}")
        return sample

    def _process(self, sample: Dict[str, Any]) -> Dict[str, Any]:
        rng = random.Random(int(torch.randint(0, 2 ** 62, ()).item()))
        info = sample.get("json")
        if not isinstance(info, dict):
            raise UnusableItem(BAD_METADATA, "the sample has no JSON object")
        audio = self._latents(sample, info, rng) if self.pre_encoded else self._audio(sample, info, rng)
        if "text" in info:
            info["prompt"] = info["text"]
        url = sample.get("__url__", "")
        for path, fn in self.metadata_fns:
            if path in url:
                info.update(fn(info, audio))
        sample["audio"] = audio
        info["audio"] = audio
        return sample

    def _latents(self, sample: Dict[str, Any], info: Dict[str, Any], rng: random.Random) -> torch.Tensor:
        key = next((k for k in sample if not k.startswith("__") and k.endswith("npy")), None)
        if key is None:
            raise UnusableItem(NO_AUDIO, "the sample has no npy member")
        value = sample.pop(key)
        if isinstance(value, _Undecodable):
            raise UnusableItem(value.reason, value.detail)
        latents = torch.from_numpy(np.asarray(value))
        if latents.is_floating_point() and not bool(torch.isfinite(latents).all()):
            raise UnusableItem(NON_FINITE, f"member '{key}': latents hold NaN or infinite values")
        sample["__pre_encoded__"] = True
        if self.latent_crop_length is not None:
            uncropped = len(info["padding_mask"]) if "padding_mask" in info else latents.shape[-1]
            latents, _ = crop_pre_encoded(latents, info, self.latent_crop_length, self.random_crop, rng,
                                          latent_frame_seconds(info, None, uncropped))
        info["padding_mask"] = torch.tensor(info.get("padding_mask", [1] * latents.shape[-1]))
        return latents

    def _audio(self, sample: Dict[str, Any], info: Dict[str, Any], rng: random.Random) -> torch.Tensor:
        key = next((k for k in sample if not k.startswith("__") and k.endswith(AUDIO_KEYS)), None)
        if key is None:
            raise UnusableItem(NO_AUDIO, "the sample has no audio member")
        value = sample.pop(key)
        if isinstance(value, _Undecodable):
            raise UnusableItem(value.reason, value.detail)
        audio, in_sr = value
        check_audio(audio, in_sr)
        audio = resample(audio, in_sr, self.sample_rate)
        if audio.shape[0] == 1 and self.remove_silence:
            audio = remove_long_silence(audio, self.sample_rate, self.silence_threshold, self.max_silence_duration,
                                        rng=rng)
        t_start, t_end = 0.0, 1.0
        if self.sample_size is not None:
            pad_crop = PadCrop_Normalized_T(self.sample_size, self.sample_rate, randomize=self.random_crop)
            audio, t_start, t_end, seconds_start, seconds_total, padding_mask = pad_crop(audio, rng)
            info["seconds_start"] = seconds_start
            info["seconds_total"] = seconds_total
            info["padding_mask"] = padding_mask
        if self.channel_op is not None:
            audio = self.channel_op(audio)
        if self.volume_norm is not None:
            audio = self.volume_norm(audio, rng)
        if self.augment_phase:
            audio = self.phase_flipper(audio, rng)
        info["timestamps"] = (t_start, t_end)
        return audio


class WebDatasetDataLoader:
    """WebDataset pipeline over local or S3 shards; the loader is :attr:`data_loader`.

    Pipeline: shard list (resampled with replacement, or each shard once split between processes and
    workers) -> tar reading -> decoding (audio via soundfile, or ``.npy`` latents when
    ``pre_encoded``) -> preprocessing (resample, silence collapsing for mono, pad/crop with timing
    metadata, channels, volume normalisation, phase flip; or latent crop) -> validity filter ->
    ``(audio, json)`` -> batches of ``batch_size`` (incomplete batches dropped). With
    ``resampled_shards`` an epoch is ``epoch_steps`` batches (split between workers).
    Extra keyword arguments go to the ``torch.utils.data.DataLoader``.
    """

    def __init__(self, datasets: Sequence[WebDatasetSource], batch_size: int, sample_size: Optional[int],
                 sample_rate: int = 48000, num_workers: int = 8, epoch_steps: int = 1000, random_crop: bool = True,
                 force_channels: str = "stereo", augment_phase: bool = True, remove_silence: bool = True,
                 silence_threshold: Sequence[float] = (0.01, 0.5), max_silence_duration: float = 0.2,
                 volume_norm: bool = False, volume_norm_param: Sequence[float] = (-16, 2), pre_encoded: bool = False,
                 latent_crop_length: Optional[int] = None, resampled_shards: bool = True,
                 **data_loader_kwargs: Any) -> None:
        import webdataset as wds

        self.datasets = list(datasets)
        self.pre_encoded = pre_encoded
        urls = [url for dataset in self.datasets for url in (dataset.urls or dataset.load_data_urls())]
        if not urls:
            raise ValueError("no WebDataset shards (.tar) found in any source: "
                             + ", ".join(d.path for d in self.datasets))
        random.shuffle(urls)
        self.urls = urls
        self.preprocess = _Preprocessor(self.datasets, sample_size, sample_rate, random_crop, force_channels,
                                        augment_phase, remove_silence, silence_threshold, max_silence_duration,
                                        volume_norm, volume_norm_param, pre_encoded, latent_crop_length)
        guard = _ShardErrorGuard()
        stages: List[Any] = [wds.ResampledShards(urls) if resampled_shards else wds.SimpleShardList(urls)]
        if not resampled_shards:
            stages += [wds.split_by_node, wds.split_by_worker]
        stages += [
            wds.tarfile_to_samples(handler=guard),
            guard.watch,
            wds.decode(npy_decoder if pre_encoded else audio_decoder, handler=log_and_continue),
            wds.map(self.preprocess, handler=log_and_continue),
            _SkipTracker(),
            wds.to_tuple("audio", "json", handler=log_and_continue),
            wds.batched(batch_size, partial=False, collation_fn=collation_fn),
        ]
        self.dataset = wds.DataPipeline(*stages)
        if resampled_shards:
            self.dataset = self.dataset.with_epoch(max(1, epoch_steps // num_workers) if num_workers > 0
                                                   else epoch_steps)
        data_loader_kwargs.setdefault("persistent_workers", num_workers > 0)
        data_loader_kwargs.setdefault("pin_memory", torch.cuda.is_available())
        self.dataset.skip_action = "left out of the stream"
        self.data_loader = SkipReportingDataLoader(self.dataset, batch_size=None, num_workers=num_workers,
                                                   collate_fn=_as_is, worker_init_fn=_worker_init_fn,
                                                   **data_loader_kwargs)


_WDS_KEYS = ("dataset_type", "datasets", "random_crop", "drop_last", "remove_silence", "silence_threshold",
             "max_silence_duration", "volume_norm", "volume_norm_param", "epoch_steps", "pre_encoded",
             "latent_crop_length", "resampled_shards")


def _pair(cfg: Mapping, key: str, default: Sequence[float]) -> Tuple[float, float]:
    value = cfg.get(key, list(default))
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ConfigError(key, f"expected a list of two numbers, got {value!r:.60}")
    return float(value[0]), float(value[1])


def _parse_wds_sources(dataset_config: Mapping) -> List[WebDatasetSource]:
    sources = require(dataset_config, "datasets", "", "a list of sources such as [{\"id\": \"shards\", \"s3_path\": "
                      "\"s3://bucket/prefix/\"}] or [{\"id\": \"shards\", \"path\": \"/local/shards\"}]",
                      types=(list, tuple))
    if not sources:
        raise ConfigError("datasets", "is empty", "add a source with \"s3_path\" or \"path\"")
    configs: List[WebDatasetSource] = []
    for index, source in enumerate(sources):
        path = f"datasets[{index}]"
        require_mapping(source, path)
        warn_unknown_keys(source, ("id", "path", "s3_path", "profile", "custom_metadata_module"), path)
        if ("s3_path" in source) == ("path" in source):
            raise ConfigError(path, "needs exactly one of \"s3_path\" (an s3:// prefix) or \"path\" (a local "
                              "directory of .tar shards)")
        metadata_fn = None
        if source.get("custom_metadata_module") is not None:
            metadata_fn = load_custom_metadata_fn(source["custom_metadata_module"], f"{path}.custom_metadata_module")
        profile = source.get("profile")
        if profile is not None and not isinstance(profile, str):
            raise ConfigError(f"{path}.profile", f"expected an AWS profile name, got {profile!r:.60}")
        source_id = str(source.get("id", index))
        if "s3_path" in source:
            s3_path = source["s3_path"]
            if not isinstance(s3_path, str) or not s3_path.startswith("s3://"):
                raise ConfigError(f"{path}.s3_path", f"expected an s3://bucket/prefix URL, got {s3_path!r:.60}")
            configs.append(S3DatasetConfig(source_id, s3_path, metadata_fn, profile))
        else:
            directory = source["path"]
            if not isinstance(directory, str) or not os.path.isdir(directory):
                raise ConfigError(f"{path}.path", f"'{directory}' is not an existing directory",
                                  "point it at a directory holding .tar shards")
            configs.append(LocalWebDatasetConfig(source_id, directory, metadata_fn, profile))
    return configs


def create_webdataset_dataloader(dataset_config: Mapping, batch_size: int, sample_size: int, sample_rate: int,
                                 force_channels: str, num_workers: int, shuffle: bool) -> DataLoader:
    """The DataLoader of an ``s3``/``wds`` dataset config (``shuffle`` is unused: shards are shuffled)."""
    warn_unknown_keys(dataset_config, _WDS_KEYS, "")
    sources = _parse_wds_sources(dataset_config)
    if any(isinstance(s, S3DatasetConfig) for s in sources):
        require_aws_cli()
    for index, source in enumerate(sources):
        if not source.load_data_urls():
            s3 = isinstance(source, S3DatasetConfig)
            raise ConfigError(f"datasets[{index}].{'s3_path' if s3 else 'path'}",
                              f"no .tar shards found under '{source.path}'",
                              _access_hint(source.profile) if s3 else "write WebDataset shards there (e.g. with "
                                                                      "webdataset.TarWriter)")
    return WebDatasetDataLoader(
        sources, batch_size=batch_size, sample_size=sample_size, sample_rate=sample_rate, num_workers=num_workers,
        epoch_steps=get_positive(dataset_config, "epoch_steps", 2000, "", integer=True),
        random_crop=get_bool(dataset_config, "random_crop", True, ""),
        force_channels=force_channels,
        remove_silence=get_bool(dataset_config, "remove_silence", False, ""),
        silence_threshold=_pair(dataset_config, "silence_threshold", (0.01, 0.5)),
        max_silence_duration=get_positive(dataset_config, "max_silence_duration", 0.25, "", integer=False),
        volume_norm=get_bool(dataset_config, "volume_norm", False, ""),
        volume_norm_param=_pair(dataset_config, "volume_norm_param", (-16, 2)),
        pre_encoded=get_bool(dataset_config, "pre_encoded", False, ""),
        latent_crop_length=get_positive(dataset_config, "latent_crop_length", None, "", integer=True),
        resampled_shards=get_bool(dataset_config, "resampled_shards", True, ""),
    ).data_loader
