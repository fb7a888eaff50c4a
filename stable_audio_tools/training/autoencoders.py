"""Lightning training wrapper for ``autoencoder`` models (see docs/training.md#autoencoders).

Differences from upstream: see docs/compatibility.md#stable_audio_toolstrainingautoencoders.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import pytorch_lightning as pl
import torch
from torch import nn

from ..config import ConfigError, require, require_mapping
from ..models.discriminators import create_discriminator_from_config
from .autoencoder_demos import AutoencoderDemoCallback
from .common import OptimizerGroupsMixin, create_loss_modules_from_bottleneck
from .ema import EMA
from .export import save_unwrapped
from .losses import (AuralossLoss, L1Loss, LossWithTarget, MelSTFTLoss, MSELoss, MultiLoss, MultiResolutionSTFTLoss,
                     MultiScaleMelSpectrogramLoss, SISDRLoss, STFTLoss, SumAndDifferenceSTFTLoss, ValueLoss)
from .losses.metrics import PESQMetric
from .losses.semantic import HubertLoss

__all__ = ["AutoencoderTrainingWrapper", "default_autoencoder_loss_config", "create_loss_modules_from_bottleneck",
           "trim_to_shortest",
           "AutoencoderDemoCallback"]  # defined in .autoencoder_demos / .common, importable here as upstream

log = logging.getLogger(__name__)


def default_autoencoder_loss_config() -> Dict[str, Any]:
    """Upstream's default ``loss_configs`` (encodec discriminator, 7-scale perceptual MRSTFT)."""
    ffts = [2048, 1024, 512, 256, 128, 64, 32]
    return {
        "discriminator": {"type": "encodec",
                          "config": {"filters": 32, "n_ffts": ffts, "hop_lengths": [n // 4 for n in ffts],
                                     "win_lengths": list(ffts)},
                          "weights": {"adversarial": 0.1, "feature_matching": 5.0}},
        "spectral": {"type": "mrstft",
                     "config": {"fft_sizes": ffts, "hop_sizes": [n // 4 for n in ffts], "win_lengths": list(ffts),
                                "perceptual_weighting": True},
                     "weights": {"mrstft": 1.0}},
        "time": {"type": "l1", "weights": {"l1": 0.0}},
    }


def trim_to_shortest(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    n = min(a.shape[-1], b.shape[-1])
    return a[..., :n], b[..., :n]


class AutoencoderTrainingWrapper(OptimizerGroupsMixin, pl.LightningModule):
    """Trains an ``AudioAutoencoder`` with reconstruction, bottleneck and (optionally) adversarial losses.

    Generator and discriminator steps alternate: odd global steps train the discriminator (when there is
    one), even steps the autoencoder. Manual optimization.
    """

    def __init__(self, autoencoder: nn.Module, sample_rate: int = 48000, loss_config: Optional[Mapping] = None,
                 eval_loss_config: Optional[Mapping] = None, optimizer_configs: Optional[Mapping] = None,
                 lr: float = 1e-4, warmup_steps: int = 0, warmup_mode: str = "adv",
                 encoder_freeze_on_warmup: bool = False, use_ema: bool = True, ema_copy: Optional[nn.Module] = None,
                 force_input_mono: bool = False, latent_mask_ratio: float = 0.0,
                 teacher_model: Optional[nn.Module] = None, clip_grad_norm: float = 0.0) -> None:
        super().__init__()
        self.automatic_optimization = False
        if warmup_mode not in ("adv", "full"):
            raise ConfigError("training.warmup_mode", f"unknown value {warmup_mode!r}; accepted: 'adv', 'full'")
        self.autoencoder = autoencoder
        self.sample_rate = sample_rate
        self.lr = lr
        self.warmup_steps = warmup_steps
        self.warmup_mode = warmup_mode
        self.warmed_up = False
        self.encoder_freeze_on_warmup = encoder_freeze_on_warmup
        self.force_input_mono = force_input_mono
        self.latent_mask_ratio = latent_mask_ratio
        self.clip_grad_norm = clip_grad_norm
        self.teacher_model = teacher_model
        if teacher_model is not None:
            teacher_model.eval().requires_grad_(False)

        if optimizer_configs is None:
            adamw = {"type": "AdamW", "config": {"lr": lr, "betas": (0.8, 0.99)}}
            optimizer_configs = {"autoencoder": {"optimizer": adamw}, "discriminator": {"optimizer": adamw}}
        self.optimizer_configs = optimizer_configs
        self.loss_config = loss_config = loss_config if loss_config is not None else default_autoencoder_loss_config()
        lpath = "training.loss_configs"

        spectral = require_mapping(require(loss_config, "spectral", lpath, "the MRSTFT loss"), f"{lpath}.spectral")
        stft_args = dict(spectral.get("config", {}))
        mrstft_weight = require(require(spectral, "weights", f"{lpath}.spectral"), "mrstft",
                                f"{lpath}.spectral.weights")
        decay = spectral.get("decay", 1.0)
        stereo = autoencoder.out_channels == 2
        try:
            if stereo:
                self.sdstft = SumAndDifferenceSTFTLoss(sample_rate=sample_rate, **stft_args)
                self.lrstft = MultiResolutionSTFTLoss(sample_rate=sample_rate, **stft_args)
            else:
                self.sdstft = MultiResolutionSTFTLoss(sample_rate=sample_rate, **stft_args)
        except TypeError as e:
            raise ConfigError(f"{lpath}.spectral.config", f"invalid MRSTFT option: {e}") from None

        self.use_disc = "discriminator" in loss_config
        self.discriminator = None
        gen_losses: List[nn.Module] = []
        if self.use_disc:
            dpath = f"{lpath}.discriminator"
            disc_cfg = require_mapping(loss_config["discriminator"], dpath)
            self.discriminator = create_discriminator_from_config(disc_cfg, autoencoder.out_channels, sample_rate,
                                                                  dpath)
            dweights = require(disc_cfg, "weights", dpath, "{'adversarial': ..., 'feature_matching': ...}")
            gen_losses += [
                ValueLoss(key="loss_adv", weight=require(dweights, "adversarial", f"{dpath}.weights"),
                          name="loss_adv"),
                ValueLoss(key="feature_matching_distance",
                          weight=require(dweights, "feature_matching", f"{dpath}.weights"),
                          name="feature_matching_loss"),
            ]

        if teacher_model is not None:
            w = mrstft_weight * 0.25
            gen_losses += [
                MSELoss("latents", "teacher_latents", weight=1.0, name="latent_distill_loss"),
                AuralossLoss(self.sdstft, input_key="decoded", target_key="reals", name="mrstft_loss", weight=w),
                AuralossLoss(self.sdstft, input_key="decoded", target_key="teacher_decoded",
                             name="mrstft_loss_distill", weight=w),
                AuralossLoss(self.sdstft, input_key="own_latents_teacher_decoded", target_key="reals",
                             name="mrstft_loss_own_latents_teacher", weight=w),
                AuralossLoss(self.sdstft, input_key="teacher_latents_own_decoded", target_key="reals",
                             name="mrstft_loss_teacher_latents_own", weight=w),
            ]
        else:
            gen_losses.append(AuralossLoss(self.sdstft, input_key="decoded", target_key="reals", name="mrstft_loss",
                                           weight=mrstft_weight, decay=decay))
            if stereo:
                gen_losses += [
                    AuralossLoss(self.lrstft, input_key="decoded_left", target_key="reals_left",
                                 name="stft_loss_left", weight=mrstft_weight / 2, decay=decay),
                    AuralossLoss(self.lrstft, input_key="decoded_right", target_key="reals_right",
                                 name="stft_loss_right", weight=mrstft_weight / 2, decay=decay),
                ]
        if "mrmel" in loss_config:
            gen_losses.append(self._mrmel_loss(loss_config["mrmel"], f"{lpath}.mrmel"))
        if "hubert" in loss_config:
            hubert = self._hubert_loss(loss_config["hubert"], f"{lpath}.hubert")
            if hubert is not None:
                gen_losses.append(hubert)
        time_cfg = require_mapping(require(loss_config, "time", lpath, "{'weights': {'l1': ...}}"), f"{lpath}.time")
        tweights = time_cfg.get("weights", {})
        tdecay = time_cfg.get("decay", 1.0)
        if tweights.get("l1", 0.0) > 0.0:
            gen_losses.append(L1Loss("reals", "decoded", weight=tweights["l1"], name="l1_time_loss", decay=tdecay))
        if tweights.get("l2", 0.0) > 0.0:
            gen_losses.append(MSELoss("reals", "decoded", weight=tweights["l2"], name="l2_time_loss", decay=tdecay))
        if autoencoder.bottleneck is not None:
            gen_losses += create_loss_modules_from_bottleneck(autoencoder.bottleneck, loss_config)
        self.losses_gen = MultiLoss(gen_losses)
        self.losses_disc = MultiLoss([ValueLoss(key="loss_dis", weight=1.0, name="discriminator_loss")])

        self.use_ema = use_ema
        self.autoencoder_ema = None
        if use_ema:
            self.autoencoder_ema = EMA(autoencoder, ema_model=ema_copy, beta=0.9999, power=3 / 4, update_every=1,
                                       update_after_step=1)

        self.eval_losses = nn.ModuleDict()
        self._val_outputs: List[Dict[str, torch.Tensor]] = []
        if eval_loss_config is not None:
            self._build_eval_losses(eval_loss_config)

    # ------------------------------------------------------------------ construction helpers
    def _mrmel_loss(self, cfg: Mapping, path: str) -> nn.Module:
        weight = require(require(cfg, "weights", path), "mrmel", f"{path}.weights")
        try:
            module = MultiScaleMelSpectrogramLoss(sample_rate=self.sample_rate, **dict(cfg.get("config", {})))
        except TypeError as e:
            raise ConfigError(f"{path}.config", f"invalid option: {e}") from None
        return AuralossLoss(module, input_key="decoded", target_key="reals", name="mrmel_loss", weight=weight,
                            decay=cfg.get("decay", 1.0))

    def _hubert_loss(self, cfg: Mapping, path: str) -> Optional[nn.Module]:
        """Upstream's ``hubert`` block: ``HubertLoss(**config)`` (as ``self.hubert``) between the decoded and the
        real audio, weighted by ``weights.hubert``; a weight of 0 adds nothing, as upstream."""
        cfg = require_mapping(cfg, path)
        weight = require(require(cfg, "weights", path, "{'hubert': ...}"), "hubert", f"{path}.weights")
        if weight <= 0:
            return None
        try:
            self.hubert = HubertLoss(weight=1.0, **dict(cfg.get("config", {})))
        except TypeError as e:
            raise ConfigError(f"{path}.config", f"invalid option: {e}") from None
        except OSError as e:
            raise ConfigError(f"{path}.config.model_name", str(e)) from None
        except ValueError as e:
            raise ConfigError(f"{path}.config.feature_ids", str(e)) from None
        return LossWithTarget(self.hubert, input_key="decoded", target_key="reals", name="hubert_loss",
                              weight=weight, decay=cfg.get("decay", 1.0))

    def _frozen_feature_prefixes(self) -> Tuple[str, ...]:
        return tuple(f"{name}.model." for name, module in self.named_modules(remove_duplicate=False)
                     if isinstance(module, HubertLoss))

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Leave the frozen HuBERT / WavLM / wav2vec 2.0 weights of the ``hubert`` loss out of the checkpoint: they
        never change and are loaded from their source (a large model would otherwise be stored twice per save)."""
        prefixes = self._frozen_feature_prefixes()
        if prefixes:
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith(prefixes)]:
                del state[key]

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Resume with the feature model just loaded: its weights in the checkpoint, if any (upstream saves them,
        under torchaudio's names), are replaced by the current ones."""
        prefixes = self._frozen_feature_prefixes()
        if prefixes:
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith(prefixes)]:
                del state[key]
            state.update({k: v for k, v in self.state_dict().items() if k.startswith(prefixes)})

    def _build_eval_losses(self, eval_loss_config: Mapping) -> None:
        path = "training.eval_loss_configs"
        known = {"stft": STFTLoss, "sisdr": SISDRLoss, "mel": MelSTFTLoss, "pesq": PESQMetric}
        for key, cfg in require_mapping(eval_loss_config, path).items():
            if key not in known:
                raise ConfigError(f"{path}.{key}", "unknown metric", "accepted: stft, sisdr, mel, pesq")
            kwargs = dict((cfg or {}).get("config", {}))
            if key in ("mel", "pesq"):
                kwargs.setdefault("sample_rate", self.sample_rate)
            self.eval_losses[key] = known[key](**kwargs)

    # ------------------------------------------------------------------ optimizers
    def optimizer_groups(self) -> List[Tuple[str, Iterable[torch.nn.Parameter]]]:
        groups = [("autoencoder", self.autoencoder.parameters())]
        if self.use_disc:
            groups.append(("discriminator", self.discriminator.parameters()))
        return groups

    # ------------------------------------------------------------------ training
    @staticmethod
    def _prepare_reals(batch) -> torch.Tensor:
        reals = batch[0] if isinstance(batch, (list, tuple)) else batch
        if reals.ndim == 4 and reals.shape[0] == 1:
            reals = reals[0]
        if reals.ndim == 2:
            reals = reals.unsqueeze(1)
        return reals

    def _forward_losses_info(self, reals: torch.Tensor, disc_step: bool) -> Tuple[Dict[str, Any], torch.Tensor]:
        info: Dict[str, Any] = {"reals": reals}
        encoder_input = reals
        if self.force_input_mono and encoder_input.shape[1] > 1:
            encoder_input = encoder_input.mean(dim=1, keepdim=True)
        info["encoder_input"] = encoder_input
        info["data_std"] = encoder_input.std()
        freeze_encoder = disc_step or (self.warmed_up and self.encoder_freeze_on_warmup)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not freeze_encoder):
            latents, encoder_info = self.autoencoder.encode(encoder_input, return_info=True)
        info.update(encoder_info)
        info["latents"] = latents
        if self.teacher_model is not None:
            with torch.no_grad():
                info["teacher_latents"] = self.teacher_model.encode(encoder_input)
        if self.latent_mask_ratio > 0.0:
            mask = torch.rand_like(latents) < self.latent_mask_ratio
            latents = torch.where(mask, torch.zeros_like(latents), latents)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not disc_step):
            decoded = self.autoencoder.decode(latents)
        decoded, reals = trim_to_shortest(decoded, reals)
        info["decoded"], info["reals"] = decoded, reals
        if self.autoencoder.out_channels == 2:
            info["decoded_left"], info["decoded_right"] = decoded[:, 0:1], decoded[:, 1:2]
            info["reals_left"], info["reals_right"] = reals[:, 0:1], reals[:, 1:2]
        if self.teacher_model is not None and not disc_step:
            with torch.no_grad():
                info["teacher_decoded"] = self.teacher_model.decode(info["teacher_latents"])
            info["own_latents_teacher_decoded"] = self.teacher_model.decode(latents)
            info["teacher_latents_own_decoded"] = self.autoencoder.decode(info["teacher_latents"])
        return info, latents

    def training_step(self, batch, batch_idx: int):
        reals = self._prepare_reals(batch)
        if self.global_step >= self.warmup_steps:
            self.warmed_up = True
        disc_step = bool(self.use_disc and self.global_step % 2)
        info, latents = self._forward_losses_info(reals, disc_step)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        log_dict: Dict[str, Any] = {}
        if disc_step:
            opt = optimizers[1]
            if self.warmed_up or self.warmup_mode == "adv":
                info["loss_dis"] = self.discriminator.discriminator_loss(info["reals"], info["decoded"])
            else:
                info["loss_dis"] = torch.zeros((), device=reals.device)
            loss, losses = self.losses_disc(info)
            log_dict["train/disc_lr"] = opt.param_groups[0]["lr"]
            self._optimizer_step(opt, loss, self.scheduler_for("discriminator"))
        else:
            if self.use_disc:
                if self.warmed_up:
                    info["loss_adv"], info["feature_matching_distance"] = self.discriminator.generator_loss(
                        info["reals"], info["decoded"])
                else:
                    info["loss_adv"] = info["feature_matching_distance"] = torch.zeros((), device=reals.device)
            opt = optimizers[0]
            loss, losses = self.losses_gen(info)
            self._optimizer_step(opt, loss, self.scheduler_for("autoencoder"))
            if self.use_ema:
                self.autoencoder_ema.update()
            log_dict.update({"train/loss": loss.detach(), "train/latent_std": latents.std().detach(),
                             "train/data_std": info["data_std"].detach(),
                             "train/gen_lr": opt.param_groups[0]["lr"]})
        for name, value in losses.items():
            log_dict[f"train/{name}"] = value.detach()
        self.log_dict(log_dict, prog_bar=True, on_step=True)
        return loss

    def _optimizer_step(self, opt, loss: torch.Tensor, scheduler) -> None:
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()  # gradients are clipped in on_before_optimizer_step, after mixed-precision unscaling
        if scheduler is not None:
            scheduler.step()

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.clip_grad_norm > 0.0:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch, batch_idx: int) -> None:
        if not len(self.eval_losses):
            return
        reals = self._prepare_reals(batch)
        encoder_input = reals.mean(dim=1, keepdim=True) if self.force_input_mono and reals.shape[1] > 1 else reals
        with torch.no_grad():
            decoded = self.autoencoder.decode(self.autoencoder.encode(encoder_input))
        decoded, reals = trim_to_shortest(decoded, reals)
        values = {}
        for key, metric in self.eval_losses.items():
            value = metric(decoded, reals)
            values[key] = -value if key == "sisdr" else value
        self._val_outputs.append({k: v.detach() for k, v in values.items()})

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        for key in self._val_outputs[0]:
            mean = torch.stack([o[key] for o in self._val_outputs]).mean()
            mean = self.all_gather(mean).mean()
            self.log(f"val/{key}", mean, sync_dist=False)
        self._val_outputs.clear()

    # ------------------------------------------------------------------ export
    def export_model(self, path: str, use_safetensors: bool = False) -> None:
        """Write the (EMA if used) autoencoder as an unwrapped checkpoint."""
        model = self.autoencoder_ema.ema_model if self.use_ema and self.autoencoder_ema is not None \
            else self.autoencoder
        save_unwrapped(model, path, use_safetensors)
