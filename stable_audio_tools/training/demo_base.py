"""The base of every demo callback: :class:`DemoCallbackBase` (trigger logic, rank-zero gating, eval mode, error
isolation, a private iterator over a demo dataloader, audio saving and fan-out to every attached logger) and the
helpers the family demos share. The family demos (:mod:`.autoencoder_demos`, :mod:`.diffusion_demos`,
:mod:`.lm_demos`) build on it; :mod:`.demo_callbacks` picks one for a model config through the model-family
registry.
"""
from __future__ import annotations

import abc
import contextlib
import copy
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from .logging_utils import log_audio, log_image, log_point_cloud, media_dir, save_wav

__all__ = ["eval_mode", "DemoCallbackBase", "demo_audio_batch", "match_channels"]

# Demo failures are reported under the name users and tests know (upstream's module path).
_log = logging.getLogger("stable_audio_tools.training.demo_callbacks")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode and afterwards restore every submodule's own ``training`` flag exactly."""
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for sub, mode in modes:
            sub.training = mode


def _independent_loader(demo_dl: Iterable) -> Iterable:
    """A view of ``demo_dl`` whose iteration does not disturb the training loop.

    A DataLoader with ``persistent_workers`` caches one worker iterator and resets it on every ``iter()``, so
    iterating the training loader from a callback would rewind training. A shallow copy with its own (empty)
    iterator slot gets its own workers on first use, without deep-copying the dataset or live worker handles.
    """
    if isinstance(demo_dl, DataLoader):
        clone = copy.copy(demo_dl)
        clone._iterator = None
        return clone
    return demo_dl


class DemoCallbackBase(pl.Callback, abc.ABC):
    """Shared machinery for demo callbacks.

    Fires on rank zero in ``on_train_batch_end`` when ``(global_step - 1) % demo_every == 0`` (first at step 1)
    and not already run for that step (gradient accumulation calls the hook several times per step). Subclasses
    implement ``run_demo``; it runs under ``torch.no_grad()`` with the module in eval mode (training flags are
    restored afterwards), and any exception it raises is reported with ``logging.exception`` instead of
    stopping training.

    Args:
        demo_every: demo interval in optimizer steps.
        sample_rate: sample rate of saved and logged audio.
        demo_dl: optional iterable of demo batches, read through ``next_demo_batch``.
    """

    def __init__(self, demo_every: int = 2000, sample_rate: int = 44100, demo_dl: Optional[Iterable] = None) -> None:
        super().__init__()
        if isinstance(demo_every, bool) or not isinstance(demo_every, int) or demo_every < 1:
            raise ValueError(f"demo_every must be a positive integer number of steps, got {demo_every!r}")
        self.demo_every = demo_every
        self.sample_rate = int(sample_rate)
        self.last_demo_step = -1
        self._demo_source = None if demo_dl is None else _independent_loader(demo_dl)
        self._demo_iter: Optional[Iterator] = None

    def should_demo(self, global_step: int) -> bool:
        """Whether a demo is due at ``global_step`` (and has not run for it yet)."""
        return (global_step - 1) % self.demo_every == 0 and global_step != self.last_demo_step

    def next_demo_batch(self) -> Any:
        """The next demo batch; the iterator is created lazily and re-created when exhausted."""
        if self._demo_source is None:
            raise ValueError(f"{type(self).__name__} was created without a demo dataloader (demo_dl)")
        if self._demo_iter is not None:
            try:
                return next(self._demo_iter)
            except StopIteration:
                self._demo_iter = None
        self._demo_iter = iter(self._demo_source)
        try:
            return next(self._demo_iter)
        except StopIteration:
            raise ValueError("the demo dataloader yielded no batches; check the dataset and batch size") from None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Run ``run_demo`` when a demo is due (rank zero only); never lets an error escape."""
        step = trainer.global_step
        if not trainer.is_global_zero or not self.should_demo(step):
            return
        self.last_demo_step = step
        try:
            with torch.no_grad(), eval_mode(pl_module):
                self.run_demo(trainer, pl_module)
        except Exception:  # a demo must never kill training
            _log.exception("%s failed at step %d; training continues without this demo", type(self).__name__, step)

    @abc.abstractmethod
    def run_demo(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Generate, save and log the demo for ``trainer.global_step``."""

    def save_demo_audio(self, trainer: pl.Trainer, prefix: str, audio: torch.Tensor,
                        normalize: bool = False) -> Tuple[Path, torch.Tensor]:
        """Save ``audio [C, T]`` as ``<media_dir>/<prefix>_<step:08>.wav`` (int16).

        With ``normalize`` the audio is first divided by its peak (upstream's diffusion demos); it is always
        clamped to [-1, 1]. Returns the path and the int16 tensor (what upstream feeds the spectrogram image).
        """
        audio = audio.detach().to("cpu", torch.float32)
        if normalize:
            peak = audio.abs().max()
            if peak > 0:
                audio = audio / peak
        int16 = audio.clamp(-1, 1).mul(32767).to(torch.int16)
        path = save_wav(media_dir(trainer) / f"{prefix}_{trainer.global_step:08}.wav", int16, self.sample_rate)
        return path, int16

    @staticmethod
    def attached_loggers(trainer: pl.Trainer) -> List[Any]:
        """All loggers attached to ``trainer`` (empty when logging is off)."""
        return list(getattr(trainer, "loggers", None) or [])

    def log_audio_all(self, trainer: pl.Trainer, key: str, path: Path) -> None:
        """Log an audio file to every attached logger at the current step."""
        for logger in self.attached_loggers(trainer):
            log_audio(logger, key, path, self.sample_rate, step=trainer.global_step)

    def log_image_all(self, trainer: pl.Trainer, key: str, image: Image.Image) -> None:
        """Log an image to every attached logger at the current step."""
        for logger in self.attached_loggers(trainer):
            log_image(logger, key, image, step=trainer.global_step)

    def log_point_cloud_all(self, trainer: pl.Trainer, key: str, points: np.ndarray) -> None:
        """Log a ``[N, 6]`` point cloud to every attached logger at the current step."""
        for logger in self.attached_loggers(trainer):
            log_point_cloud(logger, key, points, step=trainer.global_step)


def demo_audio_batch(batch: Any) -> torch.Tensor:
    """The audio of a ``(audio, metadata)`` batch as ``[B, C, T]`` (a leading WebDataset singleton is removed)."""
    audio = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(audio, torch.Tensor):
        raise TypeError(f"demo batches must be (audio tensor, metadata) or an audio tensor, got {type(audio).__name__}")
    if audio.ndim == 4 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim != 3:
        raise ValueError(f"demo audio must be [batch, channels, samples], got shape {tuple(audio.shape)}")
    return audio


def match_channels(reals: torch.Tensor, fakes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Broadcast a mono side to the other side's channel count so reals and fakes can be interleaved."""
    if reals.shape[1] == fakes.shape[1]:
        return reals, fakes
    if fakes.shape[1] == 1:
        return reals, fakes.expand(-1, reals.shape[1], -1)
    if reals.shape[1] == 1:
        return reals.expand(-1, fakes.shape[1], -1), fakes
    raise ValueError(f"reconstruction has {fakes.shape[1]} channels but the input has {reals.shape[1]}")
