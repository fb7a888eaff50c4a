"""Running :class:`~stable_audio_tools.inference.jobs.GenerationSettings`: one call of the right generator for the
model type and mode, output trimmed to what was asked, the given audio pasted back for continuation / prepend /
inpainting (:func:`~stable_audio_tools.inference.audio_edit.paste_known`), and files + sidecars written.

Lengths follow :func:`~stable_audio_tools.inference.lengths.plan_length` (only what was asked is computed, unless
``full_window``); outputs longer than ``decode_chunk_size`` latent frames decode in overlapping windows, which
bounds the decoder's memory.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import soundfile as sf
import torch
from torch import nn
from tqdm.auto import tqdm

from ..audio import set_audio_channels
from .audio_edit import keep_mask_from_regions, parse_regions, paste_known
from .generation import generate_diffusion_cond, generate_diffusion_cond_inpaint, generate_diffusion_uncond
from .jobs import (GenerationSettings, SourceAudio, conditioning_ids, model_objective, output_stem, sidecar_dict,
                   strength_to_noise_level)
from .lengths import LengthPlan, model_window, plan_length

__all__ = ["FORMATS", "check_format", "generate_audio", "write_audio", "run_settings"]

log = logging.getLogger(__name__)

FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24"), "ogg": ("OGG", "VORBIS"),
           "mp3": ("MP3", "MPEG_LAYER_III")}


def check_format(fmt: str) -> None:
    """Raise ``ValueError`` (naming ``--format``) unless the installed libsndfile can write ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    container, subtype = FORMATS[fmt]
    if not sf.check_format(container, subtype):
        raise ValueError(f"--format {fmt}: the installed libsndfile ({sf.__libsndfile_version__}) cannot write "
                         f"{container}/{subtype}; choose another format (wav and flac always work) or install a "
                         "libsndfile built with it")


def write_audio(path: Path, audio: torch.Tensor, sample_rate: int, fmt: str) -> None:
    """Write ``[C, N]`` audio. wav is 32-bit float (exact); the other formats are clipped to [-1, 1] (warned)."""
    container, subtype = FORMATS[fmt]
    data = audio.detach().float().cpu()
    if subtype != "FLOAT" and bool((data.abs() > 1).any()):
        log.warning("%s: clipping %d samples outside [-1, 1] for %s", path, int((data.abs() > 1).sum()), fmt)
        data = data.clamp(-1, 1)
    sf.write(str(path), data.T.numpy(), sample_rate, format=container, subtype=subtype)


def _metadata(model_config: Mapping[str, Any], s: GenerationSettings, seconds_total: float,
              prompt: Optional[str]) -> Dict[str, Any]:
    ids = conditioning_ids(model_config)
    meta: Dict[str, Any] = {}
    if "prompt" in ids:
        meta["prompt"] = prompt
    if "seconds_start" in ids:
        meta["seconds_start"] = s.seconds_start
    if "seconds_total" in ids:
        meta["seconds_total"] = seconds_total
    return meta


def _diffusion_kwargs(model: nn.Module, model_config: Mapping[str, Any], s: GenerationSettings, plan: LengthPlan,
                      seconds_total: float, device: torch.device, callback: Optional[Callable],
                      sampler_extras: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = dict(steps=s.steps, batch_size=s.batch_size, sample_size=plan.sample_size, seed=s.seed,
                                  device=device, sampler_type=s.sampler_type, sigma_max=s.sigma_max,
                                  decode_chunked=plan.latent_length > s.decode_chunk_size,
                                  decode_chunk_size=s.decode_chunk_size, decode_overlap=s.decode_overlap,
                                  callback=callback, **dict(sampler_extras or {}))
    if model_objective(model_config) == "v":
        kwargs["sigma_min"] = s.sigma_min
    if model_config.get("model_type") != "diffusion_uncond":
        kwargs["cfg_scale"] = s.cfg_scale
        kwargs["conditioning"] = [_metadata(model_config, s, seconds_total, s.prompt)] * s.batch_size
        if s.negative_prompt:
            kwargs["negative_conditioning"] = [_metadata(model_config, s, seconds_total,
                                                         s.negative_prompt)] * s.batch_size
    return kwargs


def _edit_layout(s: GenerationSettings, source: SourceAudio, model_config: Mapping[str, Any],
                 granularity: int = 1) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
    """``(aligned given audio [C, T], keep mask [T], context start, context end)`` of the generated window
    (``T`` = what is sampled) for continue / prepend / inpaint; the window is ``source[ctx_start:ctx_end]`` plus
    the new audio. The context is a multiple of ``granularity`` samples (an LM's code frames)."""
    sample_rate = int(model_config["sample_rate"])
    audio = source.audio
    if s.mode == "inpaint":
        keep = keep_mask_from_regions(parse_regions(s.mask), source.samples, sample_rate)
        return audio, keep, 0, source.samples
    new = int(round(s.seconds * sample_rate))
    context = min(source.samples, model_window(model_config) - new) // granularity * granularity
    if context <= 0:
        raise ValueError(f"{source.path} is shorter than one code frame ({granularity} samples) of this model")
    if context < source.samples:
        log.info("using the %s %.2f s of %s as context (the model's window is %.2f s)",
                 "last" if s.mode == "continue" else "first", context / sample_rate, source.path,
                 model_window(model_config) / sample_rate)
    total = context + new
    aligned = audio.new_zeros((audio.shape[0], total))
    keep = torch.zeros(total)
    if s.mode == "continue":
        aligned[:, :context] = audio[:, source.samples - context:]
        keep[:context] = 1
        return aligned, keep, source.samples - context, source.samples
    aligned[:, new:] = audio[:, :context]
    keep[new:] = 1
    return aligned, keep, 0, context


def _dtype(model: nn.Module) -> torch.dtype:
    """The dtype input audio is given in (the model's parameters', as the pretransform encodes in it)."""
    return next(model.parameters()).dtype


def _pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (0, length - tensor.shape[-1]))


@torch.no_grad()
def generate_audio(model: nn.Module, model_config: Mapping[str, Any], s: GenerationSettings,
                   source: Optional[SourceAudio], device: torch.device, callback: Optional[Callable] = None,
                   sampler_extras: Optional[Mapping[str, Any]] = None) -> Tuple[torch.Tensor, LengthPlan]:
    """Run resolved, checked settings; returns ``(audio [B, C, N] float32 on the CPU, the length plan)``.

    ``callback`` gets the samplers' per-step dicts; ``sampler_extras`` (e.g. ``rho``, ``cfg_interval``,
    ``scale_phi``) go to the diffusion generators as further keywords."""
    model_type = model_config.get("model_type")
    sample_rate = int(model_config["sample_rate"])
    if model_type == "lm" and s.mode == "continue":
        return _lm_continue(model, model_config, s, source)
    if model_type == "lm":
        plan = plan_length(model, model_config, s.seconds, s.full_window)
        conditioning = None
        if conditioning_ids(model_config):
            conditioning = [_metadata(model_config, s, s.seconds, s.prompt)] * s.batch_size
        audio = model.generate_audio(max_gen_len=plan.latent_length, batch_size=s.batch_size,
                                     conditioning=conditioning, cfg_scale=s.cfg_scale, top_k=s.top_k, top_p=s.top_p,
                                     temp=s.temperature, seed=s.seed)
        return audio[..., :plan.samples].float().cpu(), plan
    if s.mode in ("generate", "init"):
        seconds = s.seconds if s.seconds is not None else source.samples / sample_rate
        plan = plan_length(model, model_config, seconds, s.full_window)
        kwargs = _diffusion_kwargs(model, model_config, s, plan, seconds, device, callback, sampler_extras)
        if s.mode == "init":
            kwargs["init_audio"] = (sample_rate, source.audio.to(_dtype(model)))
            kwargs["init_noise_level"] = strength_to_noise_level(s.init_strength, model_objective(model_config),
                                                                 s.sampler_type, s.sigma_max)
            if model_type == "diffusion_cond":
                kwargs["init_mode"] = s.init_mode
        generate = {"diffusion_uncond": generate_diffusion_uncond, "diffusion_cond": generate_diffusion_cond,
                    "diffusion_cond_inpaint": generate_diffusion_cond_inpaint}[model_type]
        audio = generate(model, **kwargs)
        return audio[..., :plan.samples].float().cpu(), plan

    aligned, keep, ctx_start, ctx_end = _edit_layout(s, source, model_config)
    total = aligned.shape[-1]
    plan = plan_length(model, model_config, total / sample_rate, s.full_window)
    kwargs = _diffusion_kwargs(model, model_config, s, plan, total / sample_rate, device, callback, sampler_extras)
    padded_audio, padded_keep = _pad(aligned, plan.sample_size).to(_dtype(model)), _pad(keep, plan.sample_size)
    if model_type == "diffusion_cond_inpaint":
        audio = generate_diffusion_cond_inpaint(model, inpaint_audio=(sample_rate, padded_audio),
                                                inpaint_mask=padded_keep, **kwargs)
    else:
        audio = generate_diffusion_cond(model, keep_audio=(sample_rate, padded_audio), keep_mask=padded_keep,
                                        **kwargs)
    return _paste(audio[..., :total].float().cpu(), s, source, aligned, keep, ctx_start, ctx_end, sample_rate), plan


def _lm_continue(model: nn.Module, model_config: Mapping[str, Any], s: GenerationSettings,
                 source: SourceAudio) -> Tuple[torch.Tensor, LengthPlan]:
    """LM continuation: the context's codes are the prompt (kept verbatim by ``generate``), then the paste."""
    sample_rate = int(model_config["sample_rate"])
    ratio = int(model.pretransform.downsampling_ratio)
    aligned, keep, ctx_start, ctx_end = _edit_layout(s, source, model_config, granularity=ratio)
    total = aligned.shape[-1]
    plan = plan_length(model, model_config, total / sample_rate, s.full_window)
    context = aligned[:, :ctx_end - ctx_start].unsqueeze(0).expand(s.batch_size, -1, -1).to(_dtype(model))
    conditioning = None
    if conditioning_ids(model_config):
        conditioning = [_metadata(model_config, s, total / sample_rate, s.prompt)] * s.batch_size
    device = next(model.parameters()).device
    audio = model.generate_audio(max_gen_len=plan.latent_length, batch_size=s.batch_size, init_audio=context.to(device),
                                 conditioning=conditioning, cfg_scale=s.cfg_scale, top_k=s.top_k, top_p=s.top_p,
                                 temp=s.temperature, seed=s.seed)
    return _paste(audio[..., :total].float().cpu(), s, source, aligned, keep, ctx_start, ctx_end, sample_rate), plan


def _paste(audio: torch.Tensor, s: GenerationSettings, source: SourceAudio, aligned: torch.Tensor,
           keep: torch.Tensor, ctx_start: int, ctx_end: int, sample_rate: int) -> torch.Tensor:
    """The given audio pasted back into the generated window, and the rest of the file around it."""
    given = set_audio_channels(aligned.unsqueeze(0).float(), audio.shape[1])[0]
    fade = int(round(s.crossfade_ms / 1000 * sample_rate))
    window = paste_known(audio, given, keep, fade)
    full = set_audio_channels(source.audio.unsqueeze(0).float(), audio.shape[1]).expand(audio.shape[0], -1, -1)
    if s.mode == "inpaint":
        return window
    before, after = full[..., :ctx_start], full[..., ctx_end:]
    if s.mode == "continue":
        return torch.cat([before, window], -1)
    return torch.cat([window, after], -1)


def _free_path(directory: Path, stem: str, ext: str, taken: set) -> Path:
    path, n = directory / f"{stem}.{ext}", 1
    while str(path) in taken or path.exists():
        path, n = directory / f"{stem}-{n}.{ext}", n + 1
    taken.add(str(path))
    return path


def run_settings(model: nn.Module, model_config: Mapping[str, Any], jobs: Sequence[Tuple[GenerationSettings,
                 Optional[SourceAudio]]], output_dir: Path, fmt: str, device: torch.device,
                 model_info: Mapping[str, Any], run_info: Mapping[str, Any],
                 only_index: Optional[int] = None) -> List[Path]:
    """Generate every job and write ``<stem>.<fmt>`` plus ``<stem>.json`` (the sidecar) into ``output_dir``;
    ``only_index`` writes just that batch item (sidecar reproduction). Returns the audio paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    sample_rate = int(model_config["sample_rate"])
    taken: set = set()
    written = []
    for s, source in tqdm(jobs, desc="generate.py", unit="job", disable=len(jobs) < 2):
        audio, plan = generate_audio(model, model_config, s, source, device)
        for index in range(audio.shape[0]):
            if only_index is not None and index != only_index:
                continue
            path = _free_path(output_dir, output_stem(s, index), fmt, taken)
            write_audio(path, audio[index], sample_rate, fmt)
            info = {**run_info, "format": fmt, "file": path.name, "sample_rate": sample_rate,
                    "samples": int(audio.shape[-1]), "latent_length": plan.latent_length,
                    "sample_size": plan.sample_size}
            sidecar = sidecar_dict(s, index, model_info, info, source)
            path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
            log.info("wrote %s", path)
            written.append(path)
    return written
