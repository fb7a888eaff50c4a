"""ARC (Adversarial Relativistic-Contrastive) post-training of rectified-flow DiT models (see
docs/diffusion.md#arc-post-training-trainingarc).

The student (a ``diffusion_cond`` model) is trained against a discriminator made of a DiT backbone (hidden
states of layer ``dit_hidden_layer``) and a small head (:mod:`stable_audio_tools.models.arc`); even global steps train
the student, odd steps the discriminator. An optional ODE warmup first regresses the student onto a frozen
teacher's sampling trajectories. Manual optimization.

Differences from upstream: see docs/compatibility.md#stable_audio_toolstrainingarc.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from ..models.arc import ConvDiscriminator, ConvNeXtDiscriminator
from ..models.common import checkpoint
from ..models.inpainting import random_inpaint_mask
from ..samplers.flow_samplers import sample_rf_dpmpp_2m
from .common import OptimizerGroupsMixin, encode_to_latents, padding_masks_from_metadata, split_batch
from .demo_base import eval_mode
from .ema import EMA
from .timesteps import TimestepSampler

__all__ = ["ARCTrainingWrapper", "sample_flow_dpmpp_w_intermediates", "euler_step", "checkpoint", "ARC_HEADS"]

ARC_HEADS = {"convnext": ConvNeXtDiscriminator, "conv": ConvDiscriminator}


def euler_step(x_t: torch.Tensor, v_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """One Euler step of the rectified-flow ODE from times ``t`` to ``s`` (``[B]``): ``x_t + (s - t) * v_t``."""
    return x_t + (s - t)[:, None, None] * v_t


@torch.no_grad()
def sample_flow_dpmpp_w_intermediates(model: nn.Module, x: torch.Tensor, sigmas: Optional[torch.Tensor] = None,
                                      steps: Optional[int] = None, callback: Optional[Callable[[dict], None]] = None,
                                      dist_shift: Any = None, **extra_args: Any) -> Dict[str, torch.Tensor]:
    """Flow DPM-Solver++(2M) sampling from noise ``x`` over the times ``sigmas`` (1 -> 0), keeping every state.

    Without ``sigmas``, ``steps`` uniform times from 1 to 0 are used, shifted by ``dist_shift`` (a
    :class:`~stable_audio_tools.inference.sampling.DistributionShift`) if given. ``callback`` is called after every
    model evaluation with ``{"x", "i", "sigma", "sigma_hat", "denoised"}``. Returns ``{"target": final sample
    [B, C, L], "x": states before each step [steps, B, C, L], "t": their times [steps, 1]}``.
    ``model(x, t [B], **extra_args)`` predicts the RF velocity. The steps are the shared
    :func:`~stable_audio_tools.samplers.flow_samplers.sample_rf_dpmpp_2m`; its callback keeps the states.
    """
    if sigmas is None:
        if steps is None:
            raise ValueError("sample_flow_dpmpp_w_intermediates needs either steps or sigmas")
        sigmas = torch.linspace(1, 0, steps + 1)
        if dist_shift is not None:
            sigmas = dist_shift.time_shift(sigmas, x.shape[-1])
    states: List[torch.Tensor] = []
    times: List[torch.Tensor] = []

    def keep_state(info: Dict[str, Any]) -> None:
        states.append(info["x"])
        times.append(info["t"])
        if callback is not None:
            callback({"x": info["x"], "i": info["i"], "sigma": info["sigma"], "sigma_hat": info["sigma"],
                      "denoised": info["denoised"]})

    target = sample_rf_dpmpp_2m(model, x, sigmas.to(x.device), extra_args, keep_state, disable=True)
    return {"target": target.detach(), "x": torch.stack(states).detach(),
            "t": torch.stack(times).unsqueeze(-1).detach()}


def _checkpointed(fn: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
    return checkpoint(fn, *args, **kwargs)


class ARCTrainingWrapper(OptimizerGroupsMixin, pl.LightningModule):
    """ARC post-training wrapper.

    Attributes (state-dict prefixes): ``diffusion`` (student), ``teacher_model`` (frozen, or None),
    ``discriminator`` (a conditioned DiT diffusion model), ``discriminator_head`` and ``diffusion_ema`` (EMA of
    ``diffusion.model`` as in the diffusion_cond wrapper, or None).

    Args:
        model: the student ``ConditionedDiffusionModelWrapper`` (rectified-flow DiT).
        discriminator: the discriminator backbone (a conditioned DiT model).
        arc_config: the ``training.arc`` block (``ode_warmup``, ``noise_dist``, ``discriminator``).
        optimizer_configs: groups ``diffusion`` (student) and ``discriminator`` (head + backbone).
        teacher_model: frozen teacher for the ODE warmup.
        use_ema: keep an EMA copy of the student's backbone.
        pre_encoded: batches hold pretransform latents.
        cfg_dropout_prob: conditioning dropout of the student's generator/warmup passes.
        clip_grad_norm: gradient-norm clipping of each optimizer step (0 = off).
        trim_config: ``{"trim_prob", "type": "random_item"}``: with that probability, crop the batch to a
            random item's real length (at least 128 frames).
        inpainting_config: ``{"mask_kwargs": {...}}`` enables inpainting masks.
    """

    def __init__(self, model: nn.Module, discriminator: nn.Module, arc_config: Mapping[str, Any],
                 optimizer_configs: Mapping[str, Any], teacher_model: Optional[nn.Module] = None,
                 use_ema: bool = True, pre_encoded: bool = False, cfg_dropout_prob: float = 0.0,
                 clip_grad_norm: float = 0.0, trim_config: Optional[Mapping[str, Any]] = None,
                 inpainting_config: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.diffusion = model
        self.teacher_model = teacher_model
        if teacher_model is not None:
            teacher_model.eval().requires_grad_(False)
        self.discriminator = discriminator
        self.diffusion_ema = None
        if use_ema:
            self.diffusion_ema = EMA(model.model, beta=0.9999, power=3 / 4, update_every=1, update_after_step=1,
                                     include_online_model=False)
        warmup = dict(arc_config.get("ode_warmup") or {})
        self.ode_warmup_steps = int(warmup.get("warmup_steps", 0))
        self.ode_refresh_rate = int(warmup.get("refresh_rate", 1))
        self.ode_sampling_steps = int(warmup.get("sampling_steps", 20))
        self.ode_warmup_cfg = float(warmup.get("cfg", 4.0))
        self._ode_states: Optional[Dict[str, torch.Tensor]] = None
        self._ode_metadata: List[Dict[str, Any]] = []
        self._ode_inpaint: Optional[List[torch.Tensor]] = None
        noise_dist = dict(arc_config.get("noise_dist") or {})
        self.gen_noise_dist = TimestepSampler(noise_dist.get("generator", "uniform"),
                                              path="training.arc.noise_dist.generator")
        self.dis_noise_dist = TimestepSampler(noise_dist.get("discriminator", "uniform"),
                                              path="training.arc.noise_dist.discriminator")
        disc = dict(arc_config["discriminator"])
        self.discriminator_dit_layer = int(disc["dit_hidden_layer"])
        self.do_contrastive_disc = bool(disc.get("contrastive", False))
        self.include_grad_penalties = bool(disc.get("include_grad_penalties", False))
        head_cls = ARC_HEADS[disc.get("type", "convnext")]
        dim = discriminator.model.model.transformer.dim
        head_kwargs = dict(disc.get("config") or {})
        if head_cls is ConvNeXtDiscriminator:
            self.discriminator_head = ConvNeXtDiscriminator(in_channels=dim, latent_dim=1, **head_kwargs)
        else:
            self.discriminator_head = ConvDiscriminator(channels=dim, **head_kwargs)
        weights = dict(disc.get("weights") or {})
        self.gen_gan_weight = float(weights.get("generator", 1.0))
        self.dis_gan_weight = float(weights.get("discriminator", 1.0))
        self.contrastive_loss_weight = float(weights.get("contrastive", 1.0))
        self.cfg_dropout_prob = cfg_dropout_prob
        self.diffusion_objective = model.diffusion_objective
        self.optimizer_configs = optimizer_configs
        self.pre_encoded = pre_encoded
        self.clip_grad_norm = clip_grad_norm
        trim_config = dict(trim_config or {})
        self.trim_prob = float(trim_config.get("trim_prob", 0.0))
        self.trim_type = trim_config.get("type", "random_item")
        self.inpainting_config = inpainting_config
        self.inpaint_mask_kwargs = dict((inpainting_config or {}).get("mask_kwargs", {}))

    # ------------------------------------------------------------------ optimizers
    def optimizer_groups(self) -> List[Tuple[str, Iterable[torch.nn.Parameter]]]:
        return [("diffusion", self.diffusion.parameters()),
                ("discriminator", list(self.discriminator_head.parameters()) + list(self.discriminator.parameters()))]

    def _optimizer_step(self, opt, loss: torch.Tensor, group: str) -> None:
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        scheduler = self.scheduler_for(group)
        if scheduler is not None:
            scheduler.step()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the gradients of the optimizer about to step (after AMP unscaling, unlike upstream)."""
        if self.clip_grad_norm > 0.0:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)

    # ------------------------------------------------------------------ helpers
    def _inpaint(self, conditioning: Dict[str, Any], inpaint: Optional[List[torch.Tensor]]) -> Dict[str, Any]:
        if inpaint is not None:
            conditioning["inpaint_mask"] = [inpaint[1]]
            conditioning["inpaint_masked_input"] = [inpaint[0]]
        return conditioning

    def _hidden_scores(self, x: torch.Tensor, t: torch.Tensor, cond: Dict[str, Any]) -> torch.Tensor:
        hidden = _checkpointed(self.discriminator, x, t, cond=cond, cfg_scale=1.0,
                               exit_layer_ix=self.discriminator_dit_layer) if torch.is_grad_enabled() else \
            self.discriminator(x, t, cond=cond, cfg_scale=1.0, exit_layer_ix=self.discriminator_dit_layer)
        return self.discriminator_head(hidden.transpose(1, 2))

    @staticmethod
    def _renoise(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * (1 - t)[:, None, None] + noise * t[:, None, None]

    def _ode_warmup_loss(self, latents: torch.Tensor, metadata: Sequence[Dict[str, Any]],
                         padding_masks: torch.Tensor) -> torch.Tensor:
        if self._ode_states is None or self.global_step % self.ode_refresh_rate == 0:
            teacher_cond = self.teacher_model.conditioner(list(metadata), self.device)
            self._ode_inpaint = None
            if self.inpainting_config is not None:
                self._ode_inpaint = list(random_inpaint_mask(latents, padding_masks, **self.inpaint_mask_kwargs))
            self._inpaint(teacher_cond, self._ode_inpaint)
            sigmas = torch.sigmoid(-torch.linspace(-6, 2, self.ode_sampling_steps + 1))
            sigmas[0], sigmas[-1] = 1.0, 0.0
            self._ode_metadata = list(metadata)
            with eval_mode(self.teacher_model):
                self._ode_states = sample_flow_dpmpp_w_intermediates(
                    self.teacher_model, torch.randn_like(latents), sigmas, cond=teacher_cond,
                    cfg_scale=self.ode_warmup_cfg, batch_cfg=True)
        states = self._ode_states
        conditioning = self._inpaint(self.diffusion.conditioner(self._ode_metadata, self.device), self._ode_inpaint)
        batch = states["x"].shape[1]
        ixs = torch.randint(0, self.ode_sampling_steps, (batch,))
        t = states["t"][ixs].squeeze(-1).to(self.device)
        x_t = states["x"][ixs, torch.arange(batch)].to(self.device)
        v = self.diffusion(x_t, t, cond=conditioning, cfg_dropout_prob=self.cfg_dropout_prob)
        return F.mse_loss(x_t - t[:, None, None] * v, states["target"])

    def _trim(self, latents: torch.Tensor, padding_masks: torch.Tensor):
        if self.trim_prob <= 0 or random.random() >= self.trim_prob:
            return latents, padding_masks
        lengths = (padding_masks.sum(dim=1) - 1).tolist()
        length = max(int(random.choice(lengths)), 128)
        return latents[:, :, :length], padding_masks[:, :length]

    def _rolled_metadata(self, metadata: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Copies of the metadata with each item's ``prompt`` taken from the next item (wrapping around)."""
        rolled = []
        for i, info in enumerate(metadata):
            item = dict(info)
            following = metadata[(i + 1) % len(metadata)]
            if "prompt" in following:
                item["prompt"] = following["prompt"]
            rolled.append(item)
        return rolled

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        reals, metadata = split_batch(batch)
        latents = encode_to_latents(self.diffusion, reals, self.pre_encoded)
        padding_masks = padding_masks_from_metadata(metadata, latents.shape[2], self.device)
        opt_gen, opt_disc = self.optimizers()
        log_dict: Dict[str, Any] = {"train/std_data": latents.std().detach()}
        batch_size = latents.shape[0]

        if self.global_step < self.ode_warmup_steps:
            loss = self._ode_warmup_loss(latents, metadata, padding_masks)
            self._optimizer_step(opt_gen, loss, "diffusion")
            if self.diffusion_ema is not None:
                self.diffusion_ema.update()
            log_dict["train/ode_mse_loss"] = loss.detach()
            self.log_dict(log_dict, prog_bar=True, on_step=True, batch_size=batch_size)
            return loss

        latents, padding_masks = self._trim(latents, padding_masks)
        inpaint = None
        if self.inpainting_config is not None:
            inpaint = list(random_inpaint_mask(latents, padding_masks, **self.inpaint_mask_kwargs))
        conditioning = self._inpaint(self.diffusion.conditioner(list(metadata), self.device), inpaint)
        t = self.gen_noise_dist(batch_size, self.device)
        x_t = self._renoise(latents, torch.randn_like(latents), t)
        train_gen = self.global_step % 2 == 0
        if train_gen:
            v = _checkpointed(self.diffusion, x_t, t, cond=conditioning, cfg_dropout_prob=self.cfg_dropout_prob)
        else:
            with torch.no_grad():
                v = self.diffusion(x_t, t, cond=conditioning)
        denoised = x_t - t[:, None, None] * v
        fake_cond = self._inpaint(self.discriminator.conditioner(list(metadata), self.device), inpaint)
        t_gan = self.dis_noise_dist(batch_size, self.device)
        noise = torch.randn_like(denoised)

        if train_gen:
            fake_scores = self._hidden_scores(self._renoise(denoised, noise, t_gan), t_gan, fake_cond)
            with torch.no_grad():
                real_scores = self._hidden_scores(self._renoise(latents, noise, t_gan), t_gan, fake_cond)
            loss = F.softplus(real_scores - fake_scores).mean() * self.gen_gan_weight
            log_dict.update({"gen_disc_scores_mean": fake_scores.mean().detach(),
                             "gen_disc_scores_std": fake_scores.std().detach(),
                             "train/adv_loss": loss.detach(), "train/gen_loss": loss.detach(),
                             "train/gen_lr": opt_gen.param_groups[0]["lr"]})
            self._optimizer_step(opt_gen, loss, "diffusion")
            if self.diffusion_ema is not None:
                self.diffusion_ema.update()
        else:
            loss = self._discriminator_loss(latents, denoised.detach(), noise, t_gan, fake_cond, metadata, inpaint,
                                            log_dict)
            log_dict["train/disc_lr"] = opt_disc.param_groups[0]["lr"]
            self._optimizer_step(opt_disc, loss, "discriminator")
        self.log_dict(log_dict, prog_bar=True, on_step=True, batch_size=batch_size)
        return loss

    def _discriminator_loss(self, latents: torch.Tensor, denoised: torch.Tensor, noise: torch.Tensor,
                            t_gan: torch.Tensor, cond: Dict[str, Any], metadata: Sequence[Dict[str, Any]],
                            inpaint: Optional[List[torch.Tensor]], log_dict: Dict[str, Any]) -> torch.Tensor:
        reals_t = self._renoise(latents, noise, t_gan)
        fakes_t = self._renoise(denoised, noise, t_gan)
        real_scores = self._hidden_scores(reals_t, t_gan, cond)
        fake_scores = self._hidden_scores(fakes_t, t_gan, cond)
        grad_penalty: Any = 0.0
        if self.include_grad_penalties:
            r1 = (self._hidden_scores(reals_t + 0.05 * torch.randn_like(reals_t), t_gan, cond)
                  - real_scores).pow(2).sum(dim=[1, 2])
            r2 = (self._hidden_scores(fakes_t + 0.05 * torch.randn_like(fakes_t), t_gan, cond)
                  - fake_scores).pow(2).sum(dim=[1, 2])
            grad_penalty = (r1.mean() + r2.mean()) / 2
            log_dict.update({"r1_penalty": r1.mean().detach(), "r2_penalty": r2.mean().detach(),
                             "train/grad_penalty_loss": grad_penalty.detach()})
        log_dict.update({"disc_real_scores_mean": real_scores.mean().detach(),
                         "disc_fake_scores_mean": fake_scores.mean().detach(),
                         "disc_real_scores_std": real_scores.std().detach(),
                         "disc_fake_scores_std": fake_scores.std().detach()})
        loss_dis = F.softplus(-(real_scores - fake_scores)).mean() * self.dis_gan_weight
        contrastive: Any = 0.0
        if self.do_contrastive_disc:
            rolled = self._inpaint(self.discriminator.conditioner(self._rolled_metadata(metadata), self.device),
                                   inpaint)
            rolled_scores = self._hidden_scores(reals_t, t_gan, rolled)
            contrastive = F.softplus(-(real_scores - rolled_scores)).mean() * self.dis_gan_weight \
                * self.contrastive_loss_weight
            log_dict["train/contrastive_loss_dis"] = contrastive.detach()
        loss = loss_dis + contrastive + grad_penalty
        log_dict.update({"train/dis_loss": loss_dis.detach(), "train/discriminator_loss": loss.detach()})
        return loss
