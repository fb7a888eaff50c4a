"""Generation lengths: compute only what was asked.

Upstream always samples the model's full ``sample_size`` window and cuts afterwards. :func:`plan_length` instead
picks the smallest length the model can run that covers the requested seconds: a multiple of the model's
``min_input_length`` (the pretransform's downsampling ratio times the backbone's patch size / downsampling), so the
latent sequence is as short as possible. Lengths beyond the training window are refused, except for DiTs with
rotary positions and no absolute position table, which accept them with a warning (quality may drop).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

from torch import nn

__all__ = ["LengthPlan", "min_input_length", "model_window", "extends_beyond_window", "plan_length",
           "config_extends_beyond_window", "check_seconds"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LengthPlan:
    """What one generation computes.

    Attributes:
        seconds (float): the length asked for.
        samples (int): ``round(seconds * sample_rate)``, the length of the trimmed output.
        sample_size (int): audio samples sampled and decoded (a multiple of ``min_input_length``, >= ``samples``).
        latent_length (int): latent frames sampled (``sample_size // downsampling_ratio``).
        beyond_window (bool): ``sample_size`` exceeds the model's ``sample_size``.
    """

    seconds: float
    samples: int
    sample_size: int
    latent_length: int
    beyond_window: bool


def min_input_length(model: nn.Module) -> int:
    """The granularity of valid lengths in audio samples (``model.min_input_length``, else the pretransform's
    downsampling ratio, else 1)."""
    value = getattr(model, "min_input_length", None)
    if value:
        return int(value)
    pretransform = getattr(model, "pretransform", None)
    return int(getattr(pretransform, "downsampling_ratio", 1) or 1) if pretransform is not None else 1


def _downsampling(model: nn.Module) -> int:
    pretransform = getattr(model, "pretransform", None)
    return int(getattr(pretransform, "downsampling_ratio", 1) or 1) if pretransform is not None else 1


def model_window(model_config: Mapping[str, Any]) -> int:
    """The model's training window ``sample_size`` in audio samples (config key ``sample_size``)."""
    if not isinstance(model_config.get("sample_size"), int) or not isinstance(model_config.get("sample_rate"), int):
        raise ValueError("the model config needs integer 'sample_size' and 'sample_rate' keys")
    return int(model_config["sample_size"])


def extends_beyond_window(model: nn.Module) -> bool:
    """True for backbones whose only positional information is rotary (RoPE DiTs): they run on any length."""
    backbone = getattr(model, "model", None)
    if backbone is None:
        return False
    for module in backbone.modules():
        if hasattr(module, "use_abs_pos_emb") and hasattr(module, "rotary_pos_emb"):
            return module.rotary_pos_emb is not None and not module.use_abs_pos_emb
    return False


def plan_length(model: nn.Module, model_config: Mapping[str, Any], seconds: float,
                full_window: bool = False, flag: str = "--seconds") -> LengthPlan:
    """The smallest valid length covering ``seconds`` (``full_window``: the model's ``sample_size``, as upstream).

    Raises ``ValueError`` naming ``flag`` for a length that is not positive or that exceeds the model's window on a
    backbone that cannot run longer sequences; warns when a RoPE DiT is asked for more than its window.
    """
    window = model_window(model_config)
    sample_rate = int(model_config["sample_rate"])
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{flag} must be a positive number of seconds, got {seconds}")
    samples = int(round(seconds * sample_rate))
    if samples < 1:
        raise ValueError(f"{flag} {seconds} is shorter than one sample at {sample_rate} Hz")
    step = min_input_length(model)
    sample_size = window if full_window and samples <= window else math.ceil(samples / step) * step
    beyond = sample_size > window
    if beyond:
        if not extends_beyond_window(model):
            raise ValueError(f"{flag} {seconds:g} s is longer than this model can generate ({window / sample_rate:.2f} s:"
                             f" sample_size {window} at {sample_rate} Hz); ask for at most "
                             f"{window / sample_rate:.2f} s (only DiTs with rotary positions can go further)")
        log.warning("%g s is beyond the model's training window (%.2f s); this rotary-position DiT runs on longer "
                    "sequences, but quality may drop", seconds, window / sample_rate)
    return LengthPlan(seconds=float(seconds), samples=samples, sample_size=sample_size,
                      latent_length=sample_size // _downsampling(model), beyond_window=beyond)


def config_extends_beyond_window(model_config: Mapping[str, Any]) -> bool:
    """:func:`extends_beyond_window` from the config alone: a ``dit`` backbone (``model.diffusion.type`` or
    ``model.type``) with ``rotary_pos_emb`` on (the default) and ``use_abs_pos_emb`` off (the default)."""
    model = model_config.get("model") or {}
    block = model.get("diffusion") if isinstance(model.get("diffusion"), Mapping) else model
    if not isinstance(block, Mapping) or block.get("type") != "dit":
        return False
    options = block.get("config") or {}
    return bool(options.get("rotary_pos_emb", True)) and not options.get("use_abs_pos_emb", False)


def check_seconds(model_config: Mapping[str, Any], seconds: float, flag: str = "--seconds") -> None:
    """The checks of :func:`plan_length` that need only the config (run before the model is built)."""
    window = model_window(model_config)
    sample_rate = int(model_config["sample_rate"])
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{flag} must be a positive number of seconds, got {seconds}")
    if seconds * sample_rate > window and not config_extends_beyond_window(model_config):
        raise ValueError(f"{flag} {seconds:g} s is longer than this model can generate ({window / sample_rate:.2f} s:"
                         f" sample_size {window} at {sample_rate} Hz); ask for at most {window / sample_rate:.2f} s")
