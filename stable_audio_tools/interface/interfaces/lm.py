"""Gradio UI for audio language models (``lm``), see docs/gradio.md.

Controls: "Temperature" (0-5), "Top p" (0-1), "Top k" (0-100), a seed, the length in seconds and Generate (API name
``generate``). Models with conditioners also get a prompt, timing sliders and a CFG scale (upstream always
generated unconditionally). The generated token count is ``ceil(seconds * sample_rate / downsampling_ratio)`` and
the audio is cut to the requested seconds.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import gradio as gr
import torch
from torch import nn

from .common import (DemoInterface, OutputWriter, add_output_components, single_tab_ui, parse_seed, report_errors,
                     seconds_slider_settings, spectrogram)
from .limits import DemoLimits

__all__ = ["LMInterface", "create_lm_ui"]


class LMInterface(DemoInterface):
    """State and handler of the language-model UI.

    Args:
        model: an ``AudioLanguageModelWrapper`` (already on its device, in eval mode).
        model_config: its config (``sample_rate``, ``sample_size``, ``model.conditioning``).
        writer: where result files go (default: a private temporary directory).
        limits (DemoLimits | None, default None): seconds and time limits of a request (default ``DemoLimits()``).
    """

    def __init__(self, model: nn.Module, model_config: Dict[str, Any], writer: Optional[OutputWriter] = None,
                 limits: Optional[DemoLimits] = None) -> None:
        super().__init__(model, model_config, writer, limits)
        self.ratio = int(model.pretransform.downsampling_ratio)
        self.conditioned = getattr(model, "conditioner", None) is not None and bool(self.conditioner_ids)

    @report_errors
    def generate(self, temperature: float = 1.0, top_p: float = 0.95, top_k: int = 0, prompt: str = "",
                 seconds_start: float = 0, seconds_total: Optional[float] = None, cfg_scale: float = 1.0,
                 seed: Any = -1, progress: Any = gr.Progress()) -> Tuple[str, List[Any]]:
        """Generate ``seconds_total`` seconds (default: the model's ``sample_size``, or the limit ``max_seconds``
        when shorter); returns ``(path, [image])``."""
        seconds_total = self.max_seconds if seconds_total is None else float(seconds_total)
        if seconds_total > self.model_seconds + 1e-9:
            raise gr.Error(f"Seconds total ({seconds_total:g} s) is longer than this model's context "
                           f"({self.model_seconds:.2f} s); choose at most {self.model_seconds:.2f} s.")
        self.limits.check_seconds(seconds_total, self.model_seconds)
        if seconds_total * self.sample_rate < 1:
            raise gr.Error("Seconds total must be above 0")
        if self.has_prompt and not (prompt or "").strip():
            raise gr.Error("Enter a prompt: this model is conditioned on text.")
        if float(temperature) < 0 or float(top_p) < 0 or int(top_k) < 0:
            raise gr.Error("Temperature, top p and top k must not be negative")
        samples = int(round(seconds_total * self.sample_rate))
        tokens = math.ceil(samples / self.ratio)
        kwargs: Dict[str, Any] = dict(batch_size=1, max_gen_len=tokens, temp=float(temperature), top_p=float(top_p),
                                      top_k=int(top_k), use_cache=True, seed=parse_seed(seed))
        if self.conditioned:
            kwargs.update(conditioning=[{"prompt": prompt or "", "seconds_start": seconds_start,
                                         "seconds_total": seconds_total}], cfg_scale=float(cfg_scale))
        with self.gate.request("Generation") as guard, torch.no_grad():
            def on_step(step: int, total: int) -> None:
                guard.check(step, total)
                if progress is not None:
                    progress((int(step), int(total)), desc="Generating tokens")

            audio = self.model.generate_audio(callback=on_step, **kwargs)
        audio = audio[..., :samples].float()
        audio = audio.permute(1, 0, 2).reshape(audio.shape[1], -1)
        path = self.writer.write(audio, self.sample_rate, "output", "wav", normalize=True)
        return path, [spectrogram(audio, self.sample_rate)]

    def render(self) -> Dict[str, Any]:
        """Create the controls inside the current ``gr.Blocks`` and wire them; returns the components by name."""
        c: Dict[str, Any] = {}
        step, default_seconds = seconds_slider_settings(self.sample_size, self.sample_rate)
        with gr.Row():
            with gr.Column(scale=6):
                c["prompt"] = gr.Textbox(label="Prompt", show_label=False, placeholder="Prompt",
                                         visible=self.has_prompt, elem_id="prompt")
            c["generate"] = gr.Button("Generate", variant="primary", scale=1, elem_id="generate-button")
        with gr.Row(equal_height=False):
            with gr.Column():
                with gr.Row():
                    c["seconds_start"] = gr.Slider(0, 512, step=1, value=0, label="Seconds start",
                                                   visible=self.has_seconds_start, elem_id="seconds-start")
                    c["seconds_total"] = gr.Slider(step, self.max_seconds, step=step,
                                                   value=min(default_seconds, self.max_seconds),
                                                   label="Seconds total", elem_id="seconds-total")
                with gr.Row():
                    c["temperature"] = gr.Slider(0.0, 5.0, step=0.01, value=1.0, label="Temperature",
                                                 elem_id="temperature")
                    c["top_p"] = gr.Slider(0.0, 1.0, step=0.01, value=0.95, label="Top p", elem_id="top-p")
                    c["top_k"] = gr.Slider(0, 100, step=1, value=0, label="Top k", elem_id="top-k")
                with gr.Row():
                    c["cfg_scale"] = gr.Slider(0.0, 25.0, step=0.1, value=1.0, label="CFG scale",
                                               visible=self.conditioned, elem_id="cfg-scale")
                    c["seed"] = gr.Textbox(label="Seed (set to -1 for random seed)", value="-1", elem_id="seed")
            with gr.Column():
                add_output_components(c)
        inputs = [c[k] for k in ("temperature", "top_p", "top_k", "prompt", "seconds_start", "seconds_total",
                                 "cfg_scale", "seed")]
        c["generate"].click(fn=self.generate, inputs=inputs, outputs=[c["output_audio"], c["output_spectrogram"]],
                            api_name="generate")
        return c


def create_lm_ui(model: nn.Module, model_config: Dict[str, Any], gradio_title: str = "",
                 writer: Optional[OutputWriter] = None, limits: Optional[DemoLimits] = None) -> gr.Blocks:
    """The ``gr.Blocks`` app for an ``lm`` model."""
    interface = LMInterface(model, model_config, writer=writer, limits=limits)
    return single_tab_ui(interface, gradio_title)
