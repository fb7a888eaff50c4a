"""Adapter controls of the Gradio demo (``run_gradio.py --adapter PATH[:STRENGTH]``).

:func:`parse_adapter_flag` reads the flag value; :func:`load_adapters` loads the files onto the model;
:func:`add_adapter_controls` appends an "Adapters" section with one strength slider per loaded adapter (0 to
:data:`MAX_STRENGTH`) to a built app. A slider sets the adapter's strength on the served model, so it applies to
every later request (of every user: the demo serves one model).
"""
from __future__ import annotations

import logging
from typing import List, Sequence, Tuple

import gradio as gr
from torch import nn

from ...models.adapters import list_adapters, load_adapter, parse_adapter_flag, set_adapter_strength
from .common import GRADIO_MAJOR

__all__ = ["MAX_STRENGTH", "parse_adapter_flag", "load_adapters", "add_adapter_controls"]

log = logging.getLogger(__name__)

MAX_STRENGTH = 2.0


def load_adapters(model: nn.Module, specs: Sequence[Tuple[str, float]]) -> List[str]:
    """Load each ``(path, strength)`` onto ``model``; returns the adapter names."""
    names = []
    for path, strength in specs:
        name = load_adapter(model, path, strength=strength)
        log.info("adapter %s loaded from %s (strength %g)", name, path, strength)
        names.append(name)
    return names


def _setter(model: nn.Module, name: str):
    def set_strength(strength: float) -> None:
        set_adapter_strength(model, name, float(strength))

    return set_strength


def add_adapter_controls(ui: gr.Blocks, model: nn.Module) -> List[gr.Slider]:
    """Append one strength slider per adapter of ``model`` to ``ui`` (nothing when it has none)."""
    adapters = list_adapters(model)
    if not adapters:
        return []
    hidden = {"api_visibility": "private"} if GRADIO_MAJOR >= 6 else {"api_name": False, "show_api": False}
    sliders = []
    with ui:
        with gr.Accordion("Adapters", open=True, elem_id="adapters"):
            for name, info in adapters.items():
                slider = gr.Slider(minimum=0.0, maximum=max(MAX_STRENGTH, info.strength), step=0.05,
                                   value=info.strength, label=f"Adapter strength: {name}",
                                   elem_id=f"adapter-strength-{name}")
                slider.change(fn=_setter(model, name), inputs=[slider], outputs=[], queue=False, **hidden)
                sliders.append(slider)
    return sliders
