"""Upstream's module-state Gradio functions, as deprecated thin wrappers around the interface classes.

Upstream's ``interface/gradio.py`` handlers (``generate_uncond``, ``generate_lm``, ``autoencoder_process``) and UI
builders (``create_uncond_sampling_ui``, ``create_diffusion_uncond_ui``, ``create_autoencoder_ui``,
``create_lm_ui``, all taking only ``model_config``) read a module-global model that ``load_model`` sets. Here
:func:`stable_audio_tools.interface.gradio.load_model` records the model it returns (:func:`remember_model`) and
each wrapper uses that one unless ``model=`` / ``model_config=`` are given. They are importable from
``stable_audio_tools.interface.gradio`` as upstream's, emit a ``DeprecationWarning`` and delegate to
:class:`~.interfaces.diffusion_uncond.DiffusionUncondInterface`, :class:`~.interfaces.lm.LMInterface` and
:class:`~.interfaces.autoencoder.AutoencoderInterface`, which new code should use directly. The conditioned-diffusion
ones (``generate_cond``, ``create_sampling_ui``) are in :mod:`.interfaces.diffusion_cond`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gradio as gr
from torch import nn

from .interfaces.autoencoder import AutoencoderInterface, create_autoencoder_ui as _create_autoencoder_ui
from .interfaces.diffusion_uncond import DiffusionUncondInterface, create_diffusion_uncond_ui as _create_uncond_ui
from .interfaces.lm import LMInterface, create_lm_ui as _create_lm_ui

__all__ = ["remember_model", "current_model", "delete_files_async", "generate_uncond", "generate_lm",
           "autoencoder_process", "create_uncond_sampling_ui", "create_diffusion_uncond_ui", "create_autoencoder_ui",
           "create_lm_ui"]

log = logging.getLogger(__name__)

_loaded: Dict[str, Any] = {}


def remember_model(model: nn.Module, model_config: Dict[str, Any]) -> None:
    """Make ``model`` the one the upstream-style functions use by default (``load_model`` calls this)."""
    _loaded["model"], _loaded["model_config"] = model, model_config


def current_model(model: Optional[nn.Module] = None,
                  model_config: Optional[Dict[str, Any]] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """``(model, model_config)``: the given ones, else the last model loaded by ``load_model``."""
    model = model if model is not None else _loaded.get("model")
    model_config = model_config if model_config is not None else _loaded.get("model_config")
    if model is None or model_config is None:
        raise RuntimeError("no model loaded: call stable_audio_tools.interface.gradio.load_model(...) first, or pass "
                           "model= and model_config=")
    return model, model_config


def _deprecated(name: str, replacement: str) -> None:
    warnings.warn(f"{name} is upstream's module-state Gradio function; use {replacement}", DeprecationWarning,
                  stacklevel=3)


def _single_item(batch_size: int, name: str) -> None:
    if int(batch_size) != 1:
        raise ValueError(f"{name}: batch_size={batch_size} is not supported (the demo generates one clip); call the "
                         f"generation functions of stable_audio_tools.inference directly for batches")


def delete_files_async(filenames: Sequence[str], delay: float) -> threading.Thread:
    """Delete ``filenames`` (those that still exist) ``delay`` seconds from now, in a daemon thread."""
    def delete_later() -> None:
        time.sleep(delay)
        for filename in filenames:
            try:
                os.remove(filename)
            except FileNotFoundError:
                pass
            except OSError as err:
                log.warning("could not delete %s: %s", filename, err)

    thread = threading.Thread(target=delete_later, daemon=True)
    thread.start()
    return thread


def generate_uncond(steps: int = 250, seed: Any = -1, sampler_type: str = "dpmpp-3m-sde", sigma_min: float = 0.03,
                    sigma_max: float = 1000, use_init: bool = False, init_audio: Any = None,
                    init_noise_level: float = 1.0, batch_size: int = 1, preview_every: Optional[int] = None, *,
                    model: Optional[nn.Module] = None,
                    model_config: Optional[Dict[str, Any]] = None) -> Tuple[str, List[Any]]:
    """Generate one unconditional clip; returns ``(audio file path, [spectrogram])``. Step previews
    (``preview_every``) are not produced here."""
    _deprecated("generate_uncond", "DiffusionUncondInterface(model, model_config).generate")
    _single_item(batch_size, "generate_uncond")
    if preview_every:
        warnings.warn("generate_uncond: preview_every is ignored (no step previews for unconditional models)",
                      stacklevel=2)
    interface = DiffusionUncondInterface(*current_model(model, model_config))
    return interface.generate(steps=steps, seed=seed, sampler_type=sampler_type, sigma_min=sigma_min,
                              sigma_max=sigma_max, use_init=use_init, init_audio=init_audio,
                              init_noise_level=init_noise_level, progress=None)


def generate_lm(temperature: float = 1.0, top_p: float = 0.95, top_k: int = 0, batch_size: int = 1, *,
                model: Optional[nn.Module] = None,
                model_config: Optional[Dict[str, Any]] = None) -> Tuple[str, List[Any]]:
    """Generate one clip with an ``lm`` model; returns ``(audio file path, [spectrogram])``."""
    _deprecated("generate_lm", "LMInterface(model, model_config).generate")
    _single_item(batch_size, "generate_lm")
    interface = LMInterface(*current_model(model, model_config))
    return interface.generate(temperature=temperature, top_p=top_p, top_k=top_k, progress=None)


def autoencoder_process(audio: Any, latent_noise: float, n_quantizers: int, *, model: Optional[nn.Module] = None,
                        model_config: Optional[Dict[str, Any]] = None) -> Tuple[str, List[Any]]:
    """Encode and decode ``audio`` (a file path or ``(sample_rate, array)``); returns ``(path, [spectrogram])``."""
    _deprecated("autoencoder_process", "AutoencoderInterface(model, model_config).process")
    interface = AutoencoderInterface(*current_model(model, model_config))
    return interface.process(audio, n_quantizers=n_quantizers, latent_noise=latent_noise)


def create_uncond_sampling_ui(model_config: Dict[str, Any], *, model: Optional[nn.Module] = None) -> Dict[str, Any]:
    """Create the unconditional-generation controls inside the current ``gr.Blocks``; returns them by name."""
    _deprecated("create_uncond_sampling_ui", "DiffusionUncondInterface(model, model_config).render")
    return DiffusionUncondInterface(*current_model(model, model_config)).render()


def create_diffusion_uncond_ui(model_config: Dict[str, Any], *, model: Optional[nn.Module] = None) -> gr.Blocks:
    """The app for a ``diffusion_uncond`` model (upstream's signature)."""
    _deprecated("create_diffusion_uncond_ui(model_config)",
                "stable_audio_tools.interface.interfaces.diffusion_uncond.create_diffusion_uncond_ui(model, "
                "model_config)")
    return _create_uncond_ui(*current_model(model, model_config))


def create_autoencoder_ui(model_config: Dict[str, Any], *, model: Optional[nn.Module] = None) -> gr.Blocks:
    """The app for an ``autoencoder`` / ``diffusion_autoencoder`` model (upstream's signature)."""
    _deprecated("create_autoencoder_ui(model_config)",
                "stable_audio_tools.interface.interfaces.autoencoder.create_autoencoder_ui(model, model_config)")
    return _create_autoencoder_ui(*current_model(model, model_config))


def create_lm_ui(model_config: Dict[str, Any], *, model: Optional[nn.Module] = None) -> gr.Blocks:
    """The app for an ``lm`` model (upstream's signature)."""
    _deprecated("create_lm_ui(model_config)",
                "stable_audio_tools.interface.interfaces.lm.create_lm_ui(model, model_config)")
    return _create_lm_ui(*current_model(model, model_config))
