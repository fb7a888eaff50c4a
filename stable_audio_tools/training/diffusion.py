"""Lightning training wrappers for ``diffusion_uncond`` and ``diffusion_autoencoder`` models (see
docs/diffusion.md#training).

As upstream's ``training/diffusion.py``, this module also exposes the ``diffusion_cond`` wrapper
(:mod:`.diffusion_cond`), the diffusion demo callbacks (:mod:`.diffusion_demos`), the batch helpers every wrapper
shares (:mod:`.common`) and ``Profiler`` (:mod:`stable_audio_tools.models.common`); ARC is in :mod:`.arc`.

Differences from upstream: see docs/compatibility.md#stable_audio_toolstrainingdiffusion.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from ..models.common import Profiler
from .common import (OptimizerGroupsMixin, adam_configs, create_loss_modules_from_bottleneck, encode_to_latents,
                     padding_masks_from_metadata, split_batch, swapped_child)
from .diffusion_cond import DiffusionCondTrainingWrapper
from .diffusion_demos import (DiffusionAutoencoderDemoCallback, DiffusionCondDemoCallback,
                              DiffusionCondInpaintDemoCallback, DiffusionUncondDemoCallback)
from .ema import EMA
from .export import save_unwrapped
from .losses import AuralossLoss, MSELoss, MultiLoss, MultiResolutionSTFTLoss, SumAndDifferenceSTFTLoss
from .timesteps import TimestepSampler, noise_inputs

__all__ = [
    "DiffusionUncondTrainingWrapper",
    "DiffusionAutoencoderTrainingWrapper",
    "split_batch",
    "encode_to_latents",
    "padding_masks_from_metadata",
    "swapped_child",
    # defined elsewhere, importable from here as from upstream's training/diffusion.py
    "DiffusionCondTrainingWrapper",
    "DiffusionUncondDemoCallback",
    "DiffusionCondDemoCallback",
    "DiffusionCondInpaintDemoCallback",
    "DiffusionAutoencoderDemoCallback",
    "Profiler",
]


class DiffusionUncondTrainingWrapper(OptimizerGroupsMixin, pl.LightningModule):
    """Trains an unconditional ``DiffusionModelWrapper`` (e.g. Dance Diffusion) with the v objective.

    Attributes (state-dict prefixes): ``diffusion``, ``diffusion_ema`` (EMA of ``diffusion.model`` with the
    online model included, beta 0.9999, power 3/4, updated every optimizer step after step 1) and
    ``losses`` (``mse_loss`` between ``v`` and ``targets``). Timesteps come from a scrambled Sobol sequence.

    Args:
        model: the ``DiffusionModelWrapper``.
        lr: Adam learning rate.
        pre_encoded: batches hold pretransform latents instead of audio.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-4, pre_encoded: bool = False) -> None:
        super().__init__()
        self.diffusion = model
        self.diffusion_ema = EMA(model.model, beta=0.9999, power=3 / 4, update_every=1, update_after_step=1)
        self.lr = lr
        self.pre_encoded = pre_encoded
        self.timestep_sampler = TimestepSampler("uniform")
        self.losses = MultiLoss([MSELoss("v", "targets", weight=1.0, name="mse_loss")])

    @property
    def optimizer_configs(self) -> Dict[str, Dict[str, Any]]:
        return adam_configs("diffusion", self.lr)

    def optimizer_groups(self) -> List[Tuple[str, Iterable[torch.nn.Parameter]]]:
        return [("diffusion", list(self.diffusion.parameters()))]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        reals, _ = split_batch(batch)
        latents = encode_to_latents(self.diffusion, reals, self.pre_encoded)
        t = self.timestep_sampler(latents.shape[0], self.device)
        noised = noise_inputs(latents, t, "v")
        v = self.diffusion(noised.noised, t)
        loss, losses = self.losses({"v": v, "targets": noised.targets})
        log_dict = {"train/loss": loss.detach(), "train/std_data": latents.std().detach()}
        log_dict.update({f"train/{name}": value.detach() for name, value in losses.items()})
        self.log_dict(log_dict, prog_bar=True, on_step=True, batch_size=latents.shape[0])
        return loss

    def on_before_zero_grad(self, *args: Any, **kwargs: Any) -> None:
        self.diffusion_ema.update()

    def export_model(self, path: str, use_safetensors: bool = False) -> None:
        """Save the ``DiffusionModelWrapper`` with the EMA backbone (keys ``model.*``, ``pretransform.*``)."""
        with swapped_child(self.diffusion, "model", self.diffusion_ema.ema_model):
            save_unwrapped(self.diffusion, path, use_safetensors)


class DiffusionAutoencoderTrainingWrapper(OptimizerGroupsMixin, pl.LightningModule):
    """Trains a ``DiffusionAutoencoder``: its encoder's latents condition a v-objective diffusion decoder.

    Step: pretransform encode (no grad) -> ``encode(skip_pretransform=True)`` (bottleneck losses) -> optional
    ``decoder`` -> nearest-upsample the latents to the diffusion length -> Sobol ``t``, v objective with
    ``input_concat_cond=latents``. With ``use_reconstruction_loss`` the predicted clean signal
    ``x_t·α − v·σ`` is decoded by the pretransform and compared with the input audio by a multi-resolution
    STFT loss (``mrstft_loss``, weight 0.1; sum-and-difference for stereo).

    Attributes: ``diffae``, ``diffae_ema`` (EMA of the whole model, online model not included) and ``losses``.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-4, ema_copy: Optional[nn.Module] = None,
                 use_reconstruction_loss: bool = False) -> None:
        super().__init__()
        self.diffae = model
        self.diffae_ema = EMA(model, ema_model=ema_copy, beta=0.9999, power=3 / 4, update_every=1,
                              update_after_step=1, include_online_model=False)
        self.lr = lr
        self.timestep_sampler = TimestepSampler("uniform")
        loss_modules = [MSELoss("v", "targets", weight=1.0, name="mse_loss")]
        if model.bottleneck is not None:
            loss_modules += create_loss_modules_from_bottleneck(model.bottleneck, {})
        self.use_reconstruction_loss = use_reconstruction_loss
        if use_reconstruction_loss:
            scales = [2048, 1024, 512, 256, 128, 64, 32]
            stft_args = {"fft_sizes": scales, "hop_sizes": [s // 4 for s in scales], "win_lengths": scales,
                         "perceptual_weighting": True}
            pretransform = model.pretransform
            out_channels = pretransform.io_channels if pretransform is not None else model.out_channels
            loss_cls = SumAndDifferenceSTFTLoss if out_channels == 2 else MultiResolutionSTFTLoss
            self.sdstft = loss_cls(sample_rate=model.sample_rate, **stft_args)
            # upstream evaluates stft(audio_reals, audio_pred); AuralossLoss calls (target, input)
            loss_modules.append(AuralossLoss(self.sdstft, input_key="audio_pred", target_key="audio_reals",
                                             name="mrstft_loss", weight=0.1))
        self.losses = MultiLoss(loss_modules)

    @property
    def optimizer_configs(self) -> Dict[str, Dict[str, Any]]:
        return adam_configs("diffae", self.lr)

    def optimizer_groups(self) -> List[Tuple[str, Iterable[torch.nn.Parameter]]]:
        return [("diffae", list(self.diffae.parameters()))]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        audio, _ = split_batch(batch)
        info: Dict[str, Any] = {"audio_reals": audio}
        pretransform = self.diffae.pretransform
        reals = audio
        if pretransform is not None:
            pretransform.train(False)
            with torch.no_grad():
                reals = pretransform.encode(audio)
        info["reals"] = reals
        latents, encoder_info = self.diffae.encode(reals, return_info=True, skip_pretransform=True)
        info["latents"] = latents
        info.update(encoder_info)
        if self.diffae.decoder is not None:
            latents = self.diffae.decoder(latents)
        if latents.shape[2] != reals.shape[2]:
            latents = F.interpolate(latents, size=reals.shape[2], mode="nearest")
        info["latents_upsampled"] = latents
        t = self.timestep_sampler(reals.shape[0], self.device)
        noised = noise_inputs(reals, t, "v")
        v = self.diffae.diffusion(noised.noised, t, input_concat_cond=latents)
        info.update(v=v, targets=noised.targets)
        if self.use_reconstruction_loss:
            pred = noised.noised * noised.alphas - v * noised.sigmas
            info["pred"] = pred
            audio_pred = pretransform.decode(pred) if pretransform is not None else pred
            length = min(audio_pred.shape[-1], audio.shape[-1])
            info["audio_pred"], info["audio_reals"] = audio_pred[..., :length], audio[..., :length]
        loss, losses = self.losses(info)
        log_dict = {"train/loss": loss.detach(), "train/std_data": reals.std().detach(),
                    "train/latent_std": latents.std().detach()}
        log_dict.update({f"train/{name}": value.detach() for name, value in losses.items()})
        self.log_dict(log_dict, prog_bar=True, on_step=True, batch_size=reals.shape[0])
        return loss

    def on_before_zero_grad(self, *args: Any, **kwargs: Any) -> None:
        self.diffae_ema.update()

    def export_model(self, path: str, use_safetensors: bool = False) -> None:
        """Save the EMA copy of the diffusion autoencoder."""
        save_unwrapped(self.diffae_ema.ema_model, path, use_safetensors)
