"""Pre-encoding an audio dataset into autoencoder latents: the LightningModule behind ``pre_encode.py``.

Output layout (upstream's): ``<output>/details.json`` and, per process (global rank ``r``),
``<output>/<r>/<id>.npy`` (latents ``[C, L]`` or tokens ``[n_q, L]``, codebook-major for every bottleneck)
with ``<id>.json`` (the item's metadata, ``padding_mask`` resized to ``L`` frames);
``id = f"{r:03d}{batch:06d}{item:04d}"``; ``<output>/skipped_<r>.json`` lists what process ``r`` skipped.

Differences from upstream: see docs/compatibility.md#stable_audio_toolstrainingpre_encode.
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from ..data.dataset import collation_fn
from ..data.skips import SKIPPED_KEY, SkippingDataset, SkipTally, UnusableItem
from ..models.bottleneck import DitheredFSQBottleneck, RVQBottleneck, RVQVAEBottleneck, VAEBottleneck
from ..models.utils import MISMATCH_HINT, CheckpointMismatchError, state_dict_problems

__all__ = [
    "CheckpointMismatchError",
    "fit_state_dict",
    "SKIPPED_FILE",
    "PreEncodeSampler",
    "PreEncodedLatentsInferenceWrapper",
    "encode_latents",
    "latent_id",
]

log = logging.getLogger(__name__)

Key = Tuple[int, int, int]  # (batch index, position in batch, dataset index)

SKIPPED_FILE = "skipped_{rank}.json"
"""Written to ``<output>/`` by every process of every run (``{rank}`` is its global rank): the files it skipped,
with reasons and counts."""
ALREADY_WRITTEN = "already written"

def latent_id(rank: int, batch: int, item: int) -> str:
    """Upstream's 13-digit file id: 3 digits of rank, 6 of batch index, 4 of position in the batch."""
    return f"{rank:03d}{batch:06d}{item:04d}"


class PreEncodeSampler(Sampler[List[Key]]):
    """Batches of one process, minus the items already written.

    The dataset order is ``range(num_items)`` (shuffled with ``seed`` when ``shuffle``); process
    ``rank`` of ``world_size`` takes every ``world_size``-th item starting at ``rank`` and cuts its
    share into batches of ``batch_size``; only the first ``limit_batches`` batches are used. Each
    yielded batch lists ``(batch index, position, dataset index)`` of the items ``is_done`` reports
    missing; fully written batches are not yielded at all.
    """

    def __init__(self, num_items: int, batch_size: int, rank: int = 0, world_size: int = 1, shuffle: bool = False,
                 seed: int = 0, limit_batches: Optional[int] = None,
                 is_done: Optional[Callable[[int, int], bool]] = None) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        order = list(range(num_items))
        if shuffle:
            random.Random(seed).shuffle(order)
        mine = order[rank::world_size]
        n_batches = (len(mine) + batch_size - 1) // batch_size
        if limit_batches is not None:
            n_batches = min(n_batches, limit_batches)
        self.assigned = 0
        self.batches: List[List[Key]] = []
        for b in range(n_batches):
            chunk = mine[b * batch_size:(b + 1) * batch_size]
            self.assigned += len(chunk)
            todo = [(b, i, idx) for i, idx in enumerate(chunk) if is_done is None or not is_done(b, i)]
            if todo:
                self.batches.append(todo)
        self.pending = sum(len(batch) for batch in self.batches)

    def __iter__(self) -> Iterator[List[Key]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _KeyedDataset(Dataset):
    """``dataset[idx]`` itself (never a replacement) plus the ``(batch, position)`` the item is written under.

    Datasets with ``load_exact`` (the local ones) report an unusable item as ``(None, SkipRecord, key)``.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> Tuple[Any, ...]:
        load_exact = getattr(self.dataset, "load_exact", None)
        if load_exact is None:
            audio, info = self.dataset[key[2]]
            return audio, info, (key[0], key[1])
        try:
            audio, info = load_exact(key[2], SkippingDataset.item_rng())
        except UnusableItem as skip:
            return None, skip.record, (key[0], key[1])
        return audio, info, (key[0], key[1])


def _collate_keyed(items: Sequence[Tuple[Any, ...]]) -> List[Any]:
    """``[audio [B, C, T] or None, (info, ...), (key, ...), [SkipRecord, ...]]`` of the usable items."""
    usable = [item for item in items if item[0] is not None]
    skipped = [item[1] for item in items if item[0] is None]
    if not usable:
        return [None, (), (), skipped]
    return [*collation_fn(usable), skipped]


def encode_latents(model: nn.Module, audio: torch.Tensor, is_discrete: bool = False,
                   vae_mean: bool = False) -> Tuple[torch.Tensor, int]:
    """What pre-encoding stores for ``audio [B, C, T]``, and the number of latent frames.

    Continuous: ``model.encode(audio)`` (a VAE *samples*), or with ``vae_mean`` the posterior mean (the
    first half of the encoder's channels, before the bottleneck). Discrete: the bottleneck's token
    tensor ``info[model.bottleneck.tokens_id]``, always stored codebook-major ``[B, Q, L]`` (rvq and
    dithered_fsq bottlenecks report ``[B, L, Q]``; upstream stored that as is, so latent crops cut codebooks).
    """
    if is_discrete:
        latents, info = model.encode(audio, return_info=True)
        tokens = info[model.bottleneck.tokens_id]
        if isinstance(model.bottleneck, (RVQBottleneck, RVQVAEBottleneck, DitheredFSQBottleneck)):
            tokens = tokens.transpose(1, 2)
        return tokens, latents.shape[-1]
    if vae_mean:
        latents = model.encode(audio, skip_bottleneck=True).chunk(2, dim=1)[0]
    else:
        latents = model.encode(audio)
    return latents, latents.shape[-1]


def _check_model(model: nn.Module, is_discrete: bool, vae_mean: bool) -> None:
    if not callable(getattr(model, "encode", None)):
        raise ValueError(f"pre-encoding needs a model with an encode() method (an autoencoder), got "
                         f"{type(model).__name__}")
    bottleneck = getattr(model, "bottleneck", None)
    if is_discrete and getattr(bottleneck, "tokens_id", None) is None:
        raise ValueError(f"--is-discrete needs a quantizing bottleneck (rvq, dac_rvq, fsq...), this model has "
                         f"{type(bottleneck).__name__}; drop --is-discrete to store continuous latents")
    if vae_mean and (is_discrete or not isinstance(bottleneck, VAEBottleneck)):
        raise ValueError(f"--vae-mean needs a model with a 'vae' bottleneck, this one has {type(bottleneck).__name__}")


def _candidate_prefixes(own: Mapping[str, torch.Tensor], checkpoint: Mapping[str, torch.Tensor]) -> List[str]:
    """``""`` and every prefix under which the checkpoint holds the model's first or last key."""
    keys = list(own)
    probes = {keys[0], keys[-1]} if keys else set()
    found = {c[:-len(k)] for c in checkpoint for k in probes if c.endswith(k) and c[:-len(k)].endswith(".")}
    return [""] + sorted(found)


def fit_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> Dict[str, torch.Tensor]:
    """The tensors of ``state_dict`` for ``model``: exactly the model's keys and shapes, either at the top level
    (an unwrapped autoencoder checkpoint) or under one prefix (e.g. ``pretransform.model.`` of an unwrapped latent
    diffusion model, whose other tensors are then ignored).

    Raises :class:`CheckpointMismatchError` naming the missing, unknown and mis-shaped keys otherwise (for the
    prefix that matches most tensors).
    """
    own = model.state_dict()
    best: Optional[Tuple[int, str, List[str]]] = None
    for prefix in _candidate_prefixes(own, state_dict):
        part = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        problems = state_dict_problems(own, part)
        if not problems:
            if prefix:
                log.info("%s: using the %d tensors under '%s' (the other %d are not part of the autoencoder)",
                         source, len(part), prefix, len(state_dict) - len(part))
            return part
        matched = sum(1 for k, v in part.items() if k in own and tuple(v.shape) == tuple(own[k].shape))
        if best is None or matched > best[0]:
            best = (matched, prefix, problems)
    assert best is not None
    matched, prefix, problems = best
    where = f" under the prefix '{prefix}'" if prefix else ""
    raise CheckpointMismatchError(
        f"{source} does not fit the model config: {'; '.join(problems)} ({matched} of {len(own)} model tensors "
        f"match{where}). {MISMATCH_HINT}")


def _to_json(value: Any, key: str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _to_json(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, key) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"metadata entry '{key}' ({type(value).__name__}) cannot be stored as JSON; make the custom "
                    f"metadata function return numbers, strings, lists, dicts or tensors")


def _write_atomic(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, mode) as f:
        write(f)
    os.replace(tmp, path)


class PreEncodedLatentsInferenceWrapper(pl.LightningModule):
    """Runs under ``trainer.validate``: encodes every batch and writes one ``.npy``/``.json`` pair per item.

    Args:
        model: the autoencoder (eval mode, no grad; in float16 when ``model_half``).
        output_path: output directory.
        is_discrete: store tokens instead of latents.
        model_half: the model runs in float16; audio is cast to it and latents are saved as float16.
        model_config / dataset_config: what ``details.json`` records (upstream stores the paths).
        sample_size: audio chunk length in samples (recorded in ``details.json``).
        args_dict: all command-line arguments (recorded in ``details.json``).
        data_loader: the dataset's loader. A map-style dataset is re-batched by
            :class:`PreEncodeSampler` (resumable); an iterable one (WebDataset) is used as it is,
            skipping batches whose files all exist (exact only when the stream is deterministic).
        limit_batches: at most this many batches per process (map-style datasets).
        shuffle / seed: shuffle the item order with this seed (fixed, so re-runs resume).
        vae_mean: store the VAE mean instead of a sample.
        progress: show a progress bar on rank 0.
    """

    def __init__(self, model: nn.Module, output_path: str, is_discrete: bool = False, model_half: bool = False,
                 model_config: Any = None, dataset_config: Any = None, sample_size: int = 1320960,
                 args_dict: Optional[Mapping[str, Any]] = None, data_loader: Optional[DataLoader] = None,
                 limit_batches: Optional[int] = None, shuffle: bool = False, seed: int = 0, vae_mean: bool = False,
                 progress: bool = True) -> None:
        super().__init__()
        _check_model(model, is_discrete, vae_mean)
        self.model = model
        self.output_path = Path(output_path)
        self.is_discrete = is_discrete
        self.model_half = model_half
        self.model_config = model_config
        self.dataset_config = dataset_config
        self.sample_size = sample_size
        self.args_dict = dict(args_dict or {})
        self.data_loader = data_loader
        self.limit_batches = limit_batches
        self.shuffle = shuffle
        self.seed = seed
        self.vae_mean = vae_mean
        self.progress = progress
        self.sample_rate = getattr(model, "sample_rate", None)
        self.stats: Dict[str, Any] = {"encoded": 0, "skipped": 0, "skip_reasons": {}, "audio_seconds": 0.0,
                                      "seconds": 0.0}
        self.unusable = SkipTally()
        self._already_written = 0
        self._finished = False
        self._existing: set = set()
        self._total: Optional[int] = None
        self._bar: Any = None
        self._start = 0.0

    # ------------------------------------------------------------------ layout
    @property
    def process_dir(self) -> Path:
        return self.output_path / str(self.global_rank)

    @property
    def skipped_path(self) -> Path:
        """``<output>/skipped_<rank>.json``: what this process skipped, and why."""
        return self.output_path / SKIPPED_FILE.format(rank=self.global_rank)

    def _is_map_style(self) -> bool:
        return self.data_loader is not None and not isinstance(self.data_loader.dataset, IterableDataset)

    def _done(self, batch: int, item: int) -> bool:
        name = latent_id(self.global_rank, batch, item)
        return f"{name}.json" in self._existing and f"{name}.npy" in self._existing

    def _layout(self) -> Dict[str, Any]:
        """What decides which item goes to which file, and what the files hold; a re-run must keep it."""
        layout = {"batch_size": getattr(self.data_loader, "batch_size", None), "sample_size": self.sample_size,
                  "shuffle": self.shuffle, "seed": self.seed, "is_discrete": self.is_discrete,
                  "model_half": self.model_half, "vae_mean": self.vae_mean, "world_size": self.trainer.world_size}
        if self._is_map_style():
            layout["num_items"] = len(self.data_loader.dataset)
        return layout

    def prepare_data(self) -> None:
        """Create the output directory and write ``details.json`` unless it exists (local rank 0)."""
        self.output_path.mkdir(parents=True, exist_ok=True)
        details_path = self.output_path / "details.json"
        if details_path.exists():
            return
        details = {"model_config": self.model_config, "dataset_config": self.dataset_config,
                   "sample_size": self.sample_size, "args": _to_json(self.args_dict, "args"),
                   "sample_rate": self.sample_rate, "layout": self._layout()}
        _write_atomic(details_path, lambda f: json.dump(details, f, indent=1), mode="w")

    def setup(self, stage: Optional[str] = None) -> None:
        """Create ``<output>/<rank>``, drop stale temporary files, refuse a re-run that changes the layout."""
        details_path = self.output_path / "details.json"
        if details_path.exists():
            with open(details_path, encoding="utf-8") as f:
                recorded = json.load(f).get("layout")
            if recorded is not None:
                current = _to_json(self._layout(), "layout")
                changed = {k: (recorded[k], current[k]) for k in current if k in recorded and recorded[k] != current[k]}
                if changed:
                    what = ", ".join(f"{k}: {old!r} before, {new!r} now" for k, (old, new) in changed.items())
                    raise ValueError(f"'{self.output_path}' holds a pre-encoding made with other settings ({what}); "
                                     f"re-run with the same settings to resume it, or choose a new --output-path")
        self.process_dir.mkdir(parents=True, exist_ok=True)
        for entry in os.scandir(self.process_dir):
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                os.remove(entry.path)
        self._existing = {entry.name for entry in os.scandir(self.process_dir)}

    def val_dataloader(self) -> Any:
        """This process's batches (see :class:`PreEncodeSampler`), or the iterable loader as it is."""
        if self.data_loader is None:
            raise ValueError("PreEncodedLatentsInferenceWrapper needs a data_loader")
        if not self._is_map_style():
            return self.data_loader
        loader = self.data_loader
        sampler = PreEncodeSampler(len(loader.dataset), loader.batch_size or 1, self.global_rank,
                                   self.trainer.world_size, self.shuffle, self.seed, self.limit_batches, self._done)
        self._already_written = sampler.assigned - sampler.pending
        self._total = sampler.pending
        if not len(sampler):
            self.finish()
        if sampler.assigned > sampler.pending:
            log.info("rank %d: %d of %d items already written, encoding the other %d", self.global_rank,
                     sampler.assigned - sampler.pending, sampler.assigned, sampler.pending)
        return DataLoader(_KeyedDataset(loader.dataset), batch_sampler=sampler, num_workers=loader.num_workers,
                          collate_fn=_collate_keyed, pin_memory=loader.pin_memory,
                          worker_init_fn=loader.worker_init_fn)

    # ------------------------------------------------------------------ encoding
    def on_validation_start(self) -> None:
        self._start = time.perf_counter()
        if self.progress and self.global_rank == 0:
            from tqdm import tqdm

            self._bar = tqdm(total=self._total, unit="file", desc="pre-encoding", dynamic_ncols=True)

    def validation_step(self, batch: Sequence[Any], batch_idx: int) -> None:
        audio, metadata = batch[0], batch[1]
        if len(batch) > 3:  # a map-style batch from _collate_keyed
            keys = list(batch[2])
            self.unusable.add(batch[3])
            self._advance(len(keys) + len(batch[3]))
            if audio is None:
                return
        else:
            if audio.ndim == 4 and audio.shape[0] == 1:  # legacy WebLoader batches
                audio = audio[0]
            keys = [(batch_idx, i) for i in range(audio.shape[0])]
            self._advance(len(keys))
            if all(self._done(b, i) for b, i in keys):
                self._already_written += len(keys)
                return
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        audio = audio.to(torch.float16 if self.model_half else torch.float32)  # fast encoders cast their own input
        with torch.no_grad():
            latents, frames = encode_latents(self.model, audio, self.is_discrete, self.vae_mean)
        ratio = audio.shape[-1] / frames
        ratio = int(ratio) if float(ratio).is_integer() else ratio
        if latents.dtype == torch.bfloat16:  # encoded under bf16 autocast (--dtype bf16): stored as float32
            latents = latents.float()
        for (b, i), latent, md in zip(keys, latents.cpu().numpy(), metadata):
            self._write_item(b, i, latent, md, frames, ratio)
        seconds = audio.shape[0] * audio.shape[-1] / self.sample_rate if self.sample_rate else 0.0
        self.stats["encoded"] += audio.shape[0]
        self.stats["audio_seconds"] += seconds
        if self._bar is not None:
            elapsed = max(time.perf_counter() - self._start, 1e-9)
            self._bar.set_postfix_str(f"{self.stats['audio_seconds'] / elapsed:.1f} s audio/s")

    def _advance(self, items: int) -> None:
        if self._bar is not None:
            self._bar.update(items)

    def _write_item(self, batch: int, item: int, latent: np.ndarray, metadata: Mapping[str, Any], frames: int,
                    ratio: float) -> None:
        md = {k: v for k, v in metadata.items() if k not in ("audio", SKIPPED_KEY)}
        if isinstance(md.get("padding_mask"), torch.Tensor):
            mask = md["padding_mask"].reshape(1, 1, -1).float()
            md["padding_mask"] = F.interpolate(mask, size=frames, mode="nearest")[0, 0].int()
        md["downsampling_ratio"] = ratio
        if self.sample_rate is not None:
            md.setdefault("sample_rate", self.sample_rate)
        md = _to_json(md, "metadata")
        name = latent_id(self.global_rank, batch, item)
        _write_atomic(self.process_dir / f"{name}.npy", lambda f: np.save(f, latent))
        _write_atomic(self.process_dir / f"{name}.json", lambda f: json.dump(md, f), mode="w")

    def on_validation_end(self) -> None:
        self.finish()

    def finish(self) -> None:
        """Close the progress bar, fill :attr:`stats`, write :attr:`skipped_path` and log this process's summary.

        Runs once: at the end of validation, or from :meth:`val_dataloader` when no batch is left to encode
        (Lightning then skips validation and its hooks).
        """
        if self._finished:
            return
        self._finished = True
        self.stats["seconds"] = time.perf_counter() - self._start if self._start else 0.0
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self._is_map_style():  # the WebDataset loader collected the records of the samples it dropped
            self.unusable.add(getattr(getattr(self.data_loader, "skips", None), "records", []))
        reasons = dict(self.unusable.counts())
        if self._already_written:
            reasons = {ALREADY_WRITTEN: self._already_written, **reasons}
        self.stats["skip_reasons"] = reasons
        self.stats["skipped"] = sum(reasons.values())
        skipped_path = self.skipped_path
        report = {"encoded": self.stats["encoded"], "skipped": self.stats["skipped"], **self.unusable.to_json()}
        report["counts"] = reasons
        _write_atomic(skipped_path, lambda f: json.dump(report, f, indent=1), mode="w")
        rate = self.stats["encoded"] / max(self.stats["seconds"], 1e-9)
        summary = ", ".join(f"{n} {reason}" for reason, n in reasons.items()) or "none"
        level = logging.WARNING if len(self.unusable) else logging.INFO
        log.log(level, "rank %d: encoded %d files (%.1f files/s, %.1f s of audio per second); skipped %d (%s)%s",
                self.global_rank, self.stats["encoded"], rate,
                self.stats["audio_seconds"] / max(self.stats["seconds"], 1e-9), self.stats["skipped"], summary,
                f"; unusable files: {self.unusable.files_text()} (all listed in {skipped_path})"
                if len(self.unusable) else "")

    def configure_optimizers(self) -> None:
        return None
