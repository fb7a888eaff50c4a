"""Lightning training wrapper for ``diffusion_cond`` / ``diffusion_cond_inpaint`` models (see
docs/diffusion.md#diffusion_cond--diffusion_cond_inpaint-training).

Differences from upstream: see docs/compatibility.md#stable_audio_toolstrainingdiffusion_cond.
"""
from __future__ import annotations

import random
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from ..models.inpainting import random_inpaint_mask
from .common import OptimizerGroupsMixin, encode_to_latents, padding_masks_from_metadata, split_batch, swapped_child
from .ema import EMA
from .export import save_unwrapped
from .losses import MSELoss, MultiLoss
from .timesteps import TimestepSampler, noise_inputs

__all__ = ["DiffusionCondTrainingWrapper", "VALIDATION_TIMESTEPS"]

VALIDATION_TIMESTEPS = (0.1, 0.3, 0.5, 0.7, 0.9)
_NUM_LOSS_BUCKETS = 10


class DiffusionCondTrainingWrapper(OptimizerGroupsMixin, pl.LightningModule):
    """Trains a ``ConditionedDiffusionModelWrapper`` (text/timing/... conditioned, optionally latent).

    Attributes (state-dict prefixes): ``diffusion``, ``diffusion_ema`` (EMA of ``diffusion.model``, online model
    not included, beta 0.9999, power 3/4, updated every optimizer step after step 1; None without EMA) and
    ``losses`` (``mse_loss`` between ``output`` and ``targets``, masked by the padding mask with
    ``mask_padding``).

    Step: conditioner outputs -> latents (pretransform encode, or pre-encoded ÷ scale) -> ``t`` from
    ``timestep_sampler`` -> optional distribution shift -> ``t = 1`` with probability ``p_one_shot`` ->
    noised inputs and targets for the model's objective -> optional inpainting masks as conditioning
    (``inpaint_mask`` / ``inpaint_masked_input``) -> ``output = diffusion(x_t, t, cond, cfg_dropout_prob,
    mask=padding mask if used)`` -> MSE.

    Args:
        model: the conditioned diffusion model.
        lr: Adam learning rate, used when ``optimizer_configs`` is None.
        mask_padding: restrict the loss (and pass the padding mask to the model) to the real region.
        mask_padding_dropout: probability of not masking a given batch (so padding silence is learnt too).
        use_ema: keep an EMA copy of the backbone.
        log_loss_info: log the loss per noise-level bucket as ``model/loss_all_<lo>``.
        optimizer_configs: ``{"diffusion": {"optimizer": ..., "scheduler"?: ...}}``.
        pre_encoded: batches hold pretransform latents.
        cfg_dropout_prob: per-item probability of dropping the conditioning (classifier-free guidance).
        timestep_sampler: ``uniform`` | ``logit_normal`` | ``trunc_logit_normal`` | ``log_snr``.
        timestep_sampler_options: options of the sampler (``mean_logsnr``, ``std_logsnr`` for log_snr).
        validation_timesteps: fixed ``t`` values evaluated by ``validation_step``.
        p_one_shot: probability of training an item at ``t = 1`` (pure noise).
        inpainting_config: ``{"mask_kwargs": {...}}`` enables inpainting masks (see ``training.inpainting``).
    """

    def __init__(self, model: nn.Module, lr: Optional[float] = None, mask_padding: bool = False,
                 mask_padding_dropout: float = 0.0, use_ema: bool = True, log_loss_info: bool = False,
                 optimizer_configs: Optional[Mapping[str, Any]] = None, pre_encoded: bool = False,
                 cfg_dropout_prob: float = 0.1, timestep_sampler: str = "uniform",
                 timestep_sampler_options: Optional[Mapping[str, Any]] = None,
                 validation_timesteps: Sequence[float] = VALIDATION_TIMESTEPS, p_one_shot: float = 0.0,
                 inpainting_config: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        if lr is None and optimizer_configs is None:
            raise ValueError("DiffusionCondTrainingWrapper needs lr or optimizer_configs "
                             "(training.learning_rate or training.optimizer_configs)")
        self.diffusion = model
        self.diffusion_ema = None
        if use_ema:
            self.diffusion_ema = EMA(model.model, beta=0.9999, power=3 / 4, update_every=1, update_after_step=1,
                                     include_online_model=False)
        self.mask_padding = mask_padding
        self.mask_padding_dropout = mask_padding_dropout
        self.cfg_dropout_prob = cfg_dropout_prob
        self.timestep_sampler = TimestepSampler(timestep_sampler, timestep_sampler_options)
        self.p_one_shot = p_one_shot
        self.diffusion_objective = model.diffusion_objective
        self.losses = MultiLoss([MSELoss("output", "targets", weight=1.0,
                                         mask_key="padding_mask" if mask_padding else None, name="mse_loss")])
        self.log_loss_info = log_loss_info
        if optimizer_configs is None:
            optimizer_configs = {"diffusion": {"optimizer": {"type": "Adam", "config": {"lr": lr}}}}
        self.optimizer_configs = optimizer_configs
        self.pre_encoded = pre_encoded
        self.inpainting_config = inpainting_config
        self.inpaint_mask_kwargs = dict((inpainting_config or {}).get("mask_kwargs", {}))
        self.validation_timesteps = tuple(validation_timesteps)
        self._val_losses: Dict[float, List[torch.Tensor]] = {t: [] for t in self.validation_timesteps}

    # ------------------------------------------------------------------ optimizers
    def optimizer_groups(self) -> List[Tuple[str, Iterable[torch.nn.Parameter]]]:
        return [("diffusion", self.diffusion.parameters())]

    # ------------------------------------------------------------------ shared pieces
    def _conditioning(self, metadata: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        conditioner = self.diffusion.conditioner
        return conditioner(list(metadata), self.device) if conditioner is not None else {}

    def _add_inpainting(self, conditioning: Dict[str, Any], latents: torch.Tensor,
                        padding_masks: torch.Tensor) -> None:
        masked, mask = random_inpaint_mask(latents, padding_masks, **self.inpaint_mask_kwargs)
        conditioning["inpaint_mask"] = [mask]
        conditioning["inpaint_masked_input"] = [masked]

    def sample_timesteps(self, batch_size: int, length: int) -> torch.Tensor:
        """Training ``t`` for a batch: sampler, then the model's distribution shift, then ``p_one_shot``."""
        t = self.timestep_sampler(batch_size, self.device)
        dist_shift = getattr(self.diffusion, "dist_shift", None)
        if dist_shift is not None:
            t = dist_shift.time_shift(t, length)
        if self.p_one_shot > 0:
            t = torch.where(torch.rand_like(t) < self.p_one_shot, torch.ones_like(t), t)
        return t

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        reals, metadata = split_batch(batch)
        conditioning = self._conditioning(metadata)
        use_padding_mask = self.mask_padding and random.random() > self.mask_padding_dropout
        latents = encode_to_latents(self.diffusion, reals, self.pre_encoded)
        padding_masks = None
        if use_padding_mask or self.inpainting_config is not None:
            padding_masks = padding_masks_from_metadata(metadata, latents.shape[2], self.device,
                                                        required=use_padding_mask)
        t = self.sample_timesteps(latents.shape[0], latents.shape[2])
        noised = noise_inputs(latents, t, self.diffusion_objective)
        if self.inpainting_config is not None:
            self._add_inpainting(conditioning, latents, padding_masks)
        extra = {"mask": padding_masks} if use_padding_mask else {}
        output = self.diffusion(noised.noised, t, cond=conditioning, cfg_dropout_prob=self.cfg_dropout_prob,
                                **extra)
        loss, losses = self.losses({"output": output, "targets": noised.targets,
                                    "padding_mask": padding_masks if use_padding_mask else None})
        if self.log_loss_info:
            self._log_loss_by_noise_level(output, noised.targets, noised.sigmas)
        log_dict = {"train/loss": loss.detach(), "train/std_data": latents.std().detach(),
                    "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"]}
        log_dict.update({f"train/{name}": value.detach() for name, value in losses.items()})
        self.log_dict(log_dict, prog_bar=True, on_step=True, batch_size=latents.shape[0])
        return loss

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        gathered = self.all_gather(tensor)
        return gathered.flatten(0, 1) if gathered.dim() == tensor.dim() + 1 else gathered

    def _log_loss_by_noise_level(self, output: torch.Tensor, targets: torch.Tensor, sigmas: torch.Tensor) -> None:
        """Mean squared error of the items whose noise level σ lies in [k/10, (k+1)/10), over all devices."""
        with torch.no_grad():
            per_item = F.mse_loss(output.float(), targets.float(), reduction="none").flatten(1).mean(dim=1)
            per_item = self._gather(per_item)
            sigmas = self._gather(sigmas.flatten().float())
            bucket_size = 1 / _NUM_LOSS_BUCKETS
            log_dict = {}
            for i in range(_NUM_LOSS_BUCKETS):
                low = i * bucket_size
                selected = (sigmas >= low) & (sigmas < low + bucket_size)
                if selected.any():
                    log_dict[f"model/loss_all_{low:.1f}"] = per_item[selected].mean()
        if log_dict:
            self.log_dict(log_dict, on_step=True, batch_size=output.shape[0])

    def on_before_zero_grad(self, *args: Any, **kwargs: Any) -> None:
        if self.diffusion_ema is not None:
            self.diffusion_ema.update()

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        reals, metadata = split_batch(batch)
        with torch.no_grad():
            conditioning = self._conditioning(metadata)
            latents = encode_to_latents(self.diffusion, reals, self.pre_encoded)
            if self.inpainting_config is not None:
                padding_masks = padding_masks_from_metadata(metadata, latents.shape[2], self.device)
                self._add_inpainting(conditioning, latents, padding_masks)
            for value in self.validation_timesteps:
                t = torch.full((latents.shape[0],), float(value), device=self.device)
                noised = noise_inputs(latents, t, self.diffusion_objective)
                output = self.diffusion(noised.noised, t, cond=conditioning, cfg_dropout_prob=0.0)
                self._val_losses[value].append(F.mse_loss(output.float(), noised.targets.float()).detach())

    def on_validation_epoch_end(self) -> None:
        if not any(self._val_losses.values()):
            return
        means = []
        for value, losses in self._val_losses.items():
            mean = self.all_gather(torch.stack(losses).mean()).mean()
            means.append(mean)
            self.log(f"val/loss_{value:.1f}", mean, sync_dist=False)
        self.log("val/avg_loss", torch.stack(means).mean(), sync_dist=False)
        for losses in self._val_losses.values():
            losses.clear()

    # ------------------------------------------------------------------ export
    def export_model(self, path: str, use_safetensors: bool = False) -> None:
        """Save the conditioned model (EMA backbone when EMA is used): keys ``model.*``, ``conditioner.*``,
        ``pretransform.*``."""
        ema = self.diffusion_ema.ema_model if self.diffusion_ema is not None else None
        with swapped_child(self.diffusion, "model", ema):
            save_unwrapped(self.diffusion, path, use_safetensors)
