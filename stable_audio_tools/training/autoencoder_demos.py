"""The autoencoder demo: reconstruct real audio and log it with spectrograms and latent plots."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import pytorch_lightning as pl
import torch
from torch import nn

from ..config import ConfigError, require, require_mapping
from ..plotting import audio_spectrogram_image, pca_point_cloud, tokens_spectrogram_image
from .demo_base import DemoCallbackBase, demo_audio_batch, eval_mode, match_channels

__all__ = ["AutoencoderDemoCallback", "demo_autoencoder", "create_autoencoder_demo_callback"]


def demo_autoencoder(module: nn.Module) -> nn.Module:
    """The autoencoder a demo should use: the EMA copy when ``module.use_ema`` and it exists, else the online one."""
    ema = getattr(module, "autoencoder_ema", None)
    if getattr(module, "use_ema", False) and ema is not None and getattr(ema, "ema_model", None) is not None:
        return ema.ema_model
    return module.autoencoder


class AutoencoderDemoCallback(DemoCallbackBase):
    """Reconstruct a batch of real audio and log it (upstream ``AutoencoderDemoCallback``).

    Takes up to ``max_demos`` items of the next demo batch, encodes and decodes them (EMA model if used; mono
    input when ``module.force_input_mono``), trims both to the shorter length, interleaves real/fake per item,
    concatenates along time, clamps (no normalisation) and saves ``recon_<step:08>.wav`` under ``media_dir``.
    Logs ``recon`` (audio), ``embeddings_3dpca`` (PCA point cloud of the latents), ``embeddings_spec`` (latent
    image) and ``recon_melspec_left`` (mel spectrogram of the left channel).

    Args:
        demo_dl: iterable of ``(audio [B, C, T], metadata)`` batches.
        demo_every: demo interval in optimizer steps.
        sample_size: nominal demo length in samples (kept for parity with upstream; batches are used as given).
        sample_rate: audio sample rate.
        max_demos: maximum number of batch items reconstructed.
    """

    def __init__(self, demo_dl: Iterable, demo_every: int = 2000, sample_size: int = 65536,
                 sample_rate: int = 44100, max_demos: int = 8) -> None:
        super().__init__(demo_every=demo_every, sample_rate=sample_rate, demo_dl=demo_dl)
        if isinstance(max_demos, bool) or not isinstance(max_demos, int) or max_demos < 1:
            raise ValueError(f"max_demos must be a positive integer, got {max_demos!r}")
        self.demo_samples = sample_size
        self.max_demos = max_demos

    def run_demo(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Reconstruct, save and log one demo batch."""
        reals = demo_audio_batch(self.next_demo_batch())[: self.max_demos].to(module.device)
        encoder_input = reals.mean(dim=1, keepdim=True) if getattr(module, "force_input_mono", False) else reals
        model = demo_autoencoder(module)
        with eval_mode(model):
            latents = model.encode(encoder_input)
            fakes = model.decode(latents)
        length = min(fakes.shape[-1], reals.shape[-1])
        reals, fakes = match_channels(reals[..., :length], fakes[..., :length].to(reals.dtype))
        batch, channels = reals.shape[:2]
        interleaved = torch.stack([reals, fakes], dim=1).reshape(batch * 2, channels, length)
        reals_fakes = interleaved.permute(1, 0, 2).reshape(channels, batch * 2 * length)

        path, reals_fakes_int16 = self.save_demo_audio(trainer, "recon", reals_fakes)
        if not self.attached_loggers(trainer):
            return
        self.log_audio_all(trainer, "recon", path)
        self.log_point_cloud_all(trainer, "embeddings_3dpca", pca_point_cloud(latents))
        self.log_image_all(trainer, "embeddings_spec", tokens_spectrogram_image(latents))
        self.log_image_all(trainer, "recon_melspec_left",
                           audio_spectrogram_image(reals_fakes_int16, sample_rate=self.sample_rate))


def create_autoencoder_demo_callback(model_config: Mapping[str, Any], **kwargs: Any) -> pl.Callback:
    """``AutoencoderDemoCallback(demo_dl=kwargs["demo_dl"], demo_every=training.demo.demo_every (default 2000),
    sample_size=model_config["sample_size"], sample_rate=model_config["sample_rate"])``; other keyword arguments
    (e.g. ``max_demos``) are passed through and override config values."""
    training = require_mapping(model_config.get("training", {}), "training")
    demo = require_mapping(training.get("demo", {}), "training.demo")
    if "demo_dl" not in kwargs:
        raise ValueError("create_demo_callback_from_config needs demo_dl=<dataloader> for autoencoder models")
    demo_every = demo.get("demo_every", 2000)
    if isinstance(demo_every, bool) or not isinstance(demo_every, int) or demo_every < 1:
        raise ConfigError("training.demo.demo_every", f"expected a positive integer, got {demo_every!r}")
    params = {
        "demo_every": demo_every,
        "sample_size": require(model_config, "sample_size", "", "number of samples", (int,)),
        "sample_rate": require(model_config, "sample_rate", "", "sample rate in Hz", (int,)),
    }
    params.update(kwargs)
    return AutoencoderDemoCallback(**params)
