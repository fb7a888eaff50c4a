"""Items a dataset cannot use: why, which file, and how many per epoch.

Every loader (``audio_dir``, ``pre_encoded``, WebDataset) and ``pre_encode.py`` describe an unusable item
with the same reasons (:data:`SKIP_REASONS`). How the counts reach the main process:

* A dataset that cannot use a file raises :class:`UnusableItem` internally. Training datasets then use
  another item and attach a :class:`SkipRecord` per skipped file to the metadata of the item they return
  (key :data:`SKIPPED_KEY`); WebDataset attaches the records of dropped samples to the next sample.
  The records travel inside the batch, so this works with any number of DataLoader workers.
* :class:`SkipReportingDataLoader` (the loader every dataset config builds) removes the records from each
  batch, counts them and logs one summary per epoch (one pass over the loader) with the count per reason and
  the first file names. :attr:`SkipReportingDataLoader.skips` holds the records of the current pass.
* ``pre_encode.py`` never replaces an item: it loads each index exactly once and lists the ones it skips.
"""
from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

from ..audio import NOT_FOUND, PERMISSION_DENIED, READ_ERROR, TOO_SHORT, UNDECODABLE, os_error_reason

__all__ = [
    "PERMISSION_DENIED", "NOT_FOUND", "READ_ERROR", "UNDECODABLE", "TOO_SHORT", "TOO_LONG", "NON_FINITE", "SILENT",
    "REJECTED", "BAD_METADATA", "BAD_LATENTS", "NO_AUDIO", "LOAD_ERROR", "SKIP_REASONS",
    "SKIPPED_KEY",
    "SkipRecord",
    "UnusableItem",
    "os_error_reason",
    "check_audio",
    "attach_skips",
    "pop_skips",
    "SkipTally",
    "SkippingDataset",
    "SkipReportingDataLoader",
]

logger = logging.getLogger(__name__)

TOO_LONG = "too long"
NON_FINITE = "non-finite"
SILENT = "silent"
REJECTED = "rejected"
BAD_METADATA = "bad metadata"
BAD_LATENTS = "bad latents"
NO_AUDIO = "no audio"
LOAD_ERROR = "load error"

SKIP_REASONS: Dict[str, str] = {
    PERMISSION_DENIED: "the file exists but this user may not read it (check its permissions)",
    NOT_FOUND: "the file disappeared after the dataset was scanned",
    READ_ERROR: "another operating-system error while reading the file",
    UNDECODABLE: "not an audio file libsndfile can decode (corrupt, truncated, another format)",
    TOO_SHORT: "no samples (an empty file) or shorter than the configured min_length_sec",
    TOO_LONG: "longer than the configured max_length_sec",
    NON_FINITE: "NaN or infinite sample values (or latents)",
    SILENT: "peak below -60 dBFS (the whole file, or the chunk that would be used)",
    REJECTED: "a custom metadata function returned __reject__",
    BAD_METADATA: "a missing or unreadable metadata (.json) file, or a sample without JSON",
    BAD_LATENTS: "a latent (.npy) file that cannot be read or has the wrong shape",
    NO_AUDIO: "a WebDataset sample without an audio (or npy) member",
    LOAD_ERROR: "any other exception while loading the item (for example in a custom metadata function)",
}
"""Every skip reason with its meaning (the keys are what logs, summaries and ``pre_encode.py``'s
``skipped_<rank>.json`` show)."""

SKIPPED_KEY = "__skipped__"
"""Metadata key under which a training item carries the records of the files skipped to produce it."""

_SHOWN_FILES = 5


class SkipRecord(NamedTuple):
    """One unusable item: the file (or WebDataset sample) ``path``, its ``reason`` and a human ``detail``."""

    path: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class UnusableItem(Exception):
    """An item that cannot be used.

    Args:
        reason (str): one of :data:`SKIP_REASONS`.
        detail (str): what exactly is wrong, for the user.
        path (str, optional): the file; datasets fill it in when ``None``. Default ``None``.
        permanent (bool): the file will never work (it is not retried in this process); false for problems of
            one random chunk or one random decision (a silent chunk of a file with sound, ``__reject__``).
            Default ``True``.
    """

    def __init__(self, reason: str, detail: str, path: Optional[str] = None, permanent: bool = True) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.path = path
        self.permanent = permanent

    @property
    def record(self) -> SkipRecord:
        """The :class:`SkipRecord` of this item."""
        return SkipRecord(str(self.path), self.reason, self.detail)


def check_length(length: int, sample_rate: int, min_length_sec: Optional[float] = None) -> None:
    """Raise :class:`UnusableItem` when audio of ``length`` samples is empty or shorter than ``min_length_sec``."""
    if length == 0:
        raise UnusableItem(TOO_SHORT, "the file contains no audio samples")
    if min_length_sec is not None and length < min_length_sec * sample_rate:
        raise UnusableItem(TOO_SHORT, f"{length / sample_rate:.3f} s long, below min_length_sec={min_length_sec}")


def check_audio(audio: torch.Tensor, sample_rate: int, min_length_sec: Optional[float] = None) -> None:
    """Raise :class:`UnusableItem` when decoded ``audio [C, T]`` has no samples, is shorter than
    ``min_length_sec`` or holds NaN/inf values (checked before any silence test: NaN is not silence)."""
    check_length(audio.shape[-1], sample_rate, min_length_sec)
    finite = torch.isfinite(audio)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise UnusableItem(NON_FINITE, f"{bad} of {audio.numel()} sample values are NaN or infinite")


def attach_skips(info: Dict[str, Any], records: Sequence[SkipRecord]) -> None:
    """Add ``records`` to the skip records carried by the item metadata ``info`` (nothing when empty)."""
    if records:
        info.setdefault(SKIPPED_KEY, []).extend(records)


def pop_skips(batch: Any) -> List[SkipRecord]:
    """Remove and return the skip records carried by a batch ``[data, (info, ...), ...]`` (or one info dict)."""
    if isinstance(batch, Mapping):
        infos: Sequence[Any] = [batch]
    elif isinstance(batch, (list, tuple)) and len(batch) > 1 and isinstance(batch[1], (list, tuple)):
        infos = batch[1]
    else:
        return []
    records: List[SkipRecord] = []
    for info in infos:
        if isinstance(info, dict) and SKIPPED_KEY in info:
            records.extend(SkipRecord(*r) for r in info.pop(SKIPPED_KEY))
    return records


class SkipTally:
    """Skip records of one pass (or run): counts of distinct files per reason and a one-line summary.

    ``len(tally)`` is the number of records (skipped *items*: a training dataset may try a bad file again as the
    replacement of another item); :meth:`counts` counts distinct files, each under the reason of its first record.
    """

    def __init__(self) -> None:
        self.records: List[SkipRecord] = []

    def add(self, records: Sequence[SkipRecord]) -> None:
        """Count ``records``."""
        self.records.extend(records)

    def __len__(self) -> int:
        return len(self.records)

    def files(self) -> Dict[str, SkipRecord]:
        """``{path: first record}`` of the distinct skipped files, in the order they were met."""
        first: Dict[str, SkipRecord] = {}
        for record in self.records:
            first.setdefault(record.path, record)
        return first

    def counts(self) -> Dict[str, int]:
        """``{reason: number of distinct skipped files}``, most frequent first (ties in alphabetical order)."""
        counts = Counter(r.reason for r in self.files().values())
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def reasons_text(self) -> str:
        """``"2 non-finite, 1 permission denied"``."""
        return ", ".join(f"{n} {reason}" for reason, n in self.counts().items())

    def files_text(self, limit: int = _SHOWN_FILES) -> str:
        """The first ``limit`` distinct skipped files with their reason, and how many more there are."""
        files = list(self.files().items())
        shown = "; ".join(f"{path} ({record.reason})" for path, record in files[:limit])
        more = len(files) - limit
        return shown + (f"; and {more} more files" if more > 0 else "")

    def to_json(self) -> Dict[str, Any]:
        """``{"counts": {...}, "files": [{"path", "reason", "detail"}, ...]}`` (distinct files)."""
        return {"counts": self.counts(), "files": [r._asdict() for r in self.files().values()]}


class SkippingDataset(Dataset):
    """Base of the map-style local datasets: exact loading for pre-encoding, counted replacement for training.

    Subclasses set :attr:`filenames` (one per index), call :meth:`_init_skips` and implement
    :meth:`_load_item` (raising :class:`UnusableItem` for unusable items; any other exception also makes the item
    unusable, reason ``load error``). A file found permanently unusable is logged once per process (a warning
    naming it and the reason), remembered in :attr:`unusable` and never loaded again in that process.
    """

    skip_action = "replaced by random other items"
    _file_kind = "file"
    _logger = logger
    filenames: List[str]

    def _init_skips(self, max_retries: int) -> None:
        self.max_retries = max_retries
        self.unusable: Dict[str, SkipRecord] = {}
        self._num_unique_files = len(set(self.filenames))

    @property
    def bad_files(self) -> Dict[str, str]:
        """``{path: "reason: detail"}`` of the files this process found unusable."""
        return {path: str(record) for path, record in self.unusable.items()}

    @property
    def skipped_files(self) -> int:
        """Number of distinct files this process found unusable and skips."""
        return len(self.unusable)

    def __len__(self) -> int:
        return len(self.filenames)

    def __getitem__(self, idx: int) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """Item ``idx`` or a replacement (see :meth:`get_item`); random choices use a ``random.Random`` seeded
        from torch's generator, which DataLoader workers and ``pl.seed_everything`` seed."""
        return self.get_item(idx, self.item_rng())

    @staticmethod
    def item_rng() -> random.Random:
        """A ``random.Random`` for one item, seeded from torch's global generator."""
        return random.Random(int(torch.randint(0, 2 ** 62, ()).item()))

    def _load_item(self, idx: int, rng: random.Random) -> Tuple[torch.Tensor, Dict[str, Any]]:
        raise NotImplementedError

    def load_exact(self, idx: int, rng: random.Random) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """Item ``idx`` itself, or :class:`UnusableItem` (with ``path`` set); never another item."""
        path = self.filenames[idx]
        known = self.unusable.get(path)
        if known is not None:
            raise UnusableItem(known.reason, known.detail, path)
        try:
            return self._load_item(idx, rng)
        except UnusableItem as skip:
            skip.path = path
            if skip.permanent:
                self._mark_unusable(skip.record)
            raise
        except Exception as err:  # whatever breaks one item must not stop an epoch
            skip = UnusableItem(LOAD_ERROR, f"{type(err).__name__}: {err}", path)
            self._mark_unusable(skip.record)
            raise skip from err

    def _mark_unusable(self, record: SkipRecord) -> None:
        self.unusable[record.path] = record
        self._logger.warning("Skipping %s '%s': %s", self._file_kind, record.path, record)

    def get_item(self, idx: int, rng: random.Random) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """Item ``idx``, or when it is unusable a random other usable one; the metadata of the returned item
        carries the records of every item skipped on the way (key :data:`SKIPPED_KEY`). Raises ``RuntimeError``
        when every file is unusable or ``max_retries`` replacements fail."""
        skipped: List[SkipRecord] = []
        for _ in range(self.max_retries + 1):
            try:
                audio, info = self.load_exact(idx, rng)
            except UnusableItem as skip:
                skipped.append(skip.record)
            else:
                attach_skips(info, skipped)
                return audio, info
            if len(self.unusable) >= self._num_unique_files:
                tally = SkipTally()
                tally.add(list(self.unusable.values()))
                examples = "; ".join(f"{reason}: e.g. '{r.path}': {r.detail}" for reason, r in
                                     {r.reason: r for r in reversed(tally.records)}.items())
                raise RuntimeError(f"all {self._num_unique_files} {self._file_kind}s of the dataset are unusable "
                                   f"({tally.reasons_text()}; {examples}); check the dataset paths and files")
            idx = self._random_usable_index(rng)
        raise RuntimeError(self._retries_message(Counter(r.reason for r in skipped)))

    def _retries_message(self, counts: Mapping[str, int]) -> str:
        reasons = ", ".join(f"{n} {reason} ({SKIP_REASONS.get(reason, reason)})" for reason, n in counts.items())
        return (f"no usable item after {self.max_retries} retries ({reasons}; {self.skipped_files} unusable files); "
                f"check the data and the metadata functions")

    def _random_usable_index(self, rng: random.Random) -> int:
        for _ in range(16):
            candidate = rng.randrange(len(self.filenames))
            if self.filenames[candidate] not in self.unusable:
                return candidate
        return rng.choice([i for i, f in enumerate(self.filenames) if f not in self.unusable])


class SkipReportingDataLoader(DataLoader):
    """A ``torch.utils.data.DataLoader`` that counts and reports the items its dataset skipped.

    It takes exactly the arguments of ``DataLoader``. Each pass over it (an epoch) removes the skip records from
    the batches (see :func:`pop_skips`), keeps them in :attr:`skips` and, when the pass ends (also when it is
    stopped early, e.g. by ``max_steps``), logs one warning: how many distinct files were skipped, the count per
    reason, how many items that cost and what the dataset did about them (its ``skip_action`` attribute), and the
    first file names. A pass without skips logs nothing. With several processes (DDP) each process reports its
    own share.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skips = SkipTally()
        self.epoch = 0

    def __iter__(self) -> Iterator[Any]:
        self.epoch += 1
        self.skips = SkipTally()
        return self._reporting(super().__iter__(), self.epoch, self.skips)

    def _reporting(self, batches: Iterator[Any], epoch: int, tally: SkipTally) -> Iterator[Any]:
        try:
            expected: Optional[int] = len(self)
        except TypeError:  # an iterable dataset without a length: the pass ends when the stream does
            expected = None
        items = count = 0
        reported = finished = False
        try:
            for batch in batches:
                tally.add(pop_skips(batch))
                items += _batch_items(batch)
                count += 1
                if count == expected:  # report before handing out the last batch: a trainer may never ask again
                    self._report(epoch, tally, items, early=False)
                    reported = True
                yield batch
            finished = True
        finally:
            if not reported:
                self._report(epoch, tally, items, early=not finished)

    def _report(self, epoch: int, tally: SkipTally, items: int, early: bool) -> None:
        if not tally.records:
            return
        action = getattr(self.dataset, "skip_action", "skipped")
        logger.warning("epoch %d%s: skipped %d unusable files (%s); %d items were %s, %d items delivered: %s",
                       epoch, " (stopped early)" if early else "", len(tally.files()), tally.reasons_text(),
                       len(tally), action, items, tally.files_text())


def _batch_items(batch: Any) -> int:
    if isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
        if isinstance(first, torch.Tensor) and first.dim() > 0:
            return int(first.shape[0])
        if isinstance(first, (list, tuple)):
            return len(first)
    return 1
