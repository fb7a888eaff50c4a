"""Lightning training wrappers for ``diffusion_uncond`` and ``diffusion_autoencoder`` models (SPEC 5.2, 5.5),
and the batch helpers every diffusion wrapper shares (the ``diffusion_cond`` wrapper is in
:mod:`.diffusion_cond`, ARC in :mod:`.arc`).

Differences from upstream (checkpoint keys and numerics unchanged):

* the pretransform is put in train mode only if it is trainable (``enable_grad``), in every wrapper
  (upstream did this for diffusion_cond only; Lightning otherwise switches a frozen autoencoder to train mode);
* mixed precision comes from the Trainer's ``precision`` (upstream also wrapped the uncond forward in a
  hard-coded CUDA autocast);
* ``export_model`` restores the online model after saving (upstream left the EMA model swapped in);
* the diffusion autoencoder's reconstruction loss also works without a pretransform (upstream silently
  skipped it), and its decoder path follows the model's ``decoder`` (SPEC 9.3 item 14).
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from .ema import EMA
from .losses import AuralossLoss, MSELoss, MultiLoss, MultiResolutionSTFTLoss, SumAndDifferenceSTFTLoss
from .timesteps import TimestepSampler, noise_inputs

__all__ = [
    "DiffusionUncondTrainingWrapper",
    "DiffusionAutoencoderTrainingWrapper",
    "split_batch",
    "encode_to_latents",
    "padding_masks_from_metadata",
    "swapped_child",
]


def split_batch(batch: Any) -> Tuple[torch.Tensor, Sequence[Dict[str, Any]]]:
    """``(audio_or_latents [B, C, L], metadata)`` of a collated batch; a leading WebDataset singleton dim is
    removed and a bare tensor gets empty metadata."""
    if isinstance(batch, (list, tuple)):
        reals = batch[0]
        metadata = batch[1] if len(batch) > 1 else ()
    else:
        reals, metadata = batch, ()
    if not isinstance(reals, torch.Tensor):
        raise TypeError(f"diffusion training batches must start with an audio/latent tensor, got "
                        f"{type(reals).__name__}")
    if reals.ndim == 4 and reals.shape[0] == 1:
        reals = reals[0]
    if reals.ndim != 3:
        raise ValueError(f"diffusion training expects [batch, channels, length] inputs, got shape "
                         f"{tuple(reals.shape)}")
    return reals, metadata


def encode_to_latents(model: nn.Module, reals: torch.Tensor, pre_encoded: bool) -> torch.Tensor:
    """What the diffusion model is trained on: ``model.pretransform.encode(reals)`` (with gradients only for a
    trainable pretransform), or for ``pre_encoded`` data the stored latents divided by the pretransform's
    ``scale`` (encode would have applied it); ``reals`` unchanged without a pretransform."""
    pretransform = getattr(model, "pretransform", None)
    if pretransform is None:
        return reals
    if pre_encoded:
        scale = getattr(pretransform, "scale", 1.0)
        return reals / scale if scale != 1.0 else reals
    trainable = bool(getattr(pretransform, "enable_grad", False))
    pretransform.train(trainable)
    with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
        return pretransform.encode(reals)


def padding_masks_from_metadata(metadata: Sequence[Dict[str, Any]], length: int, device: torch.device,
                                required: bool = False) -> torch.Tensor:
    """Boolean ``[B, length]`` masks (True = real data) from each item's ``padding_mask``.

    A mask is a tensor or list (pre-encoded datasets store lists), possibly wrapped in a 1-element list; it is
    nearest-resized to ``length`` (audio-rate masks become latent-rate masks). Items without a
    ``padding_mask`` count as all real unless ``required``, which raises a ValueError instead.
    """
    masks = []
    for index, info in enumerate(metadata):
        mask = info.get("padding_mask") if isinstance(info, dict) else None
        if mask is None:
            if required:
                raise ValueError(f"batch item {index} has no 'padding_mask' in its metadata, which "
                                 f"training.mask_padding needs; use a dataset that provides it (audio_dir and "
                                 f"pre_encoded do) or set mask_padding to false")
            masks.append(torch.ones(length))
            continue
        if isinstance(mask, (list, tuple)) and len(mask) == 1 and isinstance(mask[0], (torch.Tensor, list, tuple)):
            mask = mask[0]
        mask = torch.as_tensor(mask).float().flatten()
        if mask.shape[0] != length:
            mask = F.interpolate(mask[None, None], size=length, mode="nearest")[0, 0]
        masks.append(mask)
    return torch.stack(masks).to(device).bool()


@contextlib.contextmanager
def swapped_child(parent: nn.Module, name: str, replacement: Optional[nn.Module]) -> Iterator[nn.Module]:
    """Temporarily replace the child module ``parent.<name>`` by ``replacement`` (no-op when None)."""
    original = getattr(parent, name)
    if replacement is not None:
        setattr(parent, name, replacement)
    try:
        yield parent
    finally:
        setattr(parent, name, original)


class DiffusionUncondTrainingWrapper(pl.LightningModule):
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

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(list(self.diffusion.parameters()), lr=self.lr)

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
        from .export import save_unwrapped

        with swapped_child(self.diffusion, "model", self.diffusion_ema.ema_model):
            save_unwrapped(self.diffusion, path, use_safetensors)


class DiffusionAutoencoderTrainingWrapper(pl.LightningModule):
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
            from .autoencoders import create_loss_modules_from_bottleneck

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

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(list(self.diffae.parameters()), lr=self.lr)

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
        from .export import save_unwrapped

        save_unwrapped(self.diffae_ema.ema_model, path, use_safetensors)
