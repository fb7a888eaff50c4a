"""AutoencoderTrainingWrapper with a real Lightning Trainer: losses, discriminators, EMA, warmup, teacher, metrics."""
import copy
import logging
import warnings

import pytest
import pytorch_lightning as pl
import torch

from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.training import create_training_wrapper_from_config
from stable_audio_tools.training.utils import InverseLR, create_optimizer_from_config, create_scheduler_from_config


def oobleck(io=1, bottleneck=None, latent=4):
    enc_latent = 2 * latent if bottleneck and bottleneck["type"] == "vae" else latent
    return {
        "model_type": "autoencoder", "sample_size": 1024, "sample_rate": 8000, "audio_channels": io,
        "model": {
            "encoder": {"type": "oobleck", "config": {"in_channels": io, "channels": 4, "c_mults": [1, 2],
                                                       "strides": [2, 4], "latent_dim": enc_latent}},
            "decoder": {"type": "oobleck", "config": {"out_channels": io, "channels": 4, "c_mults": [1, 2],
                                                       "strides": [2, 4], "latent_dim": latent, "final_tanh": False}},
            **({"bottleneck": bottleneck} if bottleneck else {}),
            "latent_dim": latent, "downsampling_ratio": 8, "io_channels": io,
        },
        "training": {"learning_rate": 1e-3, "loss_configs": {
            "spectral": {"type": "mrstft", "config": {"fft_sizes": [128, 32], "hop_sizes": [32, 8],
                                                      "win_lengths": [128, 32]}, "weights": {"mrstft": 1.0}},
            "time": {"weights": {"l1": 0.5, "l2": 0.5}}}, "demo": {"demo_every": 100}},
    }


def with_disc(cfg, kind, config):
    cfg = copy.deepcopy(cfg)
    cfg["training"]["loss_configs"]["discriminator"] = {"type": kind, "config": config,
                                                        "weights": {"adversarial": 0.1, "feature_matching": 1.0}}
    return cfg


def fit(cfg, steps=4, val=False, callbacks=(), **overrides):
    torch.manual_seed(0)
    model = create_model_from_config(cfg)
    wrapper = create_training_wrapper_from_config(cfg, model, **overrides)
    ch = cfg["audio_channels"]
    data = [(torch.randn(ch, 1024) * 0.3, {}) for _ in range(8)]
    collate = lambda b: (torch.stack([x for x, _ in b]), tuple(m for _, m in b))  # noqa: E731
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=collate)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             callbacks=list(callbacks))
        trainer.fit(wrapper, loader, loader if val else None)
    return wrapper, trainer


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_spectral_loss_argument_order_matches_upstream():
    cfg = oobleck(io=2)
    wrapper = create_training_wrapper_from_config(cfg, create_model_from_config(cfg))
    reals, decoded = torch.randn(2, 2, 1024), torch.randn(2, 2, 1024) * 0.1
    info = {"reals": reals, "decoded": decoded, "reals_left": reals[:, :1], "reals_right": reals[:, 1:],
            "decoded_left": decoded[:, :1], "decoded_right": decoded[:, 1:]}
    _, losses = wrapper.losses_gen(info)
    expected = wrapper.sdstft(reals, decoded)
    torch.testing.assert_close(losses["mrstft_loss"], expected)
    assert not torch.allclose(expected, wrapper.sdstft(decoded, reals))
    torch.testing.assert_close(losses["stft_loss_left"], 0.5 * wrapper.lrstft(reals[:, :1], decoded[:, :1]))
    torch.testing.assert_close(losses["l1_time_loss"], 0.5 * (reals - decoded).abs().mean())


@pytest.mark.parametrize("kind,config", [
    ("encodec", {"filters": 4, "n_ffts": [128, 64], "hop_lengths": [32, 16], "win_lengths": [128, 64]}),
    ("oobleck", {}),
    ("dac", {"fft_sizes": [128], "periods": [2, 3], "rates": [1]}),
])
def test_generator_and_discriminator_alternate(kind, config):
    cfg = with_disc(oobleck(io=2, bottleneck={"type": "vae"}), kind, config)
    cfg["training"]["use_ema"] = True
    seen = {}

    class Snapshot(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen[trainer.global_step] = (params(module.discriminator), params(module.autoencoder),
                                         int(module.autoencoder_ema.step))

    wrapper, _ = fit(cfg, steps=3, callbacks=[Snapshot()])
    disc0, ae0, ema0 = seen[0]
    disc1, ae1, ema1 = seen[1]
    disc2, ae2, ema2 = seen[2]
    assert not changed(disc0, _Params(disc1)) and changed(ae0, _Params(ae1))  # step 0: generator only
    assert changed(disc1, _Params(disc2)) and not changed(ae1, _Params(ae2))  # step 1: discriminator only
    assert (ema0, ema1, ema2) == (0, 1, 1)  # the EMA follows generator steps


class _Params:
    def __init__(self, tensors):
        self.tensors = tensors

    def parameters(self):
        return self.tensors


def test_bottleneck_losses_and_scheduler():
    cfg = oobleck(bottleneck={"type": "rvq", "config": {"dim": 4, "codebook_size": 16, "num_quantizers": 2}})
    cfg["training"]["optimizer_configs"] = {"autoencoder": {
        "optimizer": {"type": "AdamW", "config": {"lr": 1e-3}},
        "scheduler": {"type": "InverseLR", "config": {"inv_gamma": 10, "power": 0.5, "warmup": 0.5}}}}
    del cfg["training"]["learning_rate"]
    wrapper, trainer = fit(cfg, steps=3)
    assert "quantizer_loss" in [m.name for m in wrapper.losses_gen.losses]
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    expected = (1 - 0.5 ** 4) * 1e-3 * (1 + 3 / 10) ** -0.5
    assert lr == pytest.approx(expected)


def test_warmup_freezes_encoder_and_latent_mask():
    cfg = with_disc(oobleck(bottleneck={"type": "vae"}), "encodec",
                    {"filters": 4, "n_ffts": [128], "hop_lengths": [32], "win_lengths": [128]})
    cfg["training"].update(warmup_steps=2, encoder_freeze_on_warmup=True, latent_mask_ratio=0.5)
    snapshots = {}

    class Snapshot(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            snapshots.setdefault(trainer.global_step, (params(module.autoencoder.encoder),
                                                       params(module.autoencoder.decoder)))

    wrapper, _ = fit(cfg, steps=6, callbacks=[Snapshot()])
    enc0, _ = snapshots[0]
    enc2, dec2 = snapshots[2]
    assert changed(enc0, wrapper.autoencoder.encoder) and not changed(enc2, wrapper.autoencoder.encoder)
    assert changed(dec2, wrapper.autoencoder.decoder)


def test_teacher_distillation(tmp_path):
    teacher_cfg = oobleck(bottleneck={"type": "vae"})
    teacher = create_model_from_config(teacher_cfg)
    torch.save({"state_dict": teacher.state_dict()}, tmp_path / "teacher.ckpt")
    cfg = oobleck(bottleneck={"type": "vae"})
    cfg["training"].update(teacher_model=teacher_cfg, teacher_model_ckpt=str(tmp_path / "teacher.ckpt"))
    wrapper, _ = fit(cfg, steps=2)
    names = [m.name for m in wrapper.losses_gen.losses]
    assert {"latent_distill_loss", "mrstft_loss_distill", "mrstft_loss_own_latents_teacher",
            "mrstft_loss_teacher_latents_own"} <= set(names)
    assert all(not p.requires_grad for p in wrapper.teacher_model.parameters())
    cfg["training"].pop("teacher_model_ckpt")
    with pytest.raises(ValueError, match="teacher_model_ckpt"):
        create_training_wrapper_from_config(cfg, create_model_from_config(cfg))


def test_gradient_clipping_applies():
    cfg = oobleck()
    wrapper, _ = fit(cfg, steps=1, clip_grad_norm=1e-6)
    total = torch.norm(torch.stack([p.grad.norm() for p in wrapper.autoencoder.parameters() if p.grad is not None]))
    assert total <= 1e-6 * 1.01


def test_validation_metrics_logged():
    cfg = oobleck(io=2)
    cfg["training"]["eval_loss_configs"] = {"stft": {"config": {}}, "sisdr": {"config": {}},
                                            "mel": {"config": {"fft_size": 256, "hop_size": 64, "win_length": 256,
                                                               "n_mels": 16}},
                                            "pesq": {}}
    wrapper, trainer = fit(cfg, steps=4, val=True)
    metrics = trainer.callback_metrics
    assert {"val/stft", "val/sisdr", "val/mel", "val/pesq"} <= set(metrics)
    assert float(metrics["val/sisdr"]) < 0  # untrained model: negative SI-SDR in dB


def test_optimizer_and_scheduler_factory_errors():
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="optimizer.type.*unknown type 'Adamw'"):
        create_optimizer_from_config({"type": "Adamw"}, p)
    with pytest.raises(ValueError, match="invalid options for AdamW"):
        create_optimizer_from_config({"type": "AdamW", "config": {"lrr": 1}}, p)
    opt = create_optimizer_from_config({"type": "SGD", "config": {"lr": 0.1}}, p)
    assert isinstance(create_scheduler_from_config({"type": "InverseLR", "config": {}}, opt), InverseLR)
    with pytest.raises(ValueError, match="warmup"):
        InverseLR(opt, warmup=1.0)
