"""Embedders whose models come with optional packages: OpenL3 (``openl3``), PANNs (``panns_inference``),
VGGish (``torchvggish``) and PaSST (``hear21passt``).

Constructing one without its package raises :class:`~.base.MissingPackageError` with the ``pip install`` line;
the packages fetch their own weights on first use, and a failure to get them offline is reported as
:class:`~.base.MissingWeightsError`. These wrappers follow each package's documented API; the test suite
only checks the missing-package errors (the packages and weights are not available offline).
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import numpy as np
import torch

from .base import AudioEmbedder, MissingWeightsError, register_embedder, require_package

__all__ = ["OpenL3Embedder", "PANNsEmbedder", "VGGishEmbedder", "PaSSTClassifier"]


_HUB_HINT = "downloads its weights into the torch hub cache on first use: run once with network access."


def _load_weights(embedder: str, hint: str, load: Callable[[], Any]) -> Any:
    """``load()``; a failure to read or fetch weights becomes a :class:`MissingWeightsError` ending in ``hint``."""
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # these packages print progress
            return load()
    except (OSError, RuntimeError, ValueError) as err:
        raise MissingWeightsError(f"the '{embedder}' embedder could not get its weights ({type(err).__name__}: "
                                  f"{err}). {hint}") from err


@register_embedder("openl3")
class OpenL3Embedder(AudioEmbedder):
    """OpenL3 frame embeddings, the FD_openl3 of stable-audio-metrics (Stable Audio Open paper).

    stable-audio-metrics' settings are the defaults: ``mel256`` input, ``music`` content type, 512-d
    embeddings every 0.5 s (OpenL3's window is 1 s), stereo as the concatenation of the left and right channel
    embeddings (1024-d; mono input duplicated), evaluated at 44.1 kHz, peak-normalised to -1 dBFS (``sam``).
    Every frame of every file enters the statistics. (stable-audio-metrics' unbatched default path loads files as
    mono and concatenates the mono embedding with itself, which doubles the mono FD exactly: ``channels=1`` times
    two reproduces it.)

    Args:
        convention: str, default ``"sam"``.
        device: str or torch.device, default ``"cpu"`` (OpenL3 runs on TensorFlow, which picks its device).
        sample_rate: int, default 44100; the evaluation bandwidth (stable-audio-metrics: the model's rate).
        channels: int, default 2; 1 (mono, 512-d) or 2 (stereo, 1024-d).
        content_type: str, default ``"music"``; or ``"env"``.
        input_repr: str, default ``"mel256"``.
        embedding_size: int, default 512.
        hop_size: float, default 0.5; seconds between frames.
    """

    capabilities = ("fd",)
    comparable_to = "FD_openl3 of stable-audio-metrics (Stable Audio Open paper) with the defaults and 'sam'"

    def __init__(self, convention: str = "sam", device: Any = "cpu", sample_rate: int = 44100, channels: int = 2,
                 content_type: str = "music", input_repr: str = "mel256", embedding_size: int = 512,
                 hop_size: float = 0.5) -> None:
        super().__init__(convention, device)
        if channels not in (1, 2):
            raise ValueError(f"openl3 option channels must be 1 or 2, got {channels}")
        self._openl3 = require_package("openl3", "openl3", "openl3")
        self.sample_rate = int(sample_rate)
        self.channels = "mono" if channels == 1 else "stereo"
        self.options = {"content_type": content_type, "input_repr": input_repr, "embedding_size": embedding_size}
        self.hop_size = float(hop_size)
        self._model = _load_weights("openl3", "Reinstall the openl3 package, which ships its weights.",
                                    lambda: self._openl3.models.load_audio_embedding_model(**self.options))

    def settings(self) -> Dict[str, Any]:
        return {**super().settings(), **self.options, "hop_size": self.hop_size}

    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        per_channel = []
        for channel in audio:
            emb, _ = self._openl3.get_audio_embedding(channel.numpy(), self.sample_rate, model=self._model,
                                                      hop_size=self.hop_size, verbose=False)
            per_channel.append(torch.from_numpy(np.asarray(emb, dtype=np.float32)))
        return torch.cat(per_channel, dim=-1)


@register_embedder("panns")
class PANNsEmbedder(AudioEmbedder):
    """PANNs CNN14 (AudioSet tagging) clip embeddings (2048-d) through ``panns_inference``: 32 kHz mono, the
    embedding behind FAD_PANNs in gudgud96/frechet-audio-distance.

    Args:
        convention: str, default ``"sam"``.
        device: str or torch.device, default ``"cpu"``.
        checkpoint_path: str or None, default None; the CNN14 checkpoint (None: ``panns_inference``'s default,
            ``~/panns_data/Cnn14_mAP=0.431.pth``, which it downloads on first use).
    """

    sample_rate = 32000
    channels = "mono"
    capabilities = ("fd",)
    comparable_to = "FAD with PANNs CNN14 embeddings (e.g. frechet_audio_distance's 'pann' model at 32 kHz)"

    def __init__(self, convention: str = "sam", device: Any = "cpu", checkpoint_path: Optional[str] = None) -> None:
        super().__init__(convention, device)
        panns = require_package("panns_inference", "panns-inference", "panns")
        default = Path.home() / "panns_data" / "Cnn14_mAP=0.431.pth"
        path = Path(checkpoint_path).expanduser() if checkpoint_path else default
        if checkpoint_path and not path.is_file():
            raise FileNotFoundError(f"PANNs checkpoint {path} (--option panns.checkpoint_path) does not exist")
        self.checkpoint_path = str(path)
        hint = (f"panns_inference downloads {default.name} into {default.parent} on first use: run once with "
                "network access, or pass --option panns.checkpoint_path=FILE.")
        self._tagger = _load_weights("panns", hint, lambda: panns.AudioTagging(checkpoint_path=self.checkpoint_path,
                                                                               device=self.device.type))

    def settings(self) -> Dict[str, Any]:
        return {**super().settings(), "checkpoint_path": self.checkpoint_path}

    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        _, embedding = self._tagger.inference(audio[:1].numpy())
        return torch.from_numpy(np.asarray(embedding, dtype=np.float32)).reshape(1, -1)


@register_embedder("vggish")
class VGGishEmbedder(AudioEmbedder):
    """VGGish frame embeddings (128-d per 0.96 s, before the PCA / quantisation post-processing) through
    ``torchvggish``: 16 kHz mono, the embedding of the original FAD (Kilgour et al.) and of audiocraft's FAD.

    Args:
        convention: str, default ``"sam"`` (audiocraft's FAD peak-normalises the 16 kHz files it embeds, which
            ``sam``'s -1 dBFS peak normalisation approximates).
        device: str or torch.device, default ``"cpu"``.
    """

    sample_rate = 16000
    channels = "mono"
    capabilities = ("fd",)
    comparable_to = "FAD_vggish (Kilgour et al.; audiocraft runs Google's TensorFlow VGGish: close, not identical)"

    def __init__(self, convention: str = "sam", device: Any = "cpu") -> None:
        super().__init__(convention, device)
        self._package = require_package("torchvggish", "torchvggish", "vggish")
        self._input = require_package("torchvggish.vggish_input", "torchvggish", "vggish")
        self._model = _load_weights("vggish", f"torchvggish {_HUB_HINT}",
                                    lambda: self._package.vggish(preprocess=False, postprocess=False))
        self._model.to(self.device).eval()

    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        examples = self._input.waveform_to_examples(audio[0].numpy(), self.sample_rate)
        examples = torch.as_tensor(examples, dtype=torch.float32).to(self.device)
        return self._model(examples).reshape(-1, 128)


@contextlib.contextmanager
def _legacy_real_stft() -> Iterator[None]:
    """PaSST calls ``torch.stft`` without ``return_complex`` (the pre-1.8 real output); give it that output
    from the complex one while it runs."""
    original = torch.stft

    @functools.wraps(original)
    def real_stft(*args: Any, **kwargs: Any) -> torch.Tensor:
        kwargs.pop("return_complex", None)
        return torch.view_as_real(original(*args, return_complex=True, **kwargs))

    torch.stft = real_stft
    try:
        yield
    finally:
        torch.stft = original


@register_embedder("passt")
class PaSSTClassifier(AudioEmbedder):
    """PaSST (AudioSet, 527 labels) logits through ``hear21passt``: the KL_passt of stable-audio-metrics and
    audiocraft. 32 kHz mono, 10 s windows.

    Args:
        convention: str, default ``"sam"``; selects the KL windowing and normalisation (see ``metrics.kl``).
        device: str or torch.device, default ``"cpu"``.
    """

    sample_rate = 32000
    channels = "mono"
    capabilities = ("kl",)
    comparable_to = "KL_passt of stable-audio-metrics ('sam', Stable Audio papers) or audiocraft ('audiocraft')"

    def __init__(self, convention: str = "sam", device: Any = "cpu") -> None:
        super().__init__(convention, device)
        base = require_package("hear21passt.base", "hear21passt", "passt")
        self._model = _load_weights("passt", f"hear21passt {_HUB_HINT}", lambda: base.get_basic_model(mode="logits"))
        self._model.to(self.device).eval()

    def window_logits(self, windows: Sequence[torch.Tensor]) -> torch.Tensor:
        rows = []
        with _legacy_real_stft(), open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            for window in windows:
                rows.append(self._model(window.unsqueeze(0).to(self.device)).reshape(1, -1))
        return torch.cat(rows)
