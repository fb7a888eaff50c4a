"""Metrics during training: the ``training.validation_metrics`` config section.

Every ``every`` steps the callback generates audio for a fixed prompt set with fixed seeds (``diffusion_cond``
and ``lm`` models) or reconstructs a fixed set of reference files (``autoencoder`` models), computes the chosen
metrics with :mod:`stable_audio_tools.metrics` against a reference folder and logs them as ``val/<metric>``
(e.g. ``val/fd``, ``val/kl``, ``val/clap``, ``val/si_sdr``). ``train.py --monitor val/fd --save-top-k 3`` then
keeps the best checkpoints by that metric. Generation runs on rank 0 with the EMA weights when the wrapper has
them, in eval mode, inside a forked RNG state (training randomness is unchanged); the values are broadcast to
every rank. Keys: see :func:`create_validation_metrics_callback` and ``docs/evaluation.md``.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import pytorch_lightning as pl
import torch
from torch import nn

from ..audio import set_audio_channels
from ..inference.generation import generate_diffusion_cond
from ..metrics import AudioCollection, EvaluationConfig, EvaluationError, Evaluator, load_prompts
from ..metrics.collections import prompt_ids
from ..metrics.evaluation import HIGHER_IS_BETTER, METRICS, RECONSTRUCTION_METRICS
from ..config import ConfigError, require_mapping, warn_unknown_keys
from .wrapper_utils import swapped_child

__all__ = ["ValidationMetricsCallback", "create_validation_metrics_callback", "monitor_mode", "check_monitor",
           "SUPPORTED_MODEL_TYPES"]

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("diffusion_cond", "lm", "autoencoder")
SECTION = "training.validation_metrics"
_KEYS = ("every", "metrics", "reference_dir", "prompts", "embedder", "kl_classifier", "clap_embedder", "convention",
         "options", "steps", "cfg_scale", "seed", "seconds", "sampler_type", "max_items", "temperature", "top_p",
         "top_k", "allow_mixed_sample_rates")


@contextlib.contextmanager
def _evaluation_mode(device: torch.device, *modules: Optional[nn.Module]) -> Iterator[None]:
    """Eval mode for ``modules`` and a forked RNG state for the duration (both restored afterwards)."""
    present = [m for m in modules if m is not None]
    modes = [[(sub, sub.training) for sub in m.modules()] for m in present]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for m in present:
            m.eval()
        try:
            yield
        finally:
            for saved in modes:
                for sub, training in saved:
                    sub.training = training


class ValidationMetricsCallback(pl.Callback):
    """Generate (or reconstruct), score and log ``val/<metric>`` every ``every`` training steps.

    Args:
        model_type: str; one of ``SUPPORTED_MODEL_TYPES``.
        sample_rate: int; the model's sample rate.
        sample_size: int; the model's ``sample_size`` (generation length unless ``seconds`` is given; the
            autoencoder crop length).
        audio_channels: int; the model's channel count (autoencoder inputs are converted to it).
        every: int; steps between evaluations.
        evaluation: :class:`~stable_audio_tools.metrics.EvaluationConfig`; metrics and embedders.
        reference_dir: str or None; folder of reference audio.
        conditioning: list of dicts or None; one conditioning dict per generated item (diffusion_cond / lm).
        steps: int, default 50; sampler steps (diffusion_cond).
        cfg_scale: float, default 6.0; classifier-free guidance scale.
        seed: int, default 0; item ``i`` is generated with seed ``seed + i``.
        seconds: float or None, default None; generated length (None: ``sample_size``).
        sampler_type: str or None, default None; diffusion sampler (None: the model's default).
        max_items: int, default 16; autoencoder: at most this many reference files are reconstructed.
        temperature: float, default 1.0; LM sampling temperature.
        top_p: float, default 0.0; LM nucleus sampling (0: off).
        top_k: int, default 250; LM top-k sampling (0: off).
    """

    def __init__(self, model_type: str, sample_rate: int, sample_size: int, audio_channels: int, every: int,
                 evaluation: EvaluationConfig, reference_dir: Optional[str] = None,
                 conditioning: Optional[List[Dict[str, Any]]] = None, steps: int = 50, cfg_scale: float = 6.0,
                 seed: int = 0, seconds: Optional[float] = None, sampler_type: Optional[str] = None,
                 max_items: int = 16, temperature: float = 1.0, top_p: float = 0.0, top_k: int = 250) -> None:
        super().__init__()
        self.model_type, self.sample_rate, self.audio_channels = model_type, int(sample_rate), int(audio_channels)
        self.sample_size = int(round(seconds * sample_rate)) if seconds else int(sample_size)
        self.every, self.evaluation = int(every), evaluation
        self.reference_dir, self.conditioning = reference_dir, conditioning or []
        self.steps, self.cfg_scale, self.seed, self.sampler_type = int(steps), float(cfg_scale), int(seed), sampler_type
        self.max_items, self.temperature, self.top_p, self.top_k = int(max_items), float(temperature), top_p, top_k
        self._evaluator: Optional[Evaluator] = None
        self._reference: Optional[AudioCollection] = None
        self._last_step = -1

    @property
    def metric_names(self) -> List[str]:
        return [f"val/{m}" for m in self.evaluation.metrics]

    def _references(self) -> Optional[AudioCollection]:
        if self._reference is None and self.reference_dir:
            self._reference = AudioCollection.from_folder(self.reference_dir, "reference",
                                                          f"{SECTION}.reference_dir")
        return self._reference

    def _generate(self, module: pl.LightningModule) -> Dict[str, Any]:
        items: Dict[str, Any] = {}
        names = prompt_ids(len(self.conditioning))
        if self.model_type == "diffusion_cond":
            diffusion = module.diffusion
            ema = getattr(module, "diffusion_ema", None)
            sampler = {"sampler_type": self.sampler_type} if self.sampler_type else {}
            ema_model = ema.ema_model if ema is not None else None
            with _evaluation_mode(module.device, diffusion, ema_model), swapped_child(diffusion, "model", ema_model):
                for index, (name, cond) in enumerate(zip(names, self.conditioning)):
                    audio = generate_diffusion_cond(diffusion, steps=self.steps, cfg_scale=self.cfg_scale,
                                                    conditioning=[cond], sample_size=self.sample_size,
                                                    seed=self.seed + index, device=module.device, disable_tqdm=True,
                                                    **sampler)
                    items[name] = (audio[0, :, :self.sample_size].float().cpu(), self.sample_rate)
        else:
            model = module.model_ema.ema_model if getattr(module, "model_ema", None) is not None else module.model
            length = max(1, self.sample_size // model.pretransform.downsampling_ratio)
            with _evaluation_mode(module.device, model):
                for index, (name, cond) in enumerate(zip(names, self.conditioning)):
                    audio = model.generate_audio(batch_size=1, max_gen_len=length, conditioning=[cond],
                                                 cfg_scale=self.cfg_scale, temp=self.temperature, top_p=self.top_p,
                                                 top_k=self.top_k, seed=self.seed + index, disable_tqdm=True)
                    items[name] = (audio[0].float().cpu(), self.sample_rate)
        return items

    def _reconstruct(self, module: pl.LightningModule, reference: AudioCollection) -> Dict[str, Any]:
        ema = getattr(module, "autoencoder_ema", None)
        autoencoder = ema.ema_model if ema is not None else module.autoencoder
        items: Dict[str, Any] = {}
        with _evaluation_mode(module.device, autoencoder):
            for name in reference.names()[:self.max_items]:
                audio, rate = reference.load(name)
                if rate != self.sample_rate:
                    raise EvaluationError(f"{SECTION}.reference_dir: '{name}' is at {rate} Hz but the model at "
                                          f"{self.sample_rate} Hz; reconstruction metrics compare samples")
                audio = set_audio_channels(audio[None, :, :self.sample_size], self.audio_channels)
                audio = audio.to(module.device)
                decoded = autoencoder.decode(autoencoder.encode(audio))[..., :audio.shape[-1]]
                items[name] = (decoded[0].float().cpu(), self.sample_rate)
        return items

    def compute(self, module: pl.LightningModule) -> Dict[str, float]:
        """Generate or reconstruct, then score; returns ``{"val/<metric>": value}``."""
        if self._evaluator is None:
            self._evaluator = Evaluator(self.evaluation)
        reference = self._references()
        if self.model_type == "autoencoder":
            generated = AudioCollection.from_tensors("generated", self._reconstruct(module, reference))
            prompts = None
        else:
            generated = AudioCollection.from_tensors("generated", self._generate(module))
            names = prompt_ids(len(self.conditioning))
            prompts = {n: c["prompt"] for n, c in zip(names, self.conditioning) if isinstance(c.get("prompt"), str)}
        report = self._evaluator.evaluate(generated, reference, prompts or None)
        return {f"val/{m}": float(r["value"]) for m, r in report["results"].items()}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every or step == self._last_step:
            return
        self._last_step = step
        values = self.compute(pl_module) if trainer.is_global_zero else None
        values = trainer.strategy.broadcast(values, src=0)
        for name, value in values.items():
            pl_module.log(name, value, on_step=True, on_epoch=False, prog_bar=False, sync_dist=False)
        if trainer.is_global_zero:
            log.info("step %d: %s", step, ", ".join(f"{k}={v:.5g}" for k, v in values.items()))


def _conditioning(section: Mapping[str, Any], model_type: str, seconds: float) -> List[Dict[str, Any]]:
    prompts = section.get("prompts")
    if prompts is None:
        raise ConfigError(f"{SECTION}.prompts", f"{model_type} models generate from a fixed prompt set",
                          "give a list of prompts / conditioning dicts or a prompts file path")
    if isinstance(prompts, str):
        try:
            prompts = list(load_prompts(prompts).values())
        except EvaluationError as err:
            raise ConfigError(f"{SECTION}.prompts", str(err)) from err
    if not isinstance(prompts, list) or not prompts:
        raise ConfigError(f"{SECTION}.prompts", "expected a non-empty list or a file path")
    out = []
    for index, entry in enumerate(prompts):
        if isinstance(entry, str):
            entry = {"prompt": entry}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{SECTION}.prompts[{index}]", f"expected a prompt string or a conditioning object, "
                              f"got {type(entry).__name__}")
        out.append({"seconds_start": 0, "seconds_total": seconds, **entry})
    return out


def create_validation_metrics_callback(model_config: Mapping[str, Any],
                                       val_every: int = -1) -> Optional[ValidationMetricsCallback]:
    """Build the callback from ``training.validation_metrics`` (None when the section is absent).

    Keys (defaults): ``every`` (``val_every``, i.e. ``--val-every``, when positive; else required), ``metrics``
    (``["fd"]``; autoencoders ``["si_sdr", "mrstft", "mel"]``), ``reference_dir`` (required), ``prompts``
    (diffusion_cond / lm: a list of prompt strings or conditioning dicts, or a prompts file; items are named
    ``0000``, ``0001``, ... so reference files of those names pair for ``kl``), ``embedder`` (``"openl3"``),
    ``kl_classifier`` (``"passt"``), ``clap_embedder`` (``"clap"``), ``convention`` (``"sam"``), ``options``
    ({}; per embedder), ``allow_mixed_sample_rates`` (false), ``steps`` (50), ``cfg_scale`` (6.0), ``seed`` (0),
    ``seconds`` (the model's ``sample_size``), ``sampler_type`` (model default), ``max_items`` (16), ``temperature``
    (1.0), ``top_p`` (0.0), ``top_k`` (250).
    """
    training = require_mapping(model_config.get("training", {}), "training")
    if "validation_metrics" not in training:
        return None
    section = require_mapping(training["validation_metrics"], SECTION)
    warn_unknown_keys(section, _KEYS, SECTION)
    model_type = model_config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(SECTION, f"not available for model_type {model_type!r}",
                          f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    every = section.get("every", val_every if val_every > 0 else None)
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ConfigError(f"{SECTION}.every", f"expected a positive number of steps, got {every!r}",
                          "set it, or pass --val-every N")
    default_metrics = list(RECONSTRUCTION_METRICS) if model_type == "autoencoder" else ["fd"]
    metrics = section.get("metrics", default_metrics)
    if not isinstance(metrics, list) or not metrics or any(m not in METRICS for m in metrics):
        raise ConfigError(f"{SECTION}.metrics", f"expected a list of metric names from {', '.join(METRICS)}, got "
                          f"{metrics!r}")
    if model_type == "autoencoder" and any(m not in RECONSTRUCTION_METRICS for m in metrics):
        raise ConfigError(f"{SECTION}.metrics", "autoencoder runs compute reconstruction metrics only",
                          f"use {', '.join(RECONSTRUCTION_METRICS)}")
    reference_dir = section.get("reference_dir")
    if not isinstance(reference_dir, str) or not Path(reference_dir).is_dir():
        raise ConfigError(f"{SECTION}.reference_dir", f"expected an existing folder of reference audio, got "
                          f"{reference_dir!r}")
    sample_rate, sample_size = int(model_config["sample_rate"]), int(model_config["sample_size"])
    seconds = section.get("seconds")
    if seconds is not None and (not isinstance(seconds, (int, float)) or seconds <= 0):
        raise ConfigError(f"{SECTION}.seconds", f"expected a positive number of seconds, got {seconds!r}")
    conditioning = None
    if model_type != "autoencoder":
        conditioning = _conditioning(section, model_type, float(seconds or sample_size / sample_rate))
    try:
        evaluation = EvaluationConfig(
            metrics=list(metrics), embedder=section.get("embedder", "openl3"),
            kl_classifier=section.get("kl_classifier", "passt"), clap_embedder=section.get("clap_embedder", "clap"),
            convention=section.get("convention", "sam"), options=dict(section.get("options", {})),
            allow_mixed_sample_rates=bool(section.get("allow_mixed_sample_rates", False)), progress=False)
    except EvaluationError as err:
        raise ConfigError(SECTION, str(err)) from err
    if "clap" in metrics and not all(isinstance(c.get("prompt"), str) for c in conditioning or []):
        raise ConfigError(f"{SECTION}.prompts", "metric clap needs a text 'prompt' in every entry")
    return ValidationMetricsCallback(
        model_type, sample_rate, sample_size, int(model_config.get("audio_channels", 2)), every, evaluation,
        reference_dir, conditioning, steps=section.get("steps", 50), cfg_scale=section.get("cfg_scale", 6.0),
        seed=section.get("seed", 0), seconds=seconds, sampler_type=section.get("sampler_type"),
        max_items=section.get("max_items", 16), temperature=section.get("temperature", 1.0),
        top_p=section.get("top_p", 0.0), top_k=section.get("top_k", 250))


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """``"min"`` / ``"max"`` for ``--monitor``: ``auto`` takes the direction of a ``val/<metric>`` name."""
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"--monitor-mode {mode!r}: use auto, min or max")
    metric = monitor[4:] if monitor.startswith("val/") else None
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"--monitor {monitor}: cannot tell whether lower or higher is better; pass --monitor-mode "
                         "min or max")
    return "max" if HIGHER_IS_BETTER[metric] else "min"


def check_monitor(monitor: str, callback: Optional[ValidationMetricsCallback], checkpoint_every: int) -> None:
    """Reject a ``--monitor val/<metric>`` that no checkpoint step will have computed."""
    if not monitor.startswith("val/"):
        return
    if callback is None:
        raise ValueError(f"--monitor {monitor}: the model config has no {SECTION} section to compute it")
    if monitor not in callback.metric_names:
        raise ValueError(f"--monitor {monitor}: {SECTION}.metrics computes {', '.join(callback.metric_names)}")
    if checkpoint_every % callback.every:
        raise ValueError(f"--monitor {monitor}: --checkpoint-every ({checkpoint_every}) must be a multiple of "
                         f"{SECTION}.every ({callback.every}) so that every checkpoint step has the metric")
