"""Oobleck and DAC encoders/decoders and their activations (SPEC 4.2-4.4)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from stable_audio_tools.models import oobleck as oobleck_module
from stable_audio_tools.models.activations import (
    Activation1d,
    Snake1d,
    SnakeBeta,
    get_activation,
    kaiser_sinc_filter1d,
    snake,
)
from stable_audio_tools.models.dac import DACDecoderWrapper, DACEncoderWrapper, ResidualUnit as DACResidualUnit
from stable_audio_tools.models.oobleck import OobleckDecoder, OobleckEncoder

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
CONFIGS = ROOT / "stable_audio_tools" / "configs" / "model_configs"

CODERS = {"oobleck": (OobleckEncoder, OobleckDecoder), "dac": (DACEncoderWrapper, DACDecoderWrapper)}

# alias-free-torch 0.0.6: kaiser_sinc_filter1d(0.25, 0.3, 12) and Activation1d(nn.ELU()) on linspace(-2, 2, 10).
AFT_FILTER = [0.0020289646927267313, 0.009389465674757957, -0.0255434587597847, -0.057657383382320404,
              0.12857258319854736, 0.44320979714393616, 0.44320979714393616, 0.12857258319854736,
              -0.057657383382320404, -0.0255434587597847, 0.009389465674757957, 0.0020289646927267313]
AFT_ELU_OUT = [-0.8630020022392273, -0.7912116050720215, -0.6701620221138, -0.4880049526691437,
               -0.19772087037563324, 0.21978352963924408, 0.667801558971405, 1.1059589385986328,
               1.5701217651367188, 1.9841619729995728]


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _shapes(module: nn.Module, prefix: str) -> dict:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def _manifest(name: str, prefix: str) -> dict:
    entries = json.loads((FIXTURES / "manifests" / f"{name}.json").read_text())["state_dict"]
    return {k[len(prefix):]: tuple(shape) for k, shape, _ in entries if k.startswith(prefix)}


# ----------------------------------------------------------------------------------------------------------------
# State-dict layout against upstream manifests


@pytest.mark.parametrize("config_file, manifest, prefix", [
    ("autoencoders/stable_audio_2_0_vae.json", "stable_audio_2_0_vae", ""),
    ("autoencoders/stable_audio_1_0_vae.json", "stable_audio_1_0_vae", ""),
    ("autoencoders/dac_2048_32_vae.json", "dac_2048_32_vae", ""),
    ("released/stable_audio_open_1_0.json", "stable_audio_open_1_0", "pretransform.model."),
])
def test_state_dict_matches_upstream_manifest(config_file, manifest, prefix):
    model_cfg = json.loads((CONFIGS / config_file).read_text())["model"]
    if prefix:
        model_cfg = model_cfg["pretransform"]["config"]
    enc_cfg, dec_cfg = model_cfg["encoder"], model_cfg["decoder"]
    with torch.device("meta"):
        encoder = CODERS[enc_cfg["type"]][0](**enc_cfg["config"])
        decoder = CODERS[dec_cfg["type"]][1](**dec_cfg["config"])
    got = {**_shapes(encoder, "encoder."), **_shapes(decoder, "decoder.")}
    expected = {k: v for k, v in _manifest(manifest, prefix).items() if k.startswith(("encoder.", "decoder."))}
    assert sorted(set(got) ^ set(expected)) == []
    assert {k: v for k, v in got.items() if expected[k] != v} == {}


# ----------------------------------------------------------------------------------------------------------------
# Golden numerics (upstream outputs)


def _load_golden(name: str):
    folder = FIXTURES / "golden" / name
    cfg = json.loads((folder / "model_config.json").read_text())["model"]
    weights = load_file(str(folder / "weights.safetensors"))
    io = load_file(str(folder / "io.safetensors"))
    enc_cls, dec_cls = CODERS[cfg["encoder"]["type"]]
    encoder = enc_cls(**cfg["encoder"]["config"]).eval()
    decoder = dec_cls(**cfg["decoder"]["config"]).eval()
    encoder.load_state_dict(_strip(weights, "encoder."), strict=True)
    decoder.load_state_dict(_strip(weights, "decoder."), strict=True)
    return encoder, decoder, io


@pytest.mark.parametrize("name, decode_pairs", [
    ("oobleck_vae", [("out.vae_mean", "out.decoded_from_mean"),
                     ("out.latents_sampled_seed1234", "out.decoded_from_sampled")]),
    ("oobleck_tanh_mono", [("out.latents", "out.decoded"), ("in.latents_external", "out.decoded_external")]),
    ("dac_rvq", [("out.z", "out.decoded")]),
])
def test_golden_encoder_decoder(name, decode_pairs):
    encoder, decoder, io = _load_golden(name)
    with torch.no_grad():
        latents = encoder(io["in.audio"])
        torch.testing.assert_close(latents, io["out.pre_bottleneck_latents"], atol=1e-4, rtol=0)
        for latent_key, audio_key in decode_pairs:
            torch.testing.assert_close(decoder(io[latent_key]), io[audio_key], atol=1e-4, rtol=0)


def test_golden_oobleck_train_mode_matches_eval():
    encoder, decoder, io = _load_golden("oobleck_vae")
    encoder.train()
    decoder.train()
    audio = io["in.audio"].clone().requires_grad_(True)
    latents = encoder(audio)
    torch.testing.assert_close(latents.detach(), io["out.pre_bottleneck_latents"], atol=1e-4, rtol=0)
    decoded = decoder(io["out.vae_mean"])
    torch.testing.assert_close(decoded.detach(), io["out.decoded_from_mean"], atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# Activations


def _snake_beta_reference(x, log_alpha, log_beta):
    alpha = torch.exp(log_alpha)[None, :, None]
    beta = torch.exp(log_beta)[None, :, None]
    return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha) ** 2


def test_snake_beta_parameters_and_forward():
    act = SnakeBeta(5)
    assert set(dict(act.named_parameters())) == {"alpha", "beta"}
    assert act.alpha.shape == act.beta.shape == (5,)
    assert torch.equal(act.alpha, torch.zeros(5)) and torch.equal(act.beta, torch.zeros(5))
    linear = SnakeBeta(3, alpha=0.5, alpha_trainable=False, alpha_logscale=False)
    assert torch.equal(linear.alpha, torch.full((3,), 0.5)) and not linear.alpha.requires_grad
    with torch.no_grad():
        act.alpha.copy_(torch.randn(5) * 0.5)
        act.beta.copy_(torch.randn(5) * 0.5)
        x = torch.randn(3, 5, 40) * 3
        torch.testing.assert_close(act(x), _snake_beta_reference(x, act.alpha, act.beta), atol=1e-6, rtol=0)


def test_snake1d_parameters_and_forward():
    act = Snake1d(4)
    assert act.alpha.shape == (1, 4, 1) and torch.equal(act.alpha, torch.ones(1, 4, 1))
    with torch.no_grad():
        act.alpha.copy_(torch.rand(1, 4, 1) + 0.2)
        x = torch.randn(2, 4, 7, 3)  # DAC's snake flattens trailing dims
        alpha = act.alpha.unsqueeze(-1)
        expected = x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)
        torch.testing.assert_close(act(x), expected, atol=1e-6, rtol=0)


def test_snake_gradients_match_reference():
    torch.manual_seed(0)
    x0 = torch.randn(2, 6, 50) * 2
    log_a0, log_b0 = torch.randn(6) * 0.3, torch.randn(6) * 0.3
    grad_out = torch.randn(2, 6, 50)
    results = []
    for fast in (True, False):
        x = x0.clone().requires_grad_(True)
        act = SnakeBeta(6)
        with torch.no_grad():
            act.alpha.copy_(log_a0)
            act.beta.copy_(log_b0)
        y = act(x) if fast else _snake_beta_reference(x, act.alpha, act.beta)
        y.backward(grad_out)
        results.append((y.detach(), x.grad, act.alpha.grad, act.beta.grad))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_snake_function_gradcheck_and_double_backward():
    x = torch.randn(2, 3, 9, dtype=torch.float64, requires_grad=True)
    alpha = (torch.rand(1, 3, 1, dtype=torch.float64) + 0.5).requires_grad_(True)
    inv_beta = (torch.rand(1, 3, 1, dtype=torch.float64) + 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(snake, (x, alpha, inv_beta))
    assert torch.autograd.gradgradcheck(snake, (x, alpha, inv_beta))
    # only some inputs requiring grad
    assert torch.autograd.gradcheck(snake, (x, alpha.detach(), inv_beta.detach()))


def test_snake_under_no_grad_is_exact():
    x = torch.randn(2, 3, 17)
    alpha = torch.rand(1, 3, 1) + 0.5
    inv_beta = torch.rand(1, 3, 1) + 0.5
    assert torch.equal(snake(x, alpha, inv_beta), x + inv_beta * torch.sin(x * alpha) ** 2)


def test_kaiser_filter_and_activation1d_match_alias_free_torch():
    torch.testing.assert_close(kaiser_sinc_filter1d(0.25, 0.3, 12).flatten(), torch.tensor(AFT_FILTER),
                               atol=1e-7, rtol=0)
    act = Activation1d(nn.ELU())
    assert act.upsample.filter.shape == (1, 1, 12) and act.downsample.lowpass.filter.shape == (1, 1, 12)
    assert set(act.state_dict()) == {"upsample.filter", "downsample.lowpass.filter"}
    out = act(torch.linspace(-2, 2, 10).view(1, 1, 10)).flatten()
    torch.testing.assert_close(out, torch.tensor(AFT_ELU_OUT), atol=1e-6, rtol=0)


def test_get_activation():
    assert isinstance(get_activation("elu"), nn.ELU)
    assert isinstance(get_activation("none"), nn.Identity)
    snake_act = get_activation("snake", channels=7)
    assert isinstance(snake_act, SnakeBeta) and snake_act.alpha.shape == (7,)
    wrapped = get_activation("snake", antialias=True, channels=4)
    assert isinstance(wrapped, Activation1d)
    assert set(wrapped.state_dict()) == {"act.alpha", "act.beta", "upsample.filter", "downsample.lowpass.filter"}
    assert wrapped(torch.randn(2, 4, 33)).shape == (2, 4, 33)
    with pytest.raises(ValueError, match="elu, snake, none"):
        get_activation("relu")
    with pytest.raises(ValueError, match="channels"):
        get_activation("snake")


# ----------------------------------------------------------------------------------------------------------------
# Oobleck variants, training behaviour


def _small_oobleck(**kwargs):
    common = dict(channels=4, latent_dim=6, c_mults=(1, 2), strides=(2, 4), use_snake=True)
    common.update(kwargs)
    return common


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_oobleck_antialias_and_nearest_upsample_variants():
    encoder = OobleckEncoder(in_channels=2, antialias_activation=True, **_small_oobleck())
    decoder = OobleckDecoder(out_channels=2, antialias_activation=True, use_nearest_upsample=True,
                             **_small_oobleck(latent_dim=3))
    keys = set(encoder.state_dict())
    assert {"layers.3.act.alpha", "layers.3.upsample.filter", "layers.3.downsample.lowpass.filter"} <= keys
    assert not any(k.startswith("layers.1.") and "filter" in k for k in keys)  # EncoderBlocks never antialiased
    dec_keys = set(decoder.state_dict())
    assert {"layers.1.layers.0.act.alpha", "layers.1.layers.1.1.weight_g", "layers.1.layers.1.1.weight_v",
            "layers.3.act.beta"} <= dec_keys
    assert "layers.1.layers.1.1.bias" not in dec_keys
    assert not any(k.startswith("layers.1.layers.2.") and "filter" in k for k in dec_keys)
    with torch.no_grad():
        latents = encoder(torch.randn(2, 2, 64))
        assert latents.shape == (2, 6, 8)
        audio = decoder(torch.randn(2, 3, 5))
        assert audio.shape == (2, 2, 40)
        assert audio.abs().max() <= 1.0  # final tanh


def test_oobleck_final_layers_stride_validation_and_no_mutation():
    c_mults, strides = [1, 2], [2, 4]
    decoder = OobleckDecoder(final_tanh=False, **_small_oobleck(use_snake=False, c_mults=c_mults, strides=strides))
    OobleckEncoder(**_small_oobleck(c_mults=c_mults, strides=strides))
    assert c_mults == [1, 2] and strides == [2, 4]
    assert [m.layers[1].stride[0] for m in decoder.layers[1:3]] == [4, 2]
    assert isinstance(decoder.layers[-1], nn.Identity) and isinstance(decoder.layers[-3], nn.ELU)
    assert decoder.layers[-2].bias is None
    with pytest.raises(ValueError, match="strides"):
        OobleckEncoder(c_mults=(1, 2, 4), strides=(2, 4))


def test_deepcopy_after_forward():
    for model in (OobleckDecoder(**_small_oobleck(latent_dim=3)), DACDecoderWrapper(latent_dim=3, channels=8,
                                                                                   rates=(2, 2))):
        model.train()
        z = torch.randn(1, 3, 4)
        model(z).sum().backward()
        clone = copy.deepcopy(model).eval()
        model.eval()
        with torch.no_grad():
            assert torch.equal(clone(z), model(z))


@pytest.mark.parametrize("use_snake", [True, False])
def test_gradients_with_and_without_checkpointing(monkeypatch, use_snake):
    calls = []
    real_checkpoint = oobleck_module.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(oobleck_module, "checkpoint", counting_checkpoint)
    torch.manual_seed(0)
    audio = torch.randn(2, 2, 16)
    grads = []
    for ckpt in (True, False):
        torch.manual_seed(1)
        small = _small_oobleck(use_snake=use_snake, c_mults=(2,), strides=(2,))
        encoder = OobleckEncoder(gradient_checkpointing=ckpt, **small).train()
        decoder = OobleckDecoder(gradient_checkpointing=ckpt, **small).train()
        calls.clear()
        loss = decoder(encoder(audio)).pow(2).mean()
        loss.backward()
        assert len(calls) == (6 if ckpt else 0)  # 3 residual units in the encoder block + 3 in the decoder block
        assert all(c is False for c in calls)
        params = list(encoder.named_parameters()) + list(decoder.named_parameters())
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in params)
        if use_snake:
            assert all(p.grad.abs().sum() > 0 for name, p in params if name.endswith((".alpha", ".beta")))
        grads.append([p.grad for _, p in params])
    for with_ckpt, without in zip(*grads):
        torch.testing.assert_close(with_ckpt, without, atol=1e-6, rtol=1e-5)
    # eval mode never checkpoints
    calls.clear()
    with torch.no_grad():
        encoder.eval()(audio)
    assert calls == []


# ----------------------------------------------------------------------------------------------------------------
# DAC


def test_dac_residual_unit_center_crops():
    unit = DACResidualUnit(dim=3, dilation=1)
    unit.block[1].padding = (0,)  # make the block shorten the signal by 6 samples
    x = torch.randn(2, 3, 20)
    with torch.no_grad():
        y = unit(x)
        assert y.shape == (2, 3, 14)
        torch.testing.assert_close(y, x[..., 3:-3] + unit.block(x))


def test_dac_wrappers_structure():
    with torch.device("meta"):
        encoder = DACEncoderWrapper()
        stereo = DACEncoderWrapper(in_channels=2, latent_dim=16, d_model=8, strides=(2, 4))
        decoder = DACDecoderWrapper(latent_dim=32)
    assert isinstance(encoder.proj_out, nn.Identity) and encoder.encoder.enc_dim == 1024
    assert encoder.encoder.block[-1].weight_v.shape == (1024, 1024, 3)
    assert stereo.encoder.block[0].weight_v.shape == (8, 2, 7)
    assert type(stereo.proj_out) is nn.Conv1d and stereo.proj_out.weight.shape == (16, 32, 1)
    assert decoder.decoder.model[0].weight_v.shape == (1536, 32, 7)
    assert [m.block[1].stride[0] for m in decoder.decoder.model[1:5]] == [8, 8, 4, 2]
    assert decoder.decoder.model[-2].weight_v.shape == (1, 96, 7)
    assert isinstance(decoder.decoder.model[-1], nn.Tanh)
    with torch.no_grad():
        small = DACEncoderWrapper(in_channels=2, latent_dim=5, d_model=4, strides=(2, 2))
        # upstream uses DAC's Encoder directly: PyTorch default init (not DAC's trunc_normal(0.02) init_weights)
        bound = 1 / small.encoder.enc_dim ** 0.5
        assert small.proj_out.weight.abs().max() <= bound and small.proj_out.weight.std() > 0.3 * bound
        assert small(torch.randn(1, 2, 32)).shape == (1, 5, 8)
        out = DACDecoderWrapper(latent_dim=5, out_channels=2, channels=8, rates=(2, 2))(torch.randn(1, 5, 8))
        assert out.shape == (1, 2, 32)
