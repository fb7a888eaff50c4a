"""Fast mode's bf16 decoder (inference.precision.enable_fast_decode, inference.fast_convnet): the decoder's
convolutions run in bfloat16 in the channels-last layout, its snakes fused, the decoded audio comes back float32,
finite and close to the float32 decoder's, the encoder and the backbone's weights are untouched, and exact mode
restores the float32 decoder bit for bit. The channels-last convolutions and the fused snake equal the modules they
replace (checked in float32); a failed compilation falls back to the eager snake. Loose bounds, no timings."""
import copy
import logging

import pytest
import torch
from torch import nn

from stable_audio_tools.inference import fast_convnet
from stable_audio_tools.inference.fast_convnet import (ChannelsLastConv1d, ChannelsLastConvTranspose1d, FusedSnake,
                                                       InplaceResidualUnit, build_fast_convnet)
from stable_audio_tools.inference.precision import (enable_fast_decode, enable_fast_encode, enable_fast_mode,
                                                    fast_decode_dtype_of, fast_encode_dtype_of)
from stable_audio_tools.models.activations import Snake1d, SnakeBeta
from stable_audio_tools.models.oobleck import OobleckDecoder

from conftest import needs_cpu_bf16
from test_fast_mode import _randomised, _rel_err
from test_generate_cli import cond_config


@pytest.fixture
def config(tmp_path):
    from tiny_t5 import make_tiny_t5

    return cond_config(make_tiny_t5(tmp_path / "t5"))


def _conv_dtypes(module):
    seen = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
             for m in module.modules()
             if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, ChannelsLastConv1d, ChannelsLastConvTranspose1d))]
    return seen, hooks


@needs_cpu_bf16
def test_fast_decoder_runs_bf16_convolutions_and_returns_float32_audio(config):
    model = _randomised(config)
    latents = torch.randn(1, config["model"]["io_channels"], 8)
    with torch.no_grad():
        exact = model.pretransform.decode(latents)
    backbone = {k: v.clone() for k, v in model.model.state_dict().items()}
    enable_fast_mode(model)
    assert fast_decode_dtype_of(model) == torch.bfloat16
    seen, hooks = _conv_dtypes(model.pretransform.model.decoder)
    with torch.no_grad():
        fast = model.pretransform.decode(latents)
    for h in hooks:
        h.remove()
    assert seen and set(seen) == {torch.bfloat16}
    decoder = model.pretransform.model.decoder
    assert not any(isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, SnakeBeta)) for m in decoder.modules())
    assert fast.is_contiguous() and not any(p.requires_grad for p in decoder.parameters())
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    assert 0 < _rel_err(fast, exact) < 0.1
    assert all(p.dtype == torch.float32 for p in model.pretransform.model.encoder.parameters())
    assert all(torch.equal(v, backbone[k]) for k, v in model.model.state_dict().items())

    enable_fast_mode(model, None)  # exact mode again: the float32 decoder and its weight-norm keys are back
    assert fast_decode_dtype_of(model) is None
    assert any(k.endswith("weight_v") for k in model.pretransform.state_dict())
    with torch.no_grad():
        assert torch.equal(model.pretransform.decode(latents), exact)


@needs_cpu_bf16
def test_fast_decode_is_idempotent_survives_deepcopy_and_can_be_left_off(config):
    model = _randomised(config)
    enable_fast_decode(model)
    decoder = model.pretransform.model.decoder
    enable_fast_decode(model)
    assert model.pretransform.model.decoder is decoder
    assert fast_decode_dtype_of(copy.deepcopy(model)) == torch.bfloat16

    other = enable_fast_mode(_randomised(config), decoder=False)
    assert fast_decode_dtype_of(other) is None


def test_fast_decode_refuses_float16(config):
    with pytest.raises(ValueError, match="bfloat16"):
        enable_fast_decode(_randomised(config), torch.float16)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=7, padding=9, dilation=3), dict(kernel_size=1),
                                    dict(kernel_size=16, stride=8, padding=4, bias=False),
                                    dict(kernel_size=4, padding="same", groups=2)])
def test_channels_last_conv1d_equals_conv1d(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv1d(6, 4, **kwargs)
    x = torch.randn(2, 6, 50)
    fast = ChannelsLastConv1d(conv)
    out = fast(x)
    assert out.stride(1) == 1  # channels-last memory
    torch.testing.assert_close(out, conv(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast(x.transpose(1, 2).contiguous().transpose(1, 2)), conv(x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=16, stride=8, padding=4), dict(kernel_size=4, stride=2,
                                    padding=1, output_padding=1, dilation=2, groups=2, bias=False)])
def test_channels_last_conv_transpose1d_equals_conv_transpose1d(kwargs):
    torch.manual_seed(0)
    conv = nn.ConvTranspose1d(6, 4, **kwargs)
    x = torch.randn(2, 6, 20)
    torch.testing.assert_close(ChannelsLastConvTranspose1d(conv)(x), conv(x), rtol=1e-5, atol=1e-5)


def test_channels_last_conv_refuses_other_padding_modes():
    with pytest.raises(ValueError, match="padding_mode"):
        ChannelsLastConv1d(nn.Conv1d(2, 2, 3, padding=1, padding_mode="reflect"))


@pytest.mark.parametrize("make", [lambda: SnakeBeta(5), lambda: SnakeBeta(5, alpha_logscale=False), lambda: Snake1d(5)])
def test_fused_snake_equals_snake(make):
    torch.manual_seed(0)
    module = make()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(0.2, 1.0)
    x = torch.randn(2, 5, 33) * 3
    with torch.no_grad():
        torch.testing.assert_close(FusedSnake.from_module(module)(x), module(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="SnakeBeta or Snake1d"):
        FusedSnake.from_module(nn.ReLU())


def test_failed_compilation_falls_back_to_the_eager_snake(monkeypatch, caplog):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("InductorError: no C++ compiler")
        return run

    fallback = fast_convnet._CompiledSnake()
    monkeypatch.setattr(fast_convnet, "fused_snake", fallback)
    monkeypatch.setattr(torch, "compile", broken_compile)
    module = FusedSnake.from_module(SnakeBeta(3))
    x = torch.randn(1, 3, 10)
    with caplog.at_level(logging.WARNING, logger=fast_convnet.__name__):
        out = module(x)
        module(x)
    assert fallback.failure == "RuntimeError: InductorError: no C++ compiler"
    assert sum("compiling the snake activation failed" in r.getMessage() for r in caplog.records) == 1
    with torch.no_grad():
        torch.testing.assert_close(out, SnakeBeta(3)(x))


@needs_cpu_bf16
def test_fast_decoder_of_an_oobleck_decoder_is_close_to_float32():
    torch.manual_seed(0)
    decoder = OobleckDecoder(out_channels=2, channels=8, latent_dim=4, c_mults=[1, 2], strides=[2, 4],
                             use_snake=True, final_tanh=False).eval()
    z = torch.randn(1, 4, 12)
    fast = build_fast_convnet(decoder)
    assert sum(isinstance(m, FusedSnake) for m in fast.modules()) == sum(
        isinstance(m, SnakeBeta) for m in decoder.modules()) > 0
    assert any(isinstance(m, InplaceResidualUnit) for m in fast.modules())
    assert any(isinstance(m, FusedSnake) and m.inplace for m in fast.modules())
    with torch.no_grad():
        exact, out = decoder(z), fast(z)
    torch.testing.assert_close(fast(z), out, rtol=0, atol=0)  # with autograd on: out of place, same numbers
    assert out.dtype == torch.float32 and out.shape == exact.shape and out.is_contiguous()
    assert 0 < _rel_err(out, exact) < 0.05
    assert all(p.dtype == torch.float32 for p in decoder.parameters())  # the original is untouched


@needs_cpu_bf16
def test_fast_encode_swaps_an_autoencoders_encoder_and_back():
    from stable_audio_tools.models.factory import create_model_from_config

    config = {"model_type": "autoencoder", "sample_rate": 8000, "audio_channels": 1, "model": {
        "encoder": {"type": "oobleck", "config": {"in_channels": 1, "channels": 8, "c_mults": [1, 2],
                                                   "strides": [2, 4], "latent_dim": 8, "use_snake": True}},
        "decoder": {"type": "oobleck", "config": {"out_channels": 1, "channels": 8, "c_mults": [1, 2],
                                                   "strides": [2, 4], "latent_dim": 4, "use_snake": True}},
        "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 8, "io_channels": 1}}
    torch.manual_seed(0)
    model = create_model_from_config(config).eval()
    audio = torch.randn(1, 1, 256)
    with torch.no_grad():
        exact = model.encoder(audio)
        enable_fast_encode(model)
        assert fast_encode_dtype_of(model) == torch.bfloat16 and fast_decode_dtype_of(model) is None
        fast = model.encoder(audio)
        assert fast.dtype == torch.float32 and 0 < _rel_err(fast, exact) < 0.05
        enable_fast_encode(model, None)
        assert fast_encode_dtype_of(model) is None and torch.equal(model.encoder(audio), exact)
    with pytest.raises(ValueError, match="enable_fast_encode: dtype"):
        enable_fast_encode(model, torch.float16)


def test_a_wrong_reduced_precision_kernel_is_caught_by_the_probe_and_the_layer_runs_in_float32(monkeypatch):
    real = ChannelsLastConv1d._conv

    def broken_in_bf16(self, x, weight, bias):  # stands in for the oneDNN bf16 kernels that are wrong
        out = real(self, x, weight, bias)
        return -out if weight.dtype == torch.bfloat16 else out

    monkeypatch.setattr(ChannelsLastConv1d, "_conv", broken_in_bf16)
    torch.manual_seed(0)
    conv = nn.Conv1d(8, 16, 8, stride=4, padding=2)
    fast = ChannelsLastConv1d(copy.deepcopy(conv).to(torch.bfloat16))
    assert fast.float32_fallback and fast.weight.dtype == torch.float32
    x = torch.randn(1, 8, 64)
    out = fast(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert _rel_err(out.float(), conv(x)) < 0.02
    monkeypatch.setattr(ChannelsLastConv1d, "_conv", real)
    assert not ChannelsLastConv1d(nn.Conv1d(64, 64, 7, padding=3).to(torch.bfloat16)).float32_fallback
