"""The Gradio demo (see docs/gradio.md): model loading, device selection and one UI per model type.

``create_ui`` loads a model (a Hugging Face repo id or local directory via ``get_pretrained_model``, or a config
plus an unwrapped checkpoint) and returns the ``gr.Blocks`` app for its ``model_type``:

========================================= ==========================================================
``diffusion_cond``, ``diffusion_cond_inpaint`` text/timing-conditioned generation (+ inpainting)
``diffusion_uncond``                       unconditional generation
``autoencoder``, ``diffusion_autoencoder`` encode/decode round trip
``lm``                                     language-model generation
========================================= ==========================================================

Differences from upstream: see docs/compatibility.md#stable_audio_toolsinterfacegradio.

Upstream's module-state functions (``generate_uncond``, ``create_lm_ui(model_config)``...) are importable from here
as deprecated wrappers (:mod:`.legacy`); they use the model :func:`load_model` loaded last.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import gradio as gr
import torch
from torch import nn

from ..families import MODEL_FAMILIES, resolve_builder
from ..inference.precision import apply_fast_mode
from ..inference.utils import select_device
from ..models.factory import create_model_from_config, load_model_config
from ..models.pretrained import get_pretrained_model
from ..models.utils import CheckpointMismatchError, check_state_dict, load_ckpt_state_dict
from .interfaces.adapters import add_adapter_controls, load_adapters
from .interfaces.common import launch_style_kwargs
from .interfaces.limits import DemoLimits
from .legacy import (autoencoder_process, create_autoencoder_ui, create_diffusion_uncond_ui, create_lm_ui,
                     create_uncond_sampling_ui, generate_lm, generate_uncond, remember_model)

__all__ = ["CheckpointMismatchError", "DemoLimits", "select_device", "check_state_dict", "load_model", "create_ui",
           "create_ui_for_model", "launch_ui", "private_gradio_temp_dir",
           # upstream's module-state functions, deprecated wrappers defined in .legacy
           "generate_uncond", "generate_lm", "autoencoder_process", "create_uncond_sampling_ui",
           "create_diffusion_uncond_ui", "create_autoencoder_ui", "create_lm_ui"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def _load_pretransform(model: nn.Module, path: PathLike) -> None:
    pretransform = getattr(model, "pretransform", None)
    if pretransform is None:
        raise ValueError(f"--pretransform-ckpt-path {path}: this model has no pretransform to load it into")
    state_dict = load_ckpt_state_dict(path)
    target = getattr(pretransform, "model", pretransform)  # an autoencoder pretransform loads into its model
    check_state_dict(target, state_dict, f"pretransform checkpoint {path}")
    target.load_state_dict(state_dict)


def load_model(model_config: Optional[Dict[str, Any]] = None, model_ckpt_path: Optional[PathLike] = None,
               pretrained_name: Optional[str] = None, pretransform_ckpt_path: Optional[PathLike] = None,
               device: Optional[Union[str, torch.device]] = None,
               model_half: bool = False, dtype: str = "float32",
               quantize: str = "none", compile: bool = False) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build and load a model for inference; returns ``(model, model_config)``.

    Either ``pretrained_name`` (a Hub repo id or a local directory with ``model_config.json`` and
    ``model.safetensors`` / ``model.ckpt``) or ``model_config`` plus ``model_ckpt_path`` (an unwrapped checkpoint,
    checked against the config). ``pretransform_ckpt_path`` then replaces the pretransform's weights. The model is
    moved to ``device`` (see :func:`select_device`), put in eval mode without gradients and, with ``model_half``
    on a CUDA device, converted to float16 (elsewhere the flag is ignored with a warning). ``dtype`` (``"float32"``,
    ``"bf16"`` / ``"bf16-mixed"``: fast mode), ``quantize`` (``"none"``, ``"int8"``) and ``compile`` are the
    fast-mode choices of :func:`~stable_audio_tools.inference.precision.apply_fast_mode`
    (docs/inference.md#fast-mode).
    """
    if pretrained_name is not None and (model_config is not None or model_ckpt_path is not None):
        raise ValueError("give either a pretrained model name or a model config with a checkpoint, not both")
    if pretrained_name is not None:
        log.info("loading pretrained model %s", pretrained_name)
        try:
            model, model_config = get_pretrained_model(pretrained_name)
        except RuntimeError as e:  # load_state_dict(strict=True) names missing/unexpected/mismatched keys
            raise CheckpointMismatchError(f"pretrained model {pretrained_name}: {e}") from e
    elif model_config is not None and model_ckpt_path is not None:
        model = create_model_from_config(model_config)
        log.info("loading model checkpoint %s", model_ckpt_path)
        state_dict = load_ckpt_state_dict(model_ckpt_path)
        allow = ("pretransform.",) if pretransform_ckpt_path is not None else ()
        check_state_dict(model, state_dict, f"checkpoint {model_ckpt_path}", allow_missing=allow)
        model.load_state_dict(state_dict, strict=False)
    else:
        raise ValueError("give a pretrained model name (--pretrained-name) or both a model config (--model-config) "
                         "and a checkpoint (--ckpt-path)")
    if pretransform_ckpt_path is not None:
        log.info("loading pretransform checkpoint %s", pretransform_ckpt_path)
        _load_pretransform(model, pretransform_ckpt_path)

    device = select_device(device)
    model.to(device).eval().requires_grad_(False)
    if model_half:
        if device.type == "cuda":
            model.to(torch.float16)
        else:
            log.warning("--model-half is ignored on %s (float16 is only used on CUDA); running in float32",
                        device.type)
    apply_fast_mode(model, model_config.get("model_type"), dtype, quantize, device, compile)
    log.info("model ready on %s (%s%s)", device, next(model.parameters()).dtype,
             "" if dtype == "float32" and quantize == "none"
             else f", fast mode: {dtype}, quantize {quantize}{', compiled' if compile else ''}")
    remember_model(model, model_config)
    return model, model_config


def create_ui_for_model(model: nn.Module, model_config: Dict[str, Any], gradio_title: str = "",
                        limits: Optional[DemoLimits] = None) -> gr.Blocks:
    """The ``gr.Blocks`` app for an already loaded ``model`` (chosen by ``model_config["model_type"]``), whose
    handlers honour ``limits`` (default ``DemoLimits()``); :func:`launch_ui` applies the same limits' server
    settings (the app keeps them as ``demo_limits``)."""
    model_type = model_config.get("model_type")
    family = MODEL_FAMILIES.get(model_type)
    if family is None or family.ui is None:
        supported = ", ".join(t for t, f in MODEL_FAMILIES.items() if f.ui is not None)
        raise ValueError(f"no Gradio interface for model_type {model_type!r}; supported: {supported}")
    build = resolve_builder(family.ui)
    limits = limits or DemoLimits()
    seconds = (model_config.get("sample_size") or 0) / (model_config.get("sample_rate") or 1)
    if family.ui_length_control and limits.max_seconds is not None and seconds and limits.max_seconds > seconds:
        log.warning("--max-seconds %g is above this model's length (%.2f s); requests are limited to %.2f s",
                    limits.max_seconds, seconds, seconds)
    ui = build(model, model_config, gradio_title=gradio_title, limits=limits)
    ui.demo_limits = limits
    add_adapter_controls(ui, model)
    return ui


def create_ui(model_config_path: Optional[PathLike] = None, ckpt_path: Optional[PathLike] = None,
              pretrained_name: Optional[str] = None, pretransform_ckpt_path: Optional[PathLike] = None,
              model_half: bool = False, gradio_title: str = "",
              device: Optional[Union[str, torch.device]] = None, limits: Optional[DemoLimits] = None,
              adapters: Sequence[Tuple[str, float]] = (), dtype: str = "float32",
              quantize: str = "none", compile: bool = False) -> gr.Blocks:
    """Load a model (see :func:`load_model`, which also describes ``dtype`` / ``quantize`` / ``compile``, applied
    after the adapters) and build its UI under ``limits`` (default ``DemoLimits()``).

    Exactly one source: ``pretrained_name``, or ``model_config_path`` together with ``ckpt_path``. ``adapters``:
    ``(path, strength)`` adapter files loaded onto the model, each with a strength slider on the page.
    """
    if (pretrained_name is not None) == (model_config_path is not None or ckpt_path is not None):
        raise ValueError("give either --pretrained-name, or --model-config together with --ckpt-path")
    model_config = None
    if model_config_path is not None:
        if ckpt_path is None:
            raise ValueError("--model-config needs --ckpt-path (an unwrapped checkpoint of that model)")
        model_config = load_model_config(model_config_path)
    elif ckpt_path is not None:
        raise ValueError("--ckpt-path needs --model-config (the config the checkpoint was trained with)")
    model, model_config = load_model(model_config, ckpt_path, pretrained_name=pretrained_name,
                                     pretransform_ckpt_path=pretransform_ckpt_path, device=device,
                                     model_half=model_half)
    if quantize != "none" and adapters:
        raise ValueError(f"--quantize {quantize} does not combine with --adapter (the adapters wrap the layers int8 "
                         f"would replace); drop one of them")
    load_adapters(model, adapters)
    model.requires_grad_(False)
    apply_fast_mode(model, model_config.get("model_type"), dtype, quantize, compile=compile)
    return create_ui_for_model(model, model_config, gradio_title=gradio_title, limits=limits)


def launch_ui(ui: gr.Blocks, **launch_kwargs: Any) -> Any:
    """Serve ``ui`` with the demo's theme and script (Gradio 6 takes them here) under its ``demo_limits`` (set by
    :func:`create_ui_for_model`; ``DemoLimits()`` for other apps): a queue of at most ``queue_size`` waiting
    requests running ``concurrency`` at a time with no route around it, uploads up to ``max_file_size``, and
    uploaded/result files deleted after ``delete_files_after`` seconds and when the server stops.
    ``launch_kwargs`` go to ``Blocks.launch`` (and override ``max_file_size``)."""
    limits = getattr(ui, "demo_limits", None) or DemoLimits()
    ui.delete_cache = limits.delete_cache()
    launch_kwargs.setdefault("max_file_size", limits.max_file_size_bytes)
    return ui.queue(**limits.queue_kwargs()).launch(**launch_style_kwargs(), **launch_kwargs)


@contextmanager
def private_gradio_temp_dir() -> Iterator[Path]:
    """Point ``GRADIO_TEMP_DIR`` (where Gradio keeps uploads and copies of results) at a new private directory,
    inside the one already set if any, for the apps created inside the block; the directory and everything in it
    is removed when the block exits (also on Ctrl+C) and the previous setting restored."""
    previous = os.environ.get("GRADIO_TEMP_DIR")
    if previous:
        Path(previous).mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="stable_audio_tools_gradio_", dir=previous or None))
    os.environ["GRADIO_TEMP_DIR"] = str(directory)
    log.info("uploads and results are kept in %s (removed when the server stops)", directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
        shutil.rmtree(directory, ignore_errors=True)
