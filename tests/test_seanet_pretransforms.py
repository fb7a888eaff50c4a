"""SEANet (EnCodec) encoder/decoder, wavelet / PQMF / patched transforms and the pretransform wrappers."""
from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from stable_audio_tools.models.autoencoders import create_decoder_from_config, create_encoder_from_config
from stable_audio_tools.models.pqmf import PQMF
from stable_audio_tools.models.pretransforms import (
    AudiocraftCompressionPretransform,
    AutoencoderPretransform,
    PatchedPretransform,
    PQMFPretransform,
    Pretransform,
    PretrainedDACPretransform,
    WaveletPretransform,
)
from stable_audio_tools.models.seanet import (
    SConv1d,
    SConvTranspose1d,
    SEANetDecoder,
    SEANetEncoder,
    get_extra_padding_for_conv1d,
    pad1d,
    unpad1d,
)
from stable_audio_tools.models.wavelets import WAVELETS

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
GOLDEN = FIXTURES / "golden" / "seanet_rvq"
MUSICGEN_CONFIG = (ROOT / "stable_audio_tools" / "configs" / "model_configs" / "autoencoders"
                   / "encodec_musicgen_rvq.json")


def _strip(weights: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def golden():
    config = json.loads((GOLDEN / "model_config.json").read_text())
    return config["model"], load_file(str(GOLDEN / "weights.safetensors")), load_file(str(GOLDEN / "io.safetensors"))


# ----------------------------------------------------------------------------------------------- SEANet


def test_seanet_keys_and_shapes_match_upstream_manifest():
    manifest = json.loads((FIXTURES / "manifests" / "encodec_musicgen_rvq.json").read_text())
    expected = {k: (tuple(shape), dtype) for k, shape, dtype in manifest["state_dict"]
                if k.startswith(("encoder.", "decoder."))}
    model_cfg = json.loads(MUSICGEN_CONFIG.read_text())["model"]
    with torch.device("meta"):
        encoder = SEANetEncoder(**model_cfg["encoder"]["config"])
        decoder = SEANetDecoder(**model_cfg["decoder"]["config"])
    got = {}
    for prefix, module in (("encoder.", encoder), ("decoder.", decoder)):
        for k, v in module.state_dict().items():
            got[prefix + k] = (tuple(v.shape), str(v.dtype).replace("torch.", ""))
    assert got == expected
    n_enc = sum(p.numel() for p in encoder.parameters())
    n_dec = sum(p.numel() for p in decoder.parameters())
    assert (n_enc, n_dec) == (manifest["params_by_child"]["encoder"], manifest["params_by_child"]["decoder"])


def test_seanet_matches_golden_numerics(golden):
    model_cfg, weights, io = golden
    encoder = SEANetEncoder(**model_cfg["encoder"]["config"]).eval()
    decoder = SEANetDecoder(**model_cfg["decoder"]["config"]).eval()
    encoder.load_state_dict(_strip(weights, "encoder."), strict=True)
    decoder.load_state_dict(_strip(weights, "decoder."), strict=True)
    with torch.no_grad():
        latents = encoder(io["in.audio"])
        decoded = decoder(io["out.latents"])
    torch.testing.assert_close(latents, io["out.pre_bottleneck_latents"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decoded, io["out.decoded"], atol=1e-5, rtol=1e-5)


def test_seanet_factory_uses_config_order_and_does_not_mutate():
    model_cfg = {"encoder": {"type": "seanet", "config": {"channels": 1, "dimension": 8, "n_filters": 2,
                                                          "ratios": [2, 4, 5], "lstm": 1}},
                 "decoder": {"type": "seanet", "config": {"channels": 1, "dimension": 8, "n_filters": 2,
                                                          "ratios": [2, 4, 5], "lstm": 1}}}
    before = copy.deepcopy(model_cfg)
    encoders = [create_encoder_from_config(model_cfg["encoder"]) for _ in range(2)]
    decoder = create_decoder_from_config(model_cfg["decoder"])
    assert model_cfg == before
    for encoder in encoders:  # building twice gives the same layer order (upstream alternates)
        strides = [m.conv.conv.stride[0] for m in encoder.modules() if isinstance(m, SConv1d)
                   and m.conv.conv.stride[0] > 1]
        assert strides == [2, 4, 5]
    up = [m.convtr.convtr.stride[0] for m in decoder.modules() if isinstance(m, SConvTranspose1d)]
    assert up == [2, 4, 5]
    assert encoders[0].hop_length == decoder.hop_length == 40


@pytest.mark.parametrize("causal", [False, True])
def test_seanet_lengths_including_short_inputs(causal):
    encoder = SEANetEncoder(dimension=6, n_filters=2, ratios=[2, 3], lstm=1, causal=causal)
    decoder = SEANetDecoder(dimension=6, n_filters=2, ratios=[3, 2], lstm=0, causal=causal)
    with torch.no_grad():
        for length in (1, 3, 6, 7, 61):
            z = encoder(torch.randn(2, 1, length))
            assert z.shape == (2, 6, math.ceil(length / 6))
            assert decoder(z).shape == (2, 1, z.shape[-1] * 6)


def test_seanet_options_norms_and_errors():
    plain = SEANetEncoder(dimension=4, n_filters=2, ratios=[2], norm="none", lstm=0, true_skip=True)
    keys = set(plain.state_dict())
    assert "model.0.conv.conv.weight" in keys and not any("weight_g" in k for k in keys)
    assert not any("shortcut" in k for k in keys)
    grouped = SEANetDecoder(dimension=4, n_filters=2, ratios=[2], norm="time_group_norm", lstm=0,
                            final_activation="Tanh")
    assert "model.2.convtr.norm.weight" in grouped.state_dict()
    assert isinstance(grouped.model[-1], nn.Tanh)
    assert grouped(torch.randn(1, 4, 5)).abs().max() <= 1
    with pytest.raises(ValueError, match="norm"):
        SEANetEncoder(norm="layer_norm")
    with pytest.raises(ValueError, match="activation"):
        SEANetEncoder(activation="NotAnActivation")
    with pytest.raises(ValueError, match="trim_right_ratio"):
        SEANetDecoder(trim_right_ratio=0.5)
    with pytest.raises(ValueError, match="ratios"):
        SEANetEncoder(ratios=[])


def test_seanet_is_deepcopyable_after_forward():
    encoder = SEANetEncoder(dimension=4, n_filters=2, ratios=[2], lstm=1)
    x = torch.randn(1, 1, 16)
    y = encoder(x)
    clone = copy.deepcopy(encoder)
    torch.testing.assert_close(clone(x), y)


def test_padding_helpers_follow_encodec_rules():
    for length in range(1, 40):
        x = torch.zeros(1, 1, length)
        for kernel, stride, dilation in ((7, 1, 1), (3, 1, 4), (8, 4, 1), (10, 5, 1), (16, 8, 1)):
            total = (kernel - 1) * dilation - (stride - 1)
            frames = (length - kernel + total) / stride + 1
            expected = (math.ceil(frames) - 1) * stride + (kernel - total) - length
            assert get_extra_padding_for_conv1d(x, kernel, stride, total) == expected
    x = torch.arange(3.0).view(1, 1, 3)
    # reflect wider than the input: [0, 1, 2] is zero-extended to [0, 1, 2, 0, 0], reflect-padded, and the
    # two appended samples are dropped again from the end
    assert pad1d(x, (4, 1), mode="reflect").tolist() == [[[0.0, 0.0, 2.0, 1.0, 0.0, 1.0, 2.0, 0.0]]]
    assert pad1d(x, (2, 2), mode="reflect").tolist() == [[[2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0]]]
    assert pad1d(x, (1, 2), mode="zero").tolist() == [[[0.0, 0.0, 1.0, 2.0, 0.0, 0.0]]]
    assert unpad1d(torch.arange(6.0), (2, 1)).tolist() == [2.0, 3.0, 4.0]
    with pytest.raises(ValueError):
        unpad1d(torch.arange(2.0), (2, 1))


# ----------------------------------------------------------------------------------- fixed transforms


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_wavelet_pretransform_reconstructs(wavelet):
    pt = WaveletPretransform(channels=2, levels=3, wavelet=wavelet)
    assert (pt.downsampling_ratio, pt.encoded_channels, pt.io_channels, pt.is_discrete) == (8, 16, 2, False)
    assert set(pt.state_dict()) == {"encoder.kernel", "decoder.kernel"}
    assert pt.encoder.kernel.shape[:2] == (4, 2) and pt.encoder.kernel.shape[-1] % 2 == 1
    x = torch.randn(2, 2, 256)
    z = pt.encode(x)
    assert z.shape == (2, 16, 32)
    torch.testing.assert_close(pt.decode(z), x, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="multiple"):
        pt.encode(torch.randn(1, 2, 100))


def test_wavelet_rejects_unknown_wavelet():
    with pytest.raises(ValueError, match="bior4.4"):
        WaveletPretransform(channels=1, levels=1, wavelet="haar")


def test_pqmf_pretransform_shapes_buffers_and_reconstruction():
    pt = PQMFPretransform(attenuation=100, num_bands=16, channels=2)
    assert set(pt.state_dict()) == {"pqmf.filter_bank", "pqmf.prototype"}
    taps = pt.pqmf.filter_bank.shape[-1]
    assert pt.pqmf.filter_bank.shape[0] == 16 and taps & (taps - 1) == 0 and taps >= pt.pqmf.prototype.shape[0]
    assert pt.pqmf.prototype.shape[0] % 2 == 1
    assert (pt.downsampling_ratio, pt.encoded_channels, pt.io_channels) == (16, 32, 2)
    t = torch.arange(8192) / 8192
    x = torch.stack([torch.sin(2 * math.pi * 37 * t), torch.randn(8192) * 0.3])[None]
    z = pt.encode(x)
    assert z.shape == (1, 32, 512)
    y = pt.decode(z)
    assert y.shape == x.shape
    interior = slice(1024, -1024)  # near-perfect reconstruction away from the zero-padded edges
    err = (y[..., interior] - x[..., interior]).abs().max()
    assert err < 1e-2
    # channel-major packing: the first 16 latent channels only depend on audio channel 0
    z2 = pt.encode(torch.cat([x[:, :1], torch.zeros_like(x[:, :1])], dim=1))
    torch.testing.assert_close(z2[:, :16], z[:, :16])
    assert z2[:, 16:].abs().max() == 0


def test_pqmf_pads_and_accepts_1d_input():
    pqmf = PQMF(100, 4)
    bands = pqmf(torch.randn(10))
    assert bands.shape == (1, 1, 4, 3)
    assert pqmf.inverse(bands).shape == (1, 1, 12)
    with pytest.raises(ValueError, match="power of two"):
        PQMF(100, 12)


def test_patched_pretransform_roundtrip_and_layout():
    pt = PatchedPretransform(channels=2, patch_size=4)
    assert (pt.downsampling_ratio, pt.encoded_channels, pt.io_channels) == (4, 8, 2)
    assert dict(pt.state_dict()) == {}
    x = torch.arange(2 * 2 * 10, dtype=torch.float32).view(2, 2, 10)
    z = pt.encode(x)
    assert z.shape == (2, 8, 3)
    # (c h) ordering: latent channel c * p + h at frame l is sample l * p + h of channel c
    assert z[1, 1 * 4 + 2, 1] == x[1, 1, 1 * 4 + 2]
    y = pt.decode(z)
    torch.testing.assert_close(y[..., :10], x)
    assert y[..., 10:].abs().max() == 0  # zero padding up to a multiple of patch_size


def test_patched_pretransform_oversampling():
    pt = PatchedPretransform(channels=1, patch_size=8, oversampling=2)
    assert dict(pt.state_dict()) == {}  # the resampling kernels are not checkpointed (as upstream)
    t = torch.arange(512) / 512
    x = torch.sin(2 * math.pi * 5 * t).view(1, 1, -1)
    z = pt.encode(x)
    assert z.shape == (1, 8, 512 * 2 // 8)
    y = pt.decode(z)
    assert y.shape == x.shape
    assert (y - x)[..., 32:-32].abs().max() < 1e-2
    with pytest.raises(ValueError, match="oversampling"):
        PatchedPretransform(channels=1, patch_size=8, oversampling=0)


def test_base_pretransform_reports_unsupported_methods():
    pt = Pretransform()
    assert (pt.enable_grad, pt.is_discrete, pt.encoded_channels, pt.downsampling_ratio) == (False, False, None, None)
    for call in (pt.encode, pt.decode, pt.tokenize, pt.decode_tokens):
        with pytest.raises(NotImplementedError, match="Pretransform"):
            call(torch.zeros(1, 1, 4))


# ------------------------------------------------------------------------------ autoencoder pretransform


class _Bottleneck(nn.Module):
    is_discrete = True
    num_quantizers = 3
    codebook_size = 16
    tokens_id = "codes"


class _StandInAutoencoder(nn.Module):
    """Mimics the attributes/methods of AudioAutoencoder that AutoencoderPretransform relies on."""

    def __init__(self, discrete: bool = False) -> None:
        super().__init__()
        self.encoder = nn.Conv1d(2, 4, 4, stride=4)
        self.decoder = nn.ConvTranspose1d(4, 2, 4, stride=4)
        self.bottleneck = _Bottleneck() if discrete else None
        self.is_discrete = discrete
        self.latent_dim, self.downsampling_ratio, self.io_channels, self.sample_rate = 4, 4, 2, 16000
        self.calls = []

    def encode_audio(self, x, chunked=False, iterate_batch=False, **kwargs):
        self.calls.append(("encode_audio", chunked, iterate_batch, x.dtype))
        return self.encoder(x)

    def decode_audio(self, z, chunked=False, iterate_batch=False, **kwargs):
        self.calls.append(("decode_audio", chunked, iterate_batch, z.dtype))
        return self.decoder(z)

    def encode(self, x, return_info=False, **kwargs):
        z = self.encoder(x)
        return z, {"codes": z.argmax(dim=1)}

    def decode_tokens(self, tokens, **kwargs):
        return torch.zeros(tokens.shape[0], 2, tokens.shape[-1] * 4)


def test_autoencoder_pretransform_scale_flags_and_freezing():
    ae = _StandInAutoencoder()
    ae.train()
    pt = AutoencoderPretransform(ae, scale=2.0, chunked=True, iterate_batch=True)
    assert not ae.training and not any(p.requires_grad for p in ae.parameters())
    assert (pt.encoded_channels, pt.downsampling_ratio, pt.io_channels, pt.sample_rate) == (4, 4, 2, 16000)
    assert (pt.is_discrete, pt.num_quantizers, pt.codebook_size) == (False, None, None)
    x = torch.randn(2, 2, 16)
    z = pt.encode(x)
    torch.testing.assert_close(z, ae.encoder(x) / 2.0)
    torch.testing.assert_close(pt.decode(z), ae.decoder(z * 2.0))
    assert ae.calls == [("encode_audio", True, True, torch.float32), ("decode_audio", True, True, torch.float32)]
    assert set(pt.state_dict()) == {"model." + k for k in ae.state_dict()}
    with pytest.raises(NotImplementedError, match="continuous"):
        pt.tokenize(x)


def test_autoencoder_pretransform_loads_plain_autoencoder_state_dict():
    source = _StandInAutoencoder()
    pt = AutoencoderPretransform(_StandInAutoencoder())
    pt.load_state_dict(source.state_dict())  # keys without the "model." prefix
    for k, v in source.state_dict().items():
        torch.testing.assert_close(pt.model.state_dict()[k], v)
    with pytest.raises(RuntimeError):
        pt.load_state_dict({"model." + k: v for k, v in source.state_dict().items()})


def test_autoencoder_pretransform_half_and_discrete():
    pt = AutoencoderPretransform(_StandInAutoencoder(discrete=True), model_half=True)
    assert pt.model.encoder.weight.dtype == torch.float16
    assert (pt.is_discrete, pt.num_quantizers, pt.codebook_size) == (True, 3, 16)
    x = torch.randn(1, 2, 8)
    if not _half_conv_supported():
        pytest.skip("float16 conv1d is not available on this CPU build")
    z = pt.encode(x)
    assert z.dtype == torch.float32 and pt.model.calls[0][-1] == torch.float16
    assert pt.decode(z).dtype == torch.float32
    pt_full = AutoencoderPretransform(_StandInAutoencoder(discrete=True))
    assert pt_full.tokenize(x).shape == (1, 2)
    assert pt_full.decode_tokens(torch.zeros(1, 3, 5, dtype=torch.long)).shape == (1, 2, 20)


def _half_conv_supported() -> bool:
    try:
        nn.functional.conv1d(torch.zeros(1, 1, 4, dtype=torch.float16), torch.zeros(1, 1, 2, dtype=torch.float16))
    except RuntimeError:
        return False
    return True


# --------------------------------------------------------------------------- optional pretrained codecs


@pytest.mark.parametrize("cls, module, hint", [
    (PretrainedDACPretransform, "dac", "pip install descript-audio-codec"),
    (AudiocraftCompressionPretransform, "audiocraft", "pip install audiocraft"),
])
def test_optional_pretrained_pretransforms_give_install_hint(monkeypatch, cls, module, hint):
    monkeypatch.setitem(sys.modules, module, None)  # makes "import <module>" raise ImportError
    if module == "audiocraft":
        monkeypatch.setitem(sys.modules, "audiocraft.models", None)
    with pytest.raises(ImportError, match=hint):
        cls()
