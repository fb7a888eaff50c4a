"""Diffusion training wrappers (SPEC 5.2-5.5, 5.7, 5.8): samplers, objectives, inpainting masks, CFG dropout,
padding masks, pre-encoded latents, EMA, export/unwrap keys, ARC and the demo callbacks."""
import copy
import json
import logging
import math
import random
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from stable_audio_tools.data.dataset import collation_fn
from stable_audio_tools.models.config import ConfigError, ConfigWarning
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.models.utils import load_ckpt_state_dict
from stable_audio_tools.training import create_demo_callback_from_config, create_training_wrapper_from_config
from stable_audio_tools.training.diffusion import encode_to_latents, padding_masks_from_metadata
from stable_audio_tools.models.inpainting import random_inpaint_mask
from stable_audio_tools.training.pretransform_check import pretransform_is_untrained, warn_if_pretransform_untrained
from stable_audio_tools.training.timesteps import TimestepSampler, noise_inputs
from stable_audio_tools.training.unwrap import UNWRAPPERS

from conftest import FIXTURES

warnings.filterwarnings("ignore", ".*eval mode at the start of training.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")


def golden_config(name):
    return json.loads((FIXTURES / "golden" / name / "model_config.json").read_text())


DIT_COND = golden_config("dit_cond")  # v objective, number/int conditioners, latent-free, 8 channels x 16
LDM = golden_config("ldm_dit_pretransform")  # rectified flow, autoencoder pretransform (ratio 4, scale 0.5)
ADP_UNCOND = golden_config("adp_uncond")
DIFFAE = {
    "model_type": "diffusion_autoencoder", "sample_size": 2048, "sample_rate": 8000, "audio_channels": 1,
    "model": {
        "encoder": {"type": "oobleck", "config": {"in_channels": 2, "channels": 4, "c_mults": [1, 2],
                                                   "strides": [2, 2], "latent_dim": 8}},
        "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 4, "io_channels": 2,
        "pretransform": {"type": "patched", "config": {"channels": 1, "patch_size": 2}},
        "diffusion": {"type": "dit", "config": {"io_channels": 2, "embed_dim": 32, "depth": 1, "num_heads": 1,
                                                 "input_concat_dim": 4}},
    },
}


def with_training(config, training, **top):
    config = copy.deepcopy(config)
    config["training"] = training
    config.update(top)
    return config


class ItemDataset(Dataset):
    """Random ``[C, L]`` items whose last quarter is padding, with ``metadata(i)`` plus a ``padding_mask``."""

    def __init__(self, channels, length, metadata=lambda i: {}, count=8):
        self.channels, self.length, self.metadata, self.count = channels, length, metadata, count

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        mask = torch.ones(self.length)
        mask[self.length * 3 // 4:] = 0
        return torch.randn(self.channels, self.length) * 0.5, dict(self.metadata(i), padding_mask=mask)


def cond_metadata(i):
    return {"seconds_start": i, "seconds_total": 10 + i, "class_id": i % 10}


def ldm_metadata(i):
    return {"seconds_total": i, "label": ["drums", "bass", "keys"][i % 3], "prompt": f"prompt {i}"}


def loader(dataset, batch_size=4):
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collation_fn)


def fit(wrapper, train_dl, steps=2, val_dl=None, **kwargs):
    kwargs.setdefault("logger", False)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, **kwargs)
    trainer.fit(wrapper, train_dl, val_dl)
    return trainer


def build(config, **overrides):
    model = create_model_from_config(config)
    return create_training_wrapper_from_config(config, model, **overrides)


class ForwardSpy:
    """Records the keyword arguments of every call to ``module.forward``; ``transform`` may edit the output."""

    def __init__(self, module, transform=None):
        self.calls = []
        original = module.forward

        def forward(*args, **kwargs):
            self.calls.append(kwargs)
            out = original(*args, **kwargs)
            return transform(out) if transform is not None else out

        module.forward = forward


# ---------------------------------------------------------------- timesteps and objectives

def test_timestep_samplers_ranges_and_distributions():
    torch.manual_seed(0)
    uniform = TimestepSampler("uniform")(1024)
    assert uniform.dtype == torch.float32 and 0 <= uniform.min() and uniform.max() < 1
    counts = torch.histc(uniform, bins=16, min=0, max=1)
    assert torch.all((counts - 64).abs() <= 1)  # scrambled Sobol: a power-of-two draw fills bins evenly

    n = 20000
    logit = torch.logit(TimestepSampler("logit_normal")(n).double())
    assert abs(logit.mean()) < 0.05 and abs(logit.std() - 1) < 0.05

    torch.manual_seed(1)
    trunc = TimestepSampler("trunc_logit_normal")(n)
    torch.manual_seed(1)
    normal = torch.distributions.Normal(0, 1)
    low = normal.cdf(torch.logit(torch.tensor(0.075)))
    expected = 1 - (torch.sigmoid(normal.icdf(low + (1 - low) * normal.cdf(torch.randn(n)))) - 0.075) / 0.925
    assert torch.allclose(trunc, expected, atol=1e-6)
    assert trunc.min() >= 0 and trunc.max() <= 1 and trunc.mean() > 0.52  # low-noise tail cut: mass moves to t=1

    log_snr = TimestepSampler("log_snr", {"mean_logsnr": -1.0, "std_logsnr": 1.5})(n)
    assert log_snr.min() >= 1e-4 and log_snr.max() <= 1 - 1e-4
    snr = torch.log((1 - log_snr.double()) / log_snr.double())
    assert abs(snr.mean() + 1.0) < 0.05 and abs(snr.std() - 1.5) < 0.05

    assert torch.equal(TimestepSampler("one_shot")(3), torch.ones(3))
    assert torch.equal(TimestepSampler("denoised")(3), torch.zeros(3))
    uniform_snr = -torch.logit(TimestepSampler("logsnr_uniform")(n).double())
    assert uniform_snr.min() >= -6 and uniform_snr.max() <= 2 and abs(uniform_snr.mean() + 2) < 0.1

    with pytest.raises(ConfigError, match="did you mean 'logit_normal'"):
        TimestepSampler("logit_norm")
    with pytest.warns(ConfigWarning, match="mean_snr"):
        TimestepSampler("log_snr", {"mean_snr": 1})


@pytest.mark.parametrize("objective", ["v", "rectified_flow", "rf_denoiser"])
def test_noise_inputs_match_the_objective(objective):
    x0, noise, t = torch.randn(3, 2, 5), torch.randn(3, 2, 5), torch.tensor([0.0, 0.4, 1.0])
    out = noise_inputs(x0, t, objective, noise=noise)
    if objective == "v":
        a, s = torch.cos(t * math.pi / 2)[:, None, None], torch.sin(t * math.pi / 2)[:, None, None]
        assert torch.allclose(out.targets, a * noise - s * x0)
        assert torch.allclose(out.noised * a - out.targets * s, x0, atol=1e-6)  # x0 = α x_t − σ v
    else:
        a, s = (1 - t)[:, None, None], t[:, None, None]
        assert torch.allclose(out.targets, noise - x0)
        assert torch.allclose(out.noised - s * out.targets, x0, atol=1e-6)  # x0 = x_t − t v
    assert torch.allclose(out.noised, a * x0 + s * noise)
    assert torch.equal(out.noised[0], x0[0]) and torch.allclose(out.noised[2], noise[2], atol=1e-6)


# ---------------------------------------------------------------- inpainting masks and padding masks

def test_random_inpaint_mask_types():
    random.seed(0)
    seq = torch.randn(3, 2, 40)
    padding = torch.ones(3, 40)
    padding[1, 30:] = 0
    padding[2] = 0
    masked, mask = random_inpaint_mask(seq, padding, mask_type_probabilities=[0, 1, 0])
    assert mask.shape == (3, 1, 40) and mask.dtype == torch.float32 and not mask.any()
    assert torch.equal(masked, torch.zeros_like(seq))

    for _ in range(20):
        masked, mask = random_inpaint_mask(seq, padding, mask_type_probabilities=[0, 0, 1])
        kept = mask[1, 0]
        assert torch.all(kept[30:] == 1)  # padding is never masked
        prefix = int(kept[:30].sum())
        assert torch.all(kept[:prefix] == 1) and torch.all(kept[prefix:30] == 0)  # causal: a kept prefix
        assert torch.all(mask[2] == 1)  # no real data: kept unless FULL_MASK
        assert torch.equal(masked, seq * mask)

    zeros = []
    for _ in range(20):
        _, mask = random_inpaint_mask(seq, padding, max_mask_segments=3, mask_type_probabilities=[1, 0, 0])
        assert torch.all(mask[1, 0, 30:] == 1) and torch.all(mask[2] == 1)
        zeros.append(int((mask[0] == 0).sum()))
    assert min(zeros) >= 1 and max(zeros) <= 40  # at most 3 segments of <= 40 // segments frames
    assert max(zeros) > min(zeros)

    for bad in ([0.5, 0.5], [0.5, 0.6, 0.1], [-0.1, 1.0, 0.1]):
        with pytest.raises(ValueError, match="mask_type_probabilities"):
            random_inpaint_mask(seq, padding, mask_type_probabilities=bad)


def test_padding_masks_from_metadata_resizes_and_unwraps():
    audio_mask = torch.ones(16)
    audio_mask[8:] = 0
    metadata = [{"padding_mask": audio_mask}, {"padding_mask": [audio_mask]}, {"padding_mask": [1, 1, 0, 0]}, {}]
    masks = padding_masks_from_metadata(metadata, 4, torch.device("cpu"))
    assert masks.dtype == torch.bool
    assert masks.tolist() == [[True, True, False, False]] * 3 + [[True] * 4]
    with pytest.raises(ValueError, match="mask_padding"):
        padding_masks_from_metadata([{}], 4, torch.device("cpu"), required=True)


# ---------------------------------------------------------------- diffusion_cond

def test_cond_wrapper_trains_logs_validates_and_keeps_ema():
    torch.manual_seed(0)
    config = with_training(DIT_COND, {"learning_rate": 1e-3, "log_loss_info": True, "timestep_sampler": "log_snr"})
    wrapper = build(config)
    before = {k: v.clone() for k, v in wrapper.diffusion.model.state_dict().items()}
    dl = loader(ItemDataset(8, 16, cond_metadata))
    trainer = fit(wrapper, dl, steps=3, val_dl=loader(ItemDataset(8, 16, cond_metadata, count=4)))
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/std_data", "train/lr", "train/mse_loss", "val/avg_loss",
                *(f"val/loss_{t}" for t in ("0.1", "0.3", "0.5", "0.7", "0.9"))):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert any(k.startswith("model/loss_all_") for k in metrics)
    assert metrics["train/lr"] == pytest.approx(1e-3)
    after = wrapper.diffusion.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)

    keys = wrapper.state_dict().keys()
    assert int(wrapper.diffusion_ema.step) == 3
    assert "diffusion_ema.initted" in keys and "diffusion_ema.step" in keys
    assert not any(k.startswith("diffusion_ema.online_model.") for k in keys)  # include_online_model=False
    ema = {k[len("diffusion_ema.ema_model."):] for k in keys if k.startswith("diffusion_ema.ema_model.")}
    assert ema == set(wrapper.diffusion.model.state_dict())
    assert wrapper.state_dict()["losses.losses.0.weight"] == 1.0


def test_cfg_dropout_reaches_the_model_and_validation_disables_it():
    wrapper = build(with_training(DIT_COND, {"learning_rate": 1e-3, "cfg_dropout_prob": 0.3}))
    spy = ForwardSpy(wrapper.diffusion.model)
    fit(wrapper, loader(ItemDataset(8, 16, cond_metadata)), steps=1,
        val_dl=loader(ItemDataset(8, 16, cond_metadata, count=4)), limit_val_batches=1, val_check_interval=1)
    training_calls = [c for c in spy.calls if c["cfg_dropout_prob"] == 0.3]
    validation_calls = [c for c in spy.calls if c["cfg_dropout_prob"] == 0.0]
    assert len(training_calls) == 1 and len(validation_calls) == 5  # one per validation timestep
    call = training_calls[0]
    assert call["cross_attn_cond"].shape[:2] == (4, 2) and call["prepend_cond"].shape[:2] == (4, 1)
    assert "mask" not in call  # mask_padding is off


@pytest.mark.parametrize("mask_padding,dropout,masked", [(True, 0.0, True), (False, 0.0, False), (True, 1.0, False)])
def test_mask_padding_restricts_the_loss_to_real_frames(mask_padding, dropout, masked):
    config = with_training(DIT_COND, {"learning_rate": 1e-3, "mask_padding": mask_padding,
                                      "mask_padding_dropout": dropout})
    wrapper = build(config)

    def corrupt_padding(out):  # a huge error on the padded last quarter only
        out = out.clone()
        out[..., 12:] += 1000.0
        return out

    spy = ForwardSpy(wrapper.diffusion.model, corrupt_padding)
    trainer = fit(wrapper, loader(ItemDataset(8, 16, cond_metadata)), steps=1)
    loss = float(trainer.callback_metrics["train/loss"])
    assert (loss < 100) == masked
    if masked:
        mask = spy.calls[0]["mask"]
        assert mask.dtype == torch.bool and mask.shape == (4, 16)
        assert mask[:, :12].all() and not mask[:, 12:].any()
    else:
        assert "mask" not in spy.calls[0]


def test_timestep_pipeline_dist_shift_and_p_one_shot():
    config = with_training(LDM, {"learning_rate": 1e-3})
    config["model"]["diffusion"]["distribution_shift_options"] = {"min_length": 16, "max_length": 64}
    wrapper = build(config)
    reference = copy.deepcopy(wrapper.timestep_sampler)
    shifted = wrapper.sample_timesteps(64, 32)
    expected = wrapper.diffusion.dist_shift.time_shift(reference(64), 32)
    assert torch.allclose(shifted, expected)
    wrapper.p_one_shot = 1.0
    assert torch.equal(wrapper.sample_timesteps(8, 32), torch.ones(8))
    wrapper.p_one_shot = 0.5
    torch.manual_seed(0)
    t = wrapper.sample_timesteps(4000, 32)
    assert 0.45 < (t == 1).float().mean() < 0.55


def test_pre_encoded_latents_are_divided_by_the_scale_and_never_encoded(monkeypatch):
    wrapper = build(with_training(LDM, {"learning_rate": 1e-3, "pre_encoded": True}))
    latents = torch.randn(2, 4, 64)
    assert torch.allclose(encode_to_latents(wrapper.diffusion, latents, pre_encoded=True), latents / 0.5)
    audio = torch.randn(2, 2, 256)
    encoded = encode_to_latents(wrapper.diffusion, audio, pre_encoded=False)
    assert encoded.shape == (2, 4, 64) and not encoded.requires_grad
    assert not wrapper.diffusion.pretransform.training  # frozen pretransform stays in eval mode

    def refuse(*args, **kwargs):
        raise AssertionError("pre-encoded data must not be encoded again")

    monkeypatch.setattr(wrapper.diffusion.pretransform, "encode", refuse)
    spy = ForwardSpy(wrapper.diffusion.model)
    data = ItemDataset(4, 64, ldm_metadata)
    trainer = fit(wrapper, loader(data), steps=2)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert spy.calls[0]["cross_attn_cond"].shape[0] == 4


def test_inpainting_conditioning_is_added():
    config = copy.deepcopy(LDM)
    config["model_type"] = "diffusion_cond_inpaint"
    config["model"]["diffusion"]["input_concat_ids"] = ["inpaint_mask", "inpaint_masked_input"]
    config["model"]["diffusion"]["config"]["input_concat_dim"] = 5
    config["training"] = {"learning_rate": 1e-3, "inpainting": {"mask_kwargs": {
        "mask_type_probabilities": [0, 0, 1]}}}
    wrapper = build(config)
    spy = ForwardSpy(wrapper.diffusion.model)
    fit(wrapper, loader(ItemDataset(2, 256, ldm_metadata)), steps=1)
    concat = spy.calls[0]["input_concat_cond"]
    assert concat.shape == (4, 5, 64)
    mask, masked = concat[:, :1], concat[:, 1:]
    assert torch.all(mask[..., 48:] == 1)  # padding (last quarter) is kept
    assert torch.all(masked[mask.expand_as(masked) == 0] == 0)

    config["training"].pop("inpainting")
    with pytest.raises(ConfigError, match="training.inpainting"):
        build(config)


def test_cond_training_config_validation():
    with pytest.raises(ConfigError, match="training.learning_rat'.*did you mean 'learning_rate'"):
        build(with_training(DIT_COND, {"learning_rate": 1e-3, "learning_rat": 1}))
    with pytest.warns(ConfigWarning, match="training.release_notes"):
        build(with_training(DIT_COND, {"learning_rate": 1e-3, "release_notes": "extra"}))
    with pytest.raises(ConfigError, match="training.learning_rate"):
        build(with_training(DIT_COND, {}))
    with pytest.raises(ConfigError, match="training.timestep_sampler.*did you mean 'logit_normal'"):
        build(with_training(DIT_COND, {"learning_rate": 1e-3, "timestep_sampler": "logitnormal"}))
    with pytest.raises(ConfigError, match="training.cfg_dropout_prob"):
        build(with_training(DIT_COND, {"learning_rate": 1e-3, "cfg_dropout_prob": 1.5}))
    with pytest.raises(ConfigError, match="optimizer_configs.diffusion"):
        build(with_training(DIT_COND, {"optimizer_configs": {"gen": {}}}))
    with pytest.raises(ConfigError, match="mask_kwargs"):
        build(with_training(DIT_COND, {"learning_rate": 1e-3, "inpainting": {"mask_kwargs": {"max_segments": 3}}}))
    with pytest.warns(ConfigWarning, match="optimizer_configs wins"):
        wrapper = build(with_training(DIT_COND, {"learning_rate": 1e-3, "optimizer_configs": {"diffusion": {
            "optimizer": {"type": "AdamW", "config": {"lr": 2e-4}},
            "scheduler": {"type": "InverseLR", "config": {"inv_gamma": 10}}}}}))
    trainer = fit(wrapper, loader(ItemDataset(8, 16, cond_metadata)), steps=2)
    assert isinstance(trainer.optimizers[0], torch.optim.AdamW)
    assert trainer.lr_scheduler_configs[0].interval == "step"
    assert float(trainer.callback_metrics["train/lr"]) < 2e-4  # the scheduler stepped


# ---------------------------------------------------------------- export and unwrap

def _wrapped_state(trainer, wrapper, tmp_path):
    path = tmp_path / "wrapped.ckpt"
    trainer.save_checkpoint(path)
    return torch.load(path, weights_only=False)["state_dict"]


def test_cond_export_and_unwrap_use_the_ema_backbone(tmp_path):
    config = with_training(DIT_COND, {"learning_rate": 1e-2})
    wrapper = build(config)
    trainer = fit(wrapper, loader(ItemDataset(8, 16, cond_metadata)), steps=3)
    ema = wrapper.diffusion_ema.ema_model.state_dict()
    online = wrapper.diffusion.model.state_dict()
    assert any(not torch.equal(ema[k], online[k]) for k in ema)  # EMA lags the online weights

    wrapper.export_model(str(tmp_path / "export.safetensors"), use_safetensors=True)
    assert wrapper.diffusion.model is not wrapper.diffusion_ema.ema_model  # online model restored
    exported = load_ckpt_state_dict(tmp_path / "export.safetensors")
    fresh = create_model_from_config(config)
    fresh.load_state_dict(exported, strict=True)
    assert all(torch.equal(exported[f"model.{k}"], v) for k, v in ema.items())

    unwrapped = UNWRAPPERS["diffusion_cond"](config, _wrapped_state(trainer, wrapper, tmp_path))
    assert all(torch.equal(unwrapped.state_dict()[f"model.{k}"], v) for k, v in ema.items())
    no_ema = with_training(DIT_COND, {"learning_rate": 1e-2, "use_ema": False})
    wrapper = build(no_ema)
    assert wrapper.diffusion_ema is None
    wrapper.export_model(str(tmp_path / "online.ckpt"))
    assert set(load_ckpt_state_dict(tmp_path / "online.ckpt")) == set(fresh.state_dict())


def test_uncond_wrapper_trains_exports_and_unwraps(tmp_path):
    config = with_training(ADP_UNCOND, {"learning_rate": 1e-3})
    wrapper = build(config)
    trainer = fit(wrapper, loader(ItemDataset(2, 64)), steps=2)
    assert set(trainer.callback_metrics) >= {"train/loss", "train/std_data", "train/mse_loss"}
    keys = wrapper.state_dict().keys()
    assert any(k.startswith("diffusion_ema.online_model.") for k in keys)  # upstream keeps the online copy
    assert int(wrapper.diffusion_ema.step) == 2
    wrapper.export_model(str(tmp_path / "uncond.ckpt"))
    exported = load_ckpt_state_dict(tmp_path / "uncond.ckpt")
    create_model_from_config(config).load_state_dict(exported, strict=True)
    ema = wrapper.diffusion_ema.ema_model.state_dict()
    assert all(torch.equal(exported[f"model.{k}"], v) for k, v in ema.items())
    unwrapped = UNWRAPPERS["diffusion_uncond"](config, _wrapped_state(trainer, wrapper, tmp_path))
    assert all(torch.equal(unwrapped.state_dict()[f"model.{k}"], v) for k, v in ema.items())
    with pytest.raises(ConfigError, match="training.learning_rate"):
        build(with_training(ADP_UNCOND, {}))


def test_diffusion_autoencoder_wrapper(tmp_path):
    config = with_training(DIFFAE, {"learning_rate": 1e-3, "use_reconstruction_loss": True})
    wrapper = build(config)
    trainer = fit(wrapper, loader(ItemDataset(1, 2048), batch_size=2), steps=2)
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/std_data", "train/latent_std", "train/mse_loss", "train/kl_loss",
                "train/mrstft_loss"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    keys = wrapper.state_dict().keys()
    assert any(k.startswith("diffae_ema.ema_model.encoder.") for k in keys)
    assert not any(k.startswith("diffae_ema.online_model.") for k in keys)
    wrapper.export_model(str(tmp_path / "diffae.safetensors"), use_safetensors=True)
    exported = load_ckpt_state_dict(tmp_path / "diffae.safetensors")
    create_model_from_config(config).load_state_dict(exported, strict=True)
    unwrapped = UNWRAPPERS["diffusion_autoencoder"](config, _wrapped_state(trainer, wrapper, tmp_path))
    assert all(torch.equal(unwrapped.state_dict()[k], v) for k, v in exported.items())


# ---------------------------------------------------------------- ARC

def arc_config(tmp_path, **arc):
    model = create_model_from_config(LDM)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "base.ckpt")
    block = {"use_model_as_teacher": True, "teacher_model_ckpt": str(tmp_path / "base.ckpt"),
             "use_model_as_discriminator": True, "discriminator_base_ckpt": str(tmp_path / "base.ckpt"),
             "ode_warmup": {"warmup_steps": 1, "sampling_steps": 2},
             "noise_dist": {"generator": "trunc_logit_normal", "discriminator": "logsnr_uniform"},
             "discriminator": {"dit_hidden_layer": 1, "contrastive": True, "include_grad_penalties": True,
                               "type": "conv"}}
    block.update(arc)
    adam = {"optimizer": {"type": "Adam", "config": {"lr": 1e-4}}}
    return with_training(LDM, {"optimizer_configs": {"diffusion": adam, "discriminator": dict(
        adam, scheduler={"type": "InverseLR", "config": {"inv_gamma": 10}})}, "arc": block,
        "trim_config": {"trim_prob": 0.5}})


def test_arc_alternates_generator_and_discriminator(tmp_path):
    config = arc_config(tmp_path)
    wrapper = build(config, clip_grad_norm=1.0)
    assert wrapper.automatic_optimization is False and wrapper.clip_grad_norm == 1.0
    assert wrapper.teacher_model is not None and not any(p.requires_grad for p in wrapper.teacher_model.parameters())
    trainer = fit(wrapper, loader(ItemDataset(2, 256, ldm_metadata), batch_size=2), steps=4)
    metrics = trainer.callback_metrics
    for key in ("train/ode_mse_loss", "train/adv_loss", "train/gen_loss", "train/dis_loss",
                "train/discriminator_loss", "train/contrastive_loss_dis", "train/grad_penalty_loss", "r1_penalty",
                "disc_real_scores_mean", "gen_disc_scores_mean", "train/disc_lr", "train/gen_lr"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    gen_state, disc_state = (opt.state_dict()["state"] for opt in trainer.optimizers)
    assert int(next(iter(gen_state.values()))["step"]) == 2  # ODE warmup step 0 + generator step 2
    assert int(next(iter(disc_state.values()))["step"]) == 2  # steps 1 and 3
    assert int(wrapper.diffusion_ema.step) == 2
    assert float(metrics["train/disc_lr"]) < 1e-4  # discriminator scheduler alone stepped
    assert float(metrics["train/gen_lr"]) == pytest.approx(1e-4)
    state = _wrapped_state(trainer, wrapper, tmp_path)
    assert any(k.startswith("discriminator_head.layers.") for k in state)
    assert any(k.startswith("teacher_model.") for k in state) and any(k.startswith("discriminator.") for k in state)
    unwrapped = UNWRAPPERS["diffusion_cond"](config, state)  # ARC runs unwrap like diffusion_cond
    ema = wrapper.diffusion_ema.ema_model.state_dict()
    assert all(torch.equal(unwrapped.state_dict()[f"model.{k}"], v) for k, v in ema.items())


def test_arc_clips_each_optimizer_step(tmp_path):
    config = arc_config(tmp_path, ode_warmup=None, discriminator={"dit_hidden_layer": 1, "type": "conv"})
    sgd = {"optimizer": {"type": "SGD", "config": {"lr": 1.0}}}
    config["training"]["optimizer_configs"] = {"diffusion": sgd, "discriminator": sgd}
    config["training"]["clip_grad_norm"] = 1e-6
    wrapper = build(config)
    student = [p.detach().clone() for p in wrapper.diffusion.parameters()]
    head = [p.detach().clone() for p in wrapper.discriminator_head.parameters()]
    fit(wrapper, loader(ItemDataset(2, 256, ldm_metadata), batch_size=2), steps=2)  # generator, discriminator

    def moved(before, module):
        return torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(module.parameters(), before)))

    assert 0 < moved(student, wrapper.diffusion) <= 1.01e-6  # one SGD step of lr 1 on a clipped gradient
    assert 0 < moved(head, wrapper.discriminator_head) <= 1.01e-6


def test_arc_convnext_head_and_config_errors(tmp_path):
    config = arc_config(tmp_path, ode_warmup=None, discriminator={
        "dit_hidden_layer": 0, "config": {"channels": 8, "c_mults": [1], "strides": [2], "num_blocks": [1]}})
    wrapper = build(config)
    assert wrapper.discriminator_head.encoder.proj_in.in_channels == 64  # the discriminator DiT's width
    assert any(k.endswith("proj_down.weight_g") for k in wrapper.state_dict())
    fit(wrapper, loader(ItemDataset(2, 256, ldm_metadata), batch_size=2), steps=2)

    v_model = copy.deepcopy(config)
    v_model["model"]["diffusion"]["diffusion_objective"] = "v"
    with pytest.raises(ConfigError, match="rectified"):
        build(v_model)
    no_disc = copy.deepcopy(config)
    del no_disc["training"]["arc"]["use_model_as_discriminator"]
    with pytest.raises(ConfigError, match="discriminator_base_model"):
        build(no_disc)
    no_teacher = arc_config(tmp_path, use_model_as_teacher=False)
    with pytest.raises(ConfigError, match="needs a teacher"):
        build(no_teacher)
    no_layer = arc_config(tmp_path, discriminator={"type": "conv"})
    with pytest.raises(ConfigError, match="dit_hidden_layer"):
        build(no_layer)
    no_opt = copy.deepcopy(config)
    del no_opt["training"]["optimizer_configs"]["discriminator"]
    with pytest.raises(ConfigError, match="optimizer_configs.discriminator"):
        build(no_opt)


# ---------------------------------------------------------------- demo callbacks

def run_demo_fit(config, wrapper, dataset, tmp_path, caplog, batch_size=4):
    callback = create_demo_callback_from_config(config, demo_dl=loader(dataset, batch_size))
    logger = CSVLogger(tmp_path, name="demo")
    with caplog.at_level(logging.ERROR):
        fit(wrapper, loader(dataset, batch_size), steps=1, logger=logger, callbacks=[callback])
    assert not [r for r in caplog.records if "failed" in r.getMessage()], caplog.text
    return {p.name for p in (tmp_path / "demo").rglob("*") if p.is_file()}


def test_cond_demo_logs_every_cfg_scale(tmp_path, caplog):
    config = with_training(LDM, {"learning_rate": 1e-3, "demo": {
        "demo_every": 1, "demo_steps": 2, "num_demos": 2, "demo_cfg_scales": [1, 3],
        "demo_cond": [ldm_metadata(0), ldm_metadata(1)]}})
    wrapper = build(config)
    spy = ForwardSpy(wrapper.diffusion_ema.ema_model)
    files = run_demo_fit(config, wrapper, ItemDataset(2, 256, ldm_metadata), tmp_path, caplog)
    assert {"demo_cfg_1_00000001.wav", "demo_cfg_3_00000001.wav", "demo_melspec_left_cfg_3_00000001.png"} <= files
    assert {c["cfg_scale"] for c in spy.calls} == {1, 3}  # generated with the EMA model
    with pytest.raises(ConfigError, match="demo_cond"):
        create_demo_callback_from_config(with_training(LDM, {"demo": {"num_demos": 3, "demo_cfg_scales": [3],
                                                                      "demo_cond": [{}]}}))
    with pytest.raises(ConfigError, match="demo_cfg_scales"):
        create_demo_callback_from_config(with_training(LDM, {"demo": {"num_demos": 1, "demo_cond": [{}]}}))


def test_cond_demo_from_batch_displays_conditioning_audio(tmp_path, caplog):
    def metadata(i):
        ref = torch.full((2, 256), 0.1 * (i + 1))
        return dict(ldm_metadata(i), audio=ref, ref=ref, stems={"a": ref, "b": -ref / 2})

    config = with_training(LDM, {"learning_rate": 1e-3, "demo": {
        "demo_every": 1, "demo_steps": 2, "num_demos": 2, "demo_cfg_scales": [2], "demo_cond_from_batch": True,
        "display_audio_cond": True, "cond_display_configs": [
            {"id": "ref", "type": "audio", "config": {"display_mix": True}},
            {"id": "stems", "type": "audio_dict"}]}})
    files = run_demo_fit(config, build(config), ItemDataset(2, 256, metadata), tmp_path, caplog)
    assert {"demo_cfg_2_00000001.wav", "demo_audio_cond_00000001.wav", "demo_ref_00000001.wav",
            "demo_ref_mix_cfg_2_00000001.wav", "demo_stems_submix_cfg_2_00000001.wav",
            "demo_stems_mix_cfg_2_00000001.wav"} <= files
    with pytest.raises(ConfigError, match="cond_display_configs"):
        create_demo_callback_from_config(with_training(LDM, {"demo": {
            "num_demos": 1, "demo_cfg_scales": [1], "demo_cond_from_batch": True,
            "cond_display_configs": [{"id": "ref", "type": "video"}]}}))


def test_cond_demo_of_an_inpainting_model_generates_everything(tmp_path, caplog):
    config = with_training(LDM, {"learning_rate": 1e-3, "inpainting": {}, "demo": {
        "demo_every": 1, "demo_steps": 2, "num_demos": 1, "demo_cfg_scales": [2], "demo_cond": [ldm_metadata(0)]}})
    config["model"]["diffusion"]["input_concat_ids"] = ["inpaint_mask", "inpaint_masked_input"]
    config["model"]["diffusion"]["config"]["input_concat_dim"] = 5
    wrapper = build(config)
    spy = ForwardSpy(wrapper.diffusion_ema.ema_model)
    files = run_demo_fit(config, wrapper, ItemDataset(2, 256, ldm_metadata), tmp_path, caplog)
    assert "demo_cfg_2_00000001.wav" in files
    assert spy.calls and not spy.calls[0]["input_concat_cond"].any()


def test_inpaint_demo_uses_the_ema_model(tmp_path, caplog):
    config = copy.deepcopy(LDM)
    config["model_type"] = "diffusion_cond_inpaint"
    config["model"]["diffusion"]["input_concat_ids"] = ["inpaint_mask", "inpaint_masked_input"]
    config["model"]["diffusion"]["config"]["input_concat_dim"] = 5
    config["training"] = {"learning_rate": 1e-3, "inpainting": {},
                          "demo": {"demo_every": 1, "demo_steps": 2, "demo_cfg_scales": [2], "num_demos": 2}}
    wrapper = build(config)
    ema_spy, online_spy = ForwardSpy(wrapper.diffusion_ema.ema_model), ForwardSpy(wrapper.diffusion.model)
    files = run_demo_fit(config, wrapper, ItemDataset(2, 256, ldm_metadata), tmp_path, caplog)
    assert {"demo_cfg_2_00000001.wav", "demo_masked_input_00000001.png",
            "demo_reals_melspec_left_00000001.png"} <= files
    assert ema_spy.calls and all(c["cfg_scale"] == 2 for c in ema_spy.calls)
    assert ema_spy.calls[0]["input_concat_cond"].shape == (2, 5, 64)
    assert all(c.get("cfg_scale", 1.0) == 1.0 for c in online_spy.calls)  # only the training forward


def test_uncond_and_diffae_demos(tmp_path, caplog):
    config = with_training(ADP_UNCOND, {"learning_rate": 1e-3, "demo": {"demo_every": 1, "demo_steps": 2,
                                                                        "num_demos": 2}})
    files = run_demo_fit(config, build(config), ItemDataset(2, 64), tmp_path / "uncond", caplog)
    assert {"demo_00000001.wav", "demo_melspec_left_00000001.png"} <= files

    config = with_training(DIFFAE, {"learning_rate": 1e-3, "demo": {"demo_every": 1, "demo_steps": 2}})
    files = run_demo_fit(config, build(config), ItemDataset(1, 2048), tmp_path / "diffae", caplog, batch_size=2)
    assert {"recon_00000001.wav", "embeddings_spec_00000001.png", "first_stage_00000001.wav",
            "first_stage_latents_00000001.png"} <= files


# ---------------------------------------------------------------- random pretransform warning

def test_untrained_pretransform_is_detected(tmp_path, caplog):
    from safetensors.torch import save_file

    model = create_model_from_config(LDM)
    assert pretransform_is_untrained(model)
    with caplog.at_level(logging.WARNING):
        assert warn_if_pretransform_untrained(model)
    assert "--pretransform-ckpt-path" in caplog.text and "noise" in caplog.text
    assert not pretransform_is_untrained(model, pretransform_ckpt_path="ae.ckpt")
    assert not pretransform_is_untrained(model, resume_ckpt_path="run.ckpt")
    state = model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "full.safetensors")
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith("pretransform.")}},
               tmp_path / "no_pretransform.ckpt")
    torch.save({"state_dict": state}, tmp_path / "full.ckpt")
    assert not pretransform_is_untrained(model, pretrained_ckpt_path=tmp_path / "full.safetensors")
    assert not pretransform_is_untrained(model, pretrained_ckpt_path=tmp_path / "full.ckpt")
    assert pretransform_is_untrained(model, pretrained_ckpt_path=tmp_path / "no_pretransform.ckpt")
    assert not pretransform_is_untrained(create_model_from_config(DIT_COND))  # no pretransform
    assert not pretransform_is_untrained(create_model_from_config(DIFFAE))  # patched: nothing learnt
