"""The ``hubert`` loss block of autoencoder training (upstream's ``loss_configs.hubert``) with tiny HuBERT / WavLM /
wav2vec 2.0 models built here from random configs and saved locally."""
import copy
import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from stable_audio_tools.models.config import ConfigError
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.training import create_training_wrapper_from_config
from stable_audio_tools.training.losses import semantic

from test_upstream_compat_training import _tiny_ssl_model
from tiny_autoencoder import tiny_autoencoder_config

TINY_AE = tiny_autoencoder_config(sample_rate=16000, sample_size=1024)


def config_with_hubert(model_name, weight=0.5, **extra):
    config = copy.deepcopy(TINY_AE)
    config["training"]["loss_configs"]["hubert"] = {"weights": {"hubert": weight},
                                                    "config": {"model_name": model_name, **extra}}
    return config


def build(config):
    return create_training_wrapper_from_config(config, create_model_from_config(config))


def loader():
    torch.manual_seed(0)
    return torch.utils.data.DataLoader([0.3 * torch.randn(1, 1024) for _ in range(4)], batch_size=2)


def trainer(tmp_path, steps, name):
    return pl.Trainer(max_steps=steps, accelerator="cpu", logger=CSVLogger(str(tmp_path), name=name),
                      enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                      default_root_dir=str(tmp_path))


@pytest.mark.parametrize("kind", ["hubert", "wavlm", "wav2vec2"])
def test_hubert_block_adds_the_weighted_feature_loss(kind, tmp_path):
    wrapper = build(config_with_hubert(_tiny_ssl_model(kind, tmp_path / kind), weight=0.5, feature_ids=[0, 2]))
    assert isinstance(wrapper.hubert, semantic.HubertLoss) and wrapper.hubert.feature_ids == [0, 2]
    (module,) = [m for m in wrapper.losses_gen.losses if m.name == "hubert_loss"]
    assert module.loss_module is wrapper.hubert and float(module.weight) == 0.5
    reals, decoded = torch.randn(2, 1, 1024), torch.randn(2, 1, 1024, requires_grad=True)
    value = module({"reals": reals, "decoded": decoded})
    assert torch.allclose(value, 0.5 * wrapper.hubert(decoded, reals))
    value.backward()
    assert decoded.grad.abs().sum() > 0 and not any(p.requires_grad for p in wrapper.hubert.model.parameters())


def test_training_steps_log_it_and_checkpoints_leave_the_frozen_model_out(tmp_path):
    config = config_with_hubert(_tiny_ssl_model("hubert", tmp_path / "hubert"), weight=0.5)
    wrapper = build(config)
    run = trainer(tmp_path, 2, "first")
    run.fit(wrapper, loader())
    with open(next((tmp_path / "first").rglob("metrics.csv"))) as f:
        logged = [float(row["train/hubert_loss"]) for row in csv.DictReader(f) if row.get("train/hubert_loss")]
    assert logged and all(v > 0 for v in logged)

    ckpt = tmp_path / "run.ckpt"
    run.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)["state_dict"]
    assert any(k.startswith("autoencoder.") for k in saved)
    assert not any(".model." in k and ("hubert" in k or "loss_module" in k) for k in saved)
    # upstream checkpoints hold the feature model under torchaudio's names: those are replaced on resume too
    upstream = torch.load(ckpt, weights_only=False)
    upstream["state_dict"]["hubert.model.model.feature_extractor.conv_layers.0.conv.weight"] = torch.zeros(8, 1, 10)
    torch.save(upstream, tmp_path / "upstream.ckpt")
    for name in ("run.ckpt", "upstream.ckpt"):
        resumed = build(config)
        trainer(tmp_path, 3, f"resumed_{name}").fit(resumed, loader(), ckpt_path=str(tmp_path / name))
        assert resumed.global_step == 3
        for key, value in wrapper.hubert.model.state_dict().items():
            assert torch.equal(resumed.hubert.model.state_dict()[key], value)


def test_weight_zero_adds_nothing_and_errors_name_the_key(tmp_path, monkeypatch):
    wrapper = build(config_with_hubert(str(tmp_path / "unused"), weight=0.0))
    assert not hasattr(wrapper, "hubert") and "hubert_loss" not in [m.name for m in wrapper.losses_gen.losses]
    monkeypatch.setitem(semantic.HUBERT_MODELS, "WAVLM_LARGE", "stable-audio-tools-tests/not-cached-wavlm")
    with pytest.raises(ConfigError) as err:
        build(config_with_hubert("WAVLM_LARGE"))
    text = str(err.value)
    assert "training.loss_configs.hubert.config.model_name" in text
    assert "stable-audio-tools-tests/not-cached-wavlm" in text and "hf download" in text
    with pytest.raises(ConfigError, match="hubert.config.*invalid option"):
        build(config_with_hubert(_tiny_ssl_model("hubert", tmp_path / "h"), layers=[1]))
    with pytest.raises(ConfigError, match="hubert.weights"):
        build({**TINY_AE, "training": {**TINY_AE["training"], "loss_configs": {
            **TINY_AE["training"]["loss_configs"], "hubert": {"config": {}}}}})
