"""Under ``--precision bf16-mixed`` (fast mode) Adam / AdamW default to torch's fused kernels; an explicit
``fused`` / ``foreach`` in the config, other optimizers, other precisions and devices without fused kernels keep
torch's default implementation."""
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from stable_audio_tools.training.common import OptimizerGroupsMixin, adam_configs
from stable_audio_tools.training.utils import create_optimizer_from_config

from conftest import needs_cpu_bf16


def _params():
    return [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))]


@pytest.mark.parametrize("kind", ["Adam", "AdamW"])
def test_fused_default_applies_to_adam_without_an_explicit_choice(kind):
    optimizer = create_optimizer_from_config({"type": kind, "config": {"lr": 1e-3}}, _params(), fused_default=True)
    assert optimizer.param_groups[0]["fused"] is True
    plain = create_optimizer_from_config({"type": kind, "config": {"lr": 1e-3}}, _params())
    assert not plain.param_groups[0]["fused"]


def test_explicit_choices_other_optimizers_and_unsupported_devices_keep_the_default():
    explicit = create_optimizer_from_config({"type": "AdamW", "config": {"lr": 1e-3, "foreach": False}}, _params(),
                                            fused_default=True)
    assert not explicit.param_groups[0]["fused"]
    sgd = create_optimizer_from_config({"type": "SGD", "config": {"lr": 1e-3}}, _params(), fused_default=True)
    assert "fused" not in sgd.param_groups[0] or not sgd.param_groups[0]["fused"]
    meta = [nn.Parameter(torch.empty(2, device="meta"))]  # no fused kernels there: torch refuses, we fall back
    fallback = create_optimizer_from_config({"type": "AdamW", "config": {"lr": 1e-3}}, meta, fused_default=True)
    assert not fallback.param_groups[0]["fused"] and len(fallback.param_groups[0]["params"]) == 1


class _Toy(OptimizerGroupsMixin, pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(8, 8)
        self.optimizer_configs = adam_configs("net", 1e-3)

    def optimizer_groups(self):
        return [("net", self.net.parameters())]

    def training_step(self, batch, batch_idx):
        return self.net(batch).float().square().mean()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(8, 8), batch_size=4)


@pytest.mark.parametrize("precision, fused", [pytest.param("bf16-mixed", True, marks=needs_cpu_bf16),
                                              ("32-true", False)])
def test_a_real_trainer_gets_fused_adam_under_bf16_mixed_only(precision, fused):
    model = _Toy()
    before = model.net.weight.detach().clone()
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision=precision, max_steps=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model)
    assert bool(trainer.optimizers[0].param_groups[0]["fused"]) is fused
    assert not torch.equal(model.net.weight, before) and torch.isfinite(model.net.weight).all()
