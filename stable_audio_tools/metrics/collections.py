"""Sets of audio items for the metrics: folders of audio files, in-memory tensors, and prompt files.

Items are identified by name (a file's stem): generated and reference items pair by name (KL, reconstruction
metrics), prompts attach to generated items by name (CLAP score).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import soundfile
import torch

from ..audio import AUDIO_EXTENSIONS, AudioDecodeError, load_audio

__all__ = ["EvaluationError", "AudioCollection", "load_prompts", "prompt_ids"]

PathLike = Union[str, os.PathLike]


class EvaluationError(ValueError):
    """The inputs cannot be evaluated as asked (empty or missing folder, no pairs, sample-rate mismatch, ...);
    the message says what to change."""


class AudioCollection:
    """Named audio items loaded on demand.

    Args:
        role: str; what the set is ("generated", "reference"), used in messages.
        loaders: mapping name -> zero-argument callable returning ``(audio [channels, samples], sample_rate)``.
        rates: mapping name -> sample rate (read without decoding).
        origin: str, default ""; where the items come from (a folder path), for reports.
    """

    def __init__(self, role: str, loaders: Mapping[str, Callable[[], Tuple[torch.Tensor, int]]],
                 rates: Mapping[str, int], origin: str = "") -> None:
        if set(loaders) != set(rates):
            raise ValueError("loaders and rates must name the same items")
        self.role, self.origin = role, origin
        self._loaders, self._rates = dict(loaders), dict(rates)

    @classmethod
    def from_folder(cls, directory: PathLike, role: str, flag: str) -> "AudioCollection":
        """All audio files directly in ``directory`` (extensions of ``data.utils.AUDIO_EXTENSIONS``, any case).

        Raises :class:`EvaluationError` naming ``flag`` for a missing folder, an empty one, two files with one
        stem, or a file whose header cannot be read.
        """
        path = Path(directory)
        if not path.is_dir():
            raise EvaluationError(f"{flag} {directory}: not a directory")
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise EvaluationError(f"{flag} {directory}: no audio files (looked for {', '.join(AUDIO_EXTENSIONS)})")
        loaders, rates, seen = {}, {}, {}
        for file in files:
            if file.stem in seen:
                raise EvaluationError(f"{flag} {directory}: '{seen[file.stem].name}' and '{file.name}' have the same "
                                      "name; items pair by file name, so keep one of them")
            seen[file.stem] = file
            try:
                rates[file.stem] = int(soundfile.info(str(file)).samplerate)
            except (RuntimeError, soundfile.SoundFileError) as err:
                raise EvaluationError(f"{flag}: cannot read audio file {file}: {err}") from err
            loaders[file.stem] = _file_loader(file)
        return cls(role, loaders, rates, origin=str(path))

    @classmethod
    def from_tensors(cls, role: str, items: Mapping[str, Tuple[torch.Tensor, int]]) -> "AudioCollection":
        """In-memory items: name -> ``(audio [channels, samples], sample_rate)``."""
        if not items:
            raise EvaluationError(f"no {role} audio given")
        for name, (audio, rate) in items.items():
            if audio.dim() != 2:
                raise EvaluationError(f"{role} item '{name}': audio must be [channels, samples], got "
                                      f"{tuple(audio.shape)}")
        return cls(role, {n: (lambda a=a, r=r: (a, int(r))) for n, (a, r) in items.items()},
                   {n: int(r) for n, (_, r) in items.items()})

    def names(self) -> List[str]:
        return sorted(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)

    def sample_rate(self, name: str) -> int:
        return self._rates[name]

    def sample_rates(self) -> Dict[int, str]:
        """Each distinct sample rate with one example item."""
        out: Dict[int, str] = {}
        for name in self.names():
            out.setdefault(self._rates[name], name)
        return out

    def load(self, name: str) -> Tuple[torch.Tensor, int]:
        return self._loaders[name]()

    def describe(self) -> Dict[str, object]:
        return {"origin": self.origin or "<memory>", "items": len(self), "sample_rates": sorted(self.sample_rates())}


def _file_loader(file: Path) -> Callable[[], Tuple[torch.Tensor, int]]:
    def load() -> Tuple[torch.Tensor, int]:
        try:
            return load_audio(file)
        except AudioDecodeError as err:
            raise EvaluationError(f"{err}; remove or replace the file") from err
    return load


def prompt_ids(count: int) -> List[str]:
    """Names given to prompts listed without names: ``0000``, ``0001``, ... (also the file names evaluate.py
    writes when it generates)."""
    return [f"{i:04d}" for i in range(count)]


def _from_entries(entries: Iterable[object], path: PathLike) -> Dict[str, str]:
    items = list(entries)
    if all(isinstance(e, str) for e in items):
        return dict(zip(prompt_ids(len(items)), items))
    out: Dict[str, str] = {}
    for index, entry in enumerate(items):
        if not (isinstance(entry, dict) and isinstance(entry.get("prompt"), str)):
            raise EvaluationError(f"--prompts {path}: entry {index} must be a string or an object with a string "
                                  "'prompt' (and optionally 'id')")
        out[str(entry.get("id", f"{index:04d}"))] = entry["prompt"]
    return out


def load_prompts(path: Optional[PathLike]) -> Optional[Dict[str, str]]:
    """Read a prompts file into name -> prompt.

    Formats: ``.json`` with an object ``{"name": "prompt", ...}`` or a list of strings / ``{"id", "prompt"}``
    objects; ``.jsonl`` with one such object per line; anything else: one prompt per non-empty line. Prompts
    without an id are named ``0000``, ``0001``, ... in order.
    """
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise EvaluationError(f"--prompts {path}: file not found")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix.lower() == ".json":
            data = json.loads(text)
            if isinstance(data, dict):
                if not all(isinstance(v, str) for v in data.values()):
                    raise EvaluationError(f"--prompts {path}: every value of the JSON object must be a prompt string")
                prompts = {str(k): v for k, v in data.items()}
            elif isinstance(data, list):
                prompts = _from_entries(data, path)
            else:
                raise EvaluationError(f"--prompts {path}: expected a JSON object or list")
        elif file.suffix.lower() == ".jsonl":
            prompts = _from_entries([json.loads(line) for line in text.splitlines() if line.strip()], path)
        else:
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            prompts = dict(zip(prompt_ids(len(lines)), lines))
    except json.JSONDecodeError as err:
        raise EvaluationError(f"--prompts {path}: invalid JSON ({err})") from err
    if not prompts:
        raise EvaluationError(f"--prompts {path}: no prompts in the file")
    return prompts
