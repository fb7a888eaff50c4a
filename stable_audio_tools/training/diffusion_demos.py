"""Demo callbacks of the diffusion model types (see docs/diffusion.md#demos-trainingdemo), built on
:class:`~.demo_base.DemoCallbackBase`.

Generated audio is peak-normalised, saved as ``<prefix>_<step:08>.wav`` under the run's media folder and
logged with a mel spectrogram of its left channel.
Differences from upstream: see docs/compatibility.md#stable_audio_toolstrainingdiffusion_demos.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from ..config import ConfigError, get_positive, require, require_mapping, warn_unknown_keys
from ..models.inpainting import INPAINT_IDS, random_inpaint_mask
from ..plotting import audio_spectrogram_image, pca_point_cloud, tokens_spectrogram_image
from ..samplers.flow_samplers import sample, sample_discrete_euler, sample_flow_pingpong
from .demo_base import DemoCallbackBase, eval_mode, match_channels
from .common import encode_to_latents, padding_masks_from_metadata, split_batch

__all__ = [
    "DiffusionUncondDemoCallback",
    "DiffusionCondDemoCallback",
    "DiffusionCondInpaintDemoCallback",
    "DiffusionAutoencoderDemoCallback",
    "generate_demo_latents",
    "create_diffusion_demo_callback",
    "DIFFUSION_DEMO_MODEL_TYPES",
]

DIFFUSION_DEMO_MODEL_TYPES = ("diffusion_uncond", "diffusion_cond", "diffusion_cond_inpaint", "diffusion_autoencoder")


def _flatten(audio: torch.Tensor) -> torch.Tensor:
    """``[B, C, T]`` -> ``[C, B * T]`` (items one after another)."""
    return audio.permute(1, 0, 2).reshape(audio.shape[1], -1)


def _int16(audio: torch.Tensor) -> torch.Tensor:
    return audio.detach().float().cpu().clamp(-1, 1).mul(32767).to(torch.int16)


def _decode(diffusion: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    pretransform = getattr(diffusion, "pretransform", None)
    return pretransform.decode(latents) if pretransform is not None else latents


def generate_demo_latents(model: nn.Module, objective: str, noise: torch.Tensor, steps: int,
                          cond_inputs: Mapping[str, Any], cfg_scale: float, dist_shift: Any = None) -> torch.Tensor:
    """Sample from a conditioned backbone ``model`` as upstream's demos do: v-DDIM (``v``), discrete Euler
    (``rectified_flow``) or ping-pong on a logSNR-linear schedule from -6 to 2 (``rf_denoiser``), all with
    batched CFG at ``cfg_scale``."""
    kwargs = dict(cond_inputs, cfg_scale=cfg_scale, dist_shift=dist_shift, batch_cfg=True)
    if objective == "v":
        return sample(model, noise, steps, 0, **kwargs)
    if objective == "rectified_flow":
        return sample_discrete_euler(model, noise, steps, **kwargs)
    if objective == "rf_denoiser":
        sigmas = torch.sigmoid(-torch.linspace(-6, 2, steps + 1, device=noise.device))
        sigmas[0], sigmas[-1] = 1.0, 0.0
        return sample_flow_pingpong(model, noise, sigmas=sigmas, **kwargs)
    raise ValueError(f"unknown diffusion objective {objective!r}")


def _backbone(module: pl.LightningModule) -> nn.Module:
    """The EMA backbone when the wrapper keeps one, else the online one."""
    ema = getattr(module, "diffusion_ema", None)
    return ema.ema_model if ema is not None else module.diffusion.model


class _DiffusionDemo(DemoCallbackBase):
    """Saving/logging of one generated (or reconstructed) batch."""

    def log_generation(self, trainer: pl.Trainer, key: str, image_key: str, audio: torch.Tensor) -> torch.Tensor:
        """Save ``audio [B, C, T]`` (peak-normalised) as ``key``, log it and its spectrogram; returns ``[C, B*T]``."""
        flat = _flatten(audio.float())
        path, as_int16 = self.save_demo_audio(trainer, key, flat, normalize=True)
        if self.attached_loggers(trainer):
            self.log_audio_all(trainer, key, path)
            self.log_image_all(trainer, image_key, audio_spectrogram_image(as_int16, sample_rate=self.sample_rate))
        return flat


class DiffusionUncondDemoCallback(_DiffusionDemo):
    """Unconditional samples from the EMA model: ``num_demos`` items of ``sample_size`` samples (latent length
    for latent models), v-DDIM with ``demo_steps`` steps; logs ``demo`` and ``demo_melspec_left``.

    Args:
        demo_every: demo interval in optimizer steps.
        num_demos: number of generated items.
        demo_steps: sampler steps.
        sample_rate: audio sample rate.
        sample_size: generated length in audio samples (default: the model's ``sample_size``).
    """

    def __init__(self, demo_every: int = 2000, num_demos: int = 8, demo_steps: int = 250, sample_rate: int = 48000,
                 sample_size: Optional[int] = None) -> None:
        super().__init__(demo_every=demo_every, sample_rate=sample_rate)
        self.num_demos = num_demos
        self.demo_steps = demo_steps
        self.demo_samples = sample_size

    def run_demo(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        diffusion = module.diffusion
        length = self.demo_samples if self.demo_samples is not None else diffusion.sample_size
        if diffusion.pretransform is not None:
            length //= diffusion.pretransform.downsampling_ratio
        noise = torch.randn([self.num_demos, diffusion.io_channels, length], device=module.device)
        fakes = sample(_backbone(module), noise, self.demo_steps, 0)
        self.log_generation(trainer, "demo", "demo_melspec_left", _decode(diffusion, fakes))


def _check_cond_display_configs(configs: Optional[Sequence[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    checked = []
    for index, cfg in enumerate(configs or []):
        path = f"training.demo.cond_display_configs[{index}]"
        require_mapping(cfg, path)
        require(cfg, "id", path, "the conditioning id to display", (str,))
        if require(cfg, "type", path, "'audio' or 'audio_dict'") not in ("audio", "audio_dict"):
            raise ConfigError(f"{path}.type", f"unknown value {cfg['type']!r}; accepted: 'audio', 'audio_dict'")
        checked.append({"id": cfg["id"], "type": cfg["type"], "config": dict(cfg.get("config") or {})})
    return checked


class DiffusionCondDemoCallback(_DiffusionDemo):
    """Conditioned samples for each CFG scale in ``demo_cfg_scales``, from the EMA model when there is one.

    Conditioning is ``demo_conditioning`` (one metadata dict per demo) or, with ``demo_cond_from_batch``, the
    metadata of the training batch; models with inpainting inputs get an all-zero mask (generate everything).
    Logs ``demo_cfg_{scale}`` and ``demo_melspec_left_cfg_{scale}``; optional ``display_audio_cond`` (the
    ``audio`` entries of the conditioning: ``demo_audio_cond``) and ``cond_display_configs`` (``[{id, type: audio | audio_dict, config: {pre_encoded, display_mix}}]``: the
    conditioning audio ``demo_{id}``, its mix with each generation ``demo_{id}_mix_cfg_{scale}`` and, for
    audio dicts, their submix ``demo_{id}_submix_cfg_{scale}``).
    """

    def __init__(self, demo_every: int = 2000, num_demos: int = 8, sample_size: int = 65536, demo_steps: int = 250,
                 sample_rate: int = 48000, demo_conditioning: Optional[Sequence[Mapping[str, Any]]] = None,
                 demo_cfg_scales: Sequence[float] = (3, 5, 7), demo_cond_from_batch: bool = False,
                 display_audio_cond: bool = False,
                 cond_display_configs: Optional[Sequence[Mapping[str, Any]]] = None) -> None:
        super().__init__(demo_every=demo_every, sample_rate=sample_rate)
        self.num_demos = num_demos
        self.demo_samples = sample_size
        self.demo_steps = demo_steps
        self.demo_conditioning = list(demo_conditioning or [])
        self.demo_cfg_scales = list(demo_cfg_scales)
        self.demo_cond_from_batch = demo_cond_from_batch
        self.display_audio_cond = display_audio_cond
        self.cond_display_configs = _check_cond_display_configs(cond_display_configs)
        if not demo_cond_from_batch and len(self.demo_conditioning) < num_demos:
            raise ValueError(f"demo_cond has {len(self.demo_conditioning)} entries but num_demos is {num_demos}; "
                             f"give at least num_demos conditioning dicts or set demo_cond_from_batch")
        self._batch_metadata: Sequence[Dict[str, Any]] = ()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.demo_cond_from_batch and self.should_demo(trainer.global_step):
            self._batch_metadata = list(split_batch(batch)[1])[: self.num_demos]
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _demo_cond(self) -> List[Dict[str, Any]]:
        if self.demo_cond_from_batch:
            if not self._batch_metadata:
                raise ValueError("demo_cond_from_batch is set but the training batch has no metadata")
            return list(self._batch_metadata)
        return [dict(c) for c in self.demo_conditioning[: self.num_demos]]

    def _cond_audio(self, module: pl.LightningModule, values: List[torch.Tensor], pre_encoded: bool) -> torch.Tensor:
        audio = torch.stack([torch.as_tensor(v) for v in values]).to(module.device)
        return _decode(module.diffusion, audio) if pre_encoded else audio

    def _save_and_log(self, trainer: pl.Trainer, key: str, flat: torch.Tensor, image_key: Optional[str]) -> None:
        path, as_int16 = self.save_demo_audio(trainer, key, flat, normalize=True)
        if self.attached_loggers(trainer):
            self.log_audio_all(trainer, key, path)
            if image_key is not None:
                self.log_image_all(trainer, image_key, audio_spectrogram_image(as_int16, sample_rate=self.sample_rate))

    @staticmethod
    def _mix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        length = min(a.shape[-1], b.shape[-1])
        a, b = match_channels(a[None, :, :length].float(), b[None, :, :length].float())
        return (a + b)[0]

    def run_demo(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        diffusion = module.diffusion
        demo_cond = self._demo_cond()
        length = self.demo_samples
        if diffusion.pretransform is not None:
            length //= diffusion.pretransform.downsampling_ratio
        noise = torch.randn([len(demo_cond), diffusion.io_channels, length], device=module.device)
        conditioning = diffusion.conditioner(demo_cond, module.device) if diffusion.conditioner is not None else {}
        if any(i in diffusion.input_concat_ids for i in INPAINT_IDS):  # inpainting model: generate everything
            conditioning["inpaint_mask"] = [torch.zeros_like(noise[:, :1])]
            conditioning["inpaint_masked_input"] = [torch.zeros_like(noise)]
        cond_inputs = diffusion.get_conditioning_inputs(conditioning)

        if self.display_audio_cond:
            audio = [torch.as_tensor(c["audio"]) for c in demo_cond]
            audio = torch.cat(audio) if audio[0].dim() == 3 else torch.stack(audio)
            self._save_and_log(trainer, "demo_audio_cond", _flatten(audio.float()), "demo_audio_cond_melspec_left")
        displayed: Dict[str, torch.Tensor] = {}
        for cfg in self.cond_display_configs:
            pre_encoded = bool(cfg["config"].get("pre_encoded", False))
            if cfg["type"] == "audio":
                audio = self._cond_audio(module, [c[cfg["id"]] for c in demo_cond], pre_encoded)
                displayed[cfg["id"]] = _flatten(audio.float())
                self._save_and_log(trainer, f"demo_{cfg['id']}", displayed[cfg["id"]], f"demo_{cfg['id']}_melspec_left")
            else:
                submixes = [self._cond_audio(module, list(c[cfg["id"]].values()), pre_encoded).sum(dim=0)
                            for c in demo_cond]
                displayed[cfg["id"]] = _flatten(torch.stack(submixes).float())

        model = _backbone(module)
        for scale in self.demo_cfg_scales:
            fakes = generate_demo_latents(model, module.diffusion_objective, noise, self.demo_steps, cond_inputs,
                                          scale, getattr(diffusion, "dist_shift", None))
            flat = self.log_generation(trainer, f"demo_cfg_{scale}", f"demo_melspec_left_cfg_{scale}",
                                       _decode(diffusion, fakes))
            for cfg in self.cond_display_configs:
                cond_id = cfg["id"]
                if cfg["type"] == "audio_dict":
                    self._save_and_log(trainer, f"demo_{cond_id}_submix_cfg_{scale}", displayed[cond_id], None)
                if cfg["type"] == "audio_dict" or cfg["config"].get("display_mix", False):
                    self._save_and_log(trainer, f"demo_{cond_id}_mix_cfg_{scale}",
                                       self._mix(displayed[cond_id], flat), None)


class DiffusionCondInpaintDemoCallback(_DiffusionDemo):
    """Inpainting demo on real data: takes up to ``num_demos`` items of the next demo batch, draws random
    inpainting masks (the training wrapper's ``mask_kwargs``) and fills them in for each CFG scale with the EMA
    model (the online one without EMA). Logs ``demo_reals_melspec_left`` (audio inputs only),
    ``demo_masked_input``, ``demo_cfg_{scale}`` and ``demo_melspec_left_cfg_{scale}``."""

    def __init__(self, demo_dl: Iterable, demo_every: int = 2000, demo_steps: int = 250, sample_size: int = 65536,
                 sample_rate: int = 48000, num_demos: int = 8, demo_cfg_scales: Sequence[float] = (3, 5, 7)) -> None:
        super().__init__(demo_every=demo_every, sample_rate=sample_rate, demo_dl=demo_dl)
        self.demo_steps = demo_steps
        self.demo_samples = sample_size
        self.num_demos = num_demos
        self.demo_cfg_scales = list(demo_cfg_scales)

    def run_demo(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        diffusion = module.diffusion
        reals, metadata = split_batch(self.next_demo_batch())
        reals, metadata = reals[: self.num_demos].to(module.device), list(metadata)[: self.num_demos]
        logging_on = bool(self.attached_loggers(trainer))
        if not module.pre_encoded and logging_on:
            self.log_image_all(trainer, "demo_reals_melspec_left",
                               audio_spectrogram_image(_int16(_flatten(reals)), sample_rate=self.sample_rate))
        with eval_mode(diffusion):
            latents = encode_to_latents(diffusion, reals, module.pre_encoded)
        conditioning = diffusion.conditioner(metadata, module.device) if diffusion.conditioner is not None else {}
        padding_masks = padding_masks_from_metadata(metadata, latents.shape[2], module.device)
        masked, mask = random_inpaint_mask(latents, padding_masks, **getattr(module, "inpaint_mask_kwargs", {}))
        conditioning["inpaint_mask"] = [mask]
        conditioning["inpaint_masked_input"] = [masked]
        if logging_on:
            image = tokens_spectrogram_image(masked) if diffusion.pretransform is not None else \
                audio_spectrogram_image(_int16(_flatten(masked)), sample_rate=self.sample_rate)
            self.log_image_all(trainer, "demo_masked_input", image)
        cond_inputs = diffusion.get_conditioning_inputs(conditioning)
        model = _backbone(module)
        dtype = next(model.parameters()).dtype
        noise = torch.randn([latents.shape[0], diffusion.io_channels, latents.shape[2]], device=module.device,
                            dtype=dtype)
        for scale in self.demo_cfg_scales:
            fakes = generate_demo_latents(model, module.diffusion_objective, noise, self.demo_steps, cond_inputs,
                                          scale, getattr(diffusion, "dist_shift", None))
            self.log_generation(trainer, f"demo_cfg_{scale}", f"demo_melspec_left_cfg_{scale}",
                                _decode(diffusion, fakes))


class DiffusionAutoencoderDemoCallback(_DiffusionDemo):
    """Reconstructs the next demo batch with the EMA diffusion autoencoder (``decode(latents, steps=demo_steps)``)
    and logs ``recon`` (real/fake interleaved per item), ``embeddings_3dpca``, ``embeddings_spec`` and
    ``recon_melspec_left``; with a pretransform also its own reconstruction (``first_stage``,
    ``first_stage_latents``, ``first_stage_melspec_left``)."""

    def __init__(self, demo_dl: Iterable, demo_every: int = 2000, demo_steps: int = 250, sample_size: int = 65536,
                 sample_rate: int = 48000) -> None:
        super().__init__(demo_every=demo_every, sample_rate=sample_rate, demo_dl=demo_dl)
        self.demo_steps = demo_steps
        self.demo_samples = sample_size

    def run_demo(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        reals = split_batch(self.next_demo_batch())[0].to(module.device)
        model = module.diffae_ema.ema_model
        latents = model.encode(reals).float()
        fakes = model.decode(latents, steps=self.demo_steps)
        length = min(reals.shape[-1], fakes.shape[-1])
        pair_reals, pair_fakes = match_channels(reals[..., :length].float(), fakes[..., :length].float())
        batch, channels = pair_reals.shape[:2]
        interleaved = torch.stack([pair_reals, pair_fakes], dim=1).reshape(batch * 2, channels, length)
        path, as_int16 = self.save_demo_audio(trainer, "recon", _flatten(interleaved), normalize=True)
        logging_on = bool(self.attached_loggers(trainer))
        if logging_on:
            self.log_audio_all(trainer, "recon", path)
            self.log_point_cloud_all(trainer, "embeddings_3dpca", pca_point_cloud(latents))
            self.log_image_all(trainer, "embeddings_spec", tokens_spectrogram_image(latents))
            self.log_image_all(trainer, "recon_melspec_left",
                               audio_spectrogram_image(as_int16, sample_rate=self.sample_rate))
        if model.pretransform is not None:
            initial = model.pretransform.encode(reals)
            first_stage = _flatten(model.pretransform.decode(initial).float())
            path, as_int16 = self.save_demo_audio(trainer, "first_stage", first_stage)
            if logging_on:
                self.log_audio_all(trainer, "first_stage", path)
                self.log_image_all(trainer, "first_stage_latents", tokens_spectrogram_image(initial))
                self.log_image_all(trainer, "first_stage_melspec_left",
                                   audio_spectrogram_image(as_int16, sample_rate=self.sample_rate))


_DEMO_KEYS = {
    "diffusion_uncond": ("demo_every", "demo_steps", "num_demos"),
    "diffusion_cond": ("demo_every", "demo_steps", "num_demos", "demo_cfg_scales", "demo_cond",
                       "demo_cond_from_batch", "display_audio_cond", "cond_display_configs"),
    "diffusion_cond_inpaint": ("demo_every", "demo_steps", "num_demos", "demo_cfg_scales"),
    "diffusion_autoencoder": ("demo_every", "demo_steps"),
}


def _cfg_scales(demo: Mapping[str, Any]) -> List[float]:
    scales = require(demo, "demo_cfg_scales", "training.demo", "a list of CFG scales such as [3, 5, 7]",
                     (list, tuple))
    if not scales or any(isinstance(s, bool) or not isinstance(s, (int, float)) for s in scales):
        raise ConfigError("training.demo.demo_cfg_scales", f"expected a non-empty list of numbers, got {scales!r:.60}")
    return list(scales)


def create_diffusion_demo_callback(model_config: Mapping[str, Any], **kwargs: Any) -> pl.Callback:
    """The demo callback of a diffusion model config (``training.demo`` settings; ``kwargs`` override them;
    ``demo_dl`` is used by the inpainting and diffusion-autoencoder demos and ignored by the others)."""
    model_type = model_config["model_type"]
    demo = require_mapping(require_mapping(model_config.get("training", {}), "training").get("demo", {}),
                           "training.demo")
    warn_unknown_keys(demo, _DEMO_KEYS[model_type], "training.demo")
    common = {"demo_every": get_positive(demo, "demo_every", 2000, "training.demo"),
              "demo_steps": get_positive(demo, "demo_steps", 250, "training.demo"),
              "sample_rate": require(model_config, "sample_rate", "", "sample rate in Hz", (int,))}
    demo_dl = kwargs.pop("demo_dl", None)
    sample_size = require(model_config, "sample_size", "", "number of samples", (int,))
    if model_type == "diffusion_uncond":
        params = dict(common, num_demos=get_positive(demo, "num_demos", 8, "training.demo"), sample_size=sample_size)
        return DiffusionUncondDemoCallback(**{**params, **kwargs})
    if model_type == "diffusion_cond":
        require(demo, "num_demos", "training.demo", "the number of demo generations")
        demo_cond = demo.get("demo_cond", [])
        if not isinstance(demo_cond, (list, tuple)) or not all(isinstance(c, Mapping) for c in demo_cond):
            raise ConfigError("training.demo.demo_cond", "expected a list of metadata dicts (one per demo)")
        params = dict(common, num_demos=get_positive(demo, "num_demos", 8, "training.demo"), sample_size=sample_size,
                      demo_cfg_scales=_cfg_scales(demo), demo_conditioning=demo_cond,
                      demo_cond_from_batch=bool(demo.get("demo_cond_from_batch", False)),
                      display_audio_cond=bool(demo.get("display_audio_cond", False)),
                      cond_display_configs=demo.get("cond_display_configs"))
        if not params["demo_cond_from_batch"] and len(demo_cond) < params["num_demos"]:
            raise ConfigError("training.demo.demo_cond", f"has {len(demo_cond)} entries but num_demos is "
                              f"{params['num_demos']}", "give one metadata dict per demo, or set demo_cond_from_batch")
        return DiffusionCondDemoCallback(**{**params, **kwargs})
    if demo_dl is None:
        raise ValueError(f"create_demo_callback_from_config needs demo_dl=<dataloader> for {model_type} models")
    if model_type == "diffusion_cond_inpaint":
        params = dict(common, demo_dl=demo_dl, sample_size=sample_size,
                      num_demos=get_positive(demo, "num_demos", 8, "training.demo"),
                      demo_cfg_scales=_cfg_scales(demo))
        return DiffusionCondInpaintDemoCallback(**{**params, **kwargs})
    params = dict(common, demo_dl=demo_dl, sample_size=sample_size)
    return DiffusionAutoencoderDemoCallback(**{**params, **kwargs})
