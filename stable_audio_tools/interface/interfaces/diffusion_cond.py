"""Gradio UI for conditioned diffusion models (``diffusion_cond`` and ``diffusion_cond_inpaint``), see docs/gradio.md.

One "Generation" tab: prompt and negative prompt, timing sliders (when the model has ``seconds_start`` /
``seconds_total`` conditioners), steps, CFG scale, sampler parameters (seed, CFG interval and rescale, sampler type,
sigma schedule), output parameters (file format and naming, spectrogram previews, cut to seconds total, autoplay,
infinite radio, auto download), init audio for variations and, for inpainting models, inpaint audio with a mask.
The handler is :meth:`DiffusionCondInterface.generate` (API name ``generate``, same inputs as upstream).

Differences from upstream: see docs/compatibility.md#stable_audio_toolsinterfaceinterfacesdiffusion_cond.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Tuple

import gradio as gr
import torch
from torch import nn

from ...inference.generation import generate_diffusion_cond, generate_diffusion_cond_inpaint
from ...inference.jobs import GenerationSettings, SourceAudio
from ...inference.lengths import plan_length
from ...inference.runner import generate_audio
from ...samplers import sampler_names
from ..legacy import current_model, delete_files_async
from .common import (FILE_FORMATS, FILE_NAMING, AudioValue, DemoInterface, OutputWriter, SamplingMonitor,
                     add_output_components, condense_prompt, copy_event_kwargs, model_dtype, single_tab_ui,
                     output_basename, parse_seed, prepare_input_audio, report_errors, seconds_slider_settings,
                     spectrogram)
from .limits import DemoLimits

__all__ = ["DiffusionCondInterface", "create_diffusion_cond_ui", "V_SAMPLERS", "RF_SAMPLERS", "DENOISER_SAMPLERS",
           # upstream's module-state functions (deprecated wrappers) and helpers
           "generate_cond", "create_sampling_ui", "delete_files_async", "condense_prompt"]

# The sampler dropdowns come from the sampler registry (stable_audio_tools.samplers.registry, the entries' ``ui``);
# these constants are the built-in lists at import time.
V_SAMPLERS = list(sampler_names(ui="v"))
RF_SAMPLERS = list(sampler_names(ui="rectified_flow"))
DENOISER_SAMPLERS = list(sampler_names(ui="rf_denoiser"))
_UI_LIST = {"rectified_flow": "rectified_flow", "rf_denoiser": "rf_denoiser"}


class DiffusionCondInterface(DemoInterface):
    """State and handlers of the conditioned-diffusion UI.

    Args:
        model: a ``ConditionedDiffusionModelWrapper`` (already on its device, in eval mode).
        model_config: its config (``sample_rate``, ``sample_size``, ``model_type``, ``model.conditioning``).
        writer: where result files go (default: a private temporary directory).
        limits (DemoLimits | None, default None): steps, seconds, input length and time limits of a request
            (default ``DemoLimits()``).
    """

    def __init__(self, model: nn.Module, model_config: Dict[str, Any], writer: Optional[OutputWriter] = None,
                 limits: Optional[DemoLimits] = None) -> None:
        super().__init__(model, model_config, writer, limits)
        self.inpainting = model_config.get("model_type") == "diffusion_cond_inpaint"
        self.objective = getattr(model, "diffusion_objective", "v")
        self.prompt_required = self.has_prompt

    # ------------------------------------------------------------------------------------------- settings
    @property
    def sampler_types(self) -> List[str]:
        """Sampler choices for the model's diffusion objective."""
        return list(sampler_names(ui=_UI_LIST.get(self.objective, "v")))

    @property
    def default_steps(self) -> int:
        return {"rectified_flow": 50, "rf_denoiser": 8}.get(self.objective, 100)

    @property
    def default_cfg_scale(self) -> float:
        return 1.0 if self.objective == "rf_denoiser" else 7.0

    @property
    def default_sampler(self) -> str:
        return {"rectified_flow": "euler", "rf_denoiser": "pingpong"}.get(self.objective, "dpmpp-3m-sde")

    # ------------------------------------------------------------------------------------------- handler
    def _check_inputs(self, prompt: str, seconds_total: float, cut: bool, steps: int, sampler_type: str,
                      cfg_interval: Tuple[float, float]) -> None:
        if self.prompt_required and not (prompt or "").strip():
            raise gr.Error("Enter a prompt: this model is conditioned on text.")
        if seconds_total > self.model_seconds + 1e-9:
            raise gr.Error(f"Seconds total ({seconds_total:g} s) is longer than this model generates "
                           f"({self.model_seconds:.2f} s: sample_size {self.sample_size} at {self.sample_rate} Hz). "
                           f"Choose at most {self.model_seconds:.2f} s.")
        self.limits.check_seconds(seconds_total, self.model_seconds)
        if cut and seconds_total * self.sample_rate < 1:
            raise gr.Error("Seconds total must be above 0 to cut the output to it (or untick 'Cut to seconds "
                           "total').")
        self.limits.check_steps(steps)
        if sampler_type not in self.sampler_types:
            raise gr.Error(f"Sampler type {sampler_type!r} does not fit this {self.objective!r} model; choose one of "
                           f"{', '.join(self.sampler_types)}")
        if cfg_interval[0] > cfg_interval[1]:
            raise gr.Error(f"CFG interval min ({cfg_interval[0]}) must not exceed CFG interval max "
                           f"({cfg_interval[1]})")

    def _inpaint_mask(self, mask_start: Optional[float], mask_end: Optional[float], sample_size: int) -> torch.Tensor:
        start = 0.0 if mask_start is None else max(0.0, float(mask_start))
        end = self.model_seconds if mask_end is None else min(self.model_seconds, float(mask_end))
        if start >= end:
            raise gr.Error(f"Mask Start ({start:g} s) must be before Mask End ({end:g} s)")
        mask = torch.ones(1, sample_size)
        mask[:, int(start * self.sample_rate):int(end * self.sample_rate)] = 0
        return mask

    @report_errors
    def generate(self, prompt: str, negative_prompt: Optional[str] = None, seconds_start: float = 0,
                 seconds_total: Optional[float] = None, cfg_scale: float = 7.0, steps: int = 100,
                 preview_every: int = 0, seed: Any = -1, sampler_type: Optional[str] = None, sigma_min: float = 0.01,
                 sigma_max: float = 100.0, rho: float = 1.0, cfg_interval_min: float = 0.0,
                 cfg_interval_max: float = 1.0, cfg_rescale: float = 0.0, file_format: str = "wav",
                 file_naming: str = "output.wav", cut_to_seconds_total: bool = True, init_audio: AudioValue = None,
                 init_noise_level: float = 0.1, mask_start: Optional[float] = None, mask_end: Optional[float] = None,
                 inpaint_audio: AudioValue = None, full_window: bool = False, init_mode: str = "noise",
                 continue_audio: AudioValue = None, continue_seconds: float = 0.0,
                 progress: Any = gr.Progress()) -> Tuple[str, List[Any]]:
        """Generate one clip; returns ``(audio file path, [spectrogram, *preview (image, label) pairs])``.

        ``seconds_total`` defaults to the model's length (or the limit ``max_seconds`` when shorter). Only the
        shortest valid length covering it is sampled and the output is trimmed to it; ``full_window`` samples the
        model's whole ``sample_size`` (upstream), then ``cut_to_seconds_total`` cuts the output.
        ``init_audio`` / ``inpaint_audio`` / ``continue_audio`` are file paths or ``(sample_rate, numpy array)``
        values. ``init_mode`` is ``"noise"`` (upstream) or ``"invert"`` (ODE inversion, keeps the structure).
        ``continue_audio`` is continued by ``continue_seconds`` seconds (the given audio is kept exactly).
        """
        prompt = prompt or ""
        seconds_total = self.max_seconds if seconds_total is None else float(seconds_total)
        steps = int(steps)
        sampler_type = sampler_type or self.default_sampler
        cfg_interval = (float(cfg_interval_min), float(cfg_interval_max))
        self._check_inputs(prompt, seconds_total, cut_to_seconds_total, steps, sampler_type, cfg_interval)
        seed = parse_seed(seed)
        dtype = model_dtype(self.model)
        max_input = self.limits.max_input_seconds
        extras = dict(rho=float(rho), cfg_interval=cfg_interval, scale_phi=float(cfg_rescale))
        if continue_audio is not None:
            return self._continue(prompt, negative_prompt, seconds_start, cfg_scale, steps, preview_every, seed,
                                  sampler_type, sigma_min, sigma_max, extras, file_format, file_naming,
                                  continue_audio, continue_seconds, progress)
        if init_mode not in ("noise", "invert"):
            raise gr.Error(f"Init mode must be noise or invert, got {init_mode!r}")
        if init_mode == "invert" and self.inpainting:
            raise gr.Error("Init mode 'invert' needs a model without inpainting conditioning; choose 'noise'")
        if full_window:
            sample_size = self.sample_size
        elif seconds_total <= 0:
            raise gr.Error("Seconds total must be above 0 (or tick 'Full window').")
        else:
            sample_size = plan_length(self.model, self.model_config, seconds_total).sample_size
        init = prepare_input_audio(init_audio, self.sample_rate, dtype, "Init audio", self.sample_size, max_input)
        inpaint = prepare_input_audio(inpaint_audio, self.sample_rate, dtype, "Inpaint audio", self.sample_size,
                                      max_input) if self.inpainting else None
        mask = self._inpaint_mask(mask_start, mask_end, sample_size) if inpaint is not None else None

        conditioning = [{"prompt": prompt, "seconds_start": seconds_start, "seconds_total": seconds_total}]
        negative = [{"prompt": negative_prompt, "seconds_start": seconds_start, "seconds_total": seconds_total}] \
            if negative_prompt else None
        args = dict(steps=steps, cfg_scale=float(cfg_scale), conditioning=conditioning,
                    negative_conditioning=negative, batch_size=1, sample_size=sample_size, seed=seed,
                    sampler_type=sampler_type, sigma_min=float(sigma_min), sigma_max=float(sigma_max),
                    init_audio=init, init_noise_level=float(init_noise_level), **extras)
        if init is not None and not self.inpainting:
            args["init_mode"] = init_mode
        if mask is not None:
            args.update(inpaint_audio=inpaint, inpaint_mask=mask)
        generate = generate_diffusion_cond_inpaint if self.inpainting else generate_diffusion_cond
        with self.gate.request("Generation") as guard:
            monitor = SamplingMonitor(self.model, steps, self.sample_rate, progress=progress,
                                      preview_every=preview_every, objective=self.objective, guard=guard)
            audio = generate(self.model, callback=monitor, **args)
            monitor.done()

        if cut_to_seconds_total or not full_window:
            audio = audio[..., :int(round(seconds_total * self.sample_rate))]
        return self._write(audio, prompt, negative_prompt, cfg_scale, seed, file_format, file_naming, True,
                           monitor.previews)

    def _write(self, audio: torch.Tensor, prompt: str, negative_prompt: Optional[str], cfg_scale: float, seed: int,
               file_format: str, file_naming: str, normalize: bool, previews: List[Any]) -> Tuple[str, List[Any]]:
        audio = audio.float().permute(1, 0, 2).reshape(audio.shape[1], -1)
        basename = output_basename(file_naming, prompt, negative_prompt or "", cfg_scale, seed)
        path = self.writer.write(audio, self.sample_rate, basename, file_format, normalize=normalize)
        return path, [spectrogram(audio, self.sample_rate), *previews]

    def _continue(self, prompt: str, negative_prompt: Optional[str], seconds_start: float, cfg_scale: float,
                  steps: int, preview_every: int, seed: int, sampler_type: str, sigma_min: float, sigma_max: float,
                  extras: Dict[str, Any], file_format: str, file_naming: str, continue_audio: AudioValue,
                  continue_seconds: float, progress: Any) -> Tuple[str, List[Any]]:
        """Continuation (:func:`~stable_audio_tools.inference.runner.generate_audio`, mode ``continue``): the
        given audio is kept exactly (not normalised), then ``continue_seconds`` of new audio follow it."""
        continue_seconds = float(continue_seconds or 0)
        if not 0 < continue_seconds < self.model_seconds:
            raise gr.Error(f"Seconds to add must be above 0 and below the model's length ({self.model_seconds:.2f} s)")
        loaded = prepare_input_audio(continue_audio, self.sample_rate, torch.float32, "Continue audio", None,
                                     self.limits.max_input_seconds)
        settings = GenerationSettings(prompt=prompt, negative_prompt=negative_prompt or None,
                                      seconds=continue_seconds, seconds_start=float(seconds_start), seed=seed,
                                      steps=steps, cfg_scale=float(cfg_scale), sampler_type=sampler_type,
                                      sigma_min=float(sigma_min), sigma_max=float(sigma_max), mode="continue",
                                      source="continue_audio")
        source = SourceAudio(path="Continue audio", audio=loaded[1], sha256="")
        with self.gate.request("Generation") as guard:
            monitor = SamplingMonitor(self.model, steps, self.sample_rate, progress=progress,
                                      preview_every=preview_every, objective=self.objective, guard=guard)
            audio, _ = generate_audio(self.model, self.model_config, settings, source,
                                      next(self.model.parameters()).device, callback=monitor, sampler_extras=extras)
            monitor.done()
        return self._write(audio, prompt, negative_prompt, cfg_scale, seed, file_format, file_naming, False,
                           monitor.previews)

    # ------------------------------------------------------------------------------------------- layout
    def render(self) -> Dict[str, Any]:
        """Create the controls inside the current ``gr.Blocks`` and wire them; returns the components by name."""
        c: Dict[str, Any] = {}
        is_rf = self.objective in ("rectified_flow", "rf_denoiser")
        step, default_seconds = seconds_slider_settings(self.sample_size, self.sample_rate)
        with gr.Row():
            with gr.Column(scale=6):
                c["prompt"] = gr.Textbox(label="Prompt", show_label=False, placeholder="Prompt", elem_id="prompt")
                c["negative_prompt"] = gr.Textbox(label="Negative prompt", show_label=False,
                                                  placeholder="Negative prompt", elem_id="negative-prompt")
            c["generate"] = gr.Button("Generate", variant="primary", scale=1, elem_id="generate-button")
        with gr.Row(equal_height=False):
            with gr.Column():
                with gr.Row(visible=self.has_seconds_start or self.has_seconds_total):
                    c["seconds_start"] = gr.Slider(0, 512, step=1, value=0, label="Seconds start",
                                                   visible=self.has_seconds_start, elem_id="seconds-start")
                    c["seconds_total"] = gr.Slider(0, self.max_seconds, step=step,
                                                   value=min(default_seconds, self.max_seconds), label="Seconds total",
                                                   visible=self.has_seconds_total, elem_id="seconds-total")
                with gr.Row():
                    c["steps"] = gr.Slider(1, self.limits.max_steps, step=1,
                                          value=min(self.default_steps, self.limits.max_steps), label="Steps",
                                          elem_id="steps")
                    c["cfg_scale"] = gr.Slider(0.0, 25.0, step=0.1, value=self.default_cfg_scale, label="CFG scale",
                                               elem_id="cfg-scale")
                with gr.Accordion("Sampler params", open=False):
                    with gr.Row():
                        c["seed"] = gr.Textbox(label="Seed (set to -1 for random seed)", value="-1", elem_id="seed")
                        c["cfg_interval_min"] = gr.Slider(0.0, 1.0, step=0.01, value=0.0, label="CFG interval min")
                        c["cfg_interval_max"] = gr.Slider(0.0, 1.0, step=0.01, value=1.0, label="CFG interval max")
                    with gr.Row():
                        c["cfg_rescale"] = gr.Slider(0.0, 1.0, step=0.01, value=0.0, label="CFG rescale amount")
                    with gr.Row():
                        c["sampler_type"] = gr.Dropdown(self.sampler_types, value=self.default_sampler,
                                                        label="Sampler type", elem_id="sampler-type")
                        c["sigma_min"] = gr.Slider(0.0, 2.0, step=0.01, value=0.01, label="Sigma min",
                                                   visible=not is_rf)
                        c["sigma_max"] = gr.Slider(0.0, 1000.0, step=0.1, value=100, label="Sigma max",
                                                   visible=not is_rf)
                        c["rho"] = gr.Slider(0.0, 10.0, step=0.01, value=1.0, label="Sigma curve strength",
                                             visible=not is_rf)
                with gr.Accordion("Output params", open=False):
                    with gr.Row():
                        c["file_format"] = gr.Dropdown(FILE_FORMATS, value="wav", label="File format")
                        c["file_naming"] = gr.Dropdown(FILE_NAMING, value="output.wav", label="File naming")
                        c["preview_every"] = gr.Slider(0, 100, step=1, value=0, label="Spec Preview Every",
                                                       elem_id="preview-every")
                        c["cut"] = gr.Checkbox(label="Cut to seconds total", value=True, elem_id="cut-to-seconds")
                        c["full_window"] = gr.Checkbox(label="Full window (sample the model's whole length, as "
                                                             "upstream; slower)", value=False, elem_id="full-window")
                        c["autoplay"] = gr.Checkbox(label="Autoplay", value=False, elem_id="autoplay")
                        c["infinite_radio"] = gr.Checkbox(label="Infinite Radio", value=False, elem_id="infinite-radio")
                        c["auto_download"] = gr.Checkbox(label="Auto Download", value=False,
                                                         elem_id="automatic-download")
                with gr.Accordion("Init audio", open=False):
                    c["init_audio"] = gr.Audio(label="Init audio", type="filepath", elem_id="init-audio")
                    c["init_noise_level"] = gr.Slider(0.01 if is_rf else 0.1, 1.0 if is_rf else 100.0, step=0.01,
                                                      value=0.1, label="Init noise level")
                    c["init_mode"] = gr.Radio(["noise", "invert"], value="noise", visible=not self.inpainting,
                                              label="Init mode (noise: upstream's noised input; invert: ODE "
                                                    "inversion, keeps the structure)", elem_id="init-mode")
                with gr.Accordion("Continuation", open=False):
                    c["continue_audio"] = gr.Audio(label="Continue audio (kept exactly, then continued)",
                                                   type="filepath", elem_id="continue-audio")
                    c["continue_seconds"] = gr.Slider(0.0, self.model_seconds, step=min(0.1, step), value=0.0,
                                                      label="Seconds to add after the continue audio",
                                                      elem_id="continue-seconds")
                seconds = self.model_seconds
                with gr.Accordion("Inpainting", open=False, visible=self.inpainting):
                    c["inpaint_audio"] = gr.Audio(label="Inpaint audio", type="filepath", elem_id="inpaint-audio")
                    c["mask_start"] = gr.Slider(0.0, seconds, step=min(0.1, step), value=min(10.0, seconds / 2),
                                                label="Mask Start (sec)", elem_id="mask-start")
                    c["mask_end"] = gr.Slider(0.0, seconds, step=min(0.1, step), value=seconds,
                                              label="Mask End (sec)", elem_id="mask-end")
            with gr.Column():
                add_output_components(c)
                c["send_to_init"] = gr.Button("Send to init audio", scale=1, elem_id="send-to-init")
                c["send_to_init"].click(**copy_event_kwargs(c["output_audio"], c["init_audio"]))
                if self.inpainting:
                    c["send_to_inpaint"] = gr.Button("Send to inpaint audio", scale=1, elem_id="send-to-inpaint")
                    c["send_to_inpaint"].click(**copy_event_kwargs(c["output_audio"], c["inpaint_audio"]))
        inputs = [c[k] for k in ("prompt", "negative_prompt", "seconds_start", "seconds_total", "cfg_scale", "steps",
                                 "preview_every", "seed", "sampler_type", "sigma_min", "sigma_max", "rho",
                                 "cfg_interval_min", "cfg_interval_max", "cfg_rescale", "file_format", "file_naming",
                                 "cut", "init_audio", "init_noise_level", "mask_start", "mask_end", "inpaint_audio",
                                 "full_window", "init_mode", "continue_audio", "continue_seconds")]
        c["generate"].click(fn=self.generate, inputs=inputs, outputs=[c["output_audio"], c["output_spectrogram"]],
                            api_name="generate")
        return c


def create_diffusion_cond_ui(model: nn.Module, model_config: Dict[str, Any], gradio_title: str = "",
                             writer: Optional[OutputWriter] = None, limits: Optional[DemoLimits] = None) -> gr.Blocks:
    """The ``gr.Blocks`` app for a ``diffusion_cond`` / ``diffusion_cond_inpaint`` model."""
    interface = DiffusionCondInterface(model, model_config, writer=writer, limits=limits)
    return single_tab_ui(interface, gradio_title)




# ----------------------------------------------------------------------------------------------- upstream's API
def generate_cond(prompt: str, negative_prompt: Optional[str] = None, seconds_start: float = 0,
                  seconds_total: float = 30, cfg_scale: float = 6.0, steps: int = 250,
                  preview_every: Optional[int] = None, seed: Any = -1, sampler_type: str = "dpmpp-3m-sde",
                  sigma_min: float = 0.03, sigma_max: float = 1000, rho: float = 1.0, cfg_interval_min: float = 0.0,
                  cfg_interval_max: float = 1.0, cfg_rescale: float = 0.0, file_format: str = "wav",
                  file_naming: str = "verbose", cut_to_seconds_total: bool = False, init_audio: AudioValue = None,
                  init_noise_level: float = 1.0, mask_maskstart: Optional[float] = None,
                  mask_maskend: Optional[float] = None, inpaint_audio: AudioValue = None, batch_size: int = 1, *,
                  model: Optional[nn.Module] = None,
                  model_config: Optional[Dict[str, Any]] = None) -> Tuple[str, List[Any]]:
    """Deprecated upstream handler (module-state model, see :mod:`stable_audio_tools.interface.legacy`): generate one
    clip with :meth:`DiffusionCondInterface.generate`; returns ``(audio file path, [spectrogram, *previews])``.
    ``mask_maskstart`` / ``mask_maskend`` are the inpainting mask bounds in seconds."""
    warnings.warn("generate_cond is upstream's module-state Gradio function; use "
                  "DiffusionCondInterface(model, model_config).generate", DeprecationWarning, stacklevel=2)
    if int(batch_size) != 1:
        raise ValueError(f"generate_cond: batch_size={batch_size} is not supported (the demo generates one clip); "
                         f"use stable_audio_tools.inference.generation.generate_diffusion_cond for batches")
    interface = DiffusionCondInterface(*current_model(model, model_config))
    return interface.generate(
        prompt, negative_prompt=negative_prompt, seconds_start=seconds_start, seconds_total=seconds_total,
        cfg_scale=cfg_scale, steps=steps, preview_every=preview_every or 0, seed=seed, sampler_type=sampler_type,
        sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, cfg_interval_min=cfg_interval_min,
        cfg_interval_max=cfg_interval_max, cfg_rescale=cfg_rescale, file_format=file_format, file_naming=file_naming,
        cut_to_seconds_total=cut_to_seconds_total, init_audio=init_audio, init_noise_level=init_noise_level,
        mask_start=mask_maskstart, mask_end=mask_maskend, inpaint_audio=inpaint_audio, progress=None)


def create_sampling_ui(model_config: Dict[str, Any], *, model: Optional[nn.Module] = None) -> Dict[str, Any]:
    """Deprecated upstream builder: create the generation controls inside the current ``gr.Blocks`` (see
    :meth:`DiffusionCondInterface.render`); returns them by name."""
    warnings.warn("create_sampling_ui is upstream's module-state Gradio function; use "
                  "DiffusionCondInterface(model, model_config).render", DeprecationWarning, stacklevel=2)
    return DiffusionCondInterface(*current_model(model, model_config)).render()
