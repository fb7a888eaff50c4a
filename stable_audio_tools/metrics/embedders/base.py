"""The embedder interface, its registry and the errors for missing packages or weights.

An embedder turns audio into what a metric consumes: frame or clip embeddings for the Frechet distance
(``"fd"``), classifier logits over analysis windows for the KL divergence (``"kl"``), and joint text/audio
embeddings for the CLAP score (``"clap"``). It owns its preprocessing (:meth:`AudioEmbedder.preprocessing`).

Adding one takes a few lines::

    from stable_audio_tools.metrics import AudioEmbedder, register_embedder

    @register_embedder("my-embedder")
    class MyEmbedder(AudioEmbedder):
        sample_rate = 16000
        capabilities = ("fd",)

        def frames(self, audio):          # audio: [channels, samples] at 16 kHz, already preprocessed
            return my_model(audio)        # [frames, dim]

after which ``evaluate.py --embedder my-embedder`` (once the module defining it is imported, e.g. through
``--plugin my_module``) and ``create_embedder("my-embedder")`` use it.
"""
from __future__ import annotations

import importlib
import inspect
import os
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

import torch

from ..kl import audiocraft_segments, sam_windows
from ..preprocessing import Preprocessing

__all__ = [
    "CONVENTIONS",
    "CAPABILITIES",
    "AudioEmbedder",
    "MissingPackageError",
    "MissingWeightsError",
    "register_embedder",
    "create_embedder",
    "embedder_class",
    "available_embedders",
    "require_package",
    "load_hf_pretrained",
]

CONVENTIONS = ("sam", "audiocraft")
"""Preprocessing / KL conventions: stable-audio-metrics (``"sam"``) or audiocraft (``"audiocraft"``)."""

CAPABILITIES = ("fd", "kl", "clap")

SAM_PEAK_DB = -1.0
"""stable-audio-metrics peak-normalises every input to -1 dBFS (``pyloudnorm.normalize.peak(audio, -1.0)``)."""


class MissingPackageError(ImportError):
    """An embedder's optional package is not installed; the message names it and the pip command."""


class MissingWeightsError(RuntimeError):
    """An embedder's weights are neither a local directory nor in the Hugging Face cache."""


def require_package(module: str, pip_name: str, embedder: str) -> Any:
    """Import and return ``module`` or raise :class:`MissingPackageError` naming ``pip_name`` and ``embedder``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingPackageError(f"the '{embedder}' embedder needs the {pip_name} package, which is not installed "
                                  f"({err}): pip install {pip_name}") from err


def load_hf_pretrained(loader: Callable[[str], Any], model: str, what: str, option: str) -> Any:
    """``loader(model)`` (a ``from_pretrained``), turning "not found / offline" into :class:`MissingWeightsError`.

    Args:
        loader: e.g. ``ClapModel.from_pretrained``.
        model: a Hugging Face model id or a local directory written by ``save_pretrained``.
        what: what is loaded, for the message (e.g. "CLAP model").
        option: the option that chooses it, for the message (e.g. "--option clap.model=DIR").
    """
    looks_local = os.path.isabs(model) or model.startswith((".", "~")) or os.path.exists(model)
    if looks_local and not os.path.isdir(os.path.expanduser(model)):
        raise FileNotFoundError(f"{what} directory '{model}' does not exist (set it with {option})")
    try:
        return loader(os.path.expanduser(model) if looks_local else model)
    except (OSError, ValueError) as err:
        detail = " ".join(str(err).split())
        if looks_local:
            raise MissingWeightsError(f"could not load {what} from directory '{model}': {detail}") from err
        offline = any(os.environ.get(v, "0") not in ("", "0", "false", "False")
                      for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        reason = "offline mode is on (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)" if offline else "the Hub is unreachable"
        raise MissingWeightsError(
            f"could not load {what} '{model}': it is not in the Hugging Face cache and {reason} ({detail}). Cache it "
            f"once with network access: `huggingface-cli download {model}` (or `hf download {model}`), or pass a "
            f"local directory saved with save_pretrained: {option}") from err


class AudioEmbedder:
    """Base class of the embedders.

    Subclasses set ``sample_rate`` (input rate in Hz), ``channels`` (``"mono"`` / ``"stereo"`` / ``"keep"``),
    ``capabilities`` (a subset of ``("fd", "kl", "clap")``) and ``comparable_to`` (which published numbers the
    embedder reproduces, for the JSON report), and implement the methods of their capabilities: :meth:`frames`
    (fd), :meth:`window_logits` (kl), :meth:`clip_embedding` and :meth:`embed_text` (clap).

    Args:
        convention: str, default ``"sam"``; ``"sam"`` peak-normalises inputs to -1 dBFS as stable-audio-metrics,
            ``"audiocraft"`` leaves the level as audiocraft. It also selects the KL windowing.
        device: str or torch.device, default ``"cpu"``; where the model runs.
    """

    name: ClassVar[str] = ""
    sample_rate: ClassVar[int] = 16000
    channels: ClassVar[str] = "mono"
    capabilities: ClassVar[Tuple[str, ...]] = ()
    comparable_to: ClassVar[str] = "no published numbers"
    window_seconds: ClassVar[float] = 10.0
    """Classifier analysis window (KL) in seconds."""
    int16_round_trip: ClassVar[bool] = False
    """Quantise through int16 under the ``sam`` convention (LAION-CLAP's input path)."""

    def __init__(self, convention: str = "sam", device: Any = "cpu") -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
        self.convention = convention
        self.device = torch.device(device)

    # -- preprocessing -------------------------------------------------------------------------------------
    def preprocessing(self) -> Preprocessing:
        """The preprocessing of this embedder under its convention."""
        sam = self.convention == "sam"
        return Preprocessing(sample_rate=self.sample_rate, channels=self.channels,
                             peak_db=SAM_PEAK_DB if sam else None, int16_round_trip=sam and self.int16_round_trip)

    def settings(self) -> Dict[str, Any]:
        """Everything that determines the embedder's numbers, for the JSON report (subclasses add options)."""
        return {"name": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "convention": self.convention, "preprocessing": self.preprocessing().describe(),
                "comparable_to": self.comparable_to}

    def _require(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise ValueError(f"the '{self.name}' embedder cannot compute '{capability}' (it supports: "
                             f"{', '.join(self.capabilities) or 'nothing'})")

    # -- fd --------------------------------------------------------------------------------------------------
    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[frames, dim]`` of preprocessed ``audio [channels, samples]`` (subclasses with "fd")."""
        raise NotImplementedError(f"the '{self.name}' embedder does not implement frames()")

    def embed(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Preprocess ``audio [channels, samples]`` at ``sample_rate`` and return its embeddings ``[frames, dim]``."""
        self._require("fd")
        with torch.no_grad():
            return self.frames(self.preprocessing()(audio, sample_rate)).detach().float().cpu()

    # -- kl --------------------------------------------------------------------------------------------------
    def window_logits(self, windows: Sequence[torch.Tensor]) -> torch.Tensor:
        """Classifier logits ``[len(windows), classes]`` for mono windows at ``sample_rate`` (subclasses with
        "kl")."""
        raise NotImplementedError(f"the '{self.name}' embedder does not implement window_logits()")

    def label_logits(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Logits ``[windows, classes]`` of ``audio [channels, samples]``: mono at the classifier rate, split into
        the convention's windows (``sam``: 10 s every 5 s, padded; ``audiocraft``: 10 s segments)."""
        self._require("kl")
        mono = self.preprocessing()(audio, sample_rate)[0]
        if self.convention == "sam":
            windows = sam_windows(mono, self.sample_rate, self.window_seconds)
        else:
            windows = audiocraft_segments(mono, self.sample_rate, self.window_seconds)
        if not windows:
            raise ValueError(f"audio of {mono.shape[-1] / self.sample_rate:.3f} s is too short for any "
                             f"{self.convention} classifier window")
        with torch.no_grad():
            return self.window_logits(windows).detach().float().cpu()

    # -- clap ------------------------------------------------------------------------------------------------
    def clip_embedding(self, audio: torch.Tensor) -> torch.Tensor:
        """Joint-space embedding ``[1, dim]`` of preprocessed ``audio`` (subclasses with "clap")."""
        raise NotImplementedError(f"the '{self.name}' embedder does not implement clip_embedding()")

    def embed_clip(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Preprocess ``audio [channels, samples]`` and return its joint-space embedding ``[1, dim]``."""
        self._require("clap")
        with torch.no_grad():
            return self.clip_embedding(self.preprocessing()(audio, sample_rate)).detach().float().cpu()

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Joint-space text embeddings ``[len(texts), dim]`` (subclasses with "clap")."""
        raise NotImplementedError(f"the '{self.name}' embedder does not implement embed_text()")


E = TypeVar("E", bound=Type[AudioEmbedder])
_REGISTRY: Dict[str, Type[AudioEmbedder]] = {}


def register_embedder(name: str) -> Callable[[E], E]:
    """Class decorator: make an :class:`AudioEmbedder` subclass available under ``name``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"embedder name must be a non-empty string, got {name!r}")

    def decorate(cls: E) -> E:
        if not (isinstance(cls, type) and issubclass(cls, AudioEmbedder)):
            raise TypeError(f"register_embedder('{name}') decorates AudioEmbedder subclasses, got {cls!r}")
        unknown = set(cls.capabilities) - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"embedder '{name}' declares unknown capabilities {sorted(unknown)}; use "
                             f"{', '.join(CAPABILITIES)}")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"an embedder named '{name}' is already registered ({existing.__qualname__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_embedders(capability: Optional[str] = None) -> List[str]:
    """Registered embedder names (those with ``capability`` when given), sorted."""
    return sorted(n for n, c in _REGISTRY.items() if capability is None or capability in c.capabilities)


def embedder_class(name: str) -> Type[AudioEmbedder]:
    """The class registered under ``name``; unknown names raise a ``KeyError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown embedder '{name}'; registered: {', '.join(available_embedders())}") from None


def create_embedder(name: str, **options: Any) -> AudioEmbedder:
    """Instantiate the embedder registered under ``name`` with ``options`` (its constructor arguments)."""
    cls = embedder_class(name)
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as err:
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("args", "kwargs")]
        raise TypeError(f"bad options for embedder '{name}' ({', '.join(sorted(options)) or 'none'}): {err}; it "
                        f"accepts {', '.join(accepted)}") from err
    return cls(**options)
