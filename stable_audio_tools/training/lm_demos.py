"""Demo callback of ``lm`` models (see docs/diffusion.md#demos-trainingdemo), built on
:class:`~.demo_base.DemoCallbackBase`.

For each CFG scale the language model generates ``num_demos`` token sequences covering ``sample_size`` audio
samples, the pretransform decodes them, and the items are concatenated along time, peak-normalised and saved
as ``demo_cfg_{scale}_{step:08}.wav`` with a mel spectrogram of the left channel.

Differences from upstream: see docs/compatibility.md#stable_audio_toolstraininglm_demos.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import pytorch_lightning as pl

from ..plotting import audio_spectrogram_image
from ..config import ConfigError, get_positive, require, require_mapping, warn_unknown_keys
from .demo_base import DemoCallbackBase

__all__ = ["AudioLanguageModelDemoCallback", "create_lm_demo_callback", "LM_DEMO_KEYS"]

LM_DEMO_KEYS = ("demo_every", "demo_cfg_scales", "demo_cond", "num_demos")


class AudioLanguageModelDemoCallback(DemoCallbackBase):
    """Generates ``num_demos`` clips for every scale in ``demo_cfg_scales`` with
    ``model.generate_audio(batch_size=num_demos, max_gen_len=sample_size // downsampling_ratio,
    conditioning=demo_conditioning, cfg_scale=scale, temp=temp, top_p=top_p)``; logs ``demo_cfg_{scale}``
    (audio) and ``demo_melspec_left_cfg_{scale}`` (image).

    Args:
        demo_every: demo interval in optimizer steps.
        num_demos: number of generated clips per CFG scale.
        sample_size: length of each clip in audio samples.
        sample_rate: audio sample rate.
        demo_conditioning: one metadata dict per demo (at least ``num_demos``), or None for an unconditional LM.
        demo_cfg_scales: classifier-free guidance scales.
        temp: sampling temperature.
        top_p: nucleus-sampling probability (0 disables it, then ``top_k`` applies).
        top_k: top-k sampling when ``top_p`` is 0.
    """

    def __init__(self, demo_every: int = 2000, num_demos: int = 8, sample_size: int = 65536,
                 sample_rate: int = 48000, demo_conditioning: Optional[Sequence[Mapping[str, Any]]] = None,
                 demo_cfg_scales: Sequence[float] = (3, 5, 7), temp: float = 1.0, top_p: float = 0.95,
                 top_k: int = 250) -> None:
        super().__init__(demo_every=demo_every, sample_rate=sample_rate)
        if isinstance(num_demos, bool) or not isinstance(num_demos, int) or num_demos < 1:
            raise ValueError(f"num_demos must be a positive integer, got {num_demos!r}")
        if demo_conditioning is not None and len(demo_conditioning) < num_demos:
            raise ValueError(f"demo_cond has {len(demo_conditioning)} entries but num_demos is {num_demos}; give "
                             f"one metadata dict per demo")
        self.num_demos = num_demos
        self.demo_samples = sample_size
        self.demo_conditioning = None if demo_conditioning is None else \
            [dict(c) for c in demo_conditioning[:num_demos]]
        self.demo_cfg_scales = list(demo_cfg_scales)
        self.temp = temp
        self.top_p = top_p
        self.top_k = top_k

    def run_demo(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Generate, save and log one clip batch per CFG scale."""
        model = module.model
        length = self.demo_samples // model.pretransform.downsampling_ratio
        if length < 1:
            raise ValueError(f"sample_size {self.demo_samples} is shorter than one token "
                             f"({model.pretransform.downsampling_ratio} samples)")
        for scale in self.demo_cfg_scales:
            fakes = model.generate_audio(batch_size=self.num_demos, max_gen_len=length,
                                         conditioning=self.demo_conditioning, cfg_scale=scale, temp=self.temp,
                                         top_p=self.top_p, top_k=self.top_k)
            flat = fakes.float().permute(1, 0, 2).reshape(fakes.shape[1], -1)
            path, as_int16 = self.save_demo_audio(trainer, f"demo_cfg_{scale}", flat, normalize=True)
            if self.attached_loggers(trainer):
                self.log_audio_all(trainer, f"demo_cfg_{scale}", path)
                self.log_image_all(trainer, f"demo_melspec_left_cfg_{scale}",
                                   audio_spectrogram_image(as_int16, sample_rate=self.sample_rate))


def _uses_conditioning(model_config: Mapping[str, Any]) -> bool:
    lm = model_config.get("model", {}).get("lm", {})
    return isinstance(lm, Mapping) and any(lm.get(key) for key in (
        "cross_attention_cond_ids", "prepend_cond_ids", "global_cond_ids"))


def create_lm_demo_callback(model_config: Mapping[str, Any], **kwargs: Any) -> pl.Callback:
    """The demo callback of an ``lm`` config: ``training.demo`` keys ``demo_every`` (2000), ``demo_cfg_scales``
    ([1]), ``demo_cond`` (None; required when the LM uses conditioning), ``num_demos`` (8). ``kwargs`` override
    them (``demo_dl`` is accepted and ignored)."""
    demo = require_mapping(require_mapping(model_config.get("training", {}), "training").get("demo", {}),
                           "training.demo")
    warn_unknown_keys(demo, LM_DEMO_KEYS, "training.demo")
    kwargs.pop("demo_dl", None)
    params: Dict[str, Any] = {
        "demo_every": get_positive(demo, "demo_every", 2000, "training.demo"),
        "num_demos": get_positive(demo, "num_demos", 8, "training.demo"),
        "sample_size": require(model_config, "sample_size", "", "number of samples", (int,)),
        "sample_rate": require(model_config, "sample_rate", "", "sample rate in Hz", (int,)),
        "demo_cfg_scales": _cfg_scales(demo.get("demo_cfg_scales", [1])),
        "demo_conditioning": _demo_cond(demo.get("demo_cond"), _uses_conditioning(model_config)),
    }
    params.update(kwargs)
    num_demos, conditioning = params["num_demos"], params["demo_conditioning"]
    if conditioning is not None and len(conditioning) < num_demos:
        raise ConfigError("training.demo.demo_cond", f"has {len(conditioning)} entries but num_demos is {num_demos}",
                          "give one metadata dict per demo")
    return AudioLanguageModelDemoCallback(**params)


def _cfg_scales(scales: Any) -> List[float]:
    if not isinstance(scales, (list, tuple)) or not scales or \
            any(isinstance(s, bool) or not isinstance(s, (int, float)) for s in scales):
        raise ConfigError("training.demo.demo_cfg_scales", f"expected a non-empty list of numbers, got {scales!r:.60}")
    return list(scales)


def _demo_cond(demo_cond: Any, required: bool) -> Optional[List[Dict[str, Any]]]:
    if demo_cond is None:
        if required:
            raise ConfigError("training.demo.demo_cond", "is required: the LM is conditioned (model.lm lists "
                              "conditioning ids)", "give one metadata dict per demo, e.g. [{\"prompt\": ...}]")
        return None
    if not isinstance(demo_cond, (list, tuple)) or not all(isinstance(c, Mapping) for c in demo_cond):
        raise ConfigError("training.demo.demo_cond", "expected a list of metadata dicts (one per demo)")
    return [dict(c) for c in demo_cond]
