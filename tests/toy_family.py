"""A toy model family for the registry tests: its own builders, reached only through one registry entry.

``TOY_FAMILY`` is the entry (``stable_audio_tools.families.ModelFamily``); every builder it names lives here, as a
new model type's builders live in its own files.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Tuple

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from stable_audio_tools.families import ModelFamily
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.training.common import OptimizerGroupsMixin, adam_configs, split_batch
from stable_audio_tools.training.demo_base import DemoCallbackBase

TOY_TYPE = "toy_gain"
TOY_FAMILY = ModelFamily(TOY_TYPE, model="toy_family:build_toy_model", training_wrapper="toy_family:build_toy_wrapper",
                         demo="toy_family:build_toy_demo", unwrapper="toy_family:unwrap_toy", ui="toy_family:build_toy_ui")


class ToyGain(nn.Module):
    """``y = x * gain + bias`` per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(channels, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain + self.bias


def build_toy_model(model_config: Mapping[str, Any]) -> nn.Module:
    return ToyGain(int(model_config["model"]["channels"]))


class ToyWrapper(OptimizerGroupsMixin, pl.LightningModule):
    """Learns to halve its input."""

    def __init__(self, model: nn.Module, lr: float) -> None:
        super().__init__()
        self.model = model
        self.optimizer_configs = adam_configs("toy", lr)

    def optimizer_groups(self) -> List[Tuple[str, Iterable[torch.nn.Parameter]]]:
        return [("toy", self.model.parameters())]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        reals, _ = split_batch(batch)
        return F.mse_loss(self.model(reals), reals * 0.5)


def build_toy_wrapper(model_config: Mapping[str, Any], model: nn.Module, training: Mapping[str, Any],
                      **overrides: Any) -> pl.LightningModule:
    return ToyWrapper(model, lr=float(training["learning_rate"]), **overrides)


class ToyDemo(DemoCallbackBase):
    """Records the model output of every demo."""

    def __init__(self, demo_every: int) -> None:
        super().__init__(demo_every=demo_every, sample_rate=8000)
        self.outputs: Dict[int, torch.Tensor] = {}

    def run_demo(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.outputs[trainer.global_step] = module.model(torch.ones(1, 2, 4, device=module.device)).cpu()


def build_toy_demo(model_config: Mapping[str, Any], **kwargs: Any) -> pl.Callback:
    return ToyDemo(demo_every=int(model_config["training"]["demo"]["demo_every"]))


def unwrap_toy(model_config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    model = create_model_from_config(model_config)
    model.load_state_dict({k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")})
    return model


def build_toy_ui(model: nn.Module, model_config: Mapping[str, Any], gradio_title: str = "", limits: Any = None):
    import gradio as gr  # optional dependency, as in the package's interface layer

    with gr.Blocks(title=gradio_title) as ui:
        gr.Markdown(f"gain {model.gain.flatten().tolist()}", label="Toy gain")
    return ui
