"""Audio generation with diffusion models (see docs/inference.md#text-to-audio-generate_diffusion_cond,
docs/inference.md#unconditional-models-generate_diffusion_uncond).

``generate_diffusion_cond`` / ``generate_diffusion_cond_inpaint`` take a ``ConditionedDiffusionModelWrapper``
and ``generate_diffusion_uncond`` a ``DiffusionModelWrapper``; they return audio ``[batch, channels, samples]``
(or latents with ``return_latents=True``). Extra keywords go to the sampler: ``sampler_type``, ``sigma_min``,
``sigma_max``, ``rho``, ``cfg_interval``, ``scale_phi``, ``callback``, ``disable_tqdm`` ...

Differences from upstream: see docs/compatibility.md#stable_audio_toolsinferencegeneration.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.nn.functional import interpolate

from ..allocator import tune_malloc
from ..models.diffusion import register_generator
from ..samplers import sample_k, sample_rf
from .precision import autocast_backbone
from .editing import INIT_MODES, SAMPLER_KEYS, KnownRegionModel, invert_to_start, inversion_times, latent_keep_mask
from .utils import build_mask, decode_latents, prepare_audio

__all__ = ["generate_diffusion_cond", "generate_diffusion_cond_inpaint", "generate_diffusion_uncond",
           "resolve_device", "seed_and_noise",
           "build_mask"]  # defined in .utils, importable from here as from upstream's inference/generation.py

logger = logging.getLogger(__name__)

AudioInput = Optional[Tuple[int, torch.Tensor]]
Device = Optional[Union[str, torch.device]]
RF_OBJECTIVES = ("rectified_flow", "rf_denoiser")


def resolve_device(model: nn.Module, device: Device = None) -> torch.device:
    """``device`` if given, else the device of the model's parameters, else "cuda" when available, else "cpu"."""
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    if param is not None:
        return param.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_and_noise(seed: int, shape: Sequence[int], device: Device) -> Tuple[int, torch.Tensor]:
    """Seed torch's global RNGs (``seed == -1``: a random seed, logged) and draw the initial noise right after,
    so identical seeds give identical outputs. Returns ``(seed, noise)``."""
    if seed == -1:
        seed = int(np.random.randint(0, 2 ** 32 - 1))
        logger.info("generation seed: %d", seed)
    torch.manual_seed(seed)
    return seed, torch.randn(list(shape), device=device)


def _disable_reduced_precision() -> None:
    """Full-precision matmuls/convolutions during sampling (as upstream)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cudnn.benchmark = False


def _objective(model: nn.Module) -> str:
    objective = getattr(model, "diffusion_objective", "v")
    if objective != "v" and objective not in RF_OBJECTIVES:
        raise ValueError(f"unknown diffusion_objective {objective!r} on the model; expected 'v', "
                         f"{', '.join(map(repr, RF_OBJECTIVES))}")
    return objective


def _latent_length(model: nn.Module, sample_size: int) -> int:
    if model.pretransform is not None:
        return sample_size // model.pretransform.downsampling_ratio
    return sample_size


def _encode_audio(model: nn.Module, audio: Tuple[int, torch.Tensor], audio_sample_size: int, device) -> torch.Tensor:
    """``(sample_rate, tensor)`` -> model-space input ``[1, C, L]``: resample, crop/pad from the start, match
    channels, then encode through the pretransform if there is one."""
    if not (isinstance(audio, (tuple, list)) and len(audio) == 2):
        raise ValueError("init_audio / inpaint_audio must be a (sample_rate, tensor) tuple")
    in_sr, tensor = audio
    io_channels = model.pretransform.io_channels if model.pretransform is not None else model.io_channels
    prepared = prepare_audio(tensor, in_sr=in_sr, target_sr=model.sample_rate, target_length=audio_sample_size,
                             target_channels=io_channels, device=device)
    if model.pretransform is not None:
        prepared = model.pretransform.encode(prepared)
    return prepared


def _model_dtype(model: nn.Module) -> torch.dtype:
    param = next(model.model.parameters(), None)
    return torch.float32 if param is None else param.dtype


def _cast(inputs: Mapping[str, Any], dtype: torch.dtype) -> Dict[str, Any]:
    return {k: v.type(dtype) if torch.is_tensor(v) else v for k, v in inputs.items()}


def _run_sampler(model: nn.Module, noise: torch.Tensor, init: Optional[torch.Tensor], steps: int,
                 sampler_kwargs: Dict[str, Any], model_kwargs: Dict[str, Any], device, dist_shift=None,
                 model_fn=None) -> torch.Tensor:
    tune_malloc()
    model_fn = autocast_backbone(model, model.model if model_fn is None else model_fn)
    if _objective(model) == "v":
        return sample_k(model_fn, noise, init, steps, **sampler_kwargs, **model_kwargs, device=device)
    rf_kwargs = {k: v for k, v in sampler_kwargs.items() if k not in ("sigma_min", "rho")}
    if dist_shift is not None:
        rf_kwargs["dist_shift"] = dist_shift
    return sample_rf(model_fn, noise, init_data=init, steps=steps, **rf_kwargs, **model_kwargs, device=device)


def _finish(model: nn.Module, sampled: torch.Tensor, return_latents: bool, decode_chunked: bool,
            decode_chunk_size: int, decode_overlap: int) -> torch.Tensor:
    if model.pretransform is None or return_latents:
        return sampled
    return decode_latents(model.pretransform, sampled, chunked=decode_chunked, chunk_size=decode_chunk_size,
                          overlap=decode_overlap)


def _conditioning(model: nn.Module, conditioning, conditioning_tensors, device,
                  batch_size: Optional[int] = None) -> Dict[str, Any]:
    if conditioning_tensors is None:
        if conditioning is None:
            raise ValueError("pass conditioning (a list of per-item metadata dicts, e.g. [{'prompt': ..., "
                             "'seconds_total': 30}]) or precomputed conditioning_tensors")
        if batch_size is not None and len(conditioning) != batch_size:
            raise ValueError(f"got {len(conditioning)} conditioning dict(s) for batch_size={batch_size}: pass one "
                             f"dict per output, e.g. conditioning=[{{...}}] * {batch_size}")
        conditioning_tensors = model.conditioner(conditioning, device)
    return dict(conditioning_tensors)


@torch.no_grad()
def generate_diffusion_uncond(model: nn.Module, steps: int = 250, batch_size: int = 1, sample_size: int = 2097152,
                              seed: int = -1, device: Device = None, init_audio: AudioInput = None,
                              init_noise_level: float = 1.0, return_latents: bool = False,
                              decode_chunked: bool = False, decode_chunk_size: int = 128, decode_overlap: int = 32,
                              **sampler_kwargs: Any) -> torch.Tensor:
    """Generate ``batch_size`` clips of ``sample_size`` audio samples with an unconditional model.

    v-objective models sample with :func:`sample_k` on ``model.model`` (default ``dpmpp-2m-sde``),
    rectified-flow models with :func:`sample_rf`. ``init_audio=(sample_rate, tensor)`` makes variations starting
    from noise level ``init_noise_level``.
    """
    device = resolve_device(model, device)
    audio_sample_size = sample_size
    sample_size = _latent_length(model, sample_size)
    _, noise = seed_and_noise(seed, [batch_size, model.io_channels, sample_size], device)
    _disable_reduced_precision()
    init = None
    if init_audio is not None:
        init = _encode_audio(model, init_audio, audio_sample_size, device).repeat(batch_size, 1, 1)
        sampler_kwargs["sigma_max"] = init_noise_level
    sampled = _run_sampler(model, noise.type(_model_dtype(model)), init, steps, sampler_kwargs, {}, device)
    return _finish(model, sampled, return_latents, decode_chunked, decode_chunk_size, decode_overlap)


@torch.no_grad()
def generate_diffusion_cond(model: nn.Module, steps: int = 250, cfg_scale: float = 6,
                            conditioning: Optional[Sequence[dict]] = None,
                            conditioning_tensors: Optional[dict] = None,
                            negative_conditioning: Optional[Sequence[dict]] = None,
                            negative_conditioning_tensors: Optional[dict] = None, batch_size: int = 1,
                            sample_size: int = 2097152, sample_rate: int = 48000, seed: int = -1,
                            device: Device = None, init_audio: AudioInput = None, init_noise_level: float = 1.0,
                            return_latents: bool = False, decode_chunked: bool = False, decode_chunk_size: int = 128,
                            decode_overlap: int = 32, init_mode: str = "noise", keep_audio: AudioInput = None,
                            keep_mask: Optional[torch.Tensor] = None, **sampler_kwargs: Any) -> torch.Tensor:
    """Generate audio from conditioning (prompts, timing, ...) with classifier-free guidance ``cfg_scale``.

    Args:
        model: a ConditionedDiffusionModelWrapper.
        steps: sampler steps.
        cfg_scale: classifier-free guidance scale (batch CFG, with CFG rescale enabled through ``scale_phi``).
        conditioning: per-item metadata dicts (``[{"prompt": ..., "seconds_start": 0, "seconds_total": 30}] * B``).
        conditioning_tensors: precomputed ``model.conditioner`` output (instead of ``conditioning``).
        negative_conditioning / negative_conditioning_tensors: replaces the unconditional CFG branch.
        batch_size: number of outputs.
        sample_size: output length in audio samples (latent length = sample_size // downsampling_ratio).
        sample_rate: deprecated and unused (the model's ``sample_rate`` is used).
        seed: RNG seed; -1 picks (and logs) a random one. The noise is drawn right after seeding.
        device: where to sample (default: the model's device).
        init_audio: ``(sample_rate, tensor)`` for variations; ``init_noise_level`` is the starting noise level.
        return_latents: return the sampled latents instead of decoded audio.
        decode_chunked / decode_chunk_size / decode_overlap: windowed decoding of long outputs.
        init_mode: ``"noise"`` (default, upstream): start from the encoded ``init_audio`` plus noise at
            ``init_noise_level``; ``"invert"``: map it there by deterministic ODE inversion
            (:func:`~stable_audio_tools.inference.editing.invert_to_start`), which keeps its structure.
        keep_audio / keep_mask: ``(sample_rate, tensor)`` and an audio-rate mask ``[samples]`` (1 = keep): the
            latent frames fully inside the kept samples are imposed during sampling (known-region replacement,
            :class:`~stable_audio_tools.inference.editing.KnownRegionModel`), for continuation and inpainting with
            models that have no inpainting conditioning. The decoded output is not pasted over; see
            :mod:`stable_audio_tools.inference.jobs` for that.
        **sampler_kwargs: ``sampler_type``, ``sigma_min``, ``sigma_max``, ``rho``, ``cfg_interval``,
            ``scale_phi``, ``callback``, ``disable_tqdm``, ...
    """
    device = resolve_device(model, device)
    audio_sample_size = sample_size
    sample_size = _latent_length(model, sample_size)
    seed, noise = seed_and_noise(seed, [batch_size, model.io_channels, sample_size], device)
    _disable_reduced_precision()

    cond_tensors = _conditioning(model, conditioning, conditioning_tensors, device, batch_size)
    negative = None
    if negative_conditioning is not None or negative_conditioning_tensors is not None:
        negative = _conditioning(model, negative_conditioning, negative_conditioning_tensors, device, batch_size)
    init = None
    if init_audio is not None:
        init = _encode_audio(model, init_audio, audio_sample_size, device).repeat(batch_size, 1, 1)
    if init_mode not in INIT_MODES:
        raise ValueError(f"init_mode must be one of {', '.join(map(repr, INIT_MODES))}, got {init_mode!r}")
    known = None
    if (keep_audio is None) != (keep_mask is None):
        raise ValueError("keep_audio and keep_mask go together (the audio to keep and where to keep it)")
    if keep_audio is not None:
        known = (_encode_audio(model, keep_audio, audio_sample_size, device).repeat(batch_size, 1, 1),
                 latent_keep_mask(keep_mask, sample_size).to(device), seed)
    sampled = _sample_conditioned(model, noise, init, init_noise_level, steps, cfg_scale, cond_tensors, negative,
                                  sampler_kwargs, device, init_mode=init_mode, known=known)
    return _finish(model, sampled, return_latents, decode_chunked, decode_chunk_size, decode_overlap)


def _sample_conditioned(model: nn.Module, noise: torch.Tensor, init: Optional[torch.Tensor], init_noise_level: float,
                        steps: int, cfg_scale: float, cond_tensors: Mapping[str, Any],
                        negative: Optional[Mapping[str, Any]], sampler_kwargs: Dict[str, Any],
                        device: Device, init_mode: str = "noise",
                        known: Optional[Tuple[torch.Tensor, torch.Tensor, int]] = None) -> torch.Tensor:
    """Conditioner outputs -> backbone kwargs (batch CFG, negative branch) -> the objective's sampler.

    ``init_mode="invert"`` maps ``init`` to the start by ODE inversion; ``known = (latents, mask, seed)`` imposes
    the known latent frames during sampling."""
    if init is not None:
        sampler_kwargs["sigma_max"] = init_noise_level
    dtype = _model_dtype(model)
    model_kwargs = {**_cast(model.get_conditioning_inputs(cond_tensors), dtype), "cfg_scale": cfg_scale,
                    "batch_cfg": True, "rescale_cfg": True}
    if negative is not None:
        model_kwargs.update(_cast(model.get_conditioning_inputs(negative, negative=True), dtype))
    dist_shift = getattr(model, "dist_shift", None)
    noise = noise.type(dtype)
    model_fn = model.model
    if known is not None:
        latents, mask, seed = known
        generator = torch.Generator(device=noise.device).manual_seed(int(seed) + 1)
        renoise = torch.randn(noise.shape, generator=generator, device=noise.device, dtype=noise.dtype)
        model_fn = KnownRegionModel(model.model, latents.type(dtype), mask, _objective(model), renoise)
    if init is not None and init_mode == "invert":
        times = inversion_times(_objective(model), steps, sampler_kwargs, noise.shape[-1], dist_shift)
        model_extras = {k: v for k, v in sampler_kwargs.items() if k not in SAMPLER_KEYS}
        init, noise = invert_to_start(autocast_backbone(model, model.model), _objective(model), init.type(dtype), times,
                                      {**model_kwargs, **model_extras})
    sampled = _run_sampler(model, noise, init, steps, sampler_kwargs, model_kwargs, device, dist_shift=dist_shift,
                           model_fn=model_fn)
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return sampled


def _resize_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    return interpolate(mask.unsqueeze(1), size=length, mode="nearest").squeeze(1)


@torch.no_grad()
def generate_diffusion_cond_inpaint(model: nn.Module, steps: int = 250, cfg_scale: float = 6,
                                    conditioning: Optional[Sequence[dict]] = None,
                                    conditioning_tensors: Optional[dict] = None,
                                    negative_conditioning: Optional[Sequence[dict]] = None,
                                    negative_conditioning_tensors: Optional[dict] = None, batch_size: int = 1,
                                    sample_size: int = 2097152, seed: int = -1, device: Device = None,
                                    init_audio: AudioInput = None, init_noise_level: float = 1.0,
                                    inpaint_audio: AudioInput = None, inpaint_mask: Optional[torch.Tensor] = None,
                                    return_latents: bool = False, decode_chunked: bool = False,
                                    decode_chunk_size: int = 128, decode_overlap: int = 32,
                                    **sampler_kwargs: Any) -> torch.Tensor:
    """Generate with an inpainting model (``diffusion_cond_inpaint``): as :func:`generate_diffusion_cond`, plus

    Args:
        inpaint_audio: ``(sample_rate, tensor)`` whose kept regions condition the generation.
        inpaint_mask: float ``[batch or 1, samples]``, 1 = keep ``inpaint_audio``, 0 = generate; resized (nearest)
            to the latent length. Without a mask everything is generated.
    The mask and the masked (encoded) input are passed as the ``inpaint_mask`` / ``inpaint_masked_input``
    conditioning of both the positive and the negative branch.
    """
    device = resolve_device(model, device)
    audio_sample_size = sample_size
    sample_size = _latent_length(model, sample_size)
    if inpaint_mask is not None:
        inpaint_mask = inpaint_mask.float()
        if inpaint_mask.dim() == 1:
            inpaint_mask = inpaint_mask.unsqueeze(0)
    _, noise = seed_and_noise(seed, [batch_size, model.io_channels, sample_size], device)
    _disable_reduced_precision()

    cond_tensors = _conditioning(model, conditioning, conditioning_tensors, device, batch_size)
    negative = None
    if negative_conditioning is not None or negative_conditioning_tensors is not None:
        negative = _conditioning(model, negative_conditioning, negative_conditioning_tensors, device, batch_size)

    init = None
    if init_audio is not None:
        init = _encode_audio(model, init_audio, audio_sample_size, device).repeat(batch_size, 1, 1)
    masked_source = None
    if inpaint_audio is not None:
        masked_source = _encode_audio(model, inpaint_audio, audio_sample_size, device).repeat(batch_size, 1, 1)

    if inpaint_mask is None:
        mask = torch.zeros((batch_size, 1, sample_size), device=device)
    else:
        mask = _resize_mask(inpaint_mask, sample_size).unsqueeze(1).to(device)
        if mask.shape[0] == 1 and batch_size > 1:
            mask = mask.expand(batch_size, -1, -1)
    if masked_source is not None:
        inpaint_input = masked_source * mask.expand_as(masked_source)
    else:
        inpaint_input = torch.zeros((batch_size, model.io_channels, sample_size), device=device)

    for tensors in (cond_tensors, negative):
        if tensors is not None:
            tensors["inpaint_mask"] = [mask]
            tensors["inpaint_masked_input"] = [inpaint_input]
    sampled = _sample_conditioned(model, noise, init, init_noise_level, steps, cfg_scale, cond_tensors, negative,
                                  sampler_kwargs, device)
    return _finish(model, sampled, return_latents, decode_chunked, decode_chunk_size, decode_overlap)


register_generator("diffusion_uncond", generate_diffusion_uncond)
register_generator("diffusion_cond", generate_diffusion_cond)
