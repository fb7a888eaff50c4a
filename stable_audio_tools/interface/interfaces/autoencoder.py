"""Gradio UI for autoencoders and diffusion autoencoders: an encode/decode round trip, see docs/gradio.md.

Controls: "Input audio", "# quantizers" (only for DAC residual-VQ bottlenecks, passed as ``n_quantizers``),
"Add latent noise", "Decoder steps" (only for diffusion autoencoders) and "Process" (API name ``process``).
Outputs the decoded audio (clipped, not normalised, as upstream) with the input's length at the model's sample
rate, and its spectrogram.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import gradio as gr
import torch
from torch import nn

from ...models.bottleneck import DACRVQBottleneck
from .common import (AudioValue, DemoInterface, OutputWriter, add_output_components, load_audio_value, model_dtype,
                     new_blocks, report_errors, spectrogram)
from .limits import DemoLimits

__all__ = ["AutoencoderInterface", "create_autoencoder_ui"]


class AutoencoderInterface(DemoInterface):
    """State and handler of the autoencoder UI.

    Args:
        model: an ``AudioAutoencoder`` or ``DiffusionAutoencoder`` (already on its device, in eval mode).
        model_config: its config (``sample_rate``, ``model_type``).
        writer: where result files go (default: a private temporary directory).
        limits (DemoLimits | None, default None): input length, decoder steps and time limits of a request
            (default ``DemoLimits()``).
    """

    def __init__(self, model: nn.Module, model_config: Dict[str, Any], writer: Optional[OutputWriter] = None,
                 limits: Optional[DemoLimits] = None) -> None:
        super().__init__(model, model_config, writer, limits, generates=False)
        self.is_diffusion = model_config.get("model_type") == "diffusion_autoencoder"
        bottleneck = getattr(model, "bottleneck", None)
        self.n_quantizers = int(bottleneck.num_quantizers) if isinstance(bottleneck, DACRVQBottleneck) else 0

    @report_errors
    def process(self, audio: AudioValue, n_quantizers: int = 0, latent_noise: float = 0.0,
                decoder_steps: int = 100) -> Tuple[str, List[Any]]:
        """Encode and decode ``audio``; returns ``(audio file path, [spectrogram])``.

        ``n_quantizers`` (DAC RVQ only, 1..n_codebooks) limits the codebooks used; ``latent_noise`` adds
        ``noise * N(0, 1)`` to the latents; ``decoder_steps`` is the diffusion decoder's step count.
        """
        if self.is_diffusion:
            self.limits.check_steps(int(decoder_steps), "Decoder steps")
        loaded = load_audio_value(audio, "Input audio", self.limits.max_input_seconds)
        if loaded is None:
            raise gr.Error("Upload an input audio file first")
        in_sr, tensor = loaded
        expected_length = math.ceil(tensor.shape[-1] * self.sample_rate / in_sr)
        param = next(self.model.parameters())
        prepared = self.model.preprocess_audio_for_encoder(tensor, in_sr).to(param.device, model_dtype(self.model))
        encode_kwargs = {}
        if self.n_quantizers:
            n = int(n_quantizers)
            if not 1 <= n <= self.n_quantizers:
                raise gr.Error(f"# quantizers must be between 1 and {self.n_quantizers}, got {n}")
            encode_kwargs["n_quantizers"] = n
        with self.gate.request("Processing"), torch.no_grad():
            latents = self.model.encode_audio(prepared, **encode_kwargs)
            if latent_noise and float(latent_noise) > 0:
                latents = latents + torch.randn_like(latents) * float(latent_noise)
            decode_kwargs = {"steps": int(decoder_steps)} if self.is_diffusion else {}
            decoded = self.model.decode_audio(latents, **decode_kwargs)
        decoded = decoded[..., :expected_length].float()
        decoded = decoded.permute(1, 0, 2).reshape(decoded.shape[1], -1)
        path = self.writer.write(decoded, self.sample_rate, "output", "wav", normalize=False)
        return path, [spectrogram(decoded, self.sample_rate)]

    def render(self) -> Dict[str, Any]:
        """Create the controls inside the current ``gr.Blocks`` and wire them; returns the components by name."""
        c: Dict[str, Any] = {}
        with gr.Row():
            with gr.Column(scale=6):
                c["input_audio"] = gr.Audio(label="Input audio", type="filepath", elem_id="input-audio")
            c["process"] = gr.Button("Process", variant="primary", scale=1, elem_id="process-button")
        with gr.Row():
            c["n_quantizers"] = gr.Slider(1, max(self.n_quantizers, 2), step=1, value=max(self.n_quantizers, 1),
                                          label="# quantizers", visible=bool(self.n_quantizers),
                                          elem_id="n-quantizers")
            c["latent_noise"] = gr.Slider(0.0, 10.0, step=0.001, value=0.0, label="Add latent noise",
                                          elem_id="latent-noise")
            c["decoder_steps"] = gr.Slider(1, self.limits.max_steps, step=1, value=min(100, self.limits.max_steps),
                                           label="Decoder steps",
                                           visible=self.is_diffusion, elem_id="decoder-steps")
        add_output_components(c)
        c["process"].click(fn=self.process, inputs=[c["input_audio"], c["n_quantizers"], c["latent_noise"],
                                                    c["decoder_steps"]],
                           outputs=[c["output_audio"], c["output_spectrogram"]], api_name="process")
        return c


def create_autoencoder_ui(model: nn.Module, model_config: Dict[str, Any], gradio_title: str = "",
                          writer: Optional[OutputWriter] = None, limits: Optional[DemoLimits] = None) -> gr.Blocks:
    """The ``gr.Blocks`` app for an ``autoencoder`` / ``diffusion_autoencoder`` model."""
    interface = AutoencoderInterface(model, model_config, writer=writer, limits=limits)
    with new_blocks(gradio_title) as ui:
        if gradio_title:
            gr.Markdown(f"### {gradio_title}")
        with gr.Tab("Encoding"):
            interface.render()
    return ui
