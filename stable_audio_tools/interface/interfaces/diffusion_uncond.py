"""Gradio UI for unconditional diffusion models (``diffusion_uncond``), see docs/gradio.md.

Controls: Generate, steps, sampler parameters (seed, sampler type, sigma min/max) and an "Init audio" accordion
("Use init audio", the audio, its noise level); outputs audio, a spectrogram and "Send to init audio". The handler
is :meth:`DiffusionUncondInterface.generate` (API name ``generate``). Upstream's tab called a broken
``generate_diffusion_uncond``; this one works, shows progress and reports bad inputs in the UI.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import gradio as gr
from torch import nn

from ...inference.generation import generate_diffusion_uncond
from ...samplers import sampler_names
from .common import (AudioValue, DemoInterface, OutputWriter, SamplingMonitor, add_output_components, copy_event_kwargs,
                     model_dtype, single_tab_ui, parse_seed, prepare_input_audio, report_errors, spectrogram)
from .limits import DemoLimits

__all__ = ["DiffusionUncondInterface", "create_diffusion_uncond_ui", "UNCOND_SAMPLERS"]

# The sampler dropdown comes from the sampler registry (entries whose ``ui`` holds "uncond"); this constant is the
# built-in list at import time.
UNCOND_SAMPLERS = list(sampler_names(ui="uncond"))


class DiffusionUncondInterface(DemoInterface):
    """State and handler of the unconditional-diffusion UI.

    Args:
        model: a ``DiffusionModelWrapper`` (already on its device, in eval mode).
        model_config: its config (``sample_rate``, ``sample_size``).
        writer: where result files go (default: a private temporary directory).
        limits (DemoLimits | None, default None): steps, input length and time limits of a request
            (default ``DemoLimits()``).
    """

    def __init__(self, model: nn.Module, model_config: Dict[str, Any], writer: Optional[OutputWriter] = None,
                 limits: Optional[DemoLimits] = None) -> None:
        super().__init__(model, model_config, writer, limits)

    @report_errors
    def generate(self, steps: int = 100, seed: Any = -1, sampler_type: str = "dpmpp-3m-sde", sigma_min: float = 0.03,
                 sigma_max: float = 500.0, use_init: bool = False, init_audio: AudioValue = None,
                 init_noise_level: float = 0.1, progress: Any = gr.Progress()) -> Tuple[str, List[Any]]:
        """Generate one clip of the model's ``sample_size``; returns ``(audio file path, [spectrogram])``."""
        steps = int(steps)
        self.limits.check_steps(steps)
        choices = sampler_names(ui="uncond")
        if sampler_type not in choices:
            raise gr.Error(f"Unknown sampler type {sampler_type!r}; choose one of {', '.join(choices)}")
        seed = parse_seed(seed)
        if use_init and init_audio is None:
            raise gr.Error("'Use init audio' is ticked but no init audio was given")
        init = prepare_input_audio(init_audio, self.sample_rate, model_dtype(self.model), "Init audio",
                                   self.sample_size, self.limits.max_input_seconds) if use_init else None
        with self.gate.request("Generation") as guard:
            monitor = SamplingMonitor(self.model, steps, self.sample_rate, progress=progress, guard=guard)
            audio = generate_diffusion_uncond(self.model, steps=steps, batch_size=1, sample_size=self.sample_size,
                                              seed=seed, sampler_type=sampler_type, sigma_min=float(sigma_min),
                                              sigma_max=float(sigma_max), init_audio=init,
                                              init_noise_level=float(init_noise_level), callback=monitor)
            monitor.done()
        audio = audio.float().permute(1, 0, 2).reshape(audio.shape[1], -1)
        path = self.writer.write(audio, self.sample_rate, "output", "wav", normalize=False)
        return path, [spectrogram(audio, self.sample_rate)]

    def render(self) -> Dict[str, Any]:
        """Create the controls inside the current ``gr.Blocks`` and wire them; returns the components by name."""
        c: Dict[str, Any] = {}
        c["generate"] = gr.Button("Generate", variant="primary", scale=1, elem_id="generate-button")
        with gr.Row(equal_height=False):
            with gr.Column():
                with gr.Row():
                    c["steps"] = gr.Slider(1, self.limits.max_steps, step=1, value=min(100, self.limits.max_steps),
                                          label="Steps", elem_id="steps")
                with gr.Accordion("Sampler params", open=False):
                    c["seed"] = gr.Textbox(label="Seed (set to -1 for random seed)", value="-1", elem_id="seed")
                    with gr.Row():
                        c["sampler_type"] = gr.Dropdown(list(sampler_names(ui="uncond")), value="dpmpp-3m-sde", label="Sampler type",
                                                        elem_id="sampler-type")
                        c["sigma_min"] = gr.Slider(0.0, 2.0, step=0.01, value=0.03, label="Sigma min")
                        c["sigma_max"] = gr.Slider(0.0, 1000.0, step=0.1, value=500, label="Sigma max")
                with gr.Accordion("Init audio", open=False):
                    c["use_init"] = gr.Checkbox(label="Use init audio", elem_id="use-init")
                    c["init_audio"] = gr.Audio(label="Init audio", type="filepath", elem_id="init-audio")
                    c["init_noise_level"] = gr.Slider(0.0, 100.0, step=0.01, value=0.1, label="Init noise level")
            with gr.Column():
                add_output_components(c)
                c["send_to_init"] = gr.Button("Send to init audio", scale=1, elem_id="send-to-init")
                c["send_to_init"].click(**copy_event_kwargs(c["output_audio"], c["init_audio"]))
        inputs = [c[k] for k in ("steps", "seed", "sampler_type", "sigma_min", "sigma_max", "use_init", "init_audio",
                                 "init_noise_level")]
        c["generate"].click(fn=self.generate, inputs=inputs, outputs=[c["output_audio"], c["output_spectrogram"]],
                            api_name="generate")
        return c


def create_diffusion_uncond_ui(model: nn.Module, model_config: Dict[str, Any], gradio_title: str = "",
                               writer: Optional[OutputWriter] = None,
                               limits: Optional[DemoLimits] = None) -> gr.Blocks:
    """The ``gr.Blocks`` app for a ``diffusion_uncond`` model."""
    interface = DiffusionUncondInterface(model, model_config, writer=writer, limits=limits)
    return single_tab_ui(interface, gradio_title)
